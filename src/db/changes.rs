//! Change notifications for table `some_model`: a statement trigger (migration V4) notifies
//! channel `rowsync_some_model` at every commit that changed it, and one dedicated connection
//! listens. Each notification bumps a generation, so a reader can tell whether what it cached
//! is still current. While the listener is down, nothing counts as current.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::sync::CancellationToken;

use crate::config::DatabaseSettings;

/// The channel the trigger notifies.
pub const CHANNEL: &str = "rowsync_some_model";

/// How current the table is, as far as this process has heard.
#[derive(Default)]
pub struct TableVersion {
    generation: AtomicU64,
    listening: AtomicBool,
    /// The listening connection, for [`synced`](Self::synced).
    client: Mutex<Option<Arc<Client>>>,
}

impl TableVersion {
    /// The generation as of now, including every change committed before this call: a round
    /// trip on the listening connection, after which PostgreSQL has delivered every earlier
    /// notification (it sends them before the answer). `None` while changes cannot be heard
    /// or the round trip fails within `timeout`.
    pub async fn synced(&self, timeout: Duration) -> Option<u64> {
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

/// Starts the listener; it reconnects until `cancel` fires.
pub fn listen(
    settings: &DatabaseSettings,
    cancel: CancellationToken,
) -> anyhow::Result<Arc<TableVersion>> {
    let config = settings.pg_config()?;
    let version = Arc::new(TableVersion::default());
    let shared = Arc::clone(&version);
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                outcome = listen_once(&config, &shared) => {
                    shared.client.lock().unwrap_or_else(|e| e.into_inner()).take();
                    shared.set_listening(false);
                    match outcome {
                        Ok(()) => tracing::warn!("change listener connection closed; the listing is not cached until it is back"),
                        Err(error) => tracing::warn!(error = %error, "change listener failed; the listing is not cached until it is back"),
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        shared.set_listening(false);
    });
    Ok(version)
}

/// One connection's life: LISTEN, then count notifications until the connection ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    version: &TableVersion,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let client = Arc::new(client);
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx)).boxed();
    let statement = format!("LISTEN {CHANNEL}");
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
    tracing::debug!("listening for changes to some_model");
    while let Some(message) = messages.next().await {
        if let AsyncMessage::Notification(_) = message? {
            version.changed();
        }
    }
    version
        .client
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    Ok(())
}
