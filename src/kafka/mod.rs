//! Kafka: the shared rskafka client (TLS and SASL in [`security`], rustls's configuration in
//! [`tls`]), topic creation at start-up, and per-partition clients; the producer, and the
//! response log's queue and publisher ([`response_log`]).
//! Every call is bounded by `KAFKA_REQUEST_TIMEOUT_MS`: rskafka itself may retry forever.

pub mod codec;
pub mod partitioner;
pub mod producer;
pub mod response_log;
pub mod security;
pub mod tls;

use std::{sync::Arc, time::Duration};

use rskafka::{
    client::{
        consumer_group::ConsumerGroupClient,
        error::{Error as KafkaError, ProtocolError},
        partition::{OffsetAt, PartitionClient, UnknownTopicHandling},
        Client,
    },
    BackoffConfig,
};

use crate::{
    config::{KafkaCompression, KafkaSettings},
    error::{bounded, Error, Result},
};

/// One connection pool to the cluster, shared by the workers and the producers.
#[derive(Clone)]
pub struct Kafka {
    client: Arc<Client>,
    /// Bound on any single call.
    timeout: Duration,
    /// Codec of the batches rowsync writes; `None`: the producer's own default.
    compression: Option<KafkaCompression>,
}

impl Kafka {
    /// Connects to the bootstrap brokers, failing after the request timeout, or at once when
    /// the settings do not fit together, a certificate is refused or credentials are refused.
    /// Every connection the client opens later (partition leaders, the controller) uses the
    /// same TLS and SASL settings.
    pub async fn connect(settings: &KafkaSettings) -> Result<Self> {
        Self::connect_as(settings, "rowsync").await
    }

    /// [`connect`](Self::connect) with `client_id` as Kafka's client id (the replica's name,
    /// which Kafka's tools show beside each group member).
    pub async fn connect_as(settings: &KafkaSettings, client_id: &str) -> Result<Self> {
        let timeout = settings.request_timeout();
        let builder = security::client_builder(settings).map_err(Error::KafkaSettings)?;
        security::log_choices(settings);
        let builder = builder.client_id(client_id).backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(timeout),
        });
        let client = bounded("connecting to kafka", timeout, builder.build()).await?;
        Ok(Self {
            client: Arc::new(client),
            timeout,
            compression: settings.kafka_compression,
        })
    }

    /// Codec of the batches rowsync writes, when `KAFKA_COMPRESSION` sets one.
    pub fn compression(&self) -> Option<KafkaCompression> {
        self.compression
    }

    /// Bound on any single call to Kafka.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Creates each topic that does not exist yet; an existing topic is left as it is.
    pub async fn ensure_topics(
        &self,
        topics: &[&str],
        partitions: i32,
        replication_factor: i16,
    ) -> Result<()> {
        let existing = bounded("listing topics", self.timeout, self.client.list_topics()).await?;
        let controller = self.client.controller_client()?;
        for &topic in topics {
            if existing.iter().any(|t| t.name == topic) {
                continue;
            }
            let timeout_ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
            let created = bounded(
                "creating a topic",
                self.timeout,
                controller.create_topic(topic, partitions, replication_factor, timeout_ms),
            )
            .await;
            match created {
                Ok(()) => tracing::info!(topic, partitions, "created topic"),
                // Another replica created it first.
                Err(Error::Kafka(KafkaError::ServerError {
                    protocol_error: ProtocolError::TopicAlreadyExists,
                    ..
                })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Succeeds when a broker answers a metadata request.
    pub async fn ping(&self) -> Result<()> {
        bounded("listing topics", self.timeout, self.client.list_topics()).await?;
        Ok(())
    }

    /// The partition ids of `topic`, as the broker reports them now.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<i32>> {
        let topics = bounded("listing topics", self.timeout, self.client.list_topics()).await?;
        let partitions: Vec<i32> = topics
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.into_iter().collect())
            .unwrap_or_default();
        if partitions.is_empty() {
            return Err(Error::NoPartitions(topic.to_owned()));
        }
        Ok(partitions)
    }

    /// The earliest offset of one partition, or its latest (the high watermark: the offset the
    /// next record will get).
    pub async fn offset(&self, topic: &str, partition: i32, at: OffsetAt) -> Result<i64> {
        let client = self.partition_client(topic, partition).await?;
        let earliest = bounded(
            "listing an offset",
            self.timeout,
            client.get_offset(OffsetAt::Earliest),
        )
        .await?;
        if matches!(at, OffsetAt::Earliest) {
            return Ok(earliest);
        }
        // ListOffsets(latest) answers the last record's offset on tansu, not the next one's;
        // a fetch's high watermark is the same on every broker.
        let (_, high_watermark) = bounded(
            "reading the high watermark",
            self.timeout,
            client.fetch_records(earliest, 1..2, 1),
        )
        .await?;
        Ok(high_watermark)
    }

    /// A connection of its own to `group`'s coordinator (each call opens one).
    pub async fn group_client(&self, group: &str) -> Result<ConsumerGroupClient> {
        bounded(
            "finding the group coordinator",
            self.timeout,
            self.client.consumer_group_client(group),
        )
        .await
    }

    /// A client for one partition, connected to its leader.
    pub async fn partition_client(&self, topic: &str, partition: i32) -> Result<PartitionClient> {
        bounded(
            "connecting to a partition leader",
            self.timeout,
            self.client
                .partition_client(topic, partition, UnknownTopicHandling::Error),
        )
        .await
    }
}
