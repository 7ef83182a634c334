//! What runs while a replica holds one generation of its group's assignment ([`Generation`]):
//! heartbeats on a connection of their own (renewing the [`Lease`](super::lease::Lease)), the
//! mirror of PostgreSQL's positions to Kafka's committed offsets, and a periodic look at the
//! topic (the leader asks for a rebalance when partitions were added; everyone refreshes the
//! other replicas' lag). Each tells the supervisor, as an [`Ended`], why the generation ends.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use rskafka::client::{
    consumer_group::{ConsumerGroupClient, Member},
    error::ProtocolError,
    partition::OffsetAt,
};
use tokio::{sync::mpsc, task::JoinSet};

use super::{
    context::{is_unknown_topic, WorkerContext},
    membership::{protocol_error, Assigned},
};
use crate::error::{bounded, Error};

/// How often positions PostgreSQL committed are mirrored to Kafka (coalesced: one OffsetCommit
/// for every partition that moved).
pub const MIRROR_INTERVAL: Duration = Duration::from_secs(1);

/// Why a generation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The coordinator began a rebalance: finish the batch in flight, then rejoin.
    Rebalance,
    /// This replica is no longer a member (fenced, dropped, or no heartbeat accepted within
    /// the session timeout): stop applying at once and rejoin with a fresh identity.
    Lost(String),
    /// The topic's partition count changed (seen by the leader): rejoin, so that the
    /// coordinator rebalances.
    Resized { from: usize, to: usize },
}

/// The tasks of one generation; dropping it stops them.
pub struct Generation {
    tasks: JoinSet<()>,
    events: mpsc::Receiver<Ended>,
}

impl Generation {
    /// Starts heartbeats, the offset mirror and the topic watch for `assigned`; `client` is the
    /// membership's coordinator connection (heartbeats open one of their own).
    pub fn start(
        context: &Arc<WorkerContext>,
        client: Arc<ConsumerGroupClient>,
        assigned: &Assigned,
    ) -> Self {
        let (sender, events) = mpsc::channel(4);
        let mut tasks = JoinSet::new();
        let member = assigned.member.clone();
        tasks.spawn(heartbeats(
            Arc::clone(context),
            member.clone(),
            sender.clone(),
        ));
        tasks.spawn(mirror(
            Arc::clone(context),
            Arc::clone(&client),
            member,
            assigned.partitions.clone(),
            sender.clone(),
        ));
        tasks.spawn(watch(Arc::clone(context), client, assigned.clone(), sender));
        Self { tasks, events }
    }

    /// Waits for the reason this generation ends.
    pub async fn ended(&mut self) -> Ended {
        match self.events.recv().await {
            Some(ended) => ended,
            // Every task ended without a word (cannot happen: they loop until aborted).
            None => std::future::pending().await,
        }
    }

    /// Stops the generation's tasks and waits until they have stopped.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// What a failed heartbeat or offset commit means, if it ends the generation.
fn ending(error: &Error) -> Option<Ended> {
    match protocol_error(error)? {
        ProtocolError::RebalanceInProgress => Some(Ended::Rebalance),
        ProtocolError::UnknownMemberId
        | ProtocolError::IllegalGeneration
        | ProtocolError::FencedInstanceId => Some(Ended::Lost(error.to_string())),
        _ => None,
    }
}

/// Sends a heartbeat every `KAFKA_HEARTBEAT_INTERVAL_MS` on a connection of its own (a join
/// or a slow commit on the other cannot delay it), renewing the lease with each one accepted.
/// A broken connection or a moved coordinator is found again at the next beat; the supervisor
/// ends the generation when the lease runs out meanwhile.
async fn heartbeats(context: Arc<WorkerContext>, member: Member, events: mpsc::Sender<Ended>) {
    let group = &context.group;
    let mut client: Option<ConsumerGroupClient> = None;
    let mut logged_at = None::<Instant>;
    loop {
        tokio::time::sleep(group.heartbeat_interval).await;
        let beat = async {
            if client.is_none() {
                client = Some(context.kafka.group_client(&group.id).await?);
            }
            let client = client.as_ref().expect("connected above");
            let sent = Instant::now();
            bounded(
                "sending a heartbeat",
                group.session_timeout,
                client.heartbeat(&member),
            )
            .await?;
            Ok::<_, Error>(sent)
        };
        match beat.await {
            Ok(sent) => context.lease.renew(sent, group.session_timeout),
            Err(error) => {
                if let Some(ended) = ending(&error) {
                    let _ = events.send(ended).await;
                    return;
                }
                client = None;
                if logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(group = %group.id, error = %error, "heartbeat failed; retrying (this replica stops applying if none succeeds within the session timeout)");
                    logged_at = Some(Instant::now());
                }
            }
        }
    }
}

/// Commits the positions PostgreSQL holds to Kafka, coalesced, off the apply path: a commit
/// that fails is retried at the next tick and never delays or fails a batch. This is what
/// Kafka's own tools read as the group's offsets and lag.
async fn mirror(
    context: Arc<WorkerContext>,
    mut client: Arc<ConsumerGroupClient>,
    member: Member,
    partitions: Vec<i32>,
    events: mpsc::Sender<Ended>,
) {
    let mut logged_at = None::<Instant>;
    let mut tick = tokio::time::interval(MIRROR_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let positions = context.positions.take_unsent(&partitions);
        if positions.is_empty() {
            continue;
        }
        let offsets: Vec<(String, i32, i64)> = positions
            .iter()
            .map(|&(p, o)| (context.topic.clone(), p, o))
            .collect();
        let committed = bounded(
            "committing offsets to Kafka",
            context.kafka.timeout(),
            client.commit_offsets(&member, &offsets),
        )
        .await;
        if let Err(error) = committed {
            context.positions.unsend(&positions);
            if let Some(ended) = ending(&error) {
                let _ = events.send(ended).await;
                return;
            }
            // The coordinator moved, or the connection broke: find it again for the next tick.
            if let Ok(found) = context.kafka.group_client(&context.group.id).await {
                client = Arc::new(found);
            }
            if logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                tracing::warn!(group = %context.group.id, error = %error, "cannot commit offsets to Kafka; retrying (PostgreSQL's offsets are unaffected)");
                logged_at = Some(Instant::now());
            }
        }
    }
}

/// Every `KAFKA_METADATA_MAX_AGE_MS`: the leader re-reads the topic's partitions and ends the
/// generation when their number changed; everyone refreshes what the other replicas
/// committed and the high watermarks of their partitions (their lag in `GET /api/workers/`).
async fn watch(
    context: Arc<WorkerContext>,
    client: Arc<ConsumerGroupClient>,
    assigned: Assigned,
    events: mpsc::Sender<Ended>,
) {
    let mut tick = tokio::time::interval(context.group.metadata_max_age);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if assigned.leader {
            match context.kafka.partitions(&context.topic).await {
                Ok(partitions) if partitions.len() != assigned.topic_partitions => {
                    let (from, to) = (assigned.topic_partitions, partitions.len());
                    tracing::info!(group = %context.group.id, from, to, "the topic's partition count changed; rebalancing");
                    let _ = events.send(Ended::Resized { from, to }).await;
                    return;
                }
                // The topic vanished (deleted, or a broker that lost its topics): recreate it;
                // the next look sees its partitions.
                Err(error) if is_unknown_topic(&error) => context.recreate_topic().await,
                _ => {}
            }
        }
        refresh_others(&context, &client, &assigned).await;
    }
}

/// Reads what the owners of the partitions this replica does not own committed to Kafka, and
/// those partitions' high watermarks; failures leave the previous figures.
async fn refresh_others(
    context: &WorkerContext,
    client: &ConsumerGroupClient,
    assigned: &Assigned,
) {
    let others: Vec<i32> = assigned
        .owners
        .keys()
        .copied()
        .filter(|p| !assigned.partitions.contains(p))
        .collect();
    if others.is_empty() {
        return;
    }
    let topic = context.topic.clone();
    let fetched = bounded(
        "reading the group's offsets",
        context.kafka.timeout(),
        client.fetch_offsets(&[(topic.clone(), others.clone())]),
    )
    .await;
    let committed: BTreeMap<i32, Option<i64>> = match fetched {
        Ok(offsets) => offsets
            .into_iter()
            .filter(|(t, _, _)| *t == topic)
            .map(|(_, p, o)| (p, o))
            .collect(),
        Err(_) => return,
    };
    let mut high = BTreeMap::new();
    for &partition in &others {
        if let Ok(watermark) = context
            .kafka
            .offset(&topic, partition, OffsetAt::Latest)
            .await
        {
            high.insert(partition, watermark);
        }
    }
    context.stats.update_cluster(|cluster| {
        for partition in &others {
            if let Some(entry) = cluster.get_mut(partition) {
                entry.committed = committed.get(partition).copied().flatten();
                if let Some(&watermark) = high.get(partition) {
                    entry.high_watermark = Some(watermark);
                }
            }
        }
    });
}
