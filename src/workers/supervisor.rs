//! One worker's supervisor ([`Supervisor`]): finds its topic's partitions and owns one loop per
//! partition, keyed by partition, so a single partition can be started or taken back (as a
//! consumer group's coordinator will assign them). The loop itself is [`PartitionConsumer`]'s.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use backon::ExponentialBackoff;
use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    context::{is_unknown_topic, WorkerContext},
    failures::FailureKind,
    partition::PartitionConsumer,
    stats::WorkerState,
};

/// How long a stop waits for a loop to reach a batch boundary before aborting it. An aborted
/// batch is rolled back whole, so aborting is safe, only slower to recover from.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// Runs one worker: a loop per partition it consumes. Owned by the registry's task for the
/// worker; dropping it aborts every loop (each loop aborts its own fetch ahead).
pub struct Supervisor {
    context: Arc<WorkerContext>,
    /// The worker's token; each loop's token is a child of it, so stopping the worker stops all.
    cancel: CancellationToken,
    /// Every partition loop started and not yet joined.
    loops: JoinSet<()>,
    /// The running loops by partition: the token that stops each, and its task.
    partitions: HashMap<i32, PartitionLoop>,
}

/// A started partition loop.
struct PartitionLoop {
    cancel: CancellationToken,
    task: AbortHandle,
}

impl Supervisor {
    /// A supervisor consuming nothing yet; `cancel` stops the worker.
    pub fn new(context: Arc<WorkerContext>, cancel: CancellationToken) -> Self {
        Self {
            context,
            cancel,
            loops: JoinSet::new(),
            partitions: HashMap::new(),
        }
    }

    /// Runs the worker until cancelled: finds the topic's partitions, starts a loop on each, and
    /// waits for every loop to end.
    pub async fn run(mut self) {
        let Some(partitions) = self.list_partitions().await else {
            return;
        };
        self.context
            .topic_partitions
            .store(partitions.len(), Relaxed);
        for partition in partitions {
            self.start_partition(partition);
        }
        while let Some(joined) = self.loops.join_next_with_id().await {
            self.ended(joined);
        }
    }

    /// Starts consuming `partition`; one already being consumed is left alone.
    pub fn start_partition(&mut self, partition: i32) {
        if self.partitions.contains_key(&partition) {
            return;
        }
        let cancel = self.cancel.child_token();
        let consumer = PartitionConsumer::new(Arc::clone(&self.context), partition);
        let (worker, topic) = (self.context.kind.name(), self.context.topic.as_str());
        // Every line logged by the loop (rskafka's too) carries worker, topic and partition.
        let span = tracing::info_span!("partition", worker, topic, partition);
        let task = self
            .loops
            .spawn(consumer.run(cancel.clone()).instrument(span));
        self.partitions
            .insert(partition, PartitionLoop { cancel, task });
    }

    /// Stops consuming `partition` at its next batch boundary and waits for its loop to end
    /// (aborting it after [`STOP_DEADLINE`]); a partition not being consumed is left alone.
    pub async fn stop_partition(&mut self, partition: i32) {
        let Some(stopping) = self.partitions.remove(&partition) else {
            return;
        };
        stopping.cancel.cancel();
        let id = stopping.task.id();
        let stopped = tokio::time::timeout(STOP_DEADLINE, self.join(id)).await;
        if stopped.is_err() {
            let (worker, topic) = (self.context.kind.name(), self.context.topic.as_str());
            tracing::warn!(
                worker,
                topic,
                partition,
                "partition loop did not stop in time; aborting it"
            );
            stopping.task.abort();
            self.join(id).await;
        }
    }

    /// The partitions being consumed, in no particular order.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }

    /// Waits until loop `id` has ended, reaping any other that ends meanwhile.
    async fn join(&mut self, id: Id) {
        while let Some(joined) = self.loops.join_next_with_id().await {
            if self.ended(joined) == id {
                return;
            }
        }
    }

    /// Forgets a loop that ended; one that panicked marks the worker failed.
    fn ended(&mut self, joined: Result<(Id, ()), JoinError>) -> Id {
        let id = match joined {
            Ok((id, ())) => id,
            Err(error) => {
                let (worker, topic) = (self.context.kind.name(), self.context.topic.as_str());
                // A cancelled loop was aborted by `stop_partition`, which logged it.
                if !error.is_cancelled() {
                    tracing::error!(worker, topic, error = %error, "partition loop died");
                    self.context.stats.set_state(WorkerState::Failed);
                }
                error.id()
            }
        };
        self.partitions.retain(|_, running| running.task.id() != id);
        id
    }

    /// The topic's partitions, retried with backoff until listed; `None` if cancelled first.
    async fn list_partitions(&self) -> Option<Vec<i32>> {
        let (worker, topic) = (self.context.kind.name(), self.context.topic.as_str());
        let mut backoff = FailureKind::Transient.backoff();
        // Logged when it starts failing, then at most once a minute.
        let (mut attempts, mut logged_at) = (0u64, None::<Instant>);
        loop {
            let listed = tokio::select! {
                _ = self.cancel.cancelled() => return None,
                listed = self.context.kafka.partitions(topic) => listed,
            };
            match listed {
                Ok(partitions) => {
                    self.context.stats.set_error(None);
                    return Some(partitions);
                }
                Err(error) => {
                    attempts += 1;
                    // Shown in the worker's status: until listed it has no partition to show it.
                    self.context
                        .stats
                        .set_error(Some(format!("cannot list partitions: {error}")));
                    if logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                        tracing::warn!(worker, topic, error = %error, attempts, "cannot list partitions; retrying with backoff");
                        logged_at = Some(Instant::now());
                    }
                    if is_unknown_topic(&error) {
                        self.context.recreate_topic().await;
                    }
                    if self.sleep_or_cancel(&mut backoff).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Sleeps the next backoff delay; returns `true` if cancelled meanwhile.
    async fn sleep_or_cancel(&self, backoff: &mut ExponentialBackoff) -> bool {
        let delay = backoff.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = self.cancel.cancelled() => true,
            _ = tokio::time::sleep(delay) => false,
        }
    }
}
