//! `JoinGroup` request and response.
//!
//! Only the versions without tagged fields (0 to 5) are implemented.
//!
//! # References
//! - <https://kafka.apache.org/protocol#The_Messages_JoinGroup>
//! - [KIP-394](https://cwiki.apache.org/confluence/display/KAFKA/KIP-394%3A+Require+member.id+for+initial+join+group+request)
//! - [KIP-345](https://cwiki.apache.org/confluence/display/KAFKA/KIP-345%3A+Introduce+static+membership+protocol+to+reduce+consumer+rebalances)
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
pub struct JoinGroupRequestProtocol {
    /// The protocol name (for consumers: the partition assignor's name).
    pub name: String_,

    /// The protocol metadata (for consumers: the encoded subscription).
    pub metadata: Bytes,
}

impl<W> WriteVersionedType<W> for JoinGroupRequestProtocol
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 5);

        self.name.write(writer)?;
        self.metadata.write(writer)?;

        Ok(())
    }
}

// this is not technically required for production but helpful for testing
impl<R> ReadVersionedType<R> for JoinGroupRequestProtocol
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 5);

        Ok(Self {
            name: String_::read(reader)?,
            metadata: Bytes::read(reader)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct JoinGroupRequest {
    /// The group identifier.
    pub group_id: String_,

    /// The coordinator considers the consumer dead if it receives no heartbeat after this timeout in milliseconds.
    pub session_timeout_ms: Int32,

    /// The maximum time in milliseconds that the coordinator will wait for each member to rejoin when rebalancing
    /// the group.
    ///
    /// Added in version 1; defaults to `session_timeout_ms`, which version 0 uses in its place.
    pub rebalance_timeout_ms: Option<Int32>,

    /// The member id assigned by the group coordinator, or empty for a new member.
    pub member_id: String_,

    /// The unique identifier of the consumer instance provided by end user (static membership, [KIP-345]).
    ///
    /// Added in version 5.
    ///
    /// [KIP-345]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-345%3A+Introduce+static+membership+protocol+to+reduce+consumer+rebalances
    pub group_instance_id: Option<NullableString>,

    /// The unique name for the class of protocols implemented by the group we want to join (`consumer` for
    /// consumers).
    pub protocol_type: String_,

    /// The list of protocols that the member supports.
    #[cfg_attr(
        test,
        proptest(strategy = "prop::collection::vec(any::<JoinGroupRequestProtocol>(), 0..3)")
    )]
    pub protocols: Vec<JoinGroupRequestProtocol>,
}

impl<W> WriteVersionedType<W> for JoinGroupRequest
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 5);

        if v < 5 && matches!(self.group_instance_id, Some(NullableString(Some(_)))) {
            return Err(WriteVersionedError::FieldNotAvailable {
                version,
                field: "group_instance_id".to_string(),
            });
        }

        self.group_id.write(writer)?;
        self.session_timeout_ms.write(writer)?;
        if v >= 1 {
            self.rebalance_timeout_ms
                .unwrap_or(self.session_timeout_ms)
                .write(writer)?;
        }
        self.member_id.write(writer)?;
        if v >= 5 {
            self.group_instance_id
                .clone()
                .unwrap_or_default()
                .write(writer)?;
        }
        self.protocol_type.write(writer)?;
        write_versioned_array(writer, version, Some(&self.protocols))?;

        Ok(())
    }
}

// this is not technically required for production but helpful for testing
impl<R> ReadVersionedType<R> for JoinGroupRequest
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 5);

        Ok(Self {
            group_id: String_::read(reader)?,
            session_timeout_ms: Int32::read(reader)?,
            rebalance_timeout_ms: (v >= 1).then(|| Int32::read(reader)).transpose()?,
            member_id: String_::read(reader)?,
            group_instance_id: (v >= 5).then(|| NullableString::read(reader)).transpose()?,
            protocol_type: String_::read(reader)?,
            protocols: read_versioned_array(reader, version)?.unwrap_or_default(),
        })
    }
}

impl RequestBody for JoinGroupRequest {
    type ResponseBody = JoinGroupResponse;

    const API_KEY: ApiKey = ApiKey::JoinGroup;

    /// The versions without tagged fields.
    const API_VERSION_RANGE: ApiVersionRange =
        ApiVersionRange::new(ApiVersion(Int16(0)), ApiVersion(Int16(5)));

    const FIRST_TAGGED_FIELD_IN_REQUEST_VERSION: ApiVersion = ApiVersion(Int16(6));
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct JoinGroupResponseMember {
    /// The group member ID.
    pub member_id: String_,

    /// The unique identifier of the consumer instance provided by end user.
    ///
    /// Added in version 5.
    pub group_instance_id: Option<NullableString>,

    /// The group member metadata.
    pub metadata: Bytes,
}

impl<R> ReadVersionedType<R> for JoinGroupResponseMember
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 5);

        Ok(Self {
            member_id: String_::read(reader)?,
            group_instance_id: (v >= 5).then(|| NullableString::read(reader)).transpose()?,
            metadata: Bytes::read(reader)?,
        })
    }
}

// this is not technically required for production but helpful for testing
impl<W> WriteVersionedType<W> for JoinGroupResponseMember
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 5);

        self.member_id.write(writer)?;
        if v >= 5 {
            self.group_instance_id
                .clone()
                .unwrap_or_default()
                .write(writer)?;
        }
        self.metadata.write(writer)?;

        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct JoinGroupResponse {
    /// The duration in milliseconds for which the request was throttled due to a quota violation, or zero if the
    /// request did not violate any quota.
    ///
    /// Added in version 2.
    pub throttle_time_ms: Option<Int32>,

    /// The error code, or 0 if there was no error.
    #[cfg_attr(test, proptest(strategy = "any::<i16>().prop_map(ApiError::new)"))]
    pub error_code: Option<ApiError>,

    /// The generation ID of the group.
    pub generation_id: Int32,

    /// The group protocol selected by the coordinator.
    pub protocol_name: String_,

    /// The leader of the group.
    pub leader: String_,

    /// The member ID assigned by the group coordinator.
    pub member_id: String_,

    /// The group's members with their metadata: empty unless this member is the leader.
    #[cfg_attr(
        test,
        proptest(strategy = "prop::collection::vec(any::<JoinGroupResponseMember>(), 0..3)")
    )]
    pub members: Vec<JoinGroupResponseMember>,
}

impl<R> ReadVersionedType<R> for JoinGroupResponse
where
    R: Read,
{
    fn read_versioned(reader: &mut R, version: ApiVersion) -> Result<Self, ReadVersionedError> {
        let v = version.0.0;
        assert!(v <= 5);

        Ok(Self {
            throttle_time_ms: (v >= 2).then(|| Int32::read(reader)).transpose()?,
            error_code: ApiError::new(Int16::read(reader)?.0),
            generation_id: Int32::read(reader)?,
            protocol_name: String_::read(reader)?,
            leader: String_::read(reader)?,
            member_id: String_::read(reader)?,
            members: read_versioned_array(reader, version)?.unwrap_or_default(),
        })
    }
}

// this is not technically required for production but helpful for testing
impl<W> WriteVersionedType<W> for JoinGroupResponse
where
    W: Write,
{
    fn write_versioned(
        &self,
        writer: &mut W,
        version: ApiVersion,
    ) -> Result<(), WriteVersionedError> {
        let v = version.0.0;
        assert!(v <= 5);

        if v >= 2 {
            self.throttle_time_ms.unwrap_or(Int32(0)).write(writer)?;
        }
        Int16::from(self.error_code).write(writer)?;
        self.generation_id.write(writer)?;
        self.protocol_name.write(writer)?;
        self.leader.write(writer)?;
        self.member_id.write(writer)?;
        write_versioned_array(writer, version, Some(&self.members))?;

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::messages::test_utils::test_roundtrip_versioned_normalised;

    use super::*;

    test_roundtrip_versioned_normalised!(
        JoinGroupRequest,
        JoinGroupRequest::API_VERSION_RANGE.min(),
        JoinGroupRequest::API_VERSION_RANGE.max(),
        |mut r, v| {
            let v = v.0.0;
            r.rebalance_timeout_ms =
                (v >= 1).then(|| r.rebalance_timeout_ms.unwrap_or(r.session_timeout_ms));
            r.group_instance_id = (v >= 5).then(|| r.group_instance_id.unwrap_or_default());
            r
        },
        test_roundtrip_join_group_request
    );

    test_roundtrip_versioned_normalised!(
        JoinGroupResponse,
        JoinGroupRequest::API_VERSION_RANGE.min(),
        JoinGroupRequest::API_VERSION_RANGE.max(),
        |mut r, v| {
            let v = v.0.0;
            r.throttle_time_ms = (v >= 2).then(|| r.throttle_time_ms.unwrap_or(Int32(0)));
            for m in &mut r.members {
                m.group_instance_id =
                    (v >= 5).then(|| m.group_instance_id.take().unwrap_or_default());
            }
            r
        },
        test_roundtrip_join_group_response
    );

    fn request() -> JoinGroupRequest {
        JoinGroupRequest {
            group_id: String_("g".to_owned()),
            session_timeout_ms: Int32(10_000),
            rebalance_timeout_ms: Some(Int32(60_000)),
            member_id: String_(String::new()),
            group_instance_id: Some(NullableString(Some("i".to_owned()))),
            protocol_type: String_("consumer".to_owned()),
            protocols: vec![JoinGroupRequestProtocol {
                name: String_("range".to_owned()),
                metadata: Bytes(vec![0, 1]),
            }],
        }
    }

    /// Version 5, encoded by hand from Kafka's `JoinGroupRequest.json`.
    #[test]
    fn request_v5_bytes() {
        let mut buf = vec![];
        request()
            .write_versioned(&mut buf, ApiVersion(Int16(5)))
            .unwrap();
        #[rustfmt::skip]
        let expected = [
            0, 1, b'g', // group_id
            0, 0, 0x27, 0x10, // session_timeout_ms: 10000
            0, 0, 0xea, 0x60, // rebalance_timeout_ms: 60000
            0, 0, // member_id: ""
            0, 1, b'i', // group_instance_id
            0, 8, b'c', b'o', b'n', b's', b'u', b'm', b'e', b'r', // protocol_type
            0, 0, 0, 1, // protocols: 1
            0, 5, b'r', b'a', b'n', b'g', b'e', // name
            0, 0, 0, 2, 0, 1, // metadata
        ];
        assert_eq!(buf, expected);
    }

    /// Version 0 has neither the rebalance timeout (dropped: the session timeout stands in for it) nor the
    /// group instance id (refused: the member would lose its static identity).
    #[test]
    fn request_v0_bytes() {
        let mut buf = vec![];
        request()
            .write_versioned(&mut buf, ApiVersion(Int16(4)))
            .unwrap_err();

        let request = JoinGroupRequest {
            group_instance_id: None,
            ..request()
        };
        request
            .write_versioned(&mut buf, ApiVersion(Int16(0)))
            .unwrap();
        #[rustfmt::skip]
        let expected = [
            0, 1, b'g', // group_id
            0, 0, 0x27, 0x10, // session_timeout_ms: 10000
            0, 0, // member_id: ""
            0, 8, b'c', b'o', b'n', b's', b'u', b'm', b'e', b'r', // protocol_type
            0, 0, 0, 1, // protocols: 1
            0, 5, b'r', b'a', b'n', b'g', b'e', // name
            0, 0, 0, 2, 0, 1, // metadata
        ];
        assert_eq!(buf, expected);
    }

    /// Version 5, encoded by hand from Kafka's `JoinGroupResponse.json`.
    #[test]
    fn response_v5_bytes() {
        #[rustfmt::skip]
        let bytes = [
            0, 0, 0, 0, // throttle_time_ms
            0, 0, // error_code
            0, 0, 0, 3, // generation_id
            0, 5, b'r', b'a', b'n', b'g', b'e', // protocol_name
            0, 2, b'm', b'1', // leader
            0, 2, b'm', b'1', // member_id
            0, 0, 0, 2, // members: 2
            0, 2, b'm', b'1', 0, 1, b'i', 0, 0, 0, 1, 7, // m1, instance i, metadata [7]
            0, 2, b'm', b'2', 0xff, 0xff, 0, 0, 0, 0, // m2, no instance id, empty metadata
        ];
        let mut cursor = std::io::Cursor::new(bytes);
        let response =
            JoinGroupResponse::read_versioned(&mut cursor, ApiVersion(Int16(5))).unwrap();
        assert_eq!(cursor.position(), bytes.len() as u64);
        assert_eq!(
            response,
            JoinGroupResponse {
                throttle_time_ms: Some(Int32(0)),
                error_code: None,
                generation_id: Int32(3),
                protocol_name: String_("range".to_owned()),
                leader: String_("m1".to_owned()),
                member_id: String_("m1".to_owned()),
                members: vec![
                    JoinGroupResponseMember {
                        member_id: String_("m1".to_owned()),
                        group_instance_id: Some(NullableString(Some("i".to_owned()))),
                        metadata: Bytes(vec![7]),
                    },
                    JoinGroupResponseMember {
                        member_id: String_("m2".to_owned()),
                        group_instance_id: Some(NullableString(None)),
                        metadata: Bytes(vec![]),
                    },
                ],
            }
        );
    }
}
