//! The background workers that apply Kafka topics to table `some_model`, and the registry that
//! owns them. The per-partition consumer loop lives in [`consumer`]; its counters in [`stats`].

pub mod consumer;
pub mod dead_letter;
pub mod failures;
pub mod stats;

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use tokio::{sync::Mutex, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    db,
    error::{bounded, Error, Result},
    kafka::Kafka,
    metrics::BatchMetrics,
};
use dead_letter::DeadLetterQueue;
pub use stats::{WorkerState, WorkerStats};

/// How long `stop` waits for a worker to reach a batch boundary before aborting it.
/// An aborted batch is rolled back whole, so aborting is safe, only slower to recover from.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// The two workers rowsync runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkerKind {
    /// Upserts rows from `UPDATES_TOPIC` messages `{"id": 5, "name": "smth"}`.
    Upcreate,
    /// Deletes rows named by `DELETE_TOPIC` messages `{"id": 1}`.
    Delete,
}

impl WorkerKind {
    /// Every worker, in a fixed order.
    pub const ALL: [WorkerKind; 2] = [WorkerKind::Upcreate, WorkerKind::Delete];

    /// The worker's name in the API, the logs and the stored offsets.
    pub fn name(self) -> &'static str {
        match self {
            WorkerKind::Upcreate => "upcreate",
            WorkerKind::Delete => "delete",
        }
    }

    /// The worker named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
    /// Longest the broker may hold a fetch open waiting for records.
    pub fetch_max_wait_ms: i32,
    /// Where batch sizes and latencies are recorded.
    pub batch_metrics: BatchMetrics,
    /// Bound on any single PostgreSQL operation.
    pub db_timeout: Duration,
}

/// A started worker: the token that asks it to stop and the task to wait for.
struct RunningWorker {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// Owns every worker task: starts them, stops them, and keeps their counters.
///
/// Nothing a worker spawns outlives it: the supervisor task owns its partition loops
/// (a `JoinSet`), and the registry owns the supervisor.
pub struct WorkerRegistry {
    deps: WorkerDeps,
    /// Started workers. A tokio mutex, held across the whole of a start or a stop, so that a
    /// start never overlaps a stop still draining its last batch (two loops on one partition).
    running: Mutex<HashMap<WorkerKind, RunningWorker>>,
    stats: HashMap<WorkerKind, Arc<WorkerStats>>,
    /// Parent of every worker's token: cancelled at shutdown.
    root: CancellationToken,
}

impl WorkerRegistry {
    /// A registry with every worker stopped.
    pub fn new(deps: WorkerDeps, root: CancellationToken) -> Self {
        let stats = WorkerKind::ALL
            .into_iter()
            .map(|kind| (kind, Arc::new(WorkerStats::new(kind, &deps.topics[&kind]))))
            .collect();
        Self {
            deps,
            running: Mutex::new(HashMap::new()),
            stats,
            root,
        }
    }

    /// Starts the worker unless it is running already (then this changes nothing).
    ///
    /// The wish is stored in PostgreSQL first, so the worker runs again after a restart.
    pub async fn start(&self, kind: WorkerKind) -> Result<WorkerState> {
        let mut running = self.running.lock().await;
        self.set_desired(kind, true).await?;
        if let Some(worker) = running.get(&kind) {
            if !worker.task.is_finished() {
                return Ok(self.stats[&kind].state());
            }
        }
        running.insert(kind, self.spawn(kind));
        tracing::info!(worker = %kind, "worker started");
        Ok(WorkerState::Running)
    }

    /// Stops the worker at its next batch boundary and waits for it; a stopped worker is left as is.
    ///
    /// The wish is stored in PostgreSQL first, so the worker stays stopped after a restart.
    pub async fn stop(&self, kind: WorkerKind) -> Result<WorkerState> {
        let mut running = self.running.lock().await;
        self.set_desired(kind, false).await?;
        if let Some(worker) = running.remove(&kind) {
            stop_worker(kind, worker).await;
        }
        self.stats[&kind].set_state(WorkerState::Stopped);
        Ok(WorkerState::Stopped)
    }

    /// Starts the workers whose stored wish is to run (at start-up).
    pub async fn restore(&self) -> Result<()> {
        let client = self.deps.pool.get().await?;
        let wanted = bounded(
            "reading workers' desired state",
            self.deps.db_timeout,
            db::workers::desired_running(&client),
        )
        .await?;
        drop(client);
        let mut running = self.running.lock().await;
        for kind in wanted.iter().filter_map(|name| WorkerKind::from_name(name)) {
            if let std::collections::hash_map::Entry::Vacant(entry) = running.entry(kind) {
                entry.insert(self.spawn(kind));
                tracing::info!(worker = %kind, "worker resumed: it was running before the restart");
            }
        }
        Ok(())
    }

    /// Stops every worker (at shutdown) without changing their stored wishes.
    pub async fn stop_all(&self) {
        let mut running = self.running.lock().await;
        for (kind, worker) in running.drain() {
            stop_worker(kind, worker).await;
            self.stats[&kind].set_state(WorkerState::Stopped);
        }
    }

    /// Stores new next offsets for a stopped worker; refuses ([`Error::WorkerRunning`]) while it runs.
    ///
    /// `to` maps each partition to change to its new next offset, computed by `plan` (which may
    /// ask the broker); holding the registry lock meanwhile keeps the worker from starting.
    pub async fn reset_offsets<F, Fut>(&self, kind: WorkerKind, plan: F) -> Result<Vec<(i32, i64)>>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<(i32, i64)>>>,
    {
        let running = self.running.lock().await;
        if running.get(&kind).is_some_and(|w| !w.task.is_finished()) {
            return Err(Error::WorkerRunning(kind.name()));
        }
        let topic = self.deps.topics[&kind].clone();
        let offsets = plan(topic.clone()).await?;
        let client = self.deps.pool.get().await?;
        bounded(
            "storing offsets",
            self.deps.db_timeout,
            db::offsets::store(&client, kind.name(), &topic, &offsets),
        )
        .await?;
        for &(partition, offset) in &offsets {
            self.stats[&kind].update(partition, |p| p.next_offset = Some(offset));
        }
        tracing::info!(worker = %kind, topic, ?offsets, "offsets reset");
        Ok(offsets)
    }

    /// The topic a worker reads.
    pub fn topic(&self, kind: WorkerKind) -> &str {
        &self.deps.topics[&kind]
    }

    fn spawn(&self, kind: WorkerKind) -> RunningWorker {
        let cancel = self.root.child_token();
        let stats = Arc::clone(&self.stats[&kind]);
        stats.set_state(WorkerState::Running);
        let context = Arc::new(consumer::WorkerContext {
            kind,
            topic: self.deps.topics[&kind].clone(),
            pool: self.deps.pool.clone(),
            kafka: self.deps.kafka.clone(),
            stats,
            dead_letters: self.deps.dead_letters[&kind].clone(),
            topic_layout: self.deps.topic_layout,
            fetch_max_bytes: self.deps.fetch_max_bytes,
            fetch_max_wait_ms: self.deps.fetch_max_wait_ms,
            batch_metrics: self.deps.batch_metrics.clone(),
            db_timeout: self.deps.db_timeout,
            topic_partitions: Default::default(),
            unkeyed_warned: Default::default(),
        });
        let span = tracing::info_span!("worker", worker = kind.name(), topic = %context.topic);
        let task = tokio::spawn(tracing::Instrument::instrument(
            consumer::supervise(context, cancel.clone()),
            span,
        ));
        RunningWorker { cancel, task }
    }

    async fn set_desired(&self, kind: WorkerKind, running: bool) -> Result<()> {
        let client = self.deps.pool.get().await?;
        bounded(
            "storing a worker's desired state",
            self.deps.db_timeout,
            db::workers::set_desired(&client, kind.name(), running),
        )
        .await
    }

    /// The counters and state of one worker.
    pub fn stats(&self, kind: WorkerKind) -> &WorkerStats {
        &self.stats[&kind]
    }
}

async fn stop_worker(kind: WorkerKind, mut worker: RunningWorker) {
    worker.cancel.cancel();
    match tokio::time::timeout(STOP_DEADLINE, &mut worker.task).await {
        Ok(Ok(())) => tracing::info!(worker = %kind, "worker stopped"),
        Ok(Err(e)) => tracing::error!(worker = %kind, error = %e, "worker task failed"),
        Err(_) => {
            tracing::warn!(worker = %kind, "worker did not stop in time; aborting it");
            worker.task.abort();
        }
    }
}
