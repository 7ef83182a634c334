//! `LeaveGroup` request and response.
//!
//! Only the versions without tagged fields (0 to 3) are implemented.
//!
//! # References
//! - <https://kafka.apache.org/protocol#The_Messages_LeaveGroup>
//! - [KIP-345](https://cwiki.apache.org/confluence/display/KAFKA/KIP-345%3A+Introduce+static+membership+protocol+to+reduce+consumer+rebalances)
use std::io::{Read, Write};

use crate::protocol::{
    api_key::ApiKey,
    api_version::{ApiVersion, ApiVersionRange},
    error::Error as ApiError,
    messages::{read_versioned_array, write_versioned_array},
    primitives::{Int16, Int32, NullableString, String_},
    traits::{ReadType, WriteType},
};

use super::{
    ReadVersionedError, ReadVersionedType, RequestBody, WriteVersionedError, WriteVersionedType,
};

#[cfg(test)]
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LeaveGroupRequestMember {
    /// The member ID to remove from the group.
    pub member_id: String_,

    /// The group instance ID to remove from the group.
    pub group_instance_id: NullableString,
}

impl<W> WriteVersionedType<W> for LeaveGroupRequestMember
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((3..=3).contains(&v));

        self.member_id.write(writer)?;
        self.group_instance_id.write(writer)?;

        Ok(())
    }
}

// this is not technically required for production but helpful for testing
impl<R> ReadVersionedType<R> for LeaveGroupRequestMember
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((3..=3).contains(&v));

        Ok(Self {
            member_id: String_::read(reader)?,
            group_instance_id: NullableString::read(reader)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LeaveGroupRequest {
    /// The ID of the group to leave.
    pub group_id: String_,

    /// The member ID to remove from the group.
    ///
    /// Removed in version 3 (replaced by [`members`](Self::members)).
    pub member_id: Option<String_>,

    /// The members leaving the group.
    ///
    /// Added in version 3.
    #[cfg_attr(
        test,
        proptest(
            strategy = "proptest::option::of(prop::collection::vec(any::<LeaveGroupRequestMember>(), 0..3))"
        )
    )]
    pub members: Option<Vec<LeaveGroupRequestMember>>,
}

impl<W> WriteVersionedType<W> for LeaveGroupRequest
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

        if v < 3 && self.members.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(WriteVersionedError::FieldNotAvailable {
                version,
                field: "members".to_string(),
            });
        }
        if v >= 3 && self.member_id.as_ref().is_some_and(|m| !m.0.is_empty()) {
            return Err(WriteVersionedError::FieldNotAvailable {
                version,
                field: "member_id".to_string(),
            });
        }

        self.group_id.write(writer)?;
        if v < 3 {
            match &self.member_id {
                Some(member_id) => member_id.write(writer)?,
                None => String_(String::new()).write(writer)?,
            }
        } else {
            write_versioned_array(
                writer,
                version,
                Some(self.members.as_deref().unwrap_or_default()),
            )?;
        }

        Ok(())
    }
}

// this is not technically required for production but helpful for testing
impl<R> ReadVersionedType<R> for LeaveGroupRequest
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 3);

        let group_id = String_::read(reader)?;
        let member_id = (v < 3).then(|| String_::read(reader)).transpose()?;
        let members = if v >= 3 {
            Some(read_versioned_array(reader, version)?.unwrap_or_default())
        } else {
            None
        };

        Ok(Self {
            group_id,
            member_id,
            members,
        })
    }
}

impl RequestBody for LeaveGroupRequest {
    type ResponseBody = LeaveGroupResponse;

    const API_KEY: ApiKey = ApiKey::LeaveGroup;

    /// The versions without tagged fields.
    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(0)), ApiVersion(Int16(3)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(4));
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LeaveGroupResponseMember {
    /// The member ID to remove from the group.
    pub member_id: String_,

    /// The group instance ID to remove from the group.
    pub group_instance_id: NullableString,

    /// The error code, or 0 if there was no error.
    #[cfg_attr(test, proptest(strategy = "any::<i16>().prop_map(ApiError::new)"))]
    pub error_code: Option<ApiError>,
}

impl<R> ReadVersionedType<R> for LeaveGroupResponseMember
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!((3..=3).contains(&v));

        Ok(Self {
            member_id: String_::read(reader)?,
            group_instance_id: NullableString::read(reader)?,
            error_code: ApiError::new(Int16::read(reader)?.0),
        })
    }
}

// this is not technically required for production but helpful for testing
impl<W> WriteVersionedType<W> for LeaveGroupResponseMember
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!((3..=3).contains(&v));

        self.member_id.write(writer)?;
        self.group_instance_id.write(writer)?;
        Int16::from(self.error_code).write(writer)?;

        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct LeaveGroupResponse {
    /// The duration in milliseconds for which the request was throttled due to a quota violation, or zero if the
    /// request did not violate any quota.
    ///
    /// Added in version 1.
    pub throttle_time_ms: Option<Int32>,

    /// The error code, or 0 if there was no error.
    #[cfg_attr(test, proptest(strategy = "any::<i16>().prop_map(ApiError::new)"))]
    pub error_code: Option<ApiError>,

    /// Each leaving member's outcome.
    ///
    /// Added in version 3.
    #[cfg_attr(
        test,
        proptest(
            strategy = "proptest::option::of(prop::collection::vec(any::<LeaveGroupResponseMember>(), 0..3))"
        )
    )]
    pub members: Option<Vec<LeaveGroupResponseMember>>,
}

impl<R> ReadVersionedType<R> for LeaveGroupResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 3);

        let throttle_time_ms = (v >= 1).then(|| Int32::read(reader)).transpose()?;
        let error_code = ApiError::new(Int16::read(reader)?.0);
        let members = if v >= 3 {
            Some(read_versioned_array(reader, version)?.unwrap_or_default())
        } else {
            None
        };

        Ok(Self {
            throttle_time_ms,
            error_code,
            members,
        })
    }
}

// this is not technically required for production but helpful for testing
impl<W> WriteVersionedType<W> for LeaveGroupResponse
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
        if v >= 3 {
            write_versioned_array(
                writer,
                version,
                Some(self.members.as_deref().unwrap_or_default()),
            )?;
        }

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::messages::test_utils::test_roundtrip_versioned_normalised;

    use super::*;

    test_roundtrip_versioned_normalised!(
        LeaveGroupRequest,
        LeaveGroupRequest::API_VERSION_RANGE.min(),
        LeaveGroupRequest::API_VERSION_RANGE.max(),
        |mut r, v| {
            let v3 = v.0.0 >= 3;
            r.member_id = (!v3).then(|| r.member_id.unwrap_or(String_(String::new())));
            r.members = v3.then(|| r.members.unwrap_or_default());
            r
        },
        test_roundtrip_leave_group_request
    );

    test_roundtrip_versioned_normalised!(
        LeaveGroupResponse,
        LeaveGroupRequest::API_VERSION_RANGE.min(),
        LeaveGroupRequest::API_VERSION_RANGE.max(),
        |mut r, v| {
            let v = v.0.0;
            r.throttle_time_ms = (v >= 1).then(|| r.throttle_time_ms.unwrap_or(Int32(0)));
            r.members = (v >= 3).then(|| r.members.unwrap_or_default());
            r
        },
        test_roundtrip_leave_group_response
    );

    /// Versions 2 and 3, encoded by hand from Kafka's `LeaveGroupRequest.json`.
    #[test]
    fn request_bytes() {
        let request = LeaveGroupRequest {
            group_id: String_("g".to_owned()),
            member_id: None,
            members: Some(vec![LeaveGroupRequestMember {
                member_id: String_("m".to_owned()),
                group_instance_id: NullableString(Some("i".to_owned())),
            }]),
        };
        let mut buf = vec![];
        request
            .write_versioned(&mut buf, ApiVersion(Int16(3)))
            .unwrap();
        #[rustfmt::skip]
        let expected = [
            0, 1, b'g', // group_id
            0, 0, 0, 1, // members: 1
            0, 1, b'm', // member_id
            0, 1, b'i', // group_instance_id
        ];
        assert_eq!(buf, expected);
        request
            .write_versioned(&mut vec![], ApiVersion(Int16(2)))
            .unwrap_err();

        let request = LeaveGroupRequest {
            group_id: String_("g".to_owned()),
            member_id: Some(String_("m".to_owned())),
            members: None,
        };
        let mut buf = vec![];
        request
            .write_versioned(&mut buf, ApiVersion(Int16(2)))
            .unwrap();
        assert_eq!(buf, [0, 1, b'g', 0, 1, b'm']);
        request
            .write_versioned(&mut vec![], ApiVersion(Int16(3)))
            .unwrap_err();
    }

    /// Version 3, encoded by hand from Kafka's `LeaveGroupResponse.json`.
    #[test]
    fn response_v3_bytes() {
        #[rustfmt::skip]
        let bytes = [
            0, 0, 0, 0, // throttle_time_ms
            0, 0, // error_code
            0, 0, 0, 1, // members: 1
            0, 1, b'm', // member_id
            0xff, 0xff, // group_instance_id: null
            0, 25, // error_code: UNKNOWN_MEMBER_ID
        ];
        let mut cursor = std::io::Cursor::new(bytes);
        let response =
            LeaveGroupResponse::read_versioned(&mut cursor, ApiVersion(Int16(3))).unwrap();
        assert_eq!(cursor.position(), bytes.len() as u64);
        assert_eq!(
            response,
            LeaveGroupResponse {
                throttle_time_ms: Some(Int32(0)),
                error_code: None,
                members: Some(vec![LeaveGroupResponseMember {
                    member_id: String_("m".to_owned()),
                    group_instance_id: NullableString(None),
                    error_code: Some(ApiError::UnknownMemberId),
                }]),
            }
        );
    }
}
