//! What each worker reports about itself: its state and, per partition, offsets and counters.
//! Written by the consumer loops, read by `GET /api/workers/`.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicI64, Ordering::Relaxed},
        Arc, Mutex,
    },
};

use chrono::{DateTime, Utc};
use poem_openapi::{Enum, Object};

use super::kind::WorkerKind;

/// A worker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum WorkerState {
    /// Not running; nothing is consumed.
    Stopped,
    /// Consuming its topic.
    Running,
    /// Running, but the last call to Kafka or PostgreSQL failed; retrying with backoff.
    Retrying,
    /// Running, but a partition holds a record batch that cannot be decoded (a codec rowsync
    /// lacks, a corrupt batch): that partition stays there (see its `stalled_at_offset`) until
    /// the batch becomes readable or its offset is reset past it; the others go on.
    Stalled,
    /// Stopped by an unexpected failure; start it again to retry.
    Failed,
}

/// A worker's report.
#[derive(Debug, Clone, Object)]
pub struct WorkerStatus {
    /// The worker's name: `upcreate` or `delete`.
    pub name: String,
    /// The topic it reads.
    pub topic: String,
    /// Its state.
    pub state: WorkerState,
    /// When it entered this state.
    pub since: DateTime<Utc>,
    /// One entry per partition it has consumed since the service started.
    pub partitions: Vec<PartitionStatus>,
    /// What keeps the worker from consuming at all (it cannot join its consumer group),
    /// while that lasts; partition failures show in their partition.
    #[oai(skip_serializing_if_is_none)]
    pub last_error: Option<String>,
    /// When `last_error` last happened.
    #[oai(skip_serializing_if_is_none)]
    pub last_error_at: Option<DateTime<Utc>>,
    /// This replica in the worker's consumer group, once it has joined.
    #[oai(skip_serializing_if_is_none)]
    pub group: Option<GroupStatus>,
}

/// A replica's membership of a worker's consumer group (Kafka's group coordinator assigns the
/// partitions; `kafka-consumer-groups.sh --describe --group <group_id>` shows the same group).
#[derive(Debug, Clone, Object)]
pub struct GroupStatus {
    /// The consumer group: `KAFKA_GROUP_ID_PREFIX` + `-` + the worker's name.
    pub group_id: String,
    /// This replica's name (`REPLICA_ID`).
    pub replica_id: String,
    /// This replica's member id in the group, while it is a member.
    #[oai(skip_serializing_if_is_none)]
    pub member_id: Option<String>,
    /// The group's generation this replica last joined (each rebalance starts a new one).
    #[oai(skip_serializing_if_is_none)]
    pub generation: Option<i32>,
    /// Whether this replica led the last rebalance (it computed everyone's assignment).
    pub leader: bool,
    /// `joining` while a rebalance is under way (nothing is applied), `stable` while consuming
    /// its assignment.
    pub phase: GroupPhase,
    /// The partitions assigned to this replica.
    pub assigned_partitions: Vec<i32>,
    /// Rebalances this replica has taken part in since it started.
    pub rebalances: u64,
    /// Time spent rebalancing (not applying), in seconds, since it started.
    pub rebalancing_seconds: f64,
}

/// Where a replica is in its group's cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum GroupPhase {
    /// Joining (or rejoining) the group: nothing is applied meanwhile.
    Joining,
    /// Consuming the partitions the group assigned.
    Stable,
}

/// What this replica knows of a partition another replica owns, from the group's assignment
/// and the offsets the owner mirrors to Kafka.
#[derive(Debug, Clone, Default)]
pub struct ClusterPartition {
    /// The owning replica.
    pub owner: Option<String>,
    /// The next offset the owner committed to Kafka (its mirror of PostgreSQL's).
    pub committed: Option<i64>,
    /// The partition's high watermark when last read.
    pub high_watermark: Option<i64>,
}

/// What a worker knows about one partition of its topic. Fields not known yet (and the error
/// fields while nothing has failed) are left out, never `null`.
#[derive(Debug, Clone, Default, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct PartitionStatus {
    /// The partition.
    pub partition: i32,
    /// Offset of the next record to apply (as stored in PostgreSQL), once known.
    pub next_offset: Option<i64>,
    /// The partition's high watermark at the last fetch.
    pub high_watermark: Option<i64>,
    /// Records not yet applied: high watermark minus next offset.
    pub lag: Option<i64>,
    /// Valid records applied since the service started.
    pub records_applied: u64,
    /// Records that could not be applied (invalid, or refused by PostgreSQL) since the service
    /// started.
    pub records_invalid: u64,
    /// Records written to the dead-letter topic since the service started.
    pub records_dead_lettered: u64,
    /// Times the stored offset was out of range (or its topic recreated) and consumption
    /// restarted from the earliest offset, since the service started.
    pub offset_resets: u64,
    /// Records that arrived without a key while the topic has more than one partition, since
    /// the service started. Order per id holds only within a partition: producers must key
    /// updates by id.
    pub records_unkeyed: u64,
    /// The last error, while the partition is failing (left out once it makes progress again).
    pub last_error: Option<String>,
    /// When the current run of failures began.
    pub failing_since: Option<DateTime<Utc>>,
    /// When the last error happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Attempts that failed in a row (0 while healthy).
    pub failed_attempts: u64,
    /// Offset of a record batch that cannot be decoded (a codec rowsync lacks, a corrupt
    /// batch), while the partition is stalled on it. `reset_offsets` past it is the way out.
    pub stalled_at_offset: Option<i64>,
    /// The replica that owns the partition in the worker's consumer group (`REPLICA_ID`). For a
    /// partition another replica owns, `next_offset` is what it committed to Kafka, and the
    /// counters are this replica's from when it owned it.
    pub owner: Option<String>,
}

/// Live counters of one worker; shared by its loops and the API.
pub struct WorkerStats {
    kind: WorkerKind,
    topic: String,
    /// Short critical sections only (never held across `.await`), hence a std mutex.
    inner: Mutex<Inner>,
    /// Record bytes the worker's partitions hold (fetched, not yet applied) or reserve for
    /// fetches in flight: its fetch budget's count, mirrored for `/metrics`.
    fetch_held_bytes: Arc<AtomicI64>,
}

struct Inner {
    state: WorkerState,
    since: DateTime<Utc>,
    partitions: BTreeMap<i32, PartitionStatus>,
    /// A failure of the worker as a whole (joining its group), with when it last happened.
    error: Option<(String, DateTime<Utc>)>,
    /// This replica in the worker's group, once joined.
    group: Option<GroupStatus>,
    /// Every partition of the topic as the group assigned it, by partition.
    cluster: BTreeMap<i32, ClusterPartition>,
}

impl WorkerStats {
    /// Counters of a stopped worker that has consumed nothing.
    pub fn new(kind: WorkerKind, topic: &str) -> Self {
        Self {
            kind,
            topic: topic.to_owned(),
            inner: Mutex::new(Inner {
                state: WorkerState::Stopped,
                since: Utc::now(),
                partitions: BTreeMap::new(),
                error: None,
                group: None,
                cluster: BTreeMap::new(),
            }),
            fetch_held_bytes: Arc::default(),
        }
    }

    /// Record bytes the worker's partitions hold now (fetched, not yet applied) or reserve.
    pub fn fetch_held_bytes(&self) -> i64 {
        self.fetch_held_bytes.load(Relaxed)
    }

    /// Where the worker's fetch budget mirrors its count.
    pub(super) fn fetch_held_gauge(&self) -> Arc<AtomicI64> {
        Arc::clone(&self.fetch_held_bytes)
    }

    /// The worker's state: `stalled` while any partition is stalled on a batch it cannot decode,
    /// else `retrying` while any partition's last attempt failed.
    pub fn state(&self) -> WorkerState {
        let inner = self.lock();
        effective_state(&inner)
    }

    /// Records a state change (the time is kept only when the state really changes).
    pub fn set_state(&self, state: WorkerState) {
        let mut inner = self.lock();
        if inner.state != state {
            inner.state = state;
            inner.since = Utc::now();
        }
    }

    /// Edits one partition's entry.
    pub fn update(&self, partition: i32, edit: impl FnOnce(&mut PartitionStatus)) {
        let mut inner = self.lock();
        let entry = inner
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionStatus {
                partition,
                ..Default::default()
            });
        edit(entry);
        entry.lag = match (entry.high_watermark, entry.next_offset) {
            (Some(high), Some(next)) => Some((high - next).max(0)),
            _ => None,
        };
    }

    /// Records (or, with `None`, clears) a failure of the worker as a whole.
    pub fn set_error(&self, error: Option<String>) {
        let mut inner = self.lock();
        inner.error = error.map(|message| (message, Utc::now()));
    }

    /// Edits one partition's entry if it has one (an entry appears once its partition is
    /// positioned or fails, so every entry the API shows has its offsets or its error).
    pub fn update_existing(&self, partition: i32, edit: impl FnOnce(&mut PartitionStatus)) {
        let mut inner = self.lock();
        if let Some(entry) = inner.partitions.get_mut(&partition) {
            edit(entry);
        }
    }

    /// Edits this replica's group status (created by the first edit from `fresh`).
    pub fn update_group(
        &self,
        fresh: impl FnOnce() -> GroupStatus,
        edit: impl FnOnce(&mut GroupStatus),
    ) {
        let mut inner = self.lock();
        edit(inner.group.get_or_insert_with(fresh));
    }

    /// Replaces the cluster's view of the topic's partitions (owners, committed offsets).
    pub fn set_cluster(&self, cluster: BTreeMap<i32, ClusterPartition>) {
        self.lock().cluster = cluster;
    }

    /// Edits the cluster's view of the topic's partitions.
    pub fn update_cluster(&self, edit: impl FnOnce(&mut BTreeMap<i32, ClusterPartition>)) {
        edit(&mut self.lock().cluster);
    }

    /// A snapshot for the API: every partition this replica consumed, and every partition the
    /// group assigned to another replica (with what that replica committed to Kafka).
    pub fn status(&self) -> WorkerStatus {
        let inner = self.lock();
        let mut partitions = inner.partitions.clone();
        let mine = inner.group.as_ref().map(|g| g.replica_id.as_str());
        for (&partition, cluster) in &inner.cluster {
            let entry = partitions
                .entry(partition)
                .or_insert_with(|| PartitionStatus {
                    partition,
                    ..Default::default()
                });
            entry.owner.clone_from(&cluster.owner);
            if cluster.owner.is_some() && cluster.owner.as_deref() != mine {
                entry.next_offset = cluster.committed;
                entry.high_watermark = cluster.high_watermark;
                entry.lag = match (cluster.high_watermark, cluster.committed) {
                    (Some(high), Some(next)) => Some((high - next).max(0)),
                    _ => None,
                };
            }
        }
        WorkerStatus {
            name: self.kind.name().to_owned(),
            topic: self.topic.clone(),
            state: effective_state(&inner),
            since: inner.since,
            partitions: partitions.into_values().collect(),
            last_error: inner.error.as_ref().map(|(message, _)| message.clone()),
            last_error_at: inner.error.as_ref().map(|(_, at)| *at),
            group: inner.group.clone(),
        }
    }

    /// The partitions this replica consumes now (its group assignment), with its own
    /// counters: what `/metrics` exports, so replicas never export one partition twice.
    pub fn local_partitions(&self) -> Vec<PartitionStatus> {
        let inner = self.lock();
        let assigned = inner.group.as_ref().map(|g| &g.assigned_partitions);
        inner
            .partitions
            .values()
            .filter(|p| assigned.is_none_or(|a| a.contains(&p.partition)))
            .cloned()
            .collect()
    }

    /// This replica's group status, once joined.
    pub fn group(&self) -> Option<GroupStatus> {
        self.lock().group.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain counters behind; they stay usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn effective_state(inner: &Inner) -> WorkerState {
    let stalled = inner
        .partitions
        .values()
        .any(|p| p.stalled_at_offset.is_some());
    let failing =
        inner.error.is_some() || inner.partitions.values().any(|p| p.last_error.is_some());
    match inner.state {
        WorkerState::Running if stalled => WorkerState::Stalled,
        WorkerState::Running if failing => WorkerState::Retrying,
        state => state,
    }
}
