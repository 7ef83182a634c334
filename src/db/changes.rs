//! Change notifications: statement triggers notify channel `rowsync_some_model` at every commit
//! that changed table `some_model` (migration V4) and `rowsync_workers` at every change to the
//! workers' desired state (V6), and one dedicated connection listens to both. Each table change
//! bumps a generation, so a reader can tell whether what it cached is still current (while the
//! listener is down, nothing counts as current); each desired-state change, and each time the
//! listener (re)connects, bumps [`WorkerChanges`], which the worker registry follows.
//!
//! Its two tasks (the listener and the round trips of [`TableVersion::synced`]) run on the
//! caller's `TaskTracker` and end when the caller's token is cancelled: the application owns them.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::{AsyncMessage, Client};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{tls, Connector};
use crate::config::DatabaseSettings;

/// The channel the trigger on `some_model` notifies.
pub const CHANNEL: &str = "rowsync_some_model";
/// The channel the trigger on `worker_desired_state` notifies.
pub const WORKERS_CHANNEL: &str = "rowsync_workers";

/// Bumped at each change to the workers' desired state in this schema (whichever replica made
/// it), and whenever the listener connects (changes may have been missed meanwhile).
pub type WorkerChanges = tokio::sync::watch::Receiver<u64>;

/// A caller of [`TableVersion::synced`] waiting for the next round trip.
type SyncWaiter = oneshot::Sender<Option<u64>>;

/// How current the table is, as far as this process has heard.
#[derive(Default)]
pub struct TableVersion {
    generation: AtomicU64,
    listening: AtomicBool,
    /// The listening connection, for the round trips of [`synced`](Self::synced).
    client: Mutex<Option<Arc<Client>>>,
    /// Callers of [`synced`](Self::synced), to the task making the round trips (none in a
    /// version that never listens).
    waiters: Option<mpsc::UnboundedSender<SyncWaiter>>,
}

impl TableVersion {
    /// The generation as of now, including every change committed before this call: after a
    /// round trip on the listening connection that started after this call, PostgreSQL has
    /// delivered every earlier notification (it sends them before the answer). Callers that
    /// arrive while a round trip is out share the next one, so a burst of requests costs
    /// PostgreSQL one empty query, not one each. `None` while changes cannot be heard or the
    /// round trip fails within `timeout`.
    pub async fn synced(&self, timeout: Duration) -> Option<u64> {
        let (answer, answered) = oneshot::channel();
        self.waiters.as_ref()?.send(answer).ok()?;
        tokio::time::timeout(timeout, answered).await.ok()?.ok()?
    }

    /// One round trip on the listening connection, then the generation.
    async fn round_trip(&self, timeout: Duration) -> Option<u64> {
        let client = self
            .client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        match tokio::time::timeout(timeout, client.simple_query("")).await {
            Ok(Ok(_)) => self.current(),
            _ => None,
        }
    }

    /// The generation as last heard, or `None` while changes cannot be heard (nothing may be
    /// cached).
    pub fn current(&self) -> Option<u64> {
        // The generation is read after the flag: a listener that drops bumps it after clearing
        // the flag, so a reader never pairs a stale generation with a live flag.
        self.listening
            .load(Ordering::Acquire)
            .then(|| self.generation.load(Ordering::Acquire))
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
        self.changed();
    }
}

/// Starts the listener and its round trips on `tasks`; the listener reconnects until `cancel`
/// fires, and both tasks end then.
pub fn listen(
    settings: &DatabaseSettings,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<(Arc<TableVersion>, WorkerChanges)> {
    let connector = Connector::new(settings)?;
    let (workers, worker_changes) = watch::channel(0);
    let listener = Listener {
        connector,
        schema: settings.schema().to_owned(),
        workers,
    };
    let (waiters, queued) = mpsc::unbounded_channel();
    let version = Arc::new(TableVersion {
        waiters: Some(waiters),
        ..TableVersion::default()
    });
    // A round trip still out at shutdown is abandoned: nobody is waiting for it any more.
    tasks.spawn(cancel.clone().run_until_cancelled_owned(sync_rounds(
        Arc::clone(&version),
        queued,
        settings.timeout(),
    )));
    tasks.spawn(listen_until_cancelled(
        listener,
        Arc::clone(&version),
        cancel,
    ));
    Ok((version, worker_changes))
}

/// What the listening connection needs.
struct Listener {
    connector: Connector,
    /// Desired-state notifications of other schemas (other deployments) are ignored.
    schema: String,
    workers: watch::Sender<u64>,
}

/// Keeps a listening connection, reconnecting with backoff, until `cancel` fires.
async fn listen_until_cancelled(
    listener: Listener,
    version: Arc<TableVersion>,
    cancel: CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            outcome = listen_once(&listener, &version) => {
                version.client.lock().unwrap_or_else(|e| e.into_inner()).take();
                version.set_listening(false);
                match outcome {
                    Ok(()) => tracing::warn!("change listener connection closed; the listing is not cached until it is back"),
                    Err(error) => tracing::warn!(error = %tls::describe(&error), "change listener failed; the listing is not cached until it is back"),
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    version.set_listening(false);
}

/// Answers the callers of [`TableVersion::synced`]: takes everyone queued, makes one round
/// trip (which therefore starts after each of them asked) and answers them all; whoever asks
/// meanwhile waits for the next round.
async fn sync_rounds(
    version: Arc<TableVersion>,
    mut queued: mpsc::UnboundedReceiver<SyncWaiter>,
    timeout: Duration,
) {
    let mut round = Vec::new();
    while queued.recv_many(&mut round, usize::MAX).await > 0 {
        let generation = version.round_trip(timeout).await;
        for waiter in round.drain(..) {
            // A caller that gave up (timed out, or its request went away) is simply skipped.
            let _ = waiter.send(generation);
        }
    }
}

/// One connection's life: LISTEN, then count notifications until the connection ends.
async fn listen_once(
    listener: &Listener,
    version: &TableVersion,
) -> Result<(), tokio_postgres::Error> {
    let connector = &listener.connector;
    let (client, mut connection) = connector.config.connect(connector.tls.clone()).await?;
    let client = Arc::new(client);
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx)).boxed();
    let statement = format!("LISTEN {CHANNEL}; LISTEN {WORKERS_CHANNEL}");
    {
        let listen = client.batch_execute(&statement);
        // The connection must be polled for LISTEN to complete.
        tokio::pin!(listen);
        loop {
            tokio::select! {
                done = &mut listen => { done?; break; }
                message = messages.next() => match message {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error),
                    None => return Ok(()),
                },
            }
        }
    }
    // Whatever changed before LISTEN took effect is covered by this bump.
    *version.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&client));
    version.set_listening(true);
    listener.workers.send_modify(|n| *n += 1);
    tracing::debug!("listening for changes to some_model and to the workers' desired state");
    while let Some(message) = messages.next().await {
        if let AsyncMessage::Notification(notification) = message? {
            if notification.channel() != WORKERS_CHANNEL {
                version.changed();
            } else if notification.payload() == listener.schema {
                listener.workers.send_modify(|n| *n += 1);
            }
        }
    }
    version
        .client
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    Ok(())
}
