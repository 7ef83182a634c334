//! One worker's supervisor ([`Supervisor`]): keeps the worker a member of its consumer group
//! ([`Membership`]) and runs one loop per partition the group assigns it ([`PartitionConsumer`]).
//! Each generation: join, start the assigned partitions, consume until the generation ends
//! ([`Generation`]), then stop them — at the batch boundary for a rebalance (the eager
//! protocol: never more than the batch in flight), at once when membership is lost (before
//! the coordinator can hand the partitions to another replica) — and join again.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    context::WorkerContext,
    generation::{Ended, Generation},
    membership::{Assigned, Membership},
    partition::PartitionConsumer,
    stats::{GroupPhase, WorkerState},
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

    /// Runs the worker until cancelled: joins its group, consumes what it is assigned, and
    /// joins again whenever a generation ends; leaves the group when cancelled.
    pub async fn run(mut self) {
        let mut membership = Membership::new(Arc::clone(&self.context));
        while let Some(assigned) = membership.join(&self.cancel).await {
            self.context
                .topic_partitions
                .store(assigned.owners.len(), Relaxed);
            // Set before the loops start: each sizes its fetches by its share of the budget.
            self.context
                .assigned_partitions
                .store(assigned.partitions.len(), Relaxed);
            for &partition in &assigned.partitions {
                self.start_partition(partition);
            }
            let ended = match membership.client().await {
                Ok(client) => {
                    let mut generation = Generation::start(&self.context, client, &assigned);
                    let ended = self.consume(&mut generation).await;
                    generation.stop().await;
                    ended
                }
                Err(error) => Some(Ended::Lost(error.to_string())),
            };
            let group = &self.context.group.id;
            match ended {
                None => {
                    self.stop_partitions().await;
                    self.mirror(&mut membership, &assigned).await;
                    membership.leave().await;
                    return;
                }
                Some(Ended::Lost(reason)) => {
                    tracing::warn!(
                        group,
                        reason,
                        "lost the group membership; stopped applying at once, joining again"
                    );
                    membership.set_phase(GroupPhase::Joining, Some(Vec::new()));
                    self.abort_partitions().await;
                    membership.forget();
                }
                Some(ended) => {
                    tracing::info!(
                        group,
                        ?ended,
                        "rebalancing: finishing the batches in flight, then joining again"
                    );
                    membership.set_phase(GroupPhase::Joining, None);
                    self.stop_partitions().await;
                    self.mirror(&mut membership, &assigned).await;
                    if matches!(ended, Ended::Resized { .. }) {
                        // A leader's plain rejoin need not start a new generation (tansu hands
                        // the old assignment back); leaving and joining anew always does.
                        membership.leave().await;
                    }
                }
            }
        }
        // Cancelled while joining: nothing runs, but a member of an earlier generation leaves.
        membership.leave().await;
    }

    /// Consumes until the generation ends (`None`: the worker was cancelled). Ends it as lost
    /// when the lease runs out: no heartbeat accepted within the session timeout.
    async fn consume(&mut self, generation: &mut Generation) -> Option<Ended> {
        loop {
            let lease_ends = self.context.lease.deadline();
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                ended = generation.ended() => return Some(ended),
                _ = sleep_until(lease_ends) => {
                    if !self.context.lease.valid() {
                        return Some(Ended::Lost("no heartbeat was accepted within the session timeout".to_owned()));
                    }
                }
                Some(joined) = self.loops.join_next_with_id() => {
                    self.ended(joined);
                }
            }
        }
    }

    /// Tells Kafka the positions of the partitions just given up, with the generation that
    /// held them (a failure is harmless: PostgreSQL's offsets are the truth).
    async fn mirror(&mut self, membership: &mut Membership, assigned: &Assigned) {
        let positions = self.context.positions.take_unsent(&assigned.partitions);
        if let Err(error) = membership.commit(&positions).await {
            self.context.positions.unsend(&positions);
            tracing::debug!(group = %self.context.group.id, error = %error, "could not commit the last offsets to Kafka");
        }
    }

    /// Stops every partition loop at its batch boundary and waits for them (aborting those
    /// still running after [`STOP_DEADLINE`]).
    async fn stop_partitions(&mut self) {
        for running in self.partitions.values() {
            running.cancel.cancel();
        }
        let deadline = tokio::time::sleep(STOP_DEADLINE);
        tokio::pin!(deadline);
        while !self.partitions.is_empty() {
            tokio::select! {
                joined = self.loops.join_next_with_id() => match joined {
                    Some(joined) => { self.ended(joined); }
                    None => break,
                },
                _ = &mut deadline => {
                    let (worker, topic) = (self.context.kind.name(), self.context.topic.as_str());
                    tracing::warn!(worker, topic, "partition loops did not stop in time; aborting them");
                    self.abort_partitions().await;
                    break;
                }
            }
        }
        self.partitions.clear();
    }

    /// Aborts every partition loop at once (a batch in flight rolls back) and waits for them.
    async fn abort_partitions(&mut self) {
        self.loops.abort_all();
        while let Some(joined) = self.loops.join_next_with_id().await {
            self.ended(joined);
        }
        self.partitions.clear();
    }

    /// Starts consuming `partition`; one already being consumed is left alone.
    fn start_partition(&mut self, partition: i32) {
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
}

/// Sleeps until `at`; forever when there is none.
async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
