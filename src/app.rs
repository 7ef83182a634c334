//! Assembles the service: migrate, connect, create topics, start the response log, bind the
//! listener, resume the workers; then serve until a shutdown signal and stop everything in order.
//!
//! The application owns every task it starts: its own background tasks (change listener, the
//! workers' desired-state follower, shared row reads, response-log publisher) run on one `TaskTracker`, awaited at shutdown after the root
//! `CancellationToken` is cancelled; the worker registry owns the workers, each producer its
//! per-partition tasks. A build that fails part way, or an application dropped unrun, cancels
//! the root token, so it leaves nothing running.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use tokio_util::{
    sync::{CancellationToken, DropGuard},
    task::TaskTracker,
};

use crate::{
    config::{HttpSettings, Settings},
    db::{self, pool_metrics::PoolCollector},
    http::{
        self, auth::Guard, listener::NoDelayAcceptor, listing_cache::ListingCache,
        request_metrics::RequestMetrics, AppState,
    },
    kafka::{
        producer::TopicProducer,
        response_log::{ResponseLog, ResponseLogCollector, ResponseLogStats},
        Kafka,
    },
    metrics::Metrics,
    workers::{
        dead_letter::DeadLetterQueue, metrics::BatchMetrics, WorkerDeps, WorkerKind, WorkerRegistry,
    },
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
    /// Header and keep-alive timeouts, most connections.
    http_limits: HttpSettings,
    state: Arc<AppState>,
    /// The response log's queue (for the middleware) and publisher (drained at shutdown);
    /// `None` when `REST_LOG_ENABLED=false`.
    response_log: Option<ResponseLog>,
    stats: Arc<ResponseLogStats>,
    /// The application's own background tasks: closed and awaited at shutdown.
    tasks: TaskTracker,
    /// The root of every cancellation token (workers, change listener, row reads): cancelled at
    /// shutdown, or when the application is dropped before it runs.
    root: DropGuard,
}

impl Application {
    /// Migrates the database, connects to Kafka, creates missing topics and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings
            .group
            .check(
                settings.database.timeout(),
                Duration::from_millis(settings.kafka.kafka_fetch_max_wait_ms as u64),
            )
            .map_err(anyhow::Error::msg)?;
        db::migrate(&settings.database).await?;
        let pool = db::pool(&settings.database)?;
        // Streamed full listings draw from a pool of their own, so that clients that stop
        // reading cannot take the connections of the workers, `write_to_kafka` and readiness.
        let listing_max = settings
            .listing
            .max_concurrent(settings.database.db_pool_size);
        let listing_pool = db::pool_of_size(&settings.database, listing_max)?;

        let kafka = Kafka::connect_as(&settings.kafka, &settings.group.replica_id)
            .await
            .context("connecting to Kafka")?;
        let topics = &settings.topics;
        let dead_letter_topics: Vec<(WorkerKind, Option<String>)> = WorkerKind::ALL
            .into_iter()
            .map(|kind| (kind, topics.dead_letter_topic(kind)))
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
        let tasks = TaskTracker::new();
        let (response_log, stats) = if topics.rest_log_enabled {
            let rest_log = Arc::new(
                TopicProducer::connect(&kafka, &topics.rest_log_topic)
                    .await
                    .context("connecting to the response-log topic")?,
            );
            let log = ResponseLog::spawn(rest_log, RESPONSE_LOG_QUEUE, &tasks);
            let stats = Arc::clone(&log.stats);
            (Some(log), stats)
        } else {
            tracing::info!("response log off (REST_LOG_ENABLED=false)");
            (None, Arc::default())
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

        // Each part registers what it exports; the order is the order of `/metrics`.
        let mut metrics = Metrics::new();
        let request_metrics = Arc::new(RequestMetrics::register(metrics.registry_mut()));
        let batch_metrics = BatchMetrics::register(metrics.registry_mut());
        let root = CancellationToken::new();
        // Armed from here on: should the build fail (or be dropped), what it started stops.
        let root_guard = root.clone().drop_guard();
        let (table_version, worker_changes) =
            db::changes::listen(&settings.database, root.clone(), &tasks)?;
        let registry = Arc::new(WorkerRegistry::new(
            WorkerDeps {
                pool: pool.clone(),
                kafka: kafka.clone(),
                topics: WorkerKind::ALL
                    .into_iter()
                    .map(|kind| (kind, topics.source_topic(kind).to_owned()))
                    .collect(),
                dead_letters,
                topic_layout: (
                    settings.kafka.topic_partitions,
                    settings.kafka.topic_replication_factor,
                ),
                fetch_max_bytes: settings.kafka.kafka_fetch_max_bytes,
                fetch_budget_bytes: settings.kafka.kafka_fetch_budget_bytes,
                fetch_max_wait_ms: settings.kafka.kafka_fetch_max_wait_ms,
                batch_metrics,
                db_timeout: settings.database.timeout(),
                group: settings.group.clone(),
            },
            root.clone(),
        ));
        let collectors = metrics.registry_mut();
        collectors.register_collector(Box::new(registry.metrics_collector()));
        collectors.register_collector(Box::new(ResponseLogCollector(Arc::clone(&stats))));
        collectors.register_collector(Box::new(PoolCollector::new(vec![
            ("main", pool.clone()),
            ("listing", listing_pool.clone()),
        ])));

        let acceptor = TcpListener::bind(settings.listen_addr)
            .into_acceptor()
            .await
            .with_context(|| format!("binding {}", settings.listen_addr))?;
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().map(|a| a.port()))
            .context("the listener has no TCP address")?;
        // Last, once the port is ours: a failed bind must leave no worker running.
        registry.restore().await.context("resuming workers")?;
        // Connections left unused are closed, in both pools.
        for pool in [&pool, &listing_pool] {
            let idle = settings.database.pool_idle_timeout();
            tasks.spawn(db::close_idle_connections(pool.clone(), idle, root.clone()));
        }
        // From then on, every replica follows the start and stop any replica stores.
        let following = Arc::clone(&registry);
        let cancel = root.clone();
        tasks.spawn(async move { following.follow(worker_changes, cancel).await });

        Ok(Self {
            acceptor,
            port,
            http_limits: settings.http.clone(),
            state: Arc::new(AppState {
                row_reads: db::row_reads::RowReads::spawn(
                    pool.clone(),
                    settings.database.timeout(),
                    &tasks,
                    root.clone(),
                ),
                pool,
                listing_pool,
                listing_slots: http::listing_slots::ListingSlots::new(listing_max),
                send_timeout: settings.listing.send_timeout(),
                registry,
                kafka,
                objects,
                metrics: Arc::new(metrics),
                request_metrics,
                guard: Guard::new(&settings.auth),
                listing: Arc::new(ListingCache::new(table_version)),
                db_timeout: settings.database.timeout(),
            }),
            response_log,
            stats,
            tasks,
            root: root_guard,
        })
    }

    /// The port the API listens on (useful when bound to port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Response-log counters.
    pub fn response_log_stats(&self) -> Arc<ResponseLogStats> {
        Arc::clone(&self.stats)
    }

    /// The application's own background tasks (change listener, shared row reads, response-log
    /// publisher), for tests: closed and empty once [`run_until_stopped`](Self::run_until_stopped)
    /// returns.
    pub fn tasks(&self) -> TaskTracker {
        self.tasks.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish,
    /// stops the workers at a batch boundary, drains the response log and waits for every
    /// background task to end.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        tracing::info!(port = self.port, "serving");
        let (queue, publisher) = match self.response_log {
            Some(log) => (Some(log.queue), Some(log.publisher)),
            None => (None, None),
        };
        let endpoint = http::endpoint(Arc::clone(&self.state), queue);
        http::listener::serve(
            NoDelayAcceptor(self.acceptor),
            endpoint,
            &self.http_limits,
            self.state.send_timeout,
            shutdown,
            REQUEST_DRAIN,
        )
        .await;
        tracing::info!("stopped accepting requests; stopping workers");
        self.state.registry.stop_all().await;
        // Disarmed only to cancel it here, in order; the change listener and row reads end.
        self.root.disarm().cancel();
        // The endpoint, and with it the last response-log sender, is gone: the publisher drains.
        if let Some(publisher) = publisher {
            publisher.drain(RESPONSE_LOG_DRAIN).await;
        }
        self.tasks.close();
        self.tasks.wait().await;
        self.state.pool.close();
        self.state.listing_pool.close();
        tracing::info!("stopped");
        Ok(())
    }
}

/// `rowsync migrate`: applies pending migrations and returns.
pub async fn migrate_only(settings: &Settings) -> anyhow::Result<()> {
    db::migrate(&settings.database).await
}
