//! `FindCoordinator` request and response.
//!
//! Only the versions without tagged fields (0 to 2) are implemented.
//!
//! # References
//! - <https://kafka.apache.org/protocol#The_Messages_FindCoordinator>
//! - [KIP-98](https://cwiki.apache.org/confluence/display/KAFKA/KIP-98+-+Exactly+Once+Delivery+and+Transactional+Messaging)
use std::io::{Read, Write};

use crate::protocol::{
    api_key::ApiKey,
    api_version::{ApiVersion, ApiVersionRange},
    error::Error as ApiError,
    primitives::{Int8, Int16, Int32, NullableString, String_},
    traits::{ReadType, WriteType},
};

use super::{
    ReadVersionedError, ReadVersionedType, RequestBody, WriteVersionedError, WriteVersionedType,
};

#[cfg(test)]
use proptest::prelude::*;

/// [`FindCoordinatorRequest::key_type`] of a consumer group's coordinator.
pub const COORDINATOR_KEY_TYPE_GROUP: Int8 = Int8(0);

/// [`FindCoordinatorRequest::key_type`] of a transactional producer's coordinator.
pub const COORDINATOR_KEY_TYPE_TRANSACTION: Int8 = Int8(1);

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct FindCoordinatorRequest {
    /// The coordinator key: the group id for a group's coordinator.
    pub key: String_,

    /// The coordinator key type: [`COORDINATOR_KEY_TYPE_GROUP`] (the default) or
    /// [`COORDINATOR_KEY_TYPE_TRANSACTION`].
    ///
    /// Added in version 1. Version 0 finds group coordinators only.
    pub key_type: Option<Int8>,
}

impl<W> WriteVersionedType<W> for FindCoordinatorRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 2);

        if v < 1
            && self
                .key_type
                .is_some_and(|t| t != COORDINATOR_KEY_TYPE_GROUP)
        {
            return Err(WriteVersionedError::FieldNotAvailable {
                version,
                field: "key_type".to_string(),
            });
        }

        self.key.write(writer)?;
        if v >= 1 {
            self.key_type
                .unwrap_or(COORDINATOR_KEY_TYPE_GROUP)
                .write(writer)?;
        }

        Ok(())
    }
}

// this is not technically required for production but helpful for testing
impl<R> ReadVersionedType<R> for FindCoordinatorRequest
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 2);

        Ok(Self {
            key: String_::read(reader)?,
            key_type: (v >= 1).then(|| Int8::read(reader)).transpose()?,
        })
    }
}

impl RequestBody for FindCoordinatorRequest {
    type ResponseBody = FindCoordinatorResponse;

    const API_KEY: ApiKey = ApiKey::FindCoordinator;

    /// The versions without tagged fields.
    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(0)), ApiVersion(Int16(2)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(3));
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct FindCoordinatorResponse {
    /// The duration in milliseconds for which the request was throttled due to a quota violation, or zero if the
    /// request did not violate any quota.
    ///
    /// Added in version 1.
    pub throttle_time_ms: Option<Int32>,

    /// The error code, or 0 if there was no error.
    #[cfg_attr(test, proptest(strategy = "any::<i16>().prop_map(ApiError::new)"))]
    pub error_code: Option<ApiError>,

    /// The error message, or null if there was no error.
    ///
    /// Added in version 1.
    pub error_message: Option<NullableString>,

    /// The node id.
    pub node_id: Int32,

    /// The host name.
    pub host: String_,

    /// The port.
    pub port: Int32,
}

impl<R> ReadVersionedType<R> for FindCoordinatorResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 2);

        Ok(Self {
            throttle_time_ms: (v >= 1).then(|| Int32::read(reader)).transpose()?,
            error_code: ApiError::new(Int16::read(reader)?.0),
            error_message: (v >= 1).then(|| NullableString::read(reader)).transpose()?,
            node_id: Int32::read(reader)?,
            host: String_::read(reader)?,
            port: Int32::read(reader)?,
        })
    }
}

// this is not technically required for production but helpful for testing
impl<W> WriteVersionedType<W> for FindCoordinatorResponse
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 2);

        if v >= 1 {
            self.throttle_time_ms.unwrap_or(Int32(0)).write(writer)?;
        }
        Int16::from(self.error_code).write(writer)?;
        if v >= 1 {
            self.error_message
                .clone()
                .unwrap_or_default()
                .write(writer)?;
        }
        self.node_id.write(writer)?;
        self.host.write(writer)?;
        self.port.write(writer)?;

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::messages::test_utils::test_roundtrip_versioned_normalised;

    use super::*;

    test_roundtrip_versioned_normalised!(
        FindCoordinatorRequest,
        FindCoordinatorRequest::API_VERSION_RANGE.min(),
        FindCoordinatorRequest::API_VERSION_RANGE.max(),
        |mut r, v| {
            r.key_type = (v.0.0 >= 1).then(|| r.key_type.unwrap_or(COORDINATOR_KEY_TYPE_GROUP));
            r
        },
        test_roundtrip_find_coordinator_request
    );

    test_roundtrip_versioned_normalised!(
        FindCoordinatorResponse,
        FindCoordinatorRequest::API_VERSION_RANGE.min(),
        FindCoordinatorRequest::API_VERSION_RANGE.max(),
        |mut r, v| {
            let v1 = v.0.0 >= 1;
            r.throttle_time_ms = v1.then(|| r.throttle_time_ms.unwrap_or(Int32(0)));
            r.error_message = v1.then(|| r.error_message.unwrap_or_default());
            r
        },
        test_roundtrip_find_coordinator_response
    );

    #[test]
    fn version_0_finds_group_coordinators_only() {
        let request = FindCoordinatorRequest {
            key: String_("g".to_owned()),
            key_type: Some(COORDINATOR_KEY_TYPE_TRANSACTION),
        };
        let mut buf = vec![];
        request
            .write_versioned(&mut buf, ApiVersion(Int16(0)))
            .unwrap_err();
        request
            .write_versioned(&mut buf, ApiVersion(Int16(1)))
            .unwrap();
        assert_eq!(buf, [0, 1, b'g', 1]);
    }
}
