//! Assembles the service: migrate, connect, create topics, start the response log, bind the
//! listener; then serve until a shutdown signal and stop everything in order.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use poem::{
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    Server,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Settings,
    db,
    http::{
        self, auth::Guard, listener::NoDelayAcceptor, listing_cache::ListingCache,
        response_log::ResponseLog, AppState,
    },
    kafka::{producer::TopicProducer, Kafka},
    metrics::Metrics,
    workers::{dead_letter::DeadLetterQueue, WorkerDeps, WorkerKind, WorkerRegistry},
};

/// Records the response-log queue holds before it drops new ones.
const RESPONSE_LOG_QUEUE: usize = 10_000;
/// How long in-flight requests may take to finish at shutdown.
const REQUEST_DRAIN: Duration = Duration::from_secs(10);
/// How long the response log may take to publish what is queued at shutdown.
const RESPONSE_LOG_DRAIN: Duration = Duration::from_secs(5);

/// A built service, bound to its port, not yet serving.
pub struct Application {
    acceptor: TcpAcceptor,
    port: u16,
    state: Arc<AppState>,
    /// `None` when `REST_LOG_ENABLED=false`.
    response_log: Option<ResponseLog>,
    response_log_task: Option<JoinHandle<()>>,
    stats: Arc<http::response_log::ResponseLogStats>,
    root: CancellationToken,
}

impl Application {
    /// Migrates the database, connects to Kafka, creates missing topics and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        db::migrate(&settings.database).await?;
        let pool = db::pool(&settings.database)?;

        let kafka = Kafka::connect(&settings.kafka)
            .await
            .context("connecting to Kafka")?;
        let topics = &settings.topics;
        let sources = [
            (WorkerKind::Upcreate, topics.updates_topic.clone()),
            (WorkerKind::Delete, topics.delete_topic.clone()),
        ];
        let dead_letter_topics: Vec<(WorkerKind, Option<String>)> = sources
            .iter()
            .map(|(kind, source)| (*kind, topics.dead_letter_topic(source)))
            .collect();
        let mut all_topics: Vec<&str> = vec![
            &topics.updates_topic,
            &topics.delete_topic,
            &topics.objects_to_kafka_topic,
        ];
        if topics.rest_log_enabled {
            all_topics.push(&topics.rest_log_topic);
        }
        all_topics.extend(dead_letter_topics.iter().filter_map(|(_, t)| t.as_deref()));
        kafka
            .ensure_topics(
                &all_topics,
                settings.kafka.topic_partitions,
                settings.kafka.topic_replication_factor,
            )
            .await
            .context("creating topics")?;
        let objects = Arc::new(
            TopicProducer::connect(&kafka, &topics.objects_to_kafka_topic)
                .await
                .context("connecting to the objects topic")?,
        );
        let (response_log, stats, response_log_task) = if topics.rest_log_enabled {
            let rest_log = Arc::new(
                TopicProducer::connect(&kafka, &topics.rest_log_topic)
                    .await
                    .context("connecting to the response-log topic")?,
            );
            let (log, stats, task) = ResponseLog::spawn(rest_log, RESPONSE_LOG_QUEUE);
            (Some(log), stats, Some(task))
        } else {
            tracing::info!("response log off (REST_LOG_ENABLED=false)");
            (None, Arc::default(), None)
        };

        let mut dead_letters = HashMap::new();
        for (kind, topic) in dead_letter_topics {
            let producer = match topic {
                Some(topic) => Some(Arc::new(
                    TopicProducer::connect(&kafka, &topic)
                        .await
                        .with_context(|| format!("connecting to dead-letter topic {topic}"))?,
                )),
                None => None,
            };
            dead_letters.insert(kind, DeadLetterQueue::new(producer));
        }

        let mut metrics = Metrics::new();
        let root = CancellationToken::new();
        let table_version = db::changes::listen(&settings.database, root.clone())?;
        let registry = Arc::new(WorkerRegistry::new(
            WorkerDeps {
                pool: pool.clone(),
                kafka: kafka.clone(),
                topics: HashMap::from(sources),
                dead_letters,
                topic_layout: (
                    settings.kafka.topic_partitions,
                    settings.kafka.topic_replication_factor,
                ),
                fetch_max_bytes: settings.kafka.kafka_fetch_max_bytes,
                fetch_max_wait_ms: settings.kafka.kafka_fetch_max_wait_ms,
                batch_metrics: metrics.batches(),
                db_timeout: settings.database.timeout(),
            },
            root.clone(),
        ));
        metrics.read_state_from(Arc::clone(&registry), Arc::clone(&stats), pool.clone());
        registry.restore().await.context("resuming workers")?;

        let acceptor = TcpListener::bind(settings.listen_addr)
            .into_acceptor()
            .await
            .with_context(|| format!("binding {}", settings.listen_addr))?;
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().map(|a| a.port()))
            .context("the listener has no TCP address")?;

        Ok(Self {
            acceptor,
            port,
            state: Arc::new(AppState {
                row_reads: db::row_reads::RowReads::spawn(
                    pool.clone(),
                    settings.database.timeout(),
                ),
                pool,
                registry,
                kafka,
                objects,
                metrics: Arc::new(metrics),
                guard: Guard::new(&settings.auth),
                listing: Arc::new(ListingCache::new(table_version)),
                db_timeout: settings.database.timeout(),
            }),
            response_log,
            response_log_task,
            stats,
            root,
        })
    }

    /// The port the API listens on (useful when bound to port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Response-log counters.
    pub fn response_log_stats(&self) -> Arc<http::response_log::ResponseLogStats> {
        Arc::clone(&self.stats)
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish,
    /// stops the workers at a batch boundary and drains the response log.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        tracing::info!(port = self.port, "serving");
        let endpoint = http::endpoint(Arc::clone(&self.state), self.response_log);
        Server::new_with_acceptor(NoDelayAcceptor(self.acceptor))
            .run_with_graceful_shutdown(endpoint, shutdown, Some(REQUEST_DRAIN))
            .await
            .context("serving HTTP")?;
        tracing::info!("stopped accepting requests; stopping workers");
        self.state.registry.stop_all().await;
        self.root.cancel();
        // The endpoint, and with it the last response-log sender, is gone: the publisher drains.
        if let Some(task) = self.response_log_task {
            if tokio::time::timeout(RESPONSE_LOG_DRAIN, task)
                .await
                .is_err()
            {
                tracing::warn!("response log not drained in time; queued records are lost");
            }
        }
        self.state.pool.close();
        tracing::info!("stopped");
        Ok(())
    }
}

/// `rowsync migrate`: applies pending migrations and returns.
pub async fn migrate_only(settings: &Settings) -> anyhow::Result<()> {
    db::migrate(&settings.database).await
}
