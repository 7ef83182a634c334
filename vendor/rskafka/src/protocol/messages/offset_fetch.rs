//! `OffsetFetch` request and response.
//!
//! Only versions 1 to 5 are implemented: the versions without tagged fields that read offsets from Kafka (version 0
//! read them from ZooKeeper).
//!
//! # References
//! - <https://kafka.apache.org/protocol#The_Messages_OffsetFetch>
use std::io::{Read, Write};

use crate::protocol::{
    api_key::ApiKey,
    api_version::{ApiVersion, ApiVersionRange},
    error::Error as ApiError,
    messages::{read_versioned_array, write_versioned_array},
    primitives::{Array, ArrayRef, Int16, Int32, Int64, NullableString, String_},
    traits::{ReadType, WriteType},
};

use super::{
    ReadVersionedError, ReadVersionedType, RequestBody, WriteVersionedError, WriteVersionedType,
};

#[cfg(test)]
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct OffsetFetchRequestTopic {
    /// The topic name.
    pub name: String_,

    /// The partition indexes we would like to fetch offsets for.
    #[cfg_attr(
        test,
        proptest(strategy = "prop::collection::vec(any::<Int32>(), 0..3)")
    )]
    pub partition_indexes: Vec<Int32>,
}

impl<W> WriteVersionedType<W> for OffsetFetchRequestTopic
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((1..=5).contains(&v));

        self.name.write(writer)?;
        ArrayRef(Some(&self.partition_indexes)).write(writer)?;

        Ok(())
    }
}

// this is not technically required for production but helpful for testing
impl<R> ReadVersionedType<R> for OffsetFetchRequestTopic
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((1..=5).contains(&v));

        Ok(Self {
            name: String_::read(reader)?,
            partition_indexes: Array::<Int32>::read(reader)?.0.unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct OffsetFetchRequest {
    /// The group to fetch offsets for.
    pub group_id: String_,

    /// Each topic we would like to fetch offsets for, or null to fetch offsets for all topics.
    ///
    /// Null from version 2 on only.
    #[cfg_attr(
        test,
        proptest(
            strategy = "proptest::option::of(prop::collection::vec(any::<OffsetFetchRequestTopic>(), 0..3))"
        )
    )]
    pub topics: Option<Vec<OffsetFetchRequestTopic>>,
}

impl<W> WriteVersionedType<W> for OffsetFetchRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((1..=5).contains(&v));

        if v < 2 && self.topics.is_none() {
            return Err(WriteVersionedError::FieldNotAvailable {
                version,
                field: "topics: null".to_string(),
            });
        }

        self.group_id.write(writer)?;
        write_versioned_array(writer, version, self.topics.as_deref())?;

        Ok(())
    }
}

// this is not technically required for production but helpful for testing
impl<R> ReadVersionedType<R> for OffsetFetchRequest
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((1..=5).contains(&v));

        Ok(Self {
            group_id: String_::read(reader)?,
            topics: read_versioned_array(reader, version)?,
        })
    }
}

impl RequestBody for OffsetFetchRequest {
    type ResponseBody = OffsetFetchResponse;

    const API_KEY: ApiKey = ApiKey::OffsetFetch;

    /// The versions without tagged fields that read offsets from Kafka (see the module's documentation).
    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(1)), ApiVersion(Int16(5)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(6));
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct OffsetFetchResponsePartition {
    /// The partition index.
    pub partition_index: Int32,

    /// The committed message offset, or -1 if the group has none for this partition.
    pub committed_offset: Int64,

    /// The leader epoch, or -1 if unknown.
    ///
    /// Added in version 5.
    pub committed_leader_epoch: Option<Int32>,

    /// The partition metadata.
    pub metadata: NullableString,

    /// The error code, or 0 if there was no error.
    #[cfg_attr(test, proptest(strategy = "any::<i16>().prop_map(ApiError::new)"))]
    pub error_code: Option<ApiError>,
}

impl<R> ReadVersionedType<R> for OffsetFetchResponsePartition
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((1..=5).contains(&v));

        Ok(Self {
            partition_index: Int32::read(reader)?,
            committed_offset: Int64::read(reader)?,
            committed_leader_epoch: (v >= 5).then(|| Int32::read(reader)).transpose()?,
            metadata: NullableString::read(reader)?,
            error_code: ApiError::new(Int16::read(reader)?.0),
        })
    }
}

// this is not technically required for production but helpful for testing
impl<W> WriteVersionedType<W> for OffsetFetchResponsePartition
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((1..=5).contains(&v));

        self.partition_index.write(writer)?;
        self.committed_offset.write(writer)?;
        if v >= 5 {
            self.committed_leader_epoch
                .unwrap_or(Int32(-1))
                .write(writer)?;
        }
        self.metadata.write(writer)?;
        Int16::from(self.error_code).write(writer)?;

        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct OffsetFetchResponseTopic {
    /// The topic name.
    pub name: String_,

    /// The responses per partition.
    #[cfg_attr(
        test,
        proptest(strategy = "prop::collection::vec(any::<OffsetFetchResponsePartition>(), 0..3)")
    )]
    pub partitions: Vec<OffsetFetchResponsePartition>,
}

impl<R> ReadVersionedType<R> for OffsetFetchResponseTopic
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((1..=5).contains(&v));

        Ok(Self {
            name: String_::read(reader)?,
            partitions: read_versioned_array(reader, version)?.unwrap_or_default(),
        })
    }
}

// this is not technically required for production but helpful for testing
impl<W> WriteVersionedType<W> for OffsetFetchResponseTopic
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((1..=5).contains(&v));

        self.name.write(writer)?;
        write_versioned_array(writer, version, Some(&self.partitions))?;

        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct OffsetFetchResponse {
    /// The duration in milliseconds for which the request was throttled due to a quota violation, or zero if the
    /// request did not violate any quota.
    ///
    /// Added in version 3.
    pub throttle_time_ms: Option<Int32>,

    /// The responses per topic.
    #[cfg_attr(
        test,
        proptest(strategy = "prop::collection::vec(any::<OffsetFetchResponseTopic>(), 0..3)")
    )]
    pub topics: Vec<OffsetFetchResponseTopic>,

    /// The top-level error code, or 0 if there was no error.
    ///
    /// Added in version 2 (version 1 reports group errors in every partition).
    #[cfg_attr(
        test,
        proptest(
            strategy = "proptest::option::of(any::<i16>()).prop_map(|c| c.map(ApiError::new))"
        )
    )]
    pub error_code: Option<Option<ApiError>>,
}

impl<R> ReadVersionedType<R> for OffsetFetchResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((1..=5).contains(&v));

        Ok(Self {
            throttle_time_ms: (v >= 3).then(|| Int32::read(reader)).transpose()?,
            topics: read_versioned_array(reader, version)?.unwrap_or_default(),
            error_code: (v >= 2)
                .then(|| Int16::read(reader).map(|c| ApiError::new(c.0)))
                .transpose()?,
        })
    }
}

// this is not technically required for production but helpful for testing
impl<W> WriteVersionedType<W> for OffsetFetchResponse
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((1..=5).contains(&v));

        if v >= 3 {
            self.throttle_time_ms.unwrap_or(Int32(0)).write(writer)?;
        }
        write_versioned_array(writer, version, Some(&self.topics))?;
        if v >= 2 {
            Int16::from(self.error_code.flatten()).write(writer)?;
        }

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::messages::test_utils::test_roundtrip_versioned_normalised;

    use super::*;

    test_roundtrip_versioned_normalised!(
        OffsetFetchRequest,
        OffsetFetchRequest::API_VERSION_RANGE.min(),
        OffsetFetchRequest::API_VERSION_RANGE.max(),
        |r, _v| r,
        test_roundtrip_offset_fetch_request
    );

    test_roundtrip_versioned_normalised!(
        OffsetFetchResponse,
        OffsetFetchRequest::API_VERSION_RANGE.min(),
        OffsetFetchRequest::API_VERSION_RANGE.max(),
        |mut r, v| {
            let v = v.0.0;
            r.throttle_time_ms = (v >= 3).then(|| r.throttle_time_ms.unwrap_or(Int32(0)));
            r.error_code = (v >= 2).then(|| r.error_code.flatten());
            for p in r.topics.iter_mut().flat_map(|t| &mut t.partitions) {
                p.committed_leader_epoch =
                    (v >= 5).then(|| p.committed_leader_epoch.unwrap_or(Int32(-1)));
            }
            r
        },
        test_roundtrip_offset_fetch_response
    );

    /// Version 5, encoded by hand from Kafka's `OffsetFetchResponse.json`.
    #[test]
    fn response_v5_bytes() {
        #[rustfmt::skip]
        let bytes = [
            0, 0, 0, 0, // throttle_time_ms
            0, 0, 0, 1, // topics: 1
            0, 1, b't', // name
            0, 0, 0, 2, // partitions: 2
            0, 0, 0, 0, // partition_index
            0, 0, 0, 0, 0, 0, 0, 42, // committed_offset
            0, 0, 0, 7, // committed_leader_epoch
            0, 0, // metadata: ""
            0, 0, // error_code
            0, 0, 0, 1, // partition_index
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // committed_offset: none
            0xff, 0xff, 0xff, 0xff, // committed_leader_epoch
            0xff, 0xff, // metadata: null
            0, 0, // error_code
            0, 16, // error_code: NOT_COORDINATOR
        ];
        let mut cursor = std::io::Cursor::new(bytes);
        let response =
            OffsetFetchResponse::read_versioned(&mut cursor, ApiVersion(Int16(5))).unwrap();
        assert_eq!(cursor.position(), bytes.len() as u64);
        assert_eq!(
            response,
            OffsetFetchResponse {
                throttle_time_ms: Some(Int32(0)),
                topics: vec![OffsetFetchResponseTopic {
                    name: String_("t".to_owned()),
                    partitions: vec![
                        OffsetFetchResponsePartition {
                            partition_index: Int32(0),
                            committed_offset: Int64(42),
                            committed_leader_epoch: Some(Int32(7)),
                            metadata: NullableString(Some(String::new())),
                            error_code: None,
                        },
                        OffsetFetchResponsePartition {
                            partition_index: Int32(1),
                            committed_offset: Int64(-1),
                            committed_leader_epoch: Some(Int32(-1)),
                            metadata: NullableString(None),
                            error_code: None,
                        },
                    ],
                }],
                error_code: Some(Some(ApiError::NotCoordinator)),
            }
        );
    }

    /// Version 1 cannot ask for all topics; version 2 can (a null array).
    #[test]
    fn request_bytes() {
        let all = OffsetFetchRequest {
            group_id: String_("g".to_owned()),
            topics: None,
        };
        all.write_versioned(&mut vec![], ApiVersion(Int16(1)))
            .unwrap_err();
        let mut buf = vec![];
        all.write_versioned(&mut buf, ApiVersion(Int16(2))).unwrap();
        assert_eq!(buf, [0, 1, b'g', 0xff, 0xff, 0xff, 0xff]);

        let some = OffsetFetchRequest {
            group_id: String_("g".to_owned()),
            topics: Some(vec![OffsetFetchRequestTopic {
                name: String_("t".to_owned()),
                partition_indexes: vec![Int32(0), Int32(2)],
            }]),
        };
        let mut buf = vec![];
        some.write_versioned(&mut buf, ApiVersion(Int16(1)))
            .unwrap();
        #[rustfmt::skip]
        let expected = [
            0, 1, b'g', // group_id
            0, 0, 0, 1, // topics: 1
            0, 1, b't', // name
            0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, // partition_indexes: [0, 2]
        ];
        assert_eq!(buf, expected);
    }
}
