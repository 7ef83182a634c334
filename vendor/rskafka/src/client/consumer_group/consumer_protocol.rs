//! The consumer protocol's embedded encodings: what consumers put in a `JoinGroup`'s protocol metadata (a
//! [`Subscription`]) and what the leader hands each member through `SyncGroup` (an [`Assignment`]).
//!
//! Both are a big-endian `int16` version followed by the fields of that version, encoded as in Kafka's requests
//! (without tagged fields). These are what Kafka's own tools (`kafka-consumer-groups.sh`, Kafka UI) decode to show
//! a group's members and their partitions.
//!
//! As Kafka's Java client does, decoding accepts any version from 0 up, reads the fields it knows and ignores what
//! later versions append.
//!
//! # References
//! - Kafka's `ConsumerProtocolSubscription.json` and `ConsumerProtocolAssignment.json`
//! - [KIP-429](https://cwiki.apache.org/confluence/display/KAFKA/KIP-429%3A+Kafka+Consumer+Incremental+Rebalance+Protocol)
use std::io::{Cursor, Read};

use thiserror::Error;

use crate::protocol::{
    primitives::{Array, ArrayRef, Int16, Int32, NullableBytes, String_},
    traits::{ReadError, ReadType, WriteError, WriteType},
};

/// The version [`Subscription::encode`] writes: the first with owned partitions.
const SUBSCRIPTION_VERSION: i16 = 1;

/// The version [`Assignment::encode`] writes. Versions 0 to 3 of the assignment are encoded alike (later versions
/// changed only the subscription); 1 is written to match the subscription.
const ASSIGNMENT_VERSION: i16 = 1;

/// A consumer protocol subscription or assignment that cannot be decoded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConsumerProtocolError {
    /// The encoding's version is negative.
    #[error("consumer protocol {message}: invalid version {version}")]
    InvalidVersion {
        /// `subscription` or `assignment`.
        message: &'static str,

        /// The version read.
        version: i16,
    },

    /// A field is cut short or malformed.
    #[error("consumer protocol {message}: cannot read {field}: {reason}")]
    Malformed {
        /// `subscription` or `assignment`.
        message: &'static str,

        /// The field that cannot be read.
        field: &'static str,

        /// What is wrong with it.
        reason: String,
    },
}

/// A consumer's subscription, sent as its protocol metadata in `JoinGroup`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    /// The topics the member subscribes to.
    pub topics: Vec<String>,

    /// Data for the partition assignor, if any.
    pub user_data: Option<Vec<u8>>,

    /// The partitions the member owns, by topic (version 1 and later; empty when decoding version 0).
    pub owned_partitions: Vec<(String, Vec<i32>)>,
}

impl Subscription {
    /// Encodes this subscription as version 1.
    ///
    /// # Panics
    ///
    /// If a topic name is longer than 32767 bytes (Kafka allows 249).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        Int16(SUBSCRIPTION_VERSION)
            .write(&mut buf)
            .and_then(|()| {
                let topics: Vec<_> = self.topics.iter().cloned().map(String_).collect();
                ArrayRef(Some(&topics)).write(&mut buf)
            })
            .and_then(|()| NullableBytes(self.user_data.clone()).write(&mut buf))
            .and_then(|()| write_topic_partitions(&mut buf, &self.owned_partitions))
            .expect("a subscription's topic names fit the consumer protocol");
        buf
    }

    /// Decodes a subscription of any version: version 0 has no owned partitions, and what versions after 1 add
    /// (the generation and the rack) is ignored.
    pub fn decode(bytes: &[u8]) -> Result<Self, ConsumerProtocolError> {
        const MESSAGE: &str = "subscription";
        let mut reader = Cursor::new(bytes);
        let version = read_version(&mut reader, MESSAGE)?;

        let topics = read_array::<_, String_>(&mut reader, MESSAGE, "topics")?
            .into_iter()
            .map(|t| t.0)
            .collect();
        let user_data = NullableBytes::read(&mut reader)
            .map_err(|e| malformed(MESSAGE, "user_data", e))?
            .0;
        let owned_partitions = if version >= 1 {
            read_topic_partitions(&mut reader, MESSAGE, "owned_partitions")?
        } else {
            vec![]
        };

        Ok(Self {
            topics,
            user_data,
            owned_partitions,
        })
    }
}

/// The partitions the group's leader assigned to a member, received through `SyncGroup`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// The assigned partitions, by topic.
    pub partitions: Vec<(String, Vec<i32>)>,

    /// Data from the partition assignor, if any.
    pub user_data: Option<Vec<u8>>,
}

impl Assignment {
    /// Encodes this assignment as version 1 (the same layout as version 0).
    ///
    /// # Panics
    ///
    /// If a topic name is longer than 32767 bytes (Kafka allows 249).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        Int16(ASSIGNMENT_VERSION)
            .write(&mut buf)
            .and_then(|()| write_topic_partitions(&mut buf, &self.partitions))
            .and_then(|()| NullableBytes(self.user_data.clone()).write(&mut buf))
            .expect("an assignment's topic names fit the consumer protocol");
        buf
    }

    /// Decodes an assignment of any version.
    ///
    /// An empty assignment from `SyncGroup` (a member the leader assigned nothing, or a group whose leader sent no
    /// assignments) is not an encoding and fails to decode, as in Kafka's Java client.
    pub fn decode(bytes: &[u8]) -> Result<Self, ConsumerProtocolError> {
        const MESSAGE: &str = "assignment";
        let mut reader = Cursor::new(bytes);
        read_version(&mut reader, MESSAGE)?;

        let partitions = read_topic_partitions(&mut reader, MESSAGE, "assigned_partitions")?;
        let user_data = NullableBytes::read(&mut reader)
            .map_err(|e| malformed(MESSAGE, "user_data", e))?
            .0;

        Ok(Self {
            partitions,
            user_data,
        })
    }
}

fn malformed(message: &'static str, field: &'static str, e: ReadError) -> ConsumerProtocolError {
    let reason = match e {
        ReadError::IO(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the data ends early".to_owned()
        }
        e => e.to_string(),
    };
    ConsumerProtocolError::Malformed {
        message,
        field,
        reason,
    }
}

fn read_version<R: Read>(
    reader: &mut R,
    message: &'static str,
) -> Result<i16, ConsumerProtocolError> {
    let version = Int16::read(reader)
        .map_err(|e| malformed(message, "version", e))?
        .0;
    if version < 0 {
        return Err(ConsumerProtocolError::InvalidVersion { message, version });
    }
    Ok(version)
}

/// Reads an array that is not nullable.
fn read_array<R: Read, T: ReadType<R>>(
    reader: &mut R,
    message: &'static str,
    field: &'static str,
) -> Result<Vec<T>, ConsumerProtocolError> {
    Array::<T>::read(reader)
        .map_err(|e| malformed(message, field, e))?
        .0
        .ok_or(ConsumerProtocolError::Malformed {
            message,
            field,
            reason: "null".to_owned(),
        })
}

/// `[{topic: string, partitions: [int32]}]`.
fn read_topic_partitions<R: Read>(
    reader: &mut R,
    message: &'static str,
    field: &'static str,
) -> Result<Vec<(String, Vec<i32>)>, ConsumerProtocolError> {
    let len = Int32::read(reader)
        .map_err(|e| malformed(message, field, e))?
        .0;
    if len < 0 {
        return Err(ConsumerProtocolError::Malformed {
            message,
            field,
            reason: "null".to_owned(),
        });
    }
    // No allocation from the length read: a corrupt length would otherwise reserve gigabytes.
    let mut topics = Vec::new();
    for _ in 0..len {
        let topic = String_::read(reader)
            .map_err(|e| malformed(message, field, e))?
            .0;
        let partitions = read_array::<_, Int32>(reader, message, field)?
            .into_iter()
            .map(|p| p.0)
            .collect();
        topics.push((topic, partitions));
    }
    Ok(topics)
}

fn write_topic_partitions(
    buf: &mut Vec<u8>,
    topics: &[(String, Vec<i32>)],
) -> Result<(), WriteError> {
    let len = i32::try_from(topics.len())?;
    Int32(len).write(buf)?;
    for (topic, partitions) in topics {
        String_(topic.clone()).write(buf)?;
        let partitions: Vec<_> = partitions.iter().copied().map(Int32).collect();
        ArrayRef(Some(&partitions)).write(buf)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription() -> Subscription {
        Subscription {
            topics: vec!["a".to_owned(), "b".to_owned()],
            user_data: Some(vec![7]),
            owned_partitions: vec![("a".to_owned(), vec![0, 2])],
        }
    }

    /// Version 1, encoded by hand from Kafka's `ConsumerProtocolSubscription.json`.
    #[rustfmt::skip]
    const SUBSCRIPTION_V1: &[u8] = &[
        0, 1, // version
        0, 0, 0, 2, 0, 1, b'a', 0, 1, b'b', // topics
        0, 0, 0, 1, 7, // user_data
        0, 0, 0, 1, // owned_partitions: 1
        0, 1, b'a', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, // a: [0, 2]
    ];

    #[test]
    fn subscription_v1_bytes() {
        assert_eq!(subscription().encode(), SUBSCRIPTION_V1);
        assert_eq!(
            Subscription::decode(SUBSCRIPTION_V1).unwrap(),
            subscription()
        );
    }

    #[test]
    fn subscription_roundtrip() {
        for s in [
            Subscription::default(),
            subscription(),
            Subscription {
                user_data: None,
                owned_partitions: vec![("b".to_owned(), vec![]), ("a".to_owned(), vec![1])],
                ..subscription()
            },
        ] {
            assert_eq!(Subscription::decode(&s.encode()).unwrap(), s);
        }
    }

    #[test]
    fn subscription_v0() {
        #[rustfmt::skip]
        let bytes = [
            0, 0, // version
            0, 0, 0, 1, 0, 1, b'a', // topics
            0xff, 0xff, 0xff, 0xff, // user_data: null
        ];
        assert_eq!(
            Subscription::decode(&bytes).unwrap(),
            Subscription {
                topics: vec!["a".to_owned()],
                user_data: None,
                owned_partitions: vec![],
            }
        );
    }

    /// Versions 2 and 3 append a generation and a rack id, which are skipped; so is anything a later version
    /// appends.
    #[test]
    fn subscription_later_versions() {
        let mut v3 = SUBSCRIPTION_V1.to_vec();
        v3[1] = 3;
        v3.extend_from_slice(&[0, 0, 0, 5]); // generation_id
        v3.extend_from_slice(&[0, 2, b'r', b'1']); // rack_id
        assert_eq!(Subscription::decode(&v3).unwrap(), subscription());
        v3[1] = 9;
        v3.extend_from_slice(&[1, 2, 3]);
        assert_eq!(Subscription::decode(&v3).unwrap(), subscription());
    }

    #[test]
    fn subscription_malformed() {
        let e = Subscription::decode(&SUBSCRIPTION_V1[..SUBSCRIPTION_V1.len() - 1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "consumer protocol subscription: cannot read owned_partitions: the data ends early"
        );
        let e = Subscription::decode(&[0xff, 0xff]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "consumer protocol subscription: invalid version -1"
        );
        let e = Subscription::decode(&[0, 0, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "consumer protocol subscription: cannot read topics: null"
        );
        let e = Subscription::decode(&[0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "consumer protocol subscription: cannot read version: the data ends early"
        );
    }

    /// Version 1, encoded by hand from Kafka's `ConsumerProtocolAssignment.json`.
    #[test]
    fn assignment_v1_bytes() {
        let assignment = Assignment {
            partitions: vec![("t".to_owned(), vec![1]), ("u".to_owned(), vec![])],
            user_data: None,
        };
        #[rustfmt::skip]
        let bytes = [
            0, 1, // version
            0, 0, 0, 2, // assigned_partitions: 2
            0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 1, // t: [1]
            0, 1, b'u', 0, 0, 0, 0, // u: []
            0xff, 0xff, 0xff, 0xff, // user_data: null
        ];
        assert_eq!(assignment.encode(), bytes);
        assert_eq!(Assignment::decode(&bytes).unwrap(), assignment);

        // Version 0 is encoded alike; version 3 too, and later ones may append fields.
        let mut other = bytes.to_vec();
        other[1] = 0;
        assert_eq!(Assignment::decode(&other).unwrap(), assignment);
        other[1] = 3;
        other.push(42);
        assert_eq!(Assignment::decode(&other).unwrap(), assignment);
    }

    #[test]
    fn assignment_roundtrip_and_empty() {
        for a in [
            Assignment::default(),
            Assignment {
                partitions: vec![("t".to_owned(), vec![3, 1])],
                user_data: Some(vec![]),
            },
        ] {
            assert_eq!(Assignment::decode(&a.encode()).unwrap(), a);
        }
        let e = Assignment::decode(&[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "consumer protocol assignment: cannot read version: the data ends early"
        );
    }
}
