//! The background workers that apply Kafka topics to table `some_model`, and the registry that
//! owns them. The per-partition consumer loop lives in [`consumer`]; its counters in [`stats`].

pub mod consumer;
pub mod stats;

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use tokio::{sync::Mutex, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::kafka::Kafka;
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
    pub async fn start(&self, kind: WorkerKind) -> WorkerState {
        let mut running = self.running.lock().await;
        if let Some(worker) = running.get(&kind) {
            if !worker.task.is_finished() {
                return self.stats[&kind].state();
            }
        }
        let cancel = self.root.child_token();
        let stats = Arc::clone(&self.stats[&kind]);
        stats.set_state(WorkerState::Running);
        let context = Arc::new(consumer::WorkerContext {
            kind,
            topic: self.deps.topics[&kind].clone(),
            pool: self.deps.pool.clone(),
            kafka: self.deps.kafka.clone(),
            stats,
        });
        let task = tokio::spawn(consumer::supervise(context, cancel.clone()));
        running.insert(kind, RunningWorker { cancel, task });
        tracing::info!(worker = %kind, "worker started");
        WorkerState::Running
    }

    /// Stops the worker at its next batch boundary and waits for it; a stopped worker is left as is.
    pub async fn stop(&self, kind: WorkerKind) -> WorkerState {
        let mut running = self.running.lock().await;
        if let Some(worker) = running.remove(&kind) {
            stop_worker(kind, worker).await;
        }
        self.stats[&kind].set_state(WorkerState::Stopped);
        WorkerState::Stopped
    }

    /// Stops every worker (at shutdown).
    pub async fn stop_all(&self) {
        for kind in WorkerKind::ALL {
            self.stop(kind).await;
        }
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
