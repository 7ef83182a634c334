//! `SyncGroup` request and response.
//!
//! Only the versions without tagged fields (0 to 3) are implemented.
//!
//! # References
//! - <https://kafka.apache.org/protocol#The_Messages_SyncGroup>
use std::io::{Read, Write};

use crate::protocol::{
    api_key::ApiKey,
    api_version::{ApiVersion, ApiVersionRange},
    error::Error as ApiError,
    messages::{read_versioned_array, write_versioned_array},
    primitives::{Bytes, Int16, Int32, NullableString, String_},
    traits::{ReadType, WriteType},
};

use super::{
    ReadVersionedError, ReadVersionedType, RequestBody, WriteVersionedError, WriteVersionedType,
};

#[cfg(test)]
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SyncGroupRequestAssignment {
    /// The ID of the member to assign.
    pub member_id: String_,

    /// The member assignment.
    pub assignment: Bytes,
}

impl<W> WriteVersionedType<W> for SyncGroupRequestAssignment
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 3);

        self.member_id.write(writer)?;
        self.assignment.write(writer)?;

        Ok(())
    }
}

// this is not technically required for production but helpful for testing
impl<R> ReadVersionedType<R> for SyncGroupRequestAssignment
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 3);

        Ok(Self {
            member_id: String_::read(reader)?,
            assignment: Bytes::read(reader)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SyncGroupRequest {
    /// The unique group identifier.
    pub group_id: String_,

    /// The generation of the group.
    pub generation_id: Int32,

    /// The member ID assigned by the group.
    pub member_id: String_,

    /// The unique identifier of the consumer instance provided by end user.
    ///
    /// Added in version 3.
    pub group_instance_id: Option<NullableString>,

    /// Each member's assignment: sent by the group's leader only.
    #[cfg_attr(
        test,
        proptest(strategy = "prop::collection::vec(any::<SyncGroupRequestAssignment>(), 0..3)")
    )]
    pub assignments: Vec<SyncGroupRequestAssignment>,
}

impl<W> WriteVersionedType<W> for SyncGroupRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 3);

        if v < 3 && matches!(self.group_instance_id, Some(NullableString(Some(_)))) {
            return Err(WriteVersionedError::FieldNotAvailable {
                version,
                field: "group_instance_id".to_string(),
            });
        }

        self.group_id.write(writer)?;
        self.generation_id.write(writer)?;
        self.member_id.write(writer)?;
        if v >= 3 {
            self.group_instance_id
                .clone()
                .unwrap_or_default()
                .write(writer)?;
        }
        write_versioned_array(writer, version, Some(&self.assignments))?;

        Ok(())
    }
}

// this is not technically required for production but helpful for testing
impl<R> ReadVersionedType<R> for SyncGroupRequest
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 3);

        Ok(Self {
            group_id: String_::read(reader)?,
            generation_id: Int32::read(reader)?,
            member_id: String_::read(reader)?,
            group_instance_id: (v >= 3).then(|| NullableString::read(reader)).transpose()?,
            assignments: read_versioned_array(reader, version)?.unwrap_or_default(),
        })
    }
}

impl RequestBody for SyncGroupRequest {
    type ResponseBody = SyncGroupResponse;

    const API_KEY: ApiKey = ApiKey::SyncGroup;

    /// The versions without tagged fields.
    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(0)), ApiVersion(Int16(3)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(4));
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct SyncGroupResponse {
    /// The duration in milliseconds for which the request was throttled due to a quota violation, or zero if the
    /// request did not violate any quota.
    ///
    /// Added in version 1.
    pub throttle_time_ms: Option<Int32>,

    /// The error code, or 0 if there was no error.
    #[cfg_attr(test, proptest(strategy = "any::<i16>().prop_map(ApiError::new)"))]
    pub error_code: Option<ApiError>,

    /// The member assignment.
    pub assignment: Bytes,
}

impl<R> ReadVersionedType<R> for SyncGroupResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 3);

        Ok(Self {
            throttle_time_ms: (v >= 1).then(|| Int32::read(reader)).transpose()?,
            error_code: ApiError::new(Int16::read(reader)?.0),
            assignment: Bytes::read(reader)?,
        })
    }
}

// this is not technically required for production but helpful for testing
impl<W> WriteVersionedType<W> for SyncGroupResponse
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 3);

        if v >= 1 {
            self.throttle_time_ms.unwrap_or(Int32(0)).write(writer)?;
        }
        Int16::from(self.error_code).write(writer)?;
        self.assignment.write(writer)?;

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::messages::test_utils::test_roundtrip_versioned_normalised;

    use super::*;

    test_roundtrip_versioned_normalised!(
        SyncGroupRequest,
        SyncGroupRequest::API_VERSION_RANGE.min(),
        SyncGroupRequest::API_VERSION_RANGE.max(),
        |mut r, v| {
            r.group_instance_id = (v.0.0 >= 3).then(|| r.group_instance_id.unwrap_or_default());
            r
        },
        test_roundtrip_sync_group_request
    );

    test_roundtrip_versioned_normalised!(
        SyncGroupResponse,
        SyncGroupRequest::API_VERSION_RANGE.min(),
        SyncGroupRequest::API_VERSION_RANGE.max(),
        |mut r, v| {
            r.throttle_time_ms = (v.0.0 >= 1).then(|| r.throttle_time_ms.unwrap_or(Int32(0)));
            r
        },
        test_roundtrip_sync_group_response
    );

    /// Version 3, encoded by hand from Kafka's `SyncGroupRequest.json`.
    #[test]
    fn request_v3_bytes() {
        let request = SyncGroupRequest {
            group_id: String_("g".to_owned()),
            generation_id: Int32(2),
            member_id: String_("m1".to_owned()),
            group_instance_id: Some(NullableString(None)),
            assignments: vec![SyncGroupRequestAssignment {
                member_id: String_("m2".to_owned()),
                assignment: Bytes(vec![9]),
            }],
        };
        let mut buf = vec![];
        request
            .write_versioned(&mut buf, ApiVersion(Int16(3)))
            .unwrap();
        #[rustfmt::skip]
        let expected = [
            0, 1, b'g', // group_id
            0, 0, 0, 2, // generation_id
            0, 2, b'm', b'1', // member_id
            0xff, 0xff, // group_instance_id: null
            0, 0, 0, 1, // assignments: 1
            0, 2, b'm', b'2', 0, 0, 0, 1, 9, // m2: [9]
        ];
        assert_eq!(buf, expected);
    }

    /// Version 3, encoded by hand from Kafka's `SyncGroupResponse.json`.
    #[test]
    fn response_v3_bytes() {
        #[rustfmt::skip]
        let bytes = [
            0, 0, 0, 5, // throttle_time_ms: 5
            0, 27, // error_code: REBALANCE_IN_PROGRESS
            0, 0, 0, 3, 1, 2, 3, // assignment
        ];
        let mut cursor = std::io::Cursor::new(bytes);
        let response =
            SyncGroupResponse::read_versioned(&mut cursor, ApiVersion(Int16(3))).unwrap();
        assert_eq!(cursor.position(), bytes.len() as u64);
        assert_eq!(
            response,
            SyncGroupResponse {
                throttle_time_ms: Some(Int32(5)),
                error_code: Some(ApiError::RebalanceInProgress),
                assignment: Bytes(vec![1, 2, 3]),
            }
        );

        let mut buf = vec![];
        response
            .write_versioned(&mut buf, ApiVersion(Int16(3)))
            .unwrap();
        assert_eq!(buf, bytes);
    }
}
