//! A worker's membership of its consumer group ([`Membership`]), as Java's consumer coordinator
//! runs it on Kafka's classic protocol: find the coordinator, JoinGroup (again with the member
//! id the coordinator hands out when it requires one), the leader assigns ([`assignor`]),
//! SyncGroup; LeaveGroup when the worker stops. What happens between a join and the next is
//! [`generation`](super::generation)'s; starting and stopping partition loops, the supervisor's.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use rskafka::client::{
    consumer_group::{
        Assignment as WireAssignment, ConsumerGroupClient, JoinParams, Joined, Member, Subscription,
    },
    error::{Error as KafkaError, ProtocolError},
};
use tokio_util::sync::CancellationToken;

use super::{
    assignor::{self, Owners, Subscriber},
    context::{is_unknown_topic, WorkerContext},
    failures::FailureKind,
    stats::{ClusterPartition, GroupPhase, GroupStatus},
};
use crate::error::{bounded, Error, Result};

/// The group protocol type of Kafka's consumers, which Kafka's tools know how to read.
pub const PROTOCOL_TYPE: &str = "consumer";

/// What one join brought: this replica's identity in the generation and its partitions.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub member: Member,
    /// This replica's partitions of the worker's topic.
    pub partitions: Vec<i32>,
    /// Whether this replica leads the generation (it watches the partition count).
    pub leader: bool,
    /// Partitions of the topic when the leader assigned them (0 for followers).
    pub topic_partitions: usize,
    /// The owner of each partition of the topic, by replica name.
    pub owners: BTreeMap<i32, String>,
}

/// How a failed join is retried.
enum Retry {
    /// At once: the coordinator asked for it (a rebalance began, a fresh identity is needed).
    Now,
    /// After a backoff: the coordinator or the broker failed.
    Backoff,
}

/// One worker's membership of its group, across generations.
pub struct Membership {
    context: Arc<WorkerContext>,
    /// The connection for joins, syncs, offset commits and leaving; another carries heartbeats.
    client: Option<Arc<ConsumerGroupClient>>,
    /// The member id the coordinator gave; empty for a fresh identity.
    member_id: String,
    /// The generation last joined, until left or lost.
    member: Option<Member>,
}

impl Membership {
    /// Not a member yet: the worker's lease is revoked until it joins.
    pub fn new(context: Arc<WorkerContext>) -> Self {
        context.lease.revoke();
        Self {
            context,
            client: None,
            member_id: String::new(),
            member: None,
        }
    }

    /// The coordinator connection, opened if needed.
    pub async fn client(&mut self) -> Result<Arc<ConsumerGroupClient>> {
        if let Some(client) = &self.client {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(
            self.context
                .kafka
                .group_client(&self.context.group.id)
                .await?,
        );
        self.client = Some(Arc::clone(&client));
        Ok(client)
    }

    /// Joins the group until assigned, retrying with backoff; `None` if cancelled first.
    pub async fn join(&mut self, cancel: &CancellationToken) -> Option<Assigned> {
        let started = Instant::now();
        self.set_phase(GroupPhase::Joining, None);
        let mut backoff = FailureKind::Transient.backoff();
        let (mut attempts, mut logged_at) = (0u64, None::<Instant>);
        let group = self.context.group.id.clone();
        loop {
            let joined = tokio::select! {
                _ = cancel.cancelled() => return None,
                joined = self.join_once() => joined,
            };
            let error = match joined {
                Ok(assigned) => {
                    self.context.stats.set_error(None);
                    self.assigned(&assigned, started.elapsed());
                    return Some(assigned);
                }
                Err(error) => error,
            };
            let retry = self.after_failure(&error);
            if matches!(retry, Retry::Now) {
                tracing::debug!(group, error = %error, "joining again");
                continue;
            }
            attempts += 1;
            self.context
                .stats
                .set_error(Some(format!("cannot join consumer group {group}: {error}")));
            if logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                tracing::warn!(group, error = %error, attempts, "cannot join the consumer group; retrying with backoff");
                logged_at = Some(Instant::now());
            }
            if is_unknown_topic(&error) {
                self.context.recreate_topic().await;
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// What a failed join or commit means for the next attempt; forgets what it invalidates.
    fn after_failure(&mut self, error: &Error) -> Retry {
        match protocol_error(error) {
            Some(ProtocolError::RebalanceInProgress) => Retry::Now,
            Some(ProtocolError::UnknownMemberId | ProtocolError::IllegalGeneration) => {
                self.forget();
                Retry::Now
            }
            Some(ProtocolError::FencedInstanceId) => {
                // Another running replica has our REPLICA_ID: retrying may take the name back
                // from a replica that died, but is logged, as it is most often a mistake.
                tracing::error!(group = %self.context.group.id, replica = %self.context.group.replica_id, "another member has this replica's REPLICA_ID; two running replicas must not share one");
                self.forget();
                Retry::Backoff
            }
            _ => {
                // The coordinator moved or failed, or the connection broke: find it again.
                self.client = None;
                Retry::Backoff
            }
        }
    }

    /// Starts over with a fresh identity (after being fenced or dropped from the group).
    pub fn forget(&mut self) {
        self.member_id.clear();
        self.member = None;
        self.context.lease.revoke();
    }

    /// One JoinGroup and SyncGroup; the leader assigns in between.
    async fn join_once(&mut self) -> Result<Assigned> {
        let client = self.client().await?;
        let group = &self.context.group;
        let params = JoinParams {
            member_id: self.member_id.clone(),
            group_instance_id: group.static_membership.then(|| group.replica_id.clone()),
            session_timeout_ms: millis(group.session_timeout),
            rebalance_timeout_ms: millis(group.rebalance_timeout),
            protocol_type: PROTOCOL_TYPE.to_owned(),
            protocols: vec![(
                assignor::ASSIGNOR.to_owned(),
                Subscription {
                    topics: vec![self.context.topic.clone()],
                    user_data: Some(assignor::subscription_data(&group.replica_id)),
                    owned_partitions: Vec::new(),
                }
                .encode(),
            )],
        };
        // The coordinator holds a join until every member has joined, up to the rebalance timeout.
        let wait = group.rebalance_timeout + self.context.kafka.timeout();
        let joined = bounded(
            "joining the consumer group",
            wait,
            client.join_group(&params),
        )
        .await?;
        self.member_id.clone_from(&joined.member_id);
        let member = joined.member();
        let (assignments, topic_partitions) = if joined.is_leader() {
            self.assign(&joined).await?
        } else {
            (Vec::new(), 0)
        };
        let protocol = joined
            .protocol_name
            .clone()
            .unwrap_or_else(|| assignor::ASSIGNOR.to_owned());
        // The coordinator restarts the member's session when the sync arrives.
        let sent = Instant::now();
        let bytes = bounded(
            "syncing the consumer group",
            wait,
            client.sync_group(&member, PROTOCOL_TYPE, &protocol, assignments),
        )
        .await?;
        // The sync proves membership as a heartbeat does.
        self.context.lease.renew(sent, group.session_timeout);
        let assignment = if bytes.is_empty() {
            WireAssignment::default()
        } else {
            WireAssignment::decode(&bytes).map_err(|e| {
                Error::BadRequest(format!(
                    "the group leader sent an unreadable assignment: {e}"
                ))
            })?
        };
        let topic = &self.context.topic;
        let mut partitions: Vec<i32> = assignment
            .partitions
            .iter()
            .filter(|(t, _)| t == topic)
            .flat_map(|(_, p)| p.iter().copied())
            .collect();
        partitions.sort_unstable();
        let owners = Owners::decode(assignment.user_data.as_deref())
            .owners
            .remove(topic)
            .unwrap_or_default();
        self.member = Some(member.clone());
        Ok(Assigned {
            member,
            partitions,
            leader: joined.is_leader(),
            topic_partitions,
            owners,
        })
    }

    /// The leader's part: every member's assignment, and the topic's partition count.
    async fn assign(&self, joined: &Joined) -> Result<(Vec<(String, Vec<u8>)>, usize)> {
        let subscribers: Vec<Subscriber> = joined
            .members
            .iter()
            .map(|m| {
                let subscription = Subscription::decode(&m.metadata).unwrap_or_default();
                Subscriber {
                    member_id: m.member_id.clone(),
                    replica: assignor::replica_of(subscription.user_data.as_deref())
                        .or_else(|| m.group_instance_id.clone())
                        .unwrap_or_else(|| m.member_id.clone()),
                    topics: subscription.topics,
                }
            })
            .collect();
        let mut partitions = BTreeMap::new();
        for topic in subscribers.iter().flat_map(|s| &s.topics) {
            if !partitions.contains_key(topic) {
                partitions.insert(topic.clone(), self.context.kafka.partitions(topic).await?);
            }
        }
        let topic_partitions = partitions.get(&self.context.topic).map_or(0, Vec::len);
        let (by_member, owners) = assignor::assign(&partitions, &subscribers);
        let user_data = owners.encode();
        let assignments = by_member
            .into_iter()
            .map(|(member_id, topics)| {
                let assignment = WireAssignment {
                    partitions: topics.into_iter().collect(),
                    user_data: Some(user_data.clone()),
                };
                (member_id, assignment.encode())
            })
            .collect();
        tracing::info!(group = %self.context.group.id, members = subscribers.len(), topic_partitions, "assigned partitions as the group's leader");
        Ok((assignments, topic_partitions))
    }

    /// Commits `positions` (next offsets in PostgreSQL) to Kafka for the current generation.
    pub async fn commit(&mut self, positions: &[(i32, i64)]) -> Result<()> {
        let Some(member) = self.member.clone() else {
            return Ok(());
        };
        if positions.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let offsets: Vec<(String, i32, i64)> = positions
            .iter()
            .map(|&(p, o)| (self.context.topic.clone(), p, o))
            .collect();
        bounded(
            "committing offsets to Kafka",
            self.context.kafka.timeout(),
            client.commit_offsets(&member, &offsets),
        )
        .await
    }

    /// Leaves the group (at stop and shutdown) so the others take the partitions at once.
    pub async fn leave(&mut self) {
        let Some(member) = self.member.take() else {
            return;
        };
        self.context.lease.revoke();
        let left = match self.client().await {
            Ok(client) => {
                bounded(
                    "leaving the consumer group",
                    self.context.kafka.timeout(),
                    client.leave_group(&member),
                )
                .await
            }
            Err(error) => Err(error),
        };
        match left {
            Ok(()) => tracing::info!(group = %self.context.group.id, "left the consumer group"),
            // The coordinator drops the member after the session timeout anyway.
            Err(error) => {
                tracing::warn!(group = %self.context.group.id, error = %error, "could not leave the consumer group; the coordinator drops this replica after the session timeout")
            }
        }
        self.member_id.clear();
        self.set_phase(GroupPhase::Joining, Some(Vec::new()));
    }

    /// Records a completed join in the worker's status.
    fn assigned(&self, assigned: &Assigned, took: Duration) {
        let stats = &self.context.stats;
        stats.update_group(
            || self.fresh_status(),
            |g| {
                g.member_id = Some(assigned.member.member_id.clone());
                g.generation = Some(assigned.member.generation_id);
                g.leader = assigned.leader;
                g.phase = GroupPhase::Stable;
                g.assigned_partitions.clone_from(&assigned.partitions);
                g.rebalances += 1;
                g.rebalancing_seconds += took.as_secs_f64();
            },
        );
        stats.update_cluster(|cluster| {
            cluster.retain(|p, _| assigned.owners.contains_key(p));
            for (&partition, owner) in &assigned.owners {
                cluster
                    .entry(partition)
                    .or_insert_with(ClusterPartition::default)
                    .owner = Some(owner.clone());
            }
        });
        tracing::info!(
            group = %self.context.group.id,
            generation = assigned.member.generation_id,
            leader = assigned.leader,
            partitions = ?assigned.partitions,
            "joined the consumer group"
        );
    }

    /// Marks the status joining (or stable); `assigned` replaces the partitions held.
    pub fn set_phase(&self, phase: GroupPhase, assigned: Option<Vec<i32>>) {
        self.context.stats.update_group(
            || self.fresh_status(),
            |g| {
                g.phase = phase;
                if let Some(partitions) = assigned {
                    g.assigned_partitions = partitions;
                }
            },
        );
    }

    fn fresh_status(&self) -> GroupStatus {
        GroupStatus {
            group_id: self.context.group.id.clone(),
            replica_id: self.context.group.replica_id.clone(),
            member_id: None,
            generation: None,
            leader: false,
            phase: GroupPhase::Joining,
            assigned_partitions: Vec::new(),
            rebalances: 0,
            rebalancing_seconds: 0.0,
        }
    }
}

/// The group-protocol error Kafka answered, if that is what failed.
pub fn protocol_error(error: &Error) -> Option<ProtocolError> {
    match error {
        Error::Kafka(KafkaError::ServerError { protocol_error, .. }) => Some(*protocol_error),
        _ => None,
    }
}

/// A duration as the protocol's `int32` milliseconds.
fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}
