//! Kafka's group membership protocol (the "classic" consumer group protocol): find a group's coordinator, join
//! the group, hand out and receive assignments, heartbeat, leave, and commit and fetch the group's offsets.
//!
//! This client sends one request per call and leaves every decision to its caller: a group error (a rebalance in
//! progress, an unknown member id, a stale generation, a coordinator that moved) is returned as
//! [`Error::ServerError`] with the [`ProtocolError`] to match on, and is not retried. A broken connection is
//! returned too; the caller makes a new [`ConsumerGroupClient`].
//!
//! [`consumer_protocol`] encodes and decodes what consumers exchange through the group: their subscriptions and
//! assignments.
//!
//! # References
//! - <https://cwiki.apache.org/confluence/display/KAFKA/Kafka+Client-side+Assignment+Proposal>
//! - [KIP-394](https://cwiki.apache.org/confluence/display/KAFKA/KIP-394%3A+Require+member.id+for+initial+join+group+request)
//! - [KIP-345](https://cwiki.apache.org/confluence/display/KAFKA/KIP-345%3A+Introduce+static+membership+protocol+to+reduce+consumer+rebalances)
//!
//! [`ProtocolError`]: crate::client::error::ProtocolError
use std::ops::ControlFlow;
use std::sync::Arc;

use tracing::{debug, info};

use crate::{
    backoff::{Backoff, BackoffConfig, ErrorOrThrottle},
    client::{
        Client,
        error::{Error, ProtocolError, RequestContext, Result},
    },
    connection::{BrokerCache, BrokerConnection, BrokerConnector},
    messenger::RequestError,
    protocol::{
        messages::{
            COORDINATOR_KEY_TYPE_GROUP, FindCoordinatorRequest, FindCoordinatorResponse,
            HeartbeatRequest, JoinGroupRequest, JoinGroupRequestProtocol, LeaveGroupRequest,
            LeaveGroupRequestMember, OffsetCommitRequest, OffsetCommitRequestPartition,
            OffsetCommitRequestTopic, OffsetFetchRequest, OffsetFetchRequestTopic, RequestBody,
            SyncGroupRequest, SyncGroupRequestAssignment,
        },
        primitives::{Bytes, Int32, Int64, NullableString, String_},
    },
};

pub mod consumer_protocol;

pub use consumer_protocol::{Assignment, ConsumerProtocolError, Subscription};

impl Client {
    /// Asks a broker for `group`'s coordinator (FindCoordinator, key type group) and opens a connection of its
    /// own to it: each call opens a new connection (a member uses one for join/sync/commit and another for
    /// heartbeats, since a broker answers one connection's requests in order and a JoinGroup may be held for the
    /// whole rebalance timeout).
    ///
    /// While the broker answers `COORDINATOR_NOT_AVAILABLE` (the group's coordinator is not yet elected, or the
    /// offsets topic not yet created), asks again under the client's [`BackoffConfig`].
    pub async fn consumer_group_client(
        &self,
        group: impl Into<String>,
    ) -> Result<ConsumerGroupClient> {
        ConsumerGroupClient::new(group.into(), &self.brokers, &self.backoff_config).await
    }
}

/// Who a member is in one generation of its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The group's generation the member joined.
    pub generation_id: i32,

    /// The member id the coordinator assigned.
    pub member_id: String,

    /// The member's static identity ([KIP-345]), if it has one and the coordinator's protocol versions can carry
    /// it.
    ///
    /// [KIP-345]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-345%3A+Introduce+static+membership+protocol+to+reduce+consumer+rebalances
    pub group_instance_id: Option<String>,
}

/// What [`ConsumerGroupClient::join_group`] sends.
#[derive(Debug, Clone)]
pub struct JoinParams {
    /// The member id from an earlier join, or empty for a new member.
    pub member_id: String,

    /// The member's static identity ([KIP-345]); sent only when the negotiated JoinGroup version is 5 or later.
    ///
    /// [KIP-345]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-345%3A+Introduce+static+membership+protocol+to+reduce+consumer+rebalances
    pub group_instance_id: Option<String>,

    /// How long the coordinator waits for a heartbeat before it removes the member, in milliseconds.
    pub session_timeout_ms: i32,

    /// How long the coordinator waits for every member to rejoin during a rebalance, in milliseconds (JoinGroup
    /// version 0 has no such field; the coordinator then uses the session timeout).
    pub rebalance_timeout_ms: i32,

    /// The class of protocols the group implements: `consumer` for consumers.
    pub protocol_type: String,

    /// The protocols the member supports, in order of preference: (assignor name, metadata), the metadata of a
    /// consumer being an encoded [`Subscription`].
    pub protocols: Vec<(String, Vec<u8>)>,
}

/// The outcome of a successful [`ConsumerGroupClient::join_group`].
#[derive(Debug, Clone)]
pub struct Joined {
    /// The generation joined.
    pub generation_id: i32,

    /// The protocol the coordinator selected, or `None` if it selected none (sent as an empty name by the
    /// JoinGroup versions this client uses).
    pub protocol_name: Option<String>,

    /// The member id of the group's leader.
    pub leader: String,

    /// This member's id.
    pub member_id: String,

    /// Every member with its metadata: empty unless this member is the leader.
    pub members: Vec<JoinedMember>,

    /// This member's static identity as given in [`JoinParams`], or `None` if the negotiated JoinGroup version
    /// could not carry it (before version 5).
    pub group_instance_id: Option<String>,
}

impl Joined {
    /// Whether this member is the group's leader, which assigns every member its partitions.
    pub fn is_leader(&self) -> bool {
        self.leader == self.member_id
    }

    /// This member in the joined generation (group_instance_id as given in JoinParams, or None if the broker's
    /// version could not carry it).
    pub fn member(&self) -> Member {
        Member {
            generation_id: self.generation_id,
            member_id: self.member_id.clone(),
            group_instance_id: self.group_instance_id.clone(),
        }
    }
}

/// A member of the group, as the leader learns it from [`Joined::members`].
#[derive(Debug, Clone)]
pub struct JoinedMember {
    /// The member's id.
    pub member_id: String,

    /// The member's static identity, if any (JoinGroup version 5 and later).
    pub group_instance_id: Option<String>,

    /// The member's metadata for the selected protocol: for consumers, an encoded [`Subscription`].
    pub metadata: Vec<u8>,
}

/// A connection to a consumer group's coordinator.
///
/// Made by [`Client::consumer_group_client`]; see the [module documentation](self).
pub struct ConsumerGroupClient {
    group: String,
    coordinator_id: i32,
    connection: BrokerConnection,
}

impl std::fmt::Debug for ConsumerGroupClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerGroupClient")
            .field("group", &self.group)
            .field("coordinator_id", &self.coordinator_id)
            .finish_non_exhaustive()
    }
}

impl ConsumerGroupClient {
    async fn new(
        group: String,
        brokers: &Arc<BrokerConnector>,
        backoff_config: &BackoffConfig,
    ) -> Result<Self> {
        let coordinator = find_coordinator(brokers, backoff_config, &group).await?;
        let coordinator_id = coordinator.node_id.0;
        info!(
            group = group.as_str(),
            coordinator = coordinator_id,
            host = coordinator.host.0.as_str(),
            port = coordinator.port.0,
            "Connecting to group coordinator",
        );
        let connection = brokers
            .connect_at(coordinator_id, &coordinator.host.0, coordinator.port.0)
            .await?;
        Ok(Self {
            group,
            coordinator_id,
            connection,
        })
    }

    /// The group's id.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The coordinator's broker id.
    pub fn coordinator_id(&self) -> i32 {
        self.coordinator_id
    }

    /// JoinGroup. When the coordinator answers MEMBER_ID_REQUIRED, retries once with the member id it returned
    /// (as Java's consumer does) and returns that join's outcome.
    ///
    /// The coordinator may hold the answer until every member has joined, up to the rebalance timeout.
    pub async fn join_group(&self, params: &JoinParams) -> Result<Joined> {
        let group_instance_id = self.if_version::<JoinGroupRequest>(5, &params.group_instance_id);
        let mut request = JoinGroupRequest {
            group_id: String_(self.group.clone()),
            session_timeout_ms: Int32(params.session_timeout_ms),
            rebalance_timeout_ms: Some(Int32(params.rebalance_timeout_ms)),
            member_id: String_(params.member_id.clone()),
            group_instance_id: Some(NullableString(group_instance_id.clone())),
            protocol_type: String_(params.protocol_type.clone()),
            protocols: params
                .protocols
                .iter()
                .map(|(name, metadata)| JoinGroupRequestProtocol {
                    name: String_(name.clone()),
                    metadata: Bytes(metadata.clone()),
                })
                .collect(),
        };

        let mut retried = false;
        let response = loop {
            let response = self.connection.request(&request).await?;
            log_throttle("join_group", response.throttle_time_ms);
            match response.error_code {
                // KIP-394: a new member is given its id and must join again with it.
                Some(ProtocolError::MemberIdRequired) if !retried => {
                    debug!(
                        group = self.group.as_str(),
                        member_id = response.member_id.0.as_str(),
                        "Joining again with the member id the coordinator requires",
                    );
                    request.member_id = response.member_id;
                    retried = true;
                }
                Some(protocol_error) => return Err(self.group_error(protocol_error)),
                None => break response,
            }
        };

        Ok(Joined {
            generation_id: response.generation_id.0,
            protocol_name: Some(response.protocol_name.0).filter(|name| !name.is_empty()),
            leader: response.leader.0,
            member_id: response.member_id.0,
            members: response
                .members
                .into_iter()
                .map(|m| JoinedMember {
                    member_id: m.member_id.0,
                    group_instance_id: m.group_instance_id.and_then(|id| id.0),
                    metadata: m.metadata.0,
                })
                .collect(),
            group_instance_id,
        })
    }

    /// SyncGroup: the leader passes every member's assignment, followers pass none; returns this member's
    /// assignment bytes (empty if none).
    ///
    /// `protocol_type` and `protocol_name` are carried only by SyncGroup version 5 and later, which this client
    /// does not send yet; they are taken so that callers need not change when it does.
    pub async fn sync_group(
        &self,
        member: &Member,
        protocol_type: &str,
        protocol_name: &str,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<u8>> {
        debug!(
            group = self.group.as_str(),
            generation = member.generation_id,
            protocol_type,
            protocol_name,
            assignments = assignments.len(),
            "Syncing group",
        );
        let request = SyncGroupRequest {
            group_id: String_(self.group.clone()),
            generation_id: Int32(member.generation_id),
            member_id: String_(member.member_id.clone()),
            group_instance_id: Some(NullableString(
                self.if_version::<SyncGroupRequest>(3, &member.group_instance_id),
            )),
            assignments: assignments
                .into_iter()
                .map(|(member_id, assignment)| SyncGroupRequestAssignment {
                    member_id: String_(member_id),
                    assignment: Bytes(assignment),
                })
                .collect(),
        };
        let response = self.connection.request(&request).await?;
        log_throttle("sync_group", response.throttle_time_ms);
        match response.error_code {
            Some(protocol_error) => Err(self.group_error(protocol_error)),
            None => Ok(response.assignment.0),
        }
    }

    /// Heartbeat: tells the coordinator that the member is alive. A rebalance is announced as
    /// [`ProtocolError::RebalanceInProgress`].
    pub async fn heartbeat(&self, member: &Member) -> Result<()> {
        let request = HeartbeatRequest {
            group_id: String_(self.group.clone()),
            generation_id: Int32(member.generation_id),
            member_id: String_(member.member_id.clone()),
            group_instance_id: Some(NullableString(
                self.if_version::<HeartbeatRequest>(3, &member.group_instance_id),
            )),
        };
        let response = self.connection.request(&request).await?;
        log_throttle("heartbeat", response.throttle_time_ms);
        match response.error_code {
            Some(protocol_error) => Err(self.group_error(protocol_error)),
            None => Ok(()),
        }
    }

    /// LeaveGroup: removes the member from the group at once, rather than after its session timeout. The first
    /// error, the group's or the member's, is returned.
    ///
    /// A static member ([`Member::group_instance_id`]) is removed too, which starts a rebalance; Kafka's Java
    /// consumer does not leave on close for that reason, and lets the session timeout remove it if it does not
    /// come back.
    pub async fn leave_group(&self, member: &Member) -> Result<()> {
        let batched = self.version_at_least::<LeaveGroupRequest>(3);
        let request = LeaveGroupRequest {
            group_id: String_(self.group.clone()),
            member_id: (!batched).then(|| String_(member.member_id.clone())),
            members: batched.then(|| {
                vec![LeaveGroupRequestMember {
                    member_id: String_(member.member_id.clone()),
                    group_instance_id: NullableString(member.group_instance_id.clone()),
                }]
            }),
        };
        let response = self.connection.request(&request).await?;
        log_throttle("leave_group", response.throttle_time_ms);
        let member_errors = response.members.into_iter().flatten();
        match response
            .error_code
            .or_else(|| member_errors.filter_map(|m| m.error_code).next())
        {
            Some(protocol_error) => Err(self.group_error(protocol_error)),
            None => Ok(()),
        }
    }

    /// OffsetCommit of (topic, partition, next offset) with the member's generation; the first partition-level
    /// error is returned as the error.
    ///
    /// Nothing is sent for no offsets.
    pub async fn commit_offsets(
        &self,
        member: &Member,
        offsets: &[(String, i32, i64)],
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let request = OffsetCommitRequest {
            group_id: String_(self.group.clone()),
            generation_id: Int32(member.generation_id),
            member_id: String_(member.member_id.clone()),
            group_instance_id: Some(NullableString(
                self.if_version::<OffsetCommitRequest>(7, &member.group_instance_id),
            )),
            retention_time_ms: None,
            topics: commit_topics(offsets),
        };
        let response = self.connection.request(&request).await?;
        log_throttle("commit_offsets", response.throttle_time_ms);
        for topic in response.topics {
            for partition in topic.partitions {
                if let Some(protocol_error) = partition.error_code {
                    return Err(Error::ServerError {
                        protocol_error,
                        error_message: None,
                        request: RequestContext::Partition(
                            topic.name.0,
                            partition.partition_index.0,
                        ),
                        response: None,
                        is_virtual: false,
                    });
                }
            }
        }
        Ok(())
    }

    /// OffsetFetch; None where the group has no committed offset (-1).
    ///
    /// A group-level error, or else the first partition-level error, is returned as the error.
    pub async fn fetch_offsets(
        &self,
        topics: &[(String, Vec<i32>)],
    ) -> Result<Vec<(String, i32, Option<i64>)>> {
        let request = OffsetFetchRequest {
            group_id: String_(self.group.clone()),
            topics: Some(
                topics
                    .iter()
                    .map(|(name, partitions)| OffsetFetchRequestTopic {
                        name: String_(name.clone()),
                        partition_indexes: partitions.iter().copied().map(Int32).collect(),
                    })
                    .collect(),
            ),
        };
        let response = self.connection.request(&request).await?;
        log_throttle("fetch_offsets", response.throttle_time_ms);
        if let Some(protocol_error) = response.error_code.flatten() {
            return Err(self.group_error(protocol_error));
        }
        let mut offsets = vec![];
        for topic in response.topics {
            for partition in topic.partitions {
                if let Some(protocol_error) = partition.error_code {
                    return Err(Error::ServerError {
                        protocol_error,
                        error_message: None,
                        request: RequestContext::Partition(
                            topic.name.0,
                            partition.partition_index.0,
                        ),
                        response: None,
                        is_virtual: false,
                    });
                }
                let offset = partition.committed_offset.0;
                offsets.push((
                    topic.name.0.clone(),
                    partition.partition_index.0,
                    (offset >= 0).then_some(offset),
                ));
            }
        }
        Ok(offsets)
    }

    /// Whether the negotiated version of `R` is `min` or later.
    fn version_at_least<R: RequestBody>(&self, min: i16) -> bool {
        self.connection
            .version_for::<R>()
            .is_some_and(|v| v.0.0 >= min)
    }

    /// `value` if the negotiated version of `R` is `min` or later (a field added in `min`), else `None`.
    fn if_version<R: RequestBody>(&self, min: i16, value: &Option<String>) -> Option<String> {
        if self.version_at_least::<R>(min) {
            value.clone()
        } else {
            None
        }
    }

    fn group_error(&self, protocol_error: ProtocolError) -> Error {
        Error::ServerError {
            protocol_error,
            error_message: None,
            request: RequestContext::Group(self.group.clone()),
            response: None,
            is_virtual: false,
        }
    }
}

/// `offsets` by topic, in the order of each topic's first offset.
fn commit_topics(offsets: &[(String, i32, i64)]) -> Vec<OffsetCommitRequestTopic> {
    let mut topics: Vec<OffsetCommitRequestTopic> = vec![];
    for (topic, partition, offset) in offsets {
        let partition = OffsetCommitRequestPartition {
            partition_index: Int32(*partition),
            committed_offset: Int64(*offset),
            committed_leader_epoch: None,
            // What Kafka's Java consumer sends without metadata.
            committed_metadata: NullableString(Some(String::new())),
        };
        match topics.iter_mut().find(|t| t.name.0 == *topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(OffsetCommitRequestTopic {
                name: String_(topic.clone()),
                partitions: vec![partition],
            }),
        }
    }
    topics
}

/// Group requests are not retried, so a broker's request to slow down is only logged.
fn log_throttle(request_name: &'static str, throttle_time_ms: Option<Int32>) {
    if let Some(throttle_time_ms) = throttle_time_ms.map(|t| t.0).filter(|t| *t > 0) {
        debug!(
            request_name,
            throttle_time_ms, "broker asked us to throttle"
        );
    }
}

/// FindCoordinator on an arbitrary broker, asked again under `backoff_config` while the broker answers
/// COORDINATOR_NOT_AVAILABLE or the connection to it breaks.
async fn find_coordinator(
    brokers: &Arc<BrokerConnector>,
    backoff_config: &BackoffConfig,
    group: &str,
) -> Result<FindCoordinatorResponse> {
    let request = &FindCoordinatorRequest {
        key: String_(group.to_owned()),
        key_type: Some(COORDINATOR_KEY_TYPE_GROUP),
    };
    let broker_cache = &**brokers;
    let mut backoff = Backoff::new(backoff_config);
    backoff
        .retry_with_backoff("find_coordinator", || async move {
            let (broker, r#gen) = match broker_cache.get().await {
                Ok(broker) => broker,
                Err(e) => return ControlFlow::Break(Err(e.into())),
            };
            let response = match broker.request(request).await {
                Ok(response) => response,
                Err(e @ (RequestError::Poisoned(_) | RequestError::IO(_))) => {
                    broker_cache
                        .invalidate("find_coordinator: connection broken", r#gen)
                        .await;
                    return ControlFlow::Continue(ErrorOrThrottle::Error(Error::Request(e)));
                }
                Err(e) => return ControlFlow::Break(Err(e.into())),
            };
            log_throttle("find_coordinator", response.throttle_time_ms);
            match response.error_code {
                None => ControlFlow::Break(Ok(response)),
                Some(protocol_error) => {
                    let error = Error::ServerError {
                        protocol_error,
                        error_message: response.error_message.and_then(|m| m.0),
                        request: RequestContext::Group(group.to_owned()),
                        response: None,
                        is_virtual: false,
                    };
                    if protocol_error == ProtocolError::CoordinatorNotAvailable {
                        ControlFlow::Continue(ErrorOrThrottle::Error(error))
                    } else {
                        ControlFlow::Break(Err(error))
                    }
                }
            }
        })
        .await
        .map_err(Error::RetryFailed)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(leader: &str) -> Joined {
        Joined {
            generation_id: 3,
            protocol_name: Some("range".to_owned()),
            leader: leader.to_owned(),
            member_id: "m1".to_owned(),
            members: vec![],
            group_instance_id: Some("i".to_owned()),
        }
    }

    #[test]
    fn joined_member() {
        assert!(joined("m1").is_leader());
        assert!(!joined("m2").is_leader());
        assert_eq!(
            joined("m2").member(),
            Member {
                generation_id: 3,
                member_id: "m1".to_owned(),
                group_instance_id: Some("i".to_owned()),
            }
        );
    }

    #[test]
    fn commits_are_grouped_by_topic() {
        let topics = commit_topics(&[
            ("b".to_owned(), 1, 10),
            ("a".to_owned(), 0, 20),
            ("b".to_owned(), 0, 30),
        ]);
        let topics: Vec<_> = topics
            .iter()
            .map(|t| {
                let partitions: Vec<_> = t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index.0, p.committed_offset.0))
                    .collect();
                (t.name.0.as_str(), partitions)
            })
            .collect();
        assert_eq!(
            topics,
            [("b", vec![(1, 10), (0, 30)]), ("a", vec![(0, 20)])]
        );
    }
}
