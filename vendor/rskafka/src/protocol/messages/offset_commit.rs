//! `OffsetCommit` request and response.
//!
//! Only versions 2 to 7 are implemented: the versions without tagged fields that carry the member's generation
//! and id. Version 0 has neither (so a commit cannot be fenced) and stored offsets in ZooKeeper, version 1 adds them
//! with a per-partition commit timestamp; every broker since Kafka 0.9 supports version 2, and Kafka 4.0 removed
//! versions 0 and 1.
//!
//! # References
//! - <https://kafka.apache.org/protocol#The_Messages_OffsetCommit>
//! - [KIP-211](https://cwiki.apache.org/confluence/display/KAFKA/KIP-211%3A+Revise+Expiration+Semantics+of+Consumer+Group+Offsets)
//! - [KIP-320](https://cwiki.apache.org/confluence/display/KAFKA/KIP-320%3A+Allow+fetchers+to+detect+and+handle+log+truncation)
use std::io::{Read, Write};

use crate::protocol::{
    api_key::ApiKey,
    api_version::{ApiVersion, ApiVersionRange},
    error::Error as ApiError,
    messages::{read_versioned_array, write_versioned_array},
    primitives::{Int16, Int32, Int64, NullableString, String_},
    traits::{ReadType, WriteType},
};

use super::{
    ReadVersionedError, ReadVersionedType, RequestBody, WriteVersionedError, WriteVersionedType,
};

#[cfg(test)]
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct OffsetCommitRequestPartition {
    /// The partition index.
    pub partition_index: Int32,

    /// The message offset to be committed: the offset of the next message to consume.
    pub committed_offset: Int64,

    /// The leader epoch of this partition, or -1 (the default) if unknown.
    ///
    /// Added in version 6; dropped by earlier versions.
    pub committed_leader_epoch: Option<Int32>,

    /// Any associated metadata the client wants to keep.
    pub committed_metadata: NullableString,
}

impl<W> WriteVersionedType<W> for OffsetCommitRequestPartition
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((2..=7).contains(&v));

        self.partition_index.write(writer)?;
        self.committed_offset.write(writer)?;
        if v >= 6 {
            self.committed_leader_epoch
                .unwrap_or(Int32(-1))
                .write(writer)?;
        }
        self.committed_metadata.write(writer)?;

        Ok(())
    }
}

// this is not technically required for production but helpful for testing
impl<R> ReadVersionedType<R> for OffsetCommitRequestPartition
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((2..=7).contains(&v));

        Ok(Self {
            partition_index: Int32::read(reader)?,
            committed_offset: Int64::read(reader)?,
            committed_leader_epoch: (v >= 6).then(|| Int32::read(reader)).transpose()?,
            committed_metadata: NullableString::read(reader)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct OffsetCommitRequestTopic {
    /// The topic name.
    pub name: String_,

    /// Each partition to commit offsets for.
    #[cfg_attr(
        test,
        proptest(strategy = "prop::collection::vec(any::<OffsetCommitRequestPartition>(), 0..3)")
    )]
    pub partitions: Vec<OffsetCommitRequestPartition>,
}

impl<W> WriteVersionedType<W> for OffsetCommitRequestTopic
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((2..=7).contains(&v));

        self.name.write(writer)?;
        write_versioned_array(writer, version, Some(&self.partitions))?;

        Ok(())
    }
}

// this is not technically required for production but helpful for testing
impl<R> ReadVersionedType<R> for OffsetCommitRequestTopic
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((2..=7).contains(&v));

        Ok(Self {
            name: String_::read(reader)?,
            partitions: read_versioned_array(reader, version)?.unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct OffsetCommitRequest {
    /// The unique group identifier.
    pub group_id: String_,

    /// The generation of the group (-1 for a commit from outside the group's membership).
    pub generation_id: Int32,

    /// The member ID assigned by the group coordinator (empty for a commit from outside the group's membership).
    pub member_id: String_,

    /// The unique identifier of the consumer instance provided by end user.
    ///
    /// Added in version 7.
    pub group_instance_id: Option<NullableString>,

    /// The time period in ms to retain the offset, or -1 (the default) for the broker's setting.
    ///
    /// Versions 2 to 4 only; dropped by later versions, where the broker's setting always applies.
    pub retention_time_ms: Option<Int64>,

    /// The topics to commit offsets for.
    #[cfg_attr(
        test,
        proptest(strategy = "prop::collection::vec(any::<OffsetCommitRequestTopic>(), 0..3)")
    )]
    pub topics: Vec<OffsetCommitRequestTopic>,
}

impl<W> WriteVersionedType<W> for OffsetCommitRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((2..=7).contains(&v));

        if v < 7 && matches!(self.group_instance_id, Some(NullableString(Some(_)))) {
            return Err(WriteVersionedError::FieldNotAvailable {
                version,
                field: "group_instance_id".to_string(),
            });
        }

        self.group_id.write(writer)?;
        self.generation_id.write(writer)?;
        self.member_id.write(writer)?;
        if v >= 7 {
            self.group_instance_id
                .clone()
                .unwrap_or_default()
                .write(writer)?;
        }
        if v <= 4 {
            self.retention_time_ms.unwrap_or(Int64(-1)).write(writer)?;
        }
        write_versioned_array(writer, version, Some(&self.topics))?;

        Ok(())
    }
}

// this is not technically required for production but helpful for testing
impl<R> ReadVersionedType<R> for OffsetCommitRequest
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((2..=7).contains(&v));

        Ok(Self {
            group_id: String_::read(reader)?,
            generation_id: Int32::read(reader)?,
            member_id: String_::read(reader)?,
            group_instance_id: (v >= 7).then(|| NullableString::read(reader)).transpose()?,
            retention_time_ms: (v <= 4).then(|| Int64::read(reader)).transpose()?,
            topics: read_versioned_array(reader, version)?.unwrap_or_default(),
        })
    }
}

impl RequestBody for OffsetCommitRequest {
    type ResponseBody = OffsetCommitResponse;

    const API_KEY: ApiKey = ApiKey::OffsetCommit;

    /// The versions without tagged fields that carry the member's generation (see the module's documentation).
    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(2)), ApiVersion(Int16(7)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(8));
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct OffsetCommitResponsePartition {
    /// The partition index.
    pub partition_index: Int32,

    /// The error code, or 0 if there was no error.
    #[cfg_attr(test, proptest(strategy = "any::<i16>().prop_map(ApiError::new)"))]
    pub error_code: Option<ApiError>,
}

impl<R> ReadVersionedType<R> for OffsetCommitResponsePartition
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((2..=7).contains(&v));

        Ok(Self {
            partition_index: Int32::read(reader)?,
            error_code: ApiError::new(Int16::read(reader)?.0),
        })
    }
}

// this is not technically required for production but helpful for testing
impl<W> WriteVersionedType<W> for OffsetCommitResponsePartition
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((2..=7).contains(&v));

        self.partition_index.write(writer)?;
        Int16::from(self.error_code).write(writer)?;

        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct OffsetCommitResponseTopic {
    /// The topic name.
    pub name: String_,

    /// The responses for each partition in the topic.
    #[cfg_attr(
        test,
        proptest(strategy = "prop::collection::vec(any::<OffsetCommitResponsePartition>(), 0..3)")
    )]
    pub partitions: Vec<OffsetCommitResponsePartition>,
}

impl<R> ReadVersionedType<R> for OffsetCommitResponseTopic
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((2..=7).contains(&v));

        Ok(Self {
            name: String_::read(reader)?,
            partitions: read_versioned_array(reader, version)?.unwrap_or_default(),
        })
    }
}

// this is not technically required for production but helpful for testing
impl<W> WriteVersionedType<W> for OffsetCommitResponseTopic
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((2..=7).contains(&v));

        self.name.write(writer)?;
        write_versioned_array(writer, version, Some(&self.partitions))?;

        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct OffsetCommitResponse {
    /// The duration in milliseconds for which the request was throttled due to a quota violation, or zero if the
    /// request did not violate any quota.
    ///
    /// Added in version 3.
    pub throttle_time_ms: Option<Int32>,

    /// The responses for each topic.
    #[cfg_attr(
        test,
        proptest(strategy = "prop::collection::vec(any::<OffsetCommitResponseTopic>(), 0..3)")
    )]
    pub topics: Vec<OffsetCommitResponseTopic>,
}

impl<R> ReadVersionedType<R> for OffsetCommitResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((2..=7).contains(&v));

        Ok(Self {
            throttle_time_ms: (v >= 3).then(|| Int32::read(reader)).transpose()?,
            topics: read_versioned_array(reader, version)?.unwrap_or_default(),
        })
    }
}

// this is not technically required for production but helpful for testing
impl<W> WriteVersionedType<W> for OffsetCommitResponse
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((2..=7).contains(&v));

        if v >= 3 {
            self.throttle_time_ms.unwrap_or(Int32(0)).write(writer)?;
        }
        write_versioned_array(writer, version, Some(&self.topics))?;

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::messages::test_utils::test_roundtrip_versioned_normalised;

    use super::*;

    test_roundtrip_versioned_normalised!(
        OffsetCommitRequest,
        OffsetCommitRequest::API_VERSION_RANGE.min(),
        OffsetCommitRequest::API_VERSION_RANGE.max(),
        |mut r, v| {
            let v = v.0.0;
            r.group_instance_id = (v >= 7).then(|| r.group_instance_id.unwrap_or_default());
            r.retention_time_ms = (v <= 4).then(|| r.retention_time_ms.unwrap_or(Int64(-1)));
            for p in r.topics.iter_mut().flat_map(|t| &mut t.partitions) {
                p.committed_leader_epoch =
                    (v >= 6).then(|| p.committed_leader_epoch.unwrap_or(Int32(-1)));
            }
            r
        },
        test_roundtrip_offset_commit_request
    );

    test_roundtrip_versioned_normalised!(
        OffsetCommitResponse,
        OffsetCommitRequest::API_VERSION_RANGE.min(),
        OffsetCommitRequest::API_VERSION_RANGE.max(),
        |mut r, v| {
            r.throttle_time_ms = (v.0.0 >= 3).then(|| r.throttle_time_ms.unwrap_or(Int32(0)));
            r
        },
        test_roundtrip_offset_commit_response
    );

    fn request() -> OffsetCommitRequest {
        OffsetCommitRequest {
            group_id: String_("g".to_owned()),
            generation_id: Int32(4),
            member_id: String_("m".to_owned()),
            group_instance_id: None,
            retention_time_ms: None,
            topics: vec![OffsetCommitRequestTopic {
                name: String_("t".to_owned()),
                partitions: vec![OffsetCommitRequestPartition {
                    partition_index: Int32(1),
                    committed_offset: Int64(300),
                    committed_leader_epoch: None,
                    committed_metadata: NullableString(Some(String::new())),
                }],
            }],
        }
    }

    /// Versions 2 and 7, encoded by hand from Kafka's `OffsetCommitRequest.json`.
    #[test]
    fn request_bytes() {
        let mut buf = vec![];
        request()
            .write_versioned(&mut buf, ApiVersion(Int16(2)))
            .unwrap();
        #[rustfmt::skip]
        let expected = [
            0, 1, b'g', // group_id
            0, 0, 0, 4, // generation_id
            0, 1, b'm', // member_id
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // retention_time_ms: -1
            0, 0, 0, 1, // topics: 1
            0, 1, b't', // name
            0, 0, 0, 1, // partitions: 1
            0, 0, 0, 1, // partition_index
            0, 0, 0, 0, 0, 0, 0x01, 0x2c, // committed_offset: 300
            0, 0, // committed_metadata: ""
        ];
        assert_eq!(buf, expected);

        let request = OffsetCommitRequest {
            group_instance_id: Some(NullableString(Some("i".to_owned()))),
            ..request()
        };
        request
            .write_versioned(&mut vec![], ApiVersion(Int16(6)))
            .unwrap_err();
        let mut buf = vec![];
        request
            .write_versioned(&mut buf, ApiVersion(Int16(7)))
            .unwrap();
        #[rustfmt::skip]
        let expected = [
            0, 1, b'g', // group_id
            0, 0, 0, 4, // generation_id
            0, 1, b'm', // member_id
            0, 1, b'i', // group_instance_id
            0, 0, 0, 1, // topics: 1
            0, 1, b't', // name
            0, 0, 0, 1, // partitions: 1
            0, 0, 0, 1, // partition_index
            0, 0, 0, 0, 0, 0, 0x01, 0x2c, // committed_offset: 300
            0xff, 0xff, 0xff, 0xff, // committed_leader_epoch: -1
            0, 0, // committed_metadata: ""
        ];
        assert_eq!(buf, expected);
    }
}
