//! The worker registry ([`WorkerRegistry`]): starts and stops each worker's supervisor task,
//! stores each worker's wish to run and its offsets in PostgreSQL (resetting them where an
//! operator asks, [`OffsetTarget`]), follows the wishes other replicas store
//! ([`WorkerRegistry::follow`]: one start/stop for the whole cluster), and keeps its counters.
//! What a running worker does is the [`Supervisor`]'s.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rskafka::client::partition::OffsetAt;
use tokio::{sync::Mutex, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{
    context::{WorkerContext, WorkerDeps},
    kind::WorkerKind,
    metrics::WorkersCollector,
    stats::{WorkerState, WorkerStats},
    supervisor::{Supervisor, STOP_DEADLINE},
};
use crate::{
    db::{self, changes::WorkerChanges},
    error::{bounded, Error, Result},
};

/// How often every replica re-reads the desired state, should a notification be missed.
pub const DESIRED_STATE_POLL: Duration = Duration::from_secs(5);

/// Where [`WorkerRegistry::reset_offsets`] moves a stopped worker's next offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetTarget {
    /// Every partition to its oldest record still in the topic: everything is applied again.
    Earliest,
    /// Every partition to its end: only records produced from now on are applied.
    Latest,
    /// The listed partitions (each non-negative) to the given next offsets (non-negative).
    Partitions(Vec<(i32, i64)>),
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
    /// Set by [`stop_all`](Self::stop_all): nothing starts any more (shutdown).
    closed: AtomicBool,
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
            closed: AtomicBool::new(false),
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
        let mut running = self.running.lock().await;
        let wanted = self.desired_running().await?;
        for kind in wanted.iter().filter_map(|name| WorkerKind::from_name(name)) {
            if let std::collections::hash_map::Entry::Vacant(entry) = running.entry(kind) {
                entry.insert(self.spawn(kind));
                tracing::info!(worker = %kind, "worker resumed: it was running before the restart");
            }
        }
        Ok(())
    }

    /// Follows the desired state stored in PostgreSQL, whichever replica stored it: at each
    /// notification and every [`DESIRED_STATE_POLL`], starts the workers that should run here
    /// and stops those that should not. Returns when `cancel` fires.
    pub async fn follow(&self, mut changes: WorkerChanges, cancel: CancellationToken) {
        let mut poll = tokio::time::interval(DESIRED_STATE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut logged_at = None::<Instant>;
        let mut notified = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = changes.changed(), if notified => notified = changed.is_ok(),
                _ = poll.tick() => {}
            }
            if let Err(error) = self.reconcile().await {
                if logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(error = %error, "cannot read the workers' desired state; retrying");
                    logged_at = Some(Instant::now());
                }
            }
        }
    }

    /// Starts and stops workers here to match the desired state in PostgreSQL.
    async fn reconcile(&self) -> Result<()> {
        // Read under the lock: read before it, a start or stop made meanwhile on this replica
        // would be undone by the older reading (the worker stopped and started again).
        let mut running = self.running.lock().await;
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let wanted = self.desired_running().await?;
        for kind in WorkerKind::ALL {
            let want = wanted.iter().any(|name| name == kind.name());
            if want && !running.contains_key(&kind) {
                running.insert(kind, self.spawn(kind));
                tracing::info!(worker = %kind, "worker started: its desired state is running");
            } else if !want {
                if let Some(worker) = running.remove(&kind) {
                    tracing::info!(worker = %kind, "stopping the worker: its desired state is stopped");
                    stop_worker(kind, worker).await;
                    self.stats[&kind].set_state(WorkerState::Stopped);
                }
            }
        }
        Ok(())
    }

    /// Stops every worker (at shutdown) without changing their stored wishes; none starts
    /// again afterwards.
    pub async fn stop_all(&self) {
        let mut running = self.running.lock().await;
        self.closed.store(true, Ordering::Release);
        for (kind, worker) in running.drain() {
            stop_worker(kind, worker).await;
            self.stats[&kind].set_state(WorkerState::Stopped);
        }
    }

    /// Moves where a stopped worker resumes, and stores it; refuses ([`Error::WorkerRunning`])
    /// while it runs. Returns each partition changed with its new next offset.
    ///
    /// The broker is asked for the topic's partitions (a listed partition it lacks is an
    /// [`Error::BadRequest`]) and, for [`OffsetTarget::Earliest`] and [`OffsetTarget::Latest`],
    /// for their offsets; holding the registry lock meanwhile keeps the worker from starting.
    pub async fn reset_offsets(
        &self,
        kind: WorkerKind,
        target: OffsetTarget,
    ) -> Result<Vec<(i32, i64)>> {
        let running = self.running.lock().await;
        if running.get(&kind).is_some_and(|w| !w.task.is_finished()) {
            return Err(Error::WorkerRunning(kind.name()));
        }
        // Running on another replica: its desired state says so.
        let wanted = self.desired_running().await?;
        if wanted.iter().any(|name| name == kind.name()) {
            return Err(Error::WorkerRunning(kind.name()));
        }
        let topic = &self.deps.topics[&kind];
        let offsets = self.plan_reset(topic, target).await?;
        let client = self.deps.pool.get().await?;
        bounded(
            "storing offsets",
            self.deps.db_timeout,
            db::offsets::store(&client, kind.name(), topic, &offsets),
        )
        .await?;
        for &(partition, offset) in &offsets {
            self.stats[&kind].update(partition, |p| p.next_offset = Some(offset));
        }
        tracing::info!(worker = %kind, topic, ?offsets, "offsets reset");
        Ok(offsets)
    }

    /// The next offset of each partition `target` changes, asking the broker what it must.
    async fn plan_reset(&self, topic: &str, target: OffsetTarget) -> Result<Vec<(i32, i64)>> {
        let kafka = &self.deps.kafka;
        let partitions = kafka.partitions(topic).await?;
        let at = match target {
            OffsetTarget::Earliest => OffsetAt::Earliest,
            OffsetTarget::Latest => OffsetAt::Latest,
            OffsetTarget::Partitions(listed) => {
                if let Some((missing, _)) = listed.iter().find(|(p, _)| !partitions.contains(p)) {
                    return Err(Error::BadRequest(format!(
                        "topic {topic} has no partition {missing}"
                    )));
                }
                return Ok(listed);
            }
        };
        let mut offsets = Vec::with_capacity(partitions.len());
        for partition in partitions {
            offsets.push((partition, kafka.offset(topic, partition, at).await?));
        }
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
        let context = Arc::new(WorkerContext::new(kind, &self.deps, stats));
        let span = tracing::info_span!("worker", worker = kind.name(), topic = %context.topic);
        let task = tokio::spawn(tracing::Instrument::instrument(
            Supervisor::new(context, cancel.clone()).run(),
            span,
        ));
        RunningWorker { cancel, task }
    }

    /// Names of the workers whose stored wish is to run, on any replica.
    async fn desired_running(&self) -> Result<Vec<String>> {
        let client = self.deps.pool.get().await?;
        bounded(
            "reading workers' desired state",
            self.deps.db_timeout,
            db::workers::desired_running(&client),
        )
        .await
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

    /// What the workers export to Prometheus at scrape time, read from their counters.
    pub fn metrics_collector(&self) -> WorkersCollector {
        WorkersCollector::new(
            WorkerKind::ALL
                .into_iter()
                .map(|kind| Arc::clone(&self.stats[&kind]))
                .collect(),
        )
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
