//! What a worker's loops share ([`WorkerContext`]), built by one constructor from what the
//! registry holds for every worker ([`WorkerDeps`]). The loops themselves live in
//! [`Supervisor`](super::Supervisor) and [`PartitionConsumer`](super::PartitionConsumer).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use deadpool_postgres::Pool;
use rskafka::{
    client::error::{Error as KafkaError, ProtocolError},
    record::RecordAndOffset,
};

use super::{
    dead_letter::DeadLetterQueue,
    fetch_budget::FetchBudget,
    kind::WorkerKind,
    lease::{Lease, Positions},
    metrics::BatchMetrics,
    stats::WorkerStats,
};
use crate::{config::GroupSettings, error::Error, kafka::Kafka};

/// What every worker needs: where to read, where to write.
#[derive(Clone)]
pub struct WorkerDeps {
    pub pool: Pool,
    pub kafka: Kafka,
    /// The topic each worker reads.
    pub topics: HashMap<WorkerKind, String>,
    /// Where each worker's dead letters go.
    pub dead_letters: HashMap<WorkerKind, DeadLetterQueue>,
    /// Partitions and replication factor of topics rowsync creates.
    pub topic_layout: (i32, i16),
    /// Most bytes one fetch asks for.
    pub fetch_max_bytes: i32,
    /// Most bytes a worker's partitions may have fetched and not yet applied, in all.
    pub fetch_budget_bytes: i64,
    /// Longest the broker may hold a fetch open waiting for records.
    pub fetch_max_wait_ms: i32,
    /// Where batch sizes and latencies are recorded.
    pub batch_metrics: BatchMetrics,
    /// Bound on any single PostgreSQL operation.
    pub db_timeout: Duration,
    /// The consumer groups' names and timeouts.
    pub group: GroupSettings,
}

/// A worker's consumer group: its id, this replica's name in it, and Kafka's timeouts.
#[derive(Debug, Clone)]
pub struct GroupContext {
    /// `KAFKA_GROUP_ID_PREFIX` + `-` + the worker's name.
    pub id: String,
    /// `REPLICA_ID`.
    pub replica_id: String,
    /// `KAFKA_STATIC_MEMBERSHIP`: join with `replica_id` as `group.instance.id`.
    pub static_membership: bool,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub rebalance_timeout: Duration,
    pub metadata_max_age: Duration,
}

/// What one run of one worker's loops share; built by [`WorkerContext::new`], then read-only
/// but for the flags, the lease and the positions at the end.
pub struct WorkerContext {
    pub(super) kind: WorkerKind,
    pub(super) topic: String,
    pub(super) pool: Pool,
    pub(super) kafka: Kafka,
    /// The worker's counters, kept by the registry across runs.
    pub(super) stats: Arc<WorkerStats>,
    /// Where records that cannot be applied go.
    pub(super) dead_letters: DeadLetterQueue,
    /// Partitions and replication factor to recreate the topic with, should it vanish.
    pub(super) topic_layout: (i32, i16),
    /// Most bytes one fetch asks for.
    pub(super) fetch_max_bytes: i32,
    /// Most bytes all the worker's partitions may have fetched and not yet applied.
    pub(super) fetch_budget_bytes: i64,
    /// The record bytes the worker's partitions hold now, against `fetch_budget_bytes`.
    pub(super) fetch_budget: Arc<FetchBudget>,
    /// Partitions this replica consumes now (its group assignment), sharing the budget.
    pub(super) assigned_partitions: AtomicUsize,
    /// Longest the broker may hold a fetch open waiting for records (tansu needs ≥ 1 ms).
    pub(super) fetch_max_wait_ms: i32,
    /// Where batch sizes and latencies are recorded.
    pub(super) batch_metrics: BatchMetrics,
    /// Bound on any single PostgreSQL operation (reading offsets, applying a batch).
    pub(super) db_timeout: Duration,
    /// Partitions of the topic, once listed (0 before): records without a key are counted
    /// when there is more than one.
    pub(super) topic_partitions: AtomicUsize,
    /// Whether this run of the worker has warned about records without a key (once per run).
    unkeyed_warned: AtomicBool,
    /// The worker's consumer group.
    pub(super) group: GroupContext,
    /// Until when this replica may apply: batches commit only within it.
    pub(super) lease: Lease,
    /// PostgreSQL's next offsets, which the membership mirrors to Kafka.
    pub(super) positions: Positions,
}

impl WorkerContext {
    /// The context of one run of worker `kind`, reporting to `stats`.
    pub fn new(kind: WorkerKind, deps: &WorkerDeps, stats: Arc<WorkerStats>) -> Self {
        let fetch_budget = FetchBudget::new(deps.fetch_budget_bytes, stats.fetch_held_gauge());
        Self {
            kind,
            topic: deps.topics[&kind].clone(),
            pool: deps.pool.clone(),
            kafka: deps.kafka.clone(),
            stats,
            dead_letters: deps.dead_letters[&kind].clone(),
            topic_layout: deps.topic_layout,
            fetch_max_bytes: deps.fetch_max_bytes,
            fetch_budget_bytes: deps.fetch_budget_bytes,
            fetch_budget,
            assigned_partitions: AtomicUsize::new(0),
            fetch_max_wait_ms: deps.fetch_max_wait_ms,
            batch_metrics: deps.batch_metrics.clone(),
            db_timeout: deps.db_timeout,
            topic_partitions: AtomicUsize::new(0),
            unkeyed_warned: AtomicBool::new(false),
            group: GroupContext {
                id: deps.group.group_id(kind.name()),
                replica_id: deps.group.replica_id.clone(),
                static_membership: deps.group.kafka_static_membership,
                session_timeout: deps.group.session_timeout(),
                heartbeat_interval: deps.group.heartbeat_interval(),
                rebalance_timeout: deps.group.rebalance_timeout(),
                metadata_max_age: deps.group.metadata_max_age(),
            },
            lease: Lease::default(),
            positions: Positions::default(),
        }
    }

    /// Creates the topic again (a broker that lost its topics, restarted with memory storage, say).
    pub(super) async fn recreate_topic(&self) {
        let (partitions, replication) = self.topic_layout;
        if let Err(error) = self
            .kafka
            .ensure_topics(&[&self.topic], partitions, replication)
            .await
        {
            tracing::warn!(worker = self.kind.name(), topic = %self.topic, error = %error, "cannot recreate the topic");
        }
    }

    /// Records without a key, counted when the topic has more than one partition (their
    /// producer spread one id's updates over partitions, whose order Kafka does not keep);
    /// warns once per run of the worker.
    pub(super) fn count_unkeyed(&self, partition: i32, records: &[RecordAndOffset]) -> u64 {
        let partitions = self.topic_partitions.load(Relaxed);
        if partitions <= 1 {
            return 0;
        }
        let unkeyed = records.iter().filter(|r| r.record.key.is_none()).count() as u64;
        if unkeyed > 0 && !self.unkeyed_warned.swap(true, Relaxed) {
            tracing::warn!(
                worker = self.kind.name(),
                topic = %self.topic,
                partition,
                partitions,
                "records without a key on a topic with several partitions: updates to one id may be applied out of order; key them by id (logged once per worker start)"
            );
        }
        unkeyed
    }

    /// Most bytes one fetch of one partition may ask for now: `KAFKA_FETCH_MAX_BYTES`, or less
    /// so that the partitions this replica holds, each with a batch being applied and one being
    /// fetched, stay within `KAFKA_FETCH_BUDGET_BYTES` together.
    pub(super) fn partition_fetch_max(&self) -> i32 {
        fetch_share(
            self.fetch_budget_bytes,
            self.assigned_partitions.load(Relaxed),
            self.fetch_max_bytes,
        )
    }

    /// Records PostgreSQL's next offset of `partition` after a commit (and in the status).
    pub(super) fn positioned(&self, partition: i32, next: i64) {
        self.positions.set(partition, next);
        self.stats.update(partition, |p| p.next_offset = Some(next));
    }

    /// Fails unless this replica may still apply (its group lease holds): checked right
    /// before each commit, so a replica paused past its session never commits a batch.
    pub(super) fn check_lease(&self) -> Result<(), Error> {
        if self.lease.valid() {
            Ok(())
        } else {
            Err(Error::MembershipLost {
                group: self.group.id.clone(),
            })
        }
    }
}

/// The smallest fetch a partition asks for, whatever the budget: one fetch always brings at
/// least one record batch anyway.
const MIN_FETCH_BYTES: i32 = 16 * 1024;

/// A partition's share of `budget` when `partitions` share it, each holding two fetches (the
/// batch being applied and the next), capped at `max` and at least [`MIN_FETCH_BYTES`].
fn fetch_share(budget: i64, partitions: usize, max: i32) -> i32 {
    let holders = (partitions.max(1) as i64).saturating_mul(2);
    let share = (budget / holders).clamp(MIN_FETCH_BYTES.into(), i32::MAX.into()) as i32;
    share.min(max)
}

/// Whether the broker does not know the topic (then it is worth recreating).
pub(super) fn is_unknown_topic(error: &Error) -> bool {
    matches!(
        error,
        Error::NoPartitions(_)
            | Error::Kafka(KafkaError::ServerError {
                protocol_error: ProtocolError::UnknownTopicOrPartition,
                ..
            })
    )
}

#[cfg(test)]
mod tests {
    use super::fetch_share;

    #[test]
    fn partitions_share_the_fetch_budget_two_fetches_each() {
        let (mib, max) = (1024 * 1024, 1024 * 1024);
        // 3 partitions: the budget does not bind, fetches are as large as configured.
        assert_eq!(fetch_share(8 * mib, 3, max), max);
        // 12 and 48 partitions: the budget binds; all in flight stays within it.
        let twelve = fetch_share(8 * mib, 12, max) as i64 * 2 * 12;
        assert!(twelve <= 8 * mib && twelve > 8 * mib - 24, "{twelve}");
        assert!(fetch_share(8 * mib, 48, max) as i64 * 2 * 48 <= 8 * mib);
        // Never below the floor, nor above the maximum; no partitions yet counts as one.
        assert_eq!(fetch_share(64 * 1024, 1000, max), 16 * 1024);
        assert_eq!(fetch_share(8 * mib, 0, max), max);
        assert_eq!(fetch_share(i64::MAX, 1, i32::MAX), i32::MAX);
    }
}
