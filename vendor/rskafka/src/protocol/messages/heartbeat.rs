//! `Heartbeat` request and response.
//!
//! Only the versions without tagged fields (0 to 3) are implemented.
//!
//! # References
//! - <https://kafka.apache.org/protocol#The_Messages_Heartbeat>
use std::io::{Read, Write};

use crate::protocol::{
    api_key::ApiKey,
    api_version::{ApiVersion, ApiVersionRange},
    error::Error as ApiError,
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
pub struct HeartbeatRequest {
    /// The group id.
    pub group_id: String_,

    /// The generation of the group.
    pub generation_id: Int32,

    /// The member ID.
    pub member_id: String_,

    /// The unique identifier of the consumer instance provided by end user.
    ///
    /// Added in version 3.
    pub group_instance_id: Option<NullableString>,
}

impl<W> WriteVersionedType<W> for HeartbeatRequest
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

        Ok(())
    }
}

// this is not technically required for production but helpful for testing
impl<R> ReadVersionedType<R> for HeartbeatRequest
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
        })
    }
}

impl RequestBody for HeartbeatRequest {
    type ResponseBody = HeartbeatResponse;

    const API_KEY: ApiKey = ApiKey::Heartbeat;

    /// The versions without tagged fields.
    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(0)), ApiVersion(Int16(3)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(4));
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct HeartbeatResponse {
    /// The duration in milliseconds for which the request was throttled due to a quota violation, or zero if the
    /// request did not violate any quota.
    ///
    /// Added in version 1.
    pub throttle_time_ms: Option<Int32>,

    /// The error code, or 0 if there was no error.
    #[cfg_attr(test, proptest(strategy = "any::<i16>().prop_map(ApiError::new)"))]
    pub error_code: Option<ApiError>,
}

impl<R> ReadVersionedType<R> for HeartbeatResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 3);

        Ok(Self {
            throttle_time_ms: (v >= 1).then(|| Int32::read(reader)).transpose()?,
            error_code: ApiError::new(Int16::read(reader)?.0),
        })
    }
}

// this is not technically required for production but helpful for testing
impl<W> WriteVersionedType<W> for HeartbeatResponse
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

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::messages::test_utils::test_roundtrip_versioned_normalised;

    use super::*;

    test_roundtrip_versioned_normalised!(
        HeartbeatRequest,
        HeartbeatRequest::API_VERSION_RANGE.min(),
        HeartbeatRequest::API_VERSION_RANGE.max(),
        |mut r, v| {
            r.group_instance_id = (v.0.0 >= 3).then(|| r.group_instance_id.unwrap_or_default());
            r
        },
        test_roundtrip_heartbeat_request
    );

    test_roundtrip_versioned_normalised!(
        HeartbeatResponse,
        HeartbeatRequest::API_VERSION_RANGE.min(),
        HeartbeatRequest::API_VERSION_RANGE.max(),
        |mut r, v| {
            r.throttle_time_ms = (v.0.0 >= 1).then(|| r.throttle_time_ms.unwrap_or(Int32(0)));
            r
        },
        test_roundtrip_heartbeat_response
    );

    /// Versions 0 and 3, encoded by hand from Kafka's `HeartbeatRequest.json`.
    #[test]
    fn request_bytes() {
        let request = HeartbeatRequest {
            group_id: String_("g".to_owned()),
            generation_id: Int32(-1),
            member_id: String_("m".to_owned()),
            group_instance_id: Some(NullableString(Some("i".to_owned()))),
        };
        let mut buf = vec![];
        request
            .write_versioned(&mut buf, ApiVersion(Int16(3)))
            .unwrap();
        assert_eq!(
            buf,
            [0, 1, b'g', 0xff, 0xff, 0xff, 0xff, 0, 1, b'm', 0, 1, b'i']
        );

        request
            .write_versioned(&mut vec![], ApiVersion(Int16(2)))
            .unwrap_err();
        let request = HeartbeatRequest {
            group_instance_id: None,
            ..request
        };
        let mut buf = vec![];
        request
            .write_versioned(&mut buf, ApiVersion(Int16(0)))
            .unwrap();
        assert_eq!(buf, [0, 1, b'g', 0xff, 0xff, 0xff, 0xff, 0, 1, b'm']);
    }
}
