use crate::{
    backoff::{Backoff, BackoffConfig, ErrorOrThrottle},
    client::error::{Error, RequestContext, Result},
    connection::{
        BrokerCache, BrokerCacheGeneration, BrokerConnection, BrokerConnector, MessengerTransport,
        MetadataLookupMode,
    },
    messenger::RequestError,
    protocol::{
        error::Error as ProtocolError,
        messages::{
            DeleteRecordsRequest, DeleteRecordsResponse, DeleteRequestPartition,
            DeleteRequestTopic, DeleteResponsePartition, FetchRequest, FetchRequestPartition,
            FetchRequestTopic, FetchResponse, FetchResponsePartition, IsolationLevel,
            ListOffsetsRequest, ListOffsetsRequestPartition, ListOffsetsRequestTopic,
            ListOffsetsResponse, ListOffsetsResponsePartition, NORMAL_CONSUMER, ProduceRequest,
            ProduceRequestPartitionData, ProduceRequestTopicData, ProduceResponse,
        },
        primitives::*,
        record::{Record as ProtocolRecord, *},
    },
    record::{Record, RecordAndOffset},
    throttle::maybe_throttle,
    validation::ExactlyOne,
};
use chrono::{DateTime, LocalResult, TimeZone, Utc};
use std::{
    collections::HashSet,
    ops::{ControlFlow, Deref, Range},
    sync::Arc,
};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::{error::ServerErrorResponse, metadata_cache::MetadataCacheGeneration};

/// How strongly a [`PartitionClient`] is bound to a partition.
///
/// Under some circumstances and broker implementations, you might face a [`ProtocolError::UnknownTopicOrPartition`]
/// for nearly all operations directly after topic/partition creation. Since the Kafka protocol offers no (at least
/// to our knowledge) way to differentiate between "a topic/partition actually does not exist" and "our multiverse
/// split brain is not synced up yet", we can only offer you a manual way to wait for topic existence.
///
/// We offer the following ways to deal with this:
///
/// - Use a [`Error`](Self::Error). All other methods (including the creation of a [`PartitionClient`]) may produce
///   sporadic [`ProtocolError::UnknownTopicOrPartition`] errors.
/// - Use a [`Retry`](Self::Error) which assumes a partition exists and retries [`ProtocolError::UnknownTopicOrPartition`]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownTopicHandling {
    /// When a [`ProtocolError::UnknownTopicOrPartition`] is returned by Kafka,
    /// it is passed up to the user to handle.
    ///
    /// These errors may occur spuriously.
    Error,

    /// Always retry operations that return a
    /// [`ProtocolError::UnknownTopicOrPartition`], until the operation succeeds
    /// or a different error is returned.
    ///
    /// This may unpredictably increase operation latency.
    Retry,
}

/// Compression of records.
///
/// This is only relevant for [produce requests](PartitionClient::produce). There the client compresses the records.
///
/// For [fetch requests](PartitionClient::fetch_records) we have to accept a message as it exists, i.e. how it was
/// originally compressed. The broker will NOT change the data compression based on our request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    #[default]
    NoCompression,
    #[cfg(feature = "compression-gzip")]
    Gzip,
    #[cfg(feature = "compression-lz4")]
    Lz4,
    #[cfg(feature = "compression-snappy")]
    Snappy,
    #[cfg(feature = "compression-zstd")]
    Zstd,
}

/// Which type of offset should be requested by [`PartitionClient::get_offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetAt {
    /// Earliest existing record.
    ///
    /// This is NOT the earliest produced record but the earliest record that is still kept, i.e. the offset might
    /// change if records are pruned by Kafka (retention policy) or if the are deleted.
    Earliest,

    /// The latest existing record.
    Latest,

    /// Timestamp
    ///
    /// The Kafka API supports querying an offset based on a timestamp, but the behavior seems to be
    /// semi-defined, unintuitive (even within Apache Kafka) and inconsistent between Apache Kafka and Redpanda. Mostly it
    /// offers timestamp based querying with millisecond precision.
    Timestamp(DateTime<Utc>),
}

/// rowsync patch: what [`PartitionClient::fetch_records_detailed`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecords {
    /// Records at or after `offset`, in offset order; control batches and aborted transactions left out.
    pub records: Vec<RecordAndOffset>,

    /// The partition's high watermark.
    pub high_watermark: i64,

    /// The partition's last stable offset: every transaction before it is decided. A fetch (which
    /// asks for `READ_COMMITTED`) gets nothing at or past it, so while a transaction is open an
    /// empty answer below the high watermark is normal. `None` if the broker did not say.
    pub last_stable_offset: Option<i64>,

    /// The base offset of the first record batch in the answer, whether or not it reaches
    /// `offset` (control batches and batches of aborted transactions included); `None` when the
    /// answer held no batch. A fetch from inside a batch gets that whole batch from Kafka, so
    /// this is at or before `offset`; a broker that answers with a later batch shows here.
    pub first_offset: Option<i64>,

    /// One past the last offset of the last record batch in the answer that reaches `offset`
    /// (`base_offset + last_offset_delta + 1`), counting control batches and batches of aborted
    /// transactions; `None` when the answer held no such batch.
    ///
    /// The next fetch should start here: it may be past the last record returned (a transaction
    /// marker, an aborted transaction, records removed by compaction), and it moves on even when
    /// `records` is empty.
    pub next_offset: Option<i64>,
}

#[derive(Debug)]
struct CurrentBroker {
    broker: Option<BrokerConnection>,
    gen_broker: BrokerCacheGeneration,
    gen_leader_from_arbitrary: Option<MetadataCacheGeneration>,
    gen_leader_from_self: Option<MetadataCacheGeneration>,
}

/// Many operations must be performed on the leader for a partition
///
/// Additionally a partition is the unit of concurrency within Kafka
///
/// As such a [`PartitionClient`] is a dedicated connection to the broker that
/// is the leader for a given partition.
///
/// In the event of a leadership change, [`PartitionClient`] will transparently
/// handle migrating to the new broker
///
pub struct PartitionClient {
    topic: String,
    partition: i32,
    brokers: Arc<BrokerConnector>,

    backoff_config: Arc<BackoffConfig>,

    /// Current broker connection if any
    current_broker: Mutex<CurrentBroker>,

    unknown_topic_handling: UnknownTopicHandling,
}

impl std::fmt::Debug for PartitionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PartitionClient({}:{})", self.topic, self.partition)
    }
}

impl PartitionClient {
    pub(super) async fn new(
        topic: String,
        partition: i32,
        brokers: Arc<BrokerConnector>,
        unknown_topic_handling: UnknownTopicHandling,
        backoff_config: Arc<BackoffConfig>,
    ) -> Result<Self> {
        let p = Self {
            topic,
            partition,
            brokers: Arc::clone(&brokers),
            backoff_config,
            current_broker: Mutex::new(CurrentBroker {
                broker: None,
                gen_broker: BrokerCacheGeneration::START,
                gen_leader_from_arbitrary: None,
                gen_leader_from_self: None,
            }),
            unknown_topic_handling,
        };

        // Force discover and establish a cached connection to the leader
        let scope = &p;
        maybe_retry(
            &p.backoff_config,
            p.unknown_topic_handling,
            &*brokers,
            "leader_detection",
            || async move {
                scope
                    .get()
                    .await
                    .map_err(|e| ErrorOrThrottle::Error((e, None)))?;
                Ok(())
            },
        )
        .await?;

        Ok(p)
    }

    /// Topic
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Partition
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Produce a batch of records to the partition
    pub async fn produce(
        &self,
        records: Vec<Record>,
        compression: Compression,
    ) -> Result<Vec<i64>> {
        // skip request entirely if `records` is empty
        if records.is_empty() {
            return Ok(vec![]);
        }

        let n = records.len() as i64;
        let request = &build_produce_request(self.partition, &self.topic, records, compression);

        maybe_retry(
            &self.backoff_config,
            self.unknown_topic_handling,
            self,
            "produce",
            || async move {
                let (broker, r#gen) = self
                    .get()
                    .await
                    .map_err(|e| ErrorOrThrottle::Error((e, None)))?;
                let response = broker
                    .request(&request)
                    .await
                    .map_err(|e| ErrorOrThrottle::Error((e.into(), Some(r#gen))))?;
                maybe_throttle(response.throttle_time_ms)?;
                process_produce_response(self.partition, &self.topic, n, response)
                    .map_err(|e| ErrorOrThrottle::Error((e, Some(r#gen))))
            },
        )
        .await
    }

    /// Fetch `bytes` bytes of record data starting at sequence number `offset`
    ///
    /// Returns the records, and the current high watermark.
    ///
    /// Records of aborted transactions and control batches (transaction markers) are left out, so
    /// the last record returned may lie before where the next fetch should start: use
    /// [`fetch_records_detailed`](Self::fetch_records_detailed) to learn that offset.
    ///
    ///
    /// # Error Handling
    /// Fetching records outside the range known the to broker (marked by low and high watermark) will lead to a
    /// [`ServerError`](Error::ServerError) with [`OffsetOutOfRange`](ProtocolError::OffsetOutOfRange). You may use
    /// [`get_offset`](Self::get_offset) to determine the offset range.
    ///
    /// A record batch that cannot be decoded leads to [`UndecodableBatch`](Error::UndecodableBatch) once it is the
    /// first batch of the answer that reaches `offset`; the records of the batches before it are returned first.
    pub async fn fetch_records(
        &self,
        offset: i64,
        bytes: Range<i32>,
        max_wait_ms: i32,
    ) -> Result<(Vec<RecordAndOffset>, i64)> {
        let fetched = self
            .fetch_records_detailed(offset, bytes, max_wait_ms)
            .await?;
        Ok((fetched.records, fetched.high_watermark))
    }

    /// Like fetch_records, and also says where the next fetch should start.
    ///
    /// rowsync patch. See [`FetchedRecords::next_offset`]; errors are those of
    /// [`fetch_records`](Self::fetch_records).
    pub async fn fetch_records_detailed(
        &self,
        offset: i64,
        bytes: Range<i32>,
        max_wait_ms: i32,
    ) -> Result<FetchedRecords> {
        let request = &build_fetch_request(offset, bytes, max_wait_ms, self.partition, &self.topic);

        let partition = maybe_retry(
            &self.backoff_config,
            self.unknown_topic_handling,
            self,
            "fetch_records",
            || async move {
                let (broker, r#gen) = self
                    .get()
                    .await
                    .map_err(|e| ErrorOrThrottle::Error((e, None)))?;
                let response = broker
                    .request(&request)
                    .await
                    .map_err(|e| ErrorOrThrottle::Error((e.into(), Some(r#gen))))?;
                maybe_throttle(response.throttle_time_ms)?;
                process_fetch_response(self.partition, &self.topic, response, offset)
                    .map_err(|e| ErrorOrThrottle::Error((e, Some(r#gen))))
            },
        )
        .await?;

        extract_records(
            partition,
            request.isolation_level.unwrap_or_default(),
            offset,
        )
    }

    /// Get offset for this partition.
    ///
    /// Note that the value returned by this method should be considered stale data, since:
    ///
    /// - **[`OffsetAt::Earliest`]:** Might be change at any time due to the Kafka retention policy or by
    ///   [deleting records](Self::delete_records).
    /// - **[`OffsetAt::Latest`]:** Might be change at any time by [producing records](Self::produce).
    pub async fn get_offset(&self, at: OffsetAt) -> Result<i64> {
        let request = &build_list_offsets_request(self.partition, &self.topic, at);

        let partition = maybe_retry(
            &self.backoff_config,
            self.unknown_topic_handling,
            self,
            "get_offset",
            || async move {
                let (broker, r#gen) = self
                    .get()
                    .await
                    .map_err(|e| ErrorOrThrottle::Error((e, None)))?;
                let response = broker
                    .request(&request)
                    .await
                    .map_err(|e| ErrorOrThrottle::Error((e.into(), Some(r#gen))))?;
                maybe_throttle(response.throttle_time_ms)?;
                process_list_offsets_response(self.partition, &self.topic, response)
                    .map_err(|e| ErrorOrThrottle::Error((e, Some(r#gen))))
            },
        )
        .await?;

        extract_offset(partition)
    }

    /// Delete records whose offset is smaller than the given offset.
    ///
    /// # Supported Brokers
    /// Currently this is only supported by Apache Kafka but NOT by Redpanda, see
    /// <https://github.com/redpanda-data/redpanda/issues/1016>.
    pub async fn delete_records(&self, offset: i64, timeout_ms: i32) -> Result<()> {
        let request =
            &build_delete_records_request(offset, timeout_ms, &self.topic, self.partition);

        maybe_retry(
            &self.backoff_config,
            self.unknown_topic_handling,
            self,
            "delete_records",
            || async move {
                let (broker, r#gen) = self
                    .get()
                    .await
                    .map_err(|e| ErrorOrThrottle::Error((e, None)))?;
                let response = broker
                    .request(&request)
                    .await
                    .map_err(|e| ErrorOrThrottle::Error((e.into(), Some(r#gen))))?;
                maybe_throttle(Some(response.throttle_time_ms))?;
                process_delete_records_response(&self.topic, self.partition, response)
                    .map_err(|e| ErrorOrThrottle::Error((e, Some(r#gen))))
            },
        )
        .await?;

        Ok(())
    }

    /// Retrieve the broker ID of the partition leader
    async fn get_leader(
        &self,
        metadata_mode: MetadataLookupMode,
    ) -> Result<(i32, Option<MetadataCacheGeneration>)> {
        let (metadata, r#gen) = self
            .brokers
            .request_metadata(&metadata_mode, Some(vec![self.topic.clone()]))
            .await?;

        let topic = metadata
            .topics
            .exactly_one()
            .map_err(Error::exactly_one_topic)?;

        if topic.name.0 != self.topic {
            return Err(Error::InvalidResponse(format!(
                "Expected metadata for topic \"{}\" got \"{}\"",
                self.topic, topic.name.0
            )));
        }

        if let Some(e) = topic.error {
            // TODO: Add retry logic
            return Err(Error::ServerError {
                protocol_error: e,
                error_message: None,
                request: RequestContext::Topic(self.topic.clone()),
                response: None,
                is_virtual: false,
            });
        }

        let partition = topic
            .partitions
            .iter()
            .find(|p| p.partition_index.0 == self.partition)
            .ok_or_else(|| {
                Error::InvalidResponse(format!(
                    "Could not find metadata for partition {} in topic \"{}\"",
                    self.partition, self.topic
                ))
            })?;

        if let Some(e) = partition.error {
            // TODO: Add retry logic
            return Err(Error::ServerError {
                protocol_error: e,
                error_message: None,
                request: RequestContext::Partition(self.topic.clone(), self.partition),
                response: None,
                is_virtual: false,
            });
        }

        if partition.leader_id.0 == -1 {
            return Err(Error::ServerError {
                protocol_error: ProtocolError::LeaderNotAvailable,
                error_message: None,
                request: RequestContext::Partition(self.topic.clone(), self.partition),
                response: None,
                is_virtual: true,
            });
        }

        info!(
            topic=%self.topic,
            partition=%self.partition,
            leader=partition.leader_id.0,
            %metadata_mode,
            "Detected leader",
        );
        Ok((partition.leader_id.0, r#gen))
    }
}

/// Caches the partition leader broker.
impl BrokerCache for &PartitionClient {
    type R = MessengerTransport;
    type E = Error;

    async fn get(&self) -> Result<(Arc<Self::R>, BrokerCacheGeneration)> {
        let mut current_broker = self.current_broker.lock().await;
        if let Some(broker) = &current_broker.broker {
            return Ok((Arc::clone(broker), current_broker.gen_broker));
        }

        info!(
            topic=%self.topic,
            partition=%self.partition,
            "Creating new partition-specific broker connection",
        );

        // Perform a request to fetch the topic metadata to determine the
        // current leader.
        //
        // Accept a cached metadata entry as a response because:
        //   * If the leader is offline, the connection call below fails and the cache is invalidated - the next call
        //     will cause the cache to be re-populate with a fresh entry.
        //   * A subsequent query is performed against the leader that does not use the cached entry - this validates
        //     the correctness of the cached entry.
        //
        let (leader, gen_leader_from_arbitrary) =
            self.get_leader(MetadataLookupMode::CachedArbitrary).await?;
        let broker = match self.brokers.connect(leader).await {
            Ok(Some(c)) => Ok(c),
            Ok(None) => {
                if let Some(r#gen) = gen_leader_from_arbitrary {
                    self.brokers.invalidate_metadata_cache(
                        "partition client: broker that is leader is unknown",
                        r#gen,
                    );
                }
                Err(Error::InvalidResponse(format!(
                    "Partition leader {} not found in metadata response",
                    leader
                )))
            }
            Err(e) => {
                if let Some(r#gen) = gen_leader_from_arbitrary {
                    self.brokers.invalidate_metadata_cache(
                        "partition client: error connecting to partition leader",
                        r#gen,
                    );
                }
                Err(e.into())
            }
        }?;

        // Check if the chosen leader also thinks it is the leader.
        //
        // For Kafka (+ Zookeeper) this seems to be required if we don't want to blindly retry `UnknownTopicOrPartition`
        // that happen after we connect to a leader (as advised by another broker) which doesn't know about its assigned
        // partition yet. The metadata query below seems to result in an LeaderNotAvailable in this case and is retried
        // by the layer above.
        //
        // This does not seem to be required for redpanda.
        //
        // Because this check requires the most up-to-date metadata from a specific broker, do not accept a cached
        // metadata response.
        let (leader_self, gen_leader_from_self) = self
            .get_leader(MetadataLookupMode::SpecificBroker(Arc::clone(&broker)))
            .await?;
        if leader != leader_self {
            if let Some(r#gen) = gen_leader_from_self {
                // The cached metadata identified an incorrect leader - it is stale and should be refreshed.
                self.brokers.invalidate_metadata_cache(
                    "partition client: broker that should be leader does treat itself as a leader",
                    r#gen,
                );
            }

            // this might happen if the leader changed after we got the hint from a arbitrary broker and this specific
            // metadata call.
            return Err(Error::ServerError {
                protocol_error: ProtocolError::NotLeaderOrFollower,
                error_message: None,
                request: RequestContext::Partition(self.topic.clone(), self.partition),
                response: Some(ServerErrorResponse::LeaderForward {
                    broker: leader,
                    new_leader: leader_self,
                }),
                is_virtual: true,
            });
        }

        *current_broker = CurrentBroker {
            broker: Some(Arc::clone(&broker)),
            gen_broker: current_broker.gen_broker.bump(),
            gen_leader_from_arbitrary,
            gen_leader_from_self,
        };

        info!(
            topic=%self.topic,
            partition=%self.partition,
            leader,
            "Created new partition-specific broker connection",
        );
        Ok((broker, current_broker.gen_broker))
    }

    async fn invalidate(&self, reason: &'static str, r#gen: BrokerCacheGeneration) {
        let mut current_broker = self.current_broker.lock().await;

        if current_broker.gen_broker != r#gen {
            // stale request
            debug!(
                reason,
                current_gen = current_broker.gen_broker.get(),
                request_gen = r#gen.get(),
                "stale invalidation request for arbitrary broker cache",
            );
            return;
        }

        info!(
            topic = self.topic.deref(),
            partition = self.partition,
            reason,
            "Invaliding cached leader",
        );

        if let Some(r#gen) = current_broker.gen_leader_from_arbitrary {
            self.brokers.invalidate_metadata_cache(reason, r#gen);
        }
        if let Some(r#gen) = current_broker.gen_leader_from_self {
            self.brokers.invalidate_metadata_cache(reason, r#gen);
        }

        current_broker.broker = None
    }
}

/// Takes a `request_name` and a function yielding a fallible future
/// and handles certain classes of error
async fn maybe_retry<B, R, F, T>(
    backoff_config: &BackoffConfig,
    unknown_topic_handling: UnknownTopicHandling,
    broker_cache: B,
    request_name: &str,
    f: R,
) -> Result<T>
where
    B: BrokerCache,
    R: (Fn() -> F) + Send + Sync,
    F: std::future::Future<
            Output = Result<T, ErrorOrThrottle<(Error, Option<BrokerCacheGeneration>)>>,
        > + Send,
{
    let mut backoff = Backoff::new(backoff_config);

    backoff
        .retry_with_backoff(request_name, || async {
            let (error, cache_gen) = match f().await {
                Ok(v) => {
                    return ControlFlow::Break(Ok(v));
                }
                Err(ErrorOrThrottle::Throttle(throttle)) => {
                    return ControlFlow::Continue(ErrorOrThrottle::Throttle(throttle));
                }
                Err(ErrorOrThrottle::Error(e)) => e,
            };

            let retry = match error {
                // rowsync patch: a refused certificate or refused credentials stay refused.
                Error::Connection(ref e) if e.is_fatal() => false,
                Error::Request(RequestError::Poisoned(_) | RequestError::IO(_))
                | Error::Connection(_) => {
                    if let Some(cache_gen) = cache_gen {
                        broker_cache
                            .invalidate("partition client: connection broken", cache_gen)
                            .await;
                    }
                    true
                }
                Error::ServerError {
                    protocol_error:
                        ProtocolError::InvalidReplicationFactor
                        | ProtocolError::LeaderNotAvailable
                        | ProtocolError::OffsetNotAvailable,
                    ..
                } => true,
                Error::ServerError {
                    protocol_error: ProtocolError::NotLeaderOrFollower,
                    ..
                } => {
                    if let Some(cache_gen) = cache_gen {
                        broker_cache
                            .invalidate(
                                "partition client: server error: not leader or follower",
                                cache_gen,
                            )
                            .await;
                    }
                    true
                }
                Error::ServerError {
                    protocol_error: ProtocolError::UnknownTopicOrPartition,
                    ..
                } => {
                    if let Some(cache_gen) = cache_gen {
                        broker_cache
                            .invalidate(
                                "partition client: server error: unknown topic or partition",
                                cache_gen,
                            )
                            .await;
                    }
                    unknown_topic_handling == UnknownTopicHandling::Retry
                }
                _ => false,
            };

            if retry {
                ControlFlow::Continue(ErrorOrThrottle::Error(error))
            } else {
                // Returned to the caller, who decides whether it is worth an error line.
                warn!(
                    e=%error,
                    request_name,
                    "request encountered fatal error",
                );
                ControlFlow::Break(Err(error))
            }
        })
        .await
        .map_err(Error::RetryFailed)?
}

fn build_produce_request(
    partition: i32,
    topic: &str,
    records: Vec<Record>,
    compression: Compression,
) -> ProduceRequest {
    let n = records.len() as i32;

    // TODO: Retry on failure

    let first_timestamp = records.first().unwrap().timestamp;
    let mut max_timestamp = first_timestamp;

    let records = records
        .into_iter()
        .enumerate()
        .map(|(offset_delta, record)| {
            max_timestamp = max_timestamp.max(record.timestamp);

            ProtocolRecord {
                key: record.key,
                value: record.value,
                timestamp_delta: (record.timestamp - first_timestamp).num_milliseconds(),
                offset_delta: offset_delta as i32,
                headers: record
                    .headers
                    .into_iter()
                    .map(|(key, value)| RecordHeader { key, value })
                    .collect(),
            }
        })
        .collect();

    let record_batch = ProduceRequestPartitionData {
        index: Int32(partition),
        records: Records(vec![RecordBatch {
            base_offset: 0,
            partition_leader_epoch: 0,
            last_offset_delta: n - 1,
            is_transactional: false,
            base_sequence: -1,
            compression: match compression {
                Compression::NoCompression => RecordBatchCompression::NoCompression,
                #[cfg(feature = "compression-gzip")]
                Compression::Gzip => RecordBatchCompression::Gzip,
                #[cfg(feature = "compression-lz4")]
                Compression::Lz4 => RecordBatchCompression::Lz4,
                #[cfg(feature = "compression-snappy")]
                Compression::Snappy => RecordBatchCompression::Snappy,
                #[cfg(feature = "compression-zstd")]
                Compression::Zstd => RecordBatchCompression::Zstd,
            },
            timestamp_type: RecordBatchTimestampType::CreateTime,
            producer_id: -1,
            producer_epoch: -1,
            first_timestamp: first_timestamp.timestamp_millis(),
            max_timestamp: max_timestamp.timestamp_millis(),
            records: ControlBatchOrRecords::Records(records),
        }]),
    };

    ProduceRequest {
        transactional_id: crate::protocol::primitives::NullableString(None),
        acks: Int16(-1),
        timeout_ms: Int32(30_000),
        topic_data: vec![ProduceRequestTopicData {
            name: String_(topic.to_string()),
            partition_data: vec![record_batch],
        }],
    }
}

fn process_produce_response(
    partition: i32,
    topic: &str,
    num_records: i64,
    response: ProduceResponse,
) -> Result<Vec<i64>> {
    let response = response
        .responses
        .exactly_one()
        .map_err(Error::exactly_one_topic)?;

    if response.name.0 != topic {
        return Err(Error::InvalidResponse(format!(
            "Expected write for topic \"{}\" got \"{}\"",
            topic, response.name.0,
        )));
    }

    let response = response
        .partition_responses
        .exactly_one()
        .map_err(Error::exactly_one_partition)?;

    if response.index.0 != partition {
        return Err(Error::InvalidResponse(format!(
            "Expected partition {} for topic \"{}\" got {}",
            partition, topic, response.index.0,
        )));
    }

    match response.error {
        Some(e) => Err(Error::ServerError {
            protocol_error: e,
            error_message: None,
            request: RequestContext::Partition(topic.to_owned(), partition),
            response: None,
            is_virtual: false,
        }),
        None => Ok((0..num_records)
            .map(|x| x + response.base_offset.0)
            .collect()),
    }
}

fn build_fetch_request(
    offset: i64,
    bytes: Range<i32>,
    max_wait_ms: i32,
    partition: i32,
    topic: &str,
) -> FetchRequest {
    FetchRequest {
        replica_id: NORMAL_CONSUMER,
        max_wait_ms: Int32(max_wait_ms),
        min_bytes: Int32(bytes.start),
        max_bytes: Some(Int32(bytes.end.saturating_sub(1))),
        isolation_level: Some(IsolationLevel::ReadCommitted),
        topics: vec![FetchRequestTopic {
            topic: String_(topic.to_string()),
            partitions: vec![FetchRequestPartition {
                partition: Int32(partition),
                fetch_offset: Int64(offset),
                partition_max_bytes: Int32(bytes.end.saturating_sub(1)),
            }],
        }],
    }
}

fn process_fetch_response(
    partition: i32,
    topic: &str,
    response: FetchResponse,
    request_offset: i64,
) -> Result<FetchResponsePartition> {
    let response_topic = response
        .responses
        .exactly_one()
        .map_err(Error::exactly_one_topic)?;

    if response_topic.topic.0 != topic {
        return Err(Error::InvalidResponse(format!(
            "Expected data for topic '{}' but got data for topic '{}'",
            topic, response_topic.topic.0
        )));
    }

    let response_partition = response_topic
        .partitions
        .exactly_one()
        .map_err(Error::exactly_one_partition)?;

    if response_partition.partition_index.0 != partition {
        return Err(Error::InvalidResponse(format!(
            "Expected data for partition {} but got data for partition {}",
            partition, response_partition.partition_index.0
        )));
    }

    if let Some(err) = response_partition.error_code {
        return Err(Error::ServerError {
            protocol_error: err,
            error_message: None,
            request: RequestContext::Fetch {
                topic_name: topic.to_owned(),
                partition_id: partition,
                offset: request_offset,
            },
            response: Some(ServerErrorResponse::PartitionFetchState {
                high_watermark: response_partition.high_watermark.0,
                last_stable_offset: response_partition.last_stable_offset.map(|x| x.0),
            }),
            is_virtual: false,
        });
    }

    Ok(response_partition)
}

/// Producer id of batches written without one (Kafka's `RecordBatch.NO_PRODUCER_ID`).
const NO_PRODUCER_ID: i64 = -1;

/// Turns a fetch answer into what a reader at `request_offset` sees, as Kafka's Java consumer
/// does (`CompletedFetch`): control batches never yield records; with `READ_COMMITTED` the
/// batches of aborted transactions are left out, found through the answer's aborted-transaction
/// list; records before `request_offset` (in a batch that starts before it) are left out.
///
/// rowsync patch: upstream ignored the aborted-transaction list and said nothing of where the
/// next fetch starts.
fn extract_records(
    partition: FetchResponsePartition,
    isolation_level: IsolationLevel,
    request_offset: i64,
) -> Result<FetchedRecords> {
    let FetchedBatches {
        batches,
        undecodable,
    } = partition.records;

    // Aborted transactions in the order they started: each one's producer joins
    // `aborted_producers` once the batches reach its first offset, and leaves at its abort marker.
    // Only a `READ_COMMITTED` request gets (and heeds) the list.
    let mut aborted_transactions = match isolation_level {
        IsolationLevel::ReadCommitted => partition.aborted_transactions,
        IsolationLevel::ReadUncommitted => vec![],
    };
    aborted_transactions.sort_by_key(|transaction| transaction.first_offset.0);
    let mut aborted_transactions = aborted_transactions.into_iter().peekable();
    let mut aborted_producers = HashSet::new();

    // One allocation of the exact size: reserving batch by batch lets the vector double, and
    // the slack (up to half of it, at ~100 bytes a record) outweighed the fetched bytes.
    let record_count = batches
        .iter()
        .map(|batch| match &batch.records {
            ControlBatchOrRecords::Records(records) => records.len(),
            ControlBatchOrRecords::ControlBatch(_) => 0,
        })
        .sum();
    let mut fetched = FetchedRecords {
        records: Vec::with_capacity(record_count),
        high_watermark: partition.high_watermark.0,
        last_stable_offset: partition.last_stable_offset.map(|offset| offset.0),
        first_offset: batches.first().map(|batch| batch.base_offset),
        next_offset: None,
    };
    for batch in batches {
        let last_offset = batch
            .base_offset
            .saturating_add(i64::from(batch.last_offset_delta));
        let next_offset = (last_offset >= request_offset).then(|| last_offset.saturating_add(1));

        if batch.producer_id > NO_PRODUCER_ID {
            while let Some(transaction) =
                aborted_transactions.next_if(|t| t.first_offset.0 <= last_offset)
            {
                aborted_producers.insert(transaction.producer_id.0);
            }
            if matches!(
                batch.records,
                ControlBatchOrRecords::ControlBatch(ControlBatchRecord::Abort)
            ) {
                aborted_producers.remove(&batch.producer_id);
            } else if batch.is_transactional && aborted_producers.contains(&batch.producer_id) {
                fetched.next_offset = fetched.next_offset.max(next_offset);
                continue;
            }
        }

        let base_offset = batch.base_offset;
        let before = fetched.records.len();
        if let Err(source) = push_records(&mut fetched.records, batch, request_offset) {
            fetched.records.truncate(before);
            return stop_at_undecodable(fetched, base_offset, source.into());
        }
        fetched.next_offset = fetched.next_offset.max(next_offset);
    }

    match undecodable {
        Some(UndecodableBatch { base_offset, error }) => {
            stop_at_undecodable(fetched, base_offset, Box::new(error))
        }
        None => Ok(fetched),
    }
}

/// What a fetch answer that reached an undecodable batch yields: the records before it, or the
/// error when nothing before it reaches the offset asked for (the batch blocks the reader).
fn stop_at_undecodable(
    fetched: FetchedRecords,
    base_offset: i64,
    source: Box<dyn std::error::Error + Send + Sync>,
) -> Result<FetchedRecords> {
    match fetched.next_offset {
        Some(_) => Ok(fetched),
        None => Err(Error::UndecodableBatch {
            base_offset,
            source,
        }),
    }
}

/// Appends the records of `batch` at or after `request_offset` (none for a control batch); fails
/// on a timestamp that cannot be represented, leaving the records pushed so far.
fn push_records(
    records: &mut Vec<RecordAndOffset>,
    batch: RecordBatch,
    request_offset: i64,
) -> Result<(), String> {
    let ControlBatchOrRecords::Records(protocol_records) = batch.records else {
        return Ok(());
    };
    records.reserve(protocol_records.len());

    for record in protocol_records {
        let offset = batch.base_offset + record.offset_delta as i64;
        if offset < request_offset {
            // Kafka does not split record batches on the server side, so we need to do this filtering on
            // the client side
            continue;
        }

        let timestamp_millis = match batch.first_timestamp.checked_add(record.timestamp_delta) {
            Some(ts) => ts,
            None => {
                return Err(format!(
                    "Timestamp overflow (first_timestamp={}, delta={}",
                    batch.first_timestamp, record.timestamp_delta
                ));
            }
        };
        let timestamp = match Utc.timestamp_millis_opt(timestamp_millis) {
            LocalResult::None => {
                return Err(format!("Not a valid timestamp ({timestamp_millis})"));
            }
            LocalResult::Single(ts) => ts,
            LocalResult::Ambiguous(a, b) => {
                return Err(format!(
                    "Ambiguous timestamp ({timestamp_millis}): {a} or {b}"
                ));
            }
        };

        records.push(RecordAndOffset {
            record: Record {
                key: record.key,
                value: record.value,
                headers: record
                    .headers
                    .into_iter()
                    .map(|header| (header.key, header.value))
                    .collect(),
                timestamp,
            },
            offset,
        })
    }

    Ok(())
}

fn build_list_offsets_request(partition: i32, topic: &str, at: OffsetAt) -> ListOffsetsRequest {
    let timestamp = match at {
        OffsetAt::Earliest => -2,
        OffsetAt::Latest => -1,
        OffsetAt::Timestamp(ts) => ts.timestamp_millis(),
    };

    ListOffsetsRequest {
        replica_id: NORMAL_CONSUMER,
        isolation_level: Some(IsolationLevel::ReadCommitted),
        topics: vec![ListOffsetsRequestTopic {
            name: String_(topic.to_owned()),
            partitions: vec![ListOffsetsRequestPartition {
                partition_index: Int32(partition),
                timestamp: Int64(timestamp),
                max_num_offsets: Some(Int32(1)),
            }],
        }],
    }
}

fn process_list_offsets_response(
    partition: i32,
    topic: &str,
    response: ListOffsetsResponse,
) -> Result<ListOffsetsResponsePartition> {
    let response_topic = response
        .topics
        .exactly_one()
        .map_err(Error::exactly_one_topic)?;

    if response_topic.name.0 != topic {
        return Err(Error::InvalidResponse(format!(
            "Expected data for topic '{}' but got data for topic '{}'",
            topic, response_topic.name.0
        )));
    }

    let response_partition = response_topic
        .partitions
        .exactly_one()
        .map_err(Error::exactly_one_partition)?;

    if response_partition.partition_index.0 != partition {
        return Err(Error::InvalidResponse(format!(
            "Expected data for partition {} but got data for partition {}",
            partition, response_partition.partition_index.0
        )));
    }

    match response_partition.error_code {
        Some(err) => Err(Error::ServerError {
            protocol_error: err,
            error_message: None,
            request: RequestContext::Partition(topic.to_owned(), partition),
            response: None,
            is_virtual: false,
        }),
        None => Ok(response_partition),
    }
}

fn extract_offset(partition: ListOffsetsResponsePartition) -> Result<i64> {
    match (
        partition.old_style_offsets.as_ref(),
        partition.offset.as_ref(),
    ) {
        // old style
        (Some(offsets), None) => match offsets.0.as_ref() {
            Some(offsets) => match offsets.len() {
                1 => Ok(offsets[0].0),
                n => Err(Error::InvalidResponse(format!(
                    "Expected 1 offset to be returned but got {}",
                    n
                ))),
            },
            None => Err(Error::InvalidResponse(
                "Got NULL as offset array".to_owned(),
            )),
        },
        // new style
        (None, Some(offset)) => Ok(offset.0),
        _ => unreachable!(),
    }
}

fn build_delete_records_request(
    offset: i64,
    timeout_ms: i32,
    topic: &str,
    partition: i32,
) -> DeleteRecordsRequest {
    DeleteRecordsRequest {
        topics: vec![DeleteRequestTopic {
            name: String_(topic.to_string()),
            partitions: vec![DeleteRequestPartition {
                partition_index: Int32(partition),
                offset: Int64(offset),
                tagged_fields: None,
            }],
            tagged_fields: None,
        }],
        timeout_ms: Int32(timeout_ms),
        tagged_fields: None,
    }
}

fn process_delete_records_response(
    topic: &str,
    partition: i32,
    response: DeleteRecordsResponse,
) -> Result<DeleteResponsePartition> {
    let response_topic = response
        .topics
        .exactly_one()
        .map_err(Error::exactly_one_topic)?;

    if response_topic.name.0 != topic {
        return Err(Error::InvalidResponse(format!(
            "Expected data for topic '{}' but got data for topic '{}'",
            topic, response_topic.name.0
        )));
    }

    let response_partition = response_topic
        .partitions
        .exactly_one()
        .map_err(Error::exactly_one_partition)?;

    if response_partition.partition_index.0 != partition {
        return Err(Error::InvalidResponse(format!(
            "Expected data for partition {} but got data for partition {}",
            partition, response_partition.partition_index.0
        )));
    }

    match response_partition.error {
        Some(err) => Err(Error::ServerError {
            protocol_error: err,
            error_message: None,
            request: RequestContext::Partition(topic.to_owned(), partition),
            response: None,
            is_virtual: false,
        }),
        None => Ok(response_partition),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use assert_matches::assert_matches;

    use super::*;
    use crate::protocol::{
        api_version::ApiVersion,
        messages::{ReadVersionedType, RequestBody},
        traits::{ReadType, WriteType},
    };

    const TOPIC: &str = "topic";
    const PARTITION: i32 = 3;
    const HIGH_WATERMARK: i64 = 100;
    const LAST_STABLE_OFFSET: i64 = 90;
    const TIMESTAMP: i64 = 1_700_000_000_000;

    /// A batch of records `first..=last`, each valued with its offset and carrying a null-valued
    /// header, by `producer_id` ([`NO_PRODUCER_ID`] for none), encoded as Kafka stores it.
    fn data(first: i64, last: i64, producer_id: i64, transactional: bool) -> Vec<u8> {
        let records = (first..=last)
            .map(|offset| ProtocolRecord {
                timestamp_delta: 0,
                offset_delta: (offset - first) as i32,
                key: None,
                value: Some(offset.to_string().into_bytes()),
                headers: vec![RecordHeader {
                    key: "null".to_owned(),
                    value: None,
                }],
            })
            .collect();
        let has_producer = producer_id != NO_PRODUCER_ID;
        let batch = RecordBatch {
            base_offset: first,
            partition_leader_epoch: 0,
            last_offset_delta: (last - first) as i32,
            first_timestamp: TIMESTAMP,
            max_timestamp: TIMESTAMP,
            producer_id,
            producer_epoch: if has_producer { 0 } else { -1 },
            base_sequence: if has_producer { 0 } else { -1 },
            records: ControlBatchOrRecords::Records(records),
            compression: RecordBatchCompression::NoCompression,
            is_transactional: transactional,
            timestamp_type: RecordBatchTimestampType::CreateTime,
        };
        let mut buf = vec![];
        batch.write(&mut buf).unwrap();
        buf
    }

    /// A transaction marker at `offset`, byte by byte as Kafka's broker writes it
    /// (`MemoryRecords.withEndTransactionMarker`).
    fn marker(offset: i64, producer_id: i64, commit: bool) -> Vec<u8> {
        let mut body = vec![];
        body.extend_from_slice(&0x30_i16.to_be_bytes()); // attributes: control, transactional
        body.extend_from_slice(&0_i32.to_be_bytes()); // lastOffsetDelta
        body.extend_from_slice(&TIMESTAMP.to_be_bytes()); // firstTimestamp
        body.extend_from_slice(&TIMESTAMP.to_be_bytes()); // maxTimestamp
        body.extend_from_slice(&producer_id.to_be_bytes());
        body.extend_from_slice(&0_i16.to_be_bytes()); // producerEpoch
        body.extend_from_slice(&(-1_i32).to_be_bytes()); // baseSequence: none
        body.extend_from_slice(&1_i32.to_be_bytes()); // one record
        let t = u8::from(commit); // control record type: 0 = abort, 1 = commit
        body.extend_from_slice(&[
            0x20, // record length 16
            0x00, // attributes
            0x00, // timestampDelta
            0x00, // offsetDelta
            0x08, 0x00, 0x00, 0x00, t, // key: length 4, version 0, type
            0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, // value: length 6, version 0, epoch 5
            0x00, // no headers
        ]);

        let mut batch = vec![];
        batch.extend_from_slice(&offset.to_be_bytes()); // baseOffset
        let len = 4 + 1 + 4 + body.len(); // partitionLeaderEpoch, magic, crc, body
        batch.extend_from_slice(&(len as i32).to_be_bytes());
        batch.extend_from_slice(&0_i32.to_be_bytes()); // partitionLeaderEpoch
        batch.push(2); // magic
        batch.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        batch.extend_from_slice(&body);
        batch
    }

    /// A Fetch v4 response for [`TOPIC`]/[`PARTITION`] as Kafka encodes it, with the aborted
    /// transactions `(producer_id, first_offset)` and the record batches given.
    fn response(aborted_transactions: &[(i64, i64)], batches: &[Vec<u8>]) -> Vec<u8> {
        let records = batches.concat();
        let mut buf = vec![];
        buf.extend_from_slice(&0_i32.to_be_bytes()); // throttle_time_ms
        buf.extend_from_slice(&1_i32.to_be_bytes()); // topics
        buf.extend_from_slice(&(TOPIC.len() as i16).to_be_bytes());
        buf.extend_from_slice(TOPIC.as_bytes());
        buf.extend_from_slice(&1_i32.to_be_bytes()); // partitions
        buf.extend_from_slice(&PARTITION.to_be_bytes());
        buf.extend_from_slice(&0_i16.to_be_bytes()); // error_code
        buf.extend_from_slice(&HIGH_WATERMARK.to_be_bytes());
        buf.extend_from_slice(&LAST_STABLE_OFFSET.to_be_bytes());
        buf.extend_from_slice(&(aborted_transactions.len() as i32).to_be_bytes());
        for (producer_id, first_offset) in aborted_transactions {
            buf.extend_from_slice(&producer_id.to_be_bytes());
            buf.extend_from_slice(&first_offset.to_be_bytes());
        }
        buf.extend_from_slice(&(records.len() as i32).to_be_bytes());
        buf.extend_from_slice(&records);
        buf
    }

    /// What [`PartitionClient::fetch_records_detailed`] makes of `response` to a fetch from
    /// `offset`: the same request, parsing and extraction, without a broker.
    fn fetch(offset: i64, response: Vec<u8>) -> Result<FetchedRecords> {
        let request = build_fetch_request(offset, 1..1_000_000, 1, PARTITION, TOPIC);
        let len = response.len() as u64;
        let mut response = Cursor::new(response);
        let parsed =
            FetchResponse::read_versioned(&mut response, FetchRequest::API_VERSION_RANGE.max())
                .unwrap();
        assert_eq!(response.position(), len);
        let partition = process_fetch_response(PARTITION, TOPIC, parsed, offset)?;
        extract_records(
            partition,
            request.isolation_level.unwrap_or_default(),
            offset,
        )
    }

    fn offsets(fetched: &FetchedRecords) -> Vec<i64> {
        fetched
            .records
            .iter()
            .map(|record| {
                let value = record.record.value.as_deref().unwrap();
                assert_eq!(value, record.offset.to_string().as_bytes());
                record.offset
            })
            .collect()
    }

    #[test]
    fn fetches_ask_for_read_committed() {
        let request = build_fetch_request(0, 1..2, 1, PARTITION, TOPIC);
        assert_matches!(request.isolation_level, Some(IsolationLevel::ReadCommitted));
        assert_eq!(FetchRequest::API_VERSION_RANGE.max(), ApiVersion(Int16(4)));
    }

    /// Producers 1, 2 and 3 write transactions around plain batches; producer 1's aborted
    /// transaction began at offset 0, before the fetched range.
    fn interleaved_transactions() -> Vec<u8> {
        let (p1, p2, p3, idempotent) = (1, 2, 3, 4);
        response(
            // out of order, as nothing promises the broker's order
            &[(p3, 25), (p1, 0), (p3, 16)],
            &[
                data(10, 11, p1, true),              // aborted (since 0)
                data(12, 12, NO_PRODUCER_ID, false), // plain
                data(13, 14, p2, true),              // committed at 18
                marker(15, p1, false),               // p1 aborts
                data(16, 17, p3, true),              // aborted at 23
                marker(18, p2, true),                // p2 commits
                data(19, 20, p1, true),              // p1 again, committed at 24
                data(21, 21, p3, true),              // aborted at 23
                data(22, 22, idempotent, false),     // a producer id, no transaction
                marker(23, p3, false),               // p3 aborts
                marker(24, p1, true),                // p1 commits
                data(25, 26, p3, true),              // p3 again, aborted at 27
                marker(27, p3, false),               // p3 aborts
                data(28, 28, p2, true),              // p2 again, committed at 29
                marker(29, p2, true),                // p2 commits
            ],
        )
    }

    #[test]
    fn aborted_transactions_are_left_out_as_kafkas_consumer_does() {
        let fetched = fetch(10, interleaved_transactions()).unwrap();
        assert_eq!(offsets(&fetched), vec![12, 13, 14, 19, 20, 22, 28]);
        assert_eq!(fetched.next_offset, Some(30));
        assert_eq!(fetched.high_watermark, HIGH_WATERMARK);
        assert_eq!(fetched.last_stable_offset, Some(LAST_STABLE_OFFSET));

        // from inside the answer: the same transactions, seen from offset 20 on
        let fetched = fetch(20, interleaved_transactions()).unwrap();
        assert_eq!(offsets(&fetched), vec![20, 22, 28]);
        assert_eq!(fetched.next_offset, Some(30));
    }

    #[test]
    fn read_uncommitted_keeps_aborted_transactions() {
        let response = interleaved_transactions();
        let parsed = FetchResponse::read_versioned(
            &mut Cursor::new(response),
            FetchRequest::API_VERSION_RANGE.max(),
        )
        .unwrap();
        let partition = process_fetch_response(PARTITION, TOPIC, parsed, 10).unwrap();
        let fetched = extract_records(partition, IsolationLevel::ReadUncommitted, 10).unwrap();
        assert_eq!(
            offsets(&fetched),
            vec![10, 11, 12, 13, 14, 16, 17, 19, 20, 21, 22, 25, 26, 28]
        );
        assert_eq!(fetched.next_offset, Some(30));
    }

    #[test]
    fn the_records_take_one_allocation_of_the_exact_size() {
        // Three batches of ten: reserving batch by batch would double the vector to 40.
        let fetched = fetch(
            0,
            response(
                &[],
                &[
                    data(0, 9, NO_PRODUCER_ID, false),
                    data(10, 19, NO_PRODUCER_ID, false),
                    data(20, 29, NO_PRODUCER_ID, false),
                ],
            ),
        )
        .unwrap();
        assert_eq!(offsets(&fetched), (0..30).collect::<Vec<_>>());
        assert_eq!(fetched.records.capacity(), 30);
    }

    #[test]
    fn next_offset_passes_a_lone_commit_marker() {
        let fetched = fetch(5, response(&[], &[marker(5, 1, true)])).unwrap();
        assert_eq!(offsets(&fetched), Vec::<i64>::new());
        assert_eq!(fetched.first_offset, Some(5));
        assert_eq!(fetched.next_offset, Some(6));
    }

    #[test]
    fn next_offset_passes_an_aborted_batch_and_its_marker() {
        let fetched = fetch(
            5,
            response(&[(1, 5)], &[data(5, 7, 1, true), marker(8, 1, false)]),
        )
        .unwrap();
        assert_eq!(offsets(&fetched), Vec::<i64>::new());
        assert_eq!(fetched.next_offset, Some(9));
    }

    #[test]
    fn next_offset_passes_the_marker_after_records() {
        let fetched = fetch(5, response(&[], &[data(5, 6, 1, true), marker(7, 1, true)])).unwrap();
        assert_eq!(offsets(&fetched), vec![5, 6]);
        assert_eq!(fetched.next_offset, Some(8));
    }

    #[test]
    fn next_offset_counts_a_batch_that_starts_before_the_offset() {
        let fetched = fetch(7, response(&[], &[data(5, 9, NO_PRODUCER_ID, false)])).unwrap();
        assert_eq!(offsets(&fetched), vec![7, 8, 9]);
        assert_eq!(fetched.first_offset, Some(5));
        assert_eq!(fetched.next_offset, Some(10));

        // a marker for a transaction that began before the offset
        let fetched = fetch(
            7,
            response(&[(1, 5)], &[data(5, 9, 1, true), marker(10, 1, false)]),
        )
        .unwrap();
        assert_eq!(offsets(&fetched), Vec::<i64>::new());
        assert_eq!(fetched.next_offset, Some(11));
    }

    #[test]
    fn first_offset_shows_an_answer_that_starts_after_the_offset() {
        // what tansu answers to a fetch from inside a batch: the next batch
        let fetched = fetch(6, response(&[], &[data(8, 9, NO_PRODUCER_ID, false)])).unwrap();
        assert_eq!(offsets(&fetched), vec![8, 9]);
        assert_eq!(fetched.first_offset, Some(8));
        assert_eq!(fetched.next_offset, Some(10));
    }

    #[test]
    fn next_offset_is_none_without_a_batch() {
        let fetched = fetch(5, response(&[], &[])).unwrap();
        assert_eq!(fetched.records, vec![]);
        assert_eq!(fetched.first_offset, None);
        assert_eq!(fetched.next_offset, None);

        // a batch cut off by the size limit is not there yet
        let batch = data(5, 6, NO_PRODUCER_ID, false);
        let cut = batch[..batch.len() - 1].to_vec();
        let fetched = fetch(5, response(&[], &[cut])).unwrap();
        assert_eq!(fetched.first_offset, None);
        assert_eq!(fetched.next_offset, None);
    }

    #[test]
    fn null_header_values_reach_the_record_as_none() {
        let fetched = fetch(5, response(&[], &[data(5, 5, NO_PRODUCER_ID, false)])).unwrap();
        let headers = &fetched.records[0].record.headers;
        assert_eq!(headers.get("null"), Some(&None));
    }

    #[test]
    fn an_undecodable_batch_is_an_error_once_nothing_precedes_it() {
        let mut corrupt = data(7, 8, NO_PRODUCER_ID, false);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x01; // CRC mismatch
        let answer = || {
            response(
                &[],
                &[
                    data(5, 6, NO_PRODUCER_ID, false),
                    corrupt.clone(),
                    data(9, 9, NO_PRODUCER_ID, false),
                ],
            )
        };

        // the records before it first, and where it starts
        let fetched = fetch(5, answer()).unwrap();
        assert_eq!(offsets(&fetched), vec![5, 6]);
        assert_eq!(fetched.next_offset, Some(7));

        // then the batch itself
        let err = fetch(7, response(&[], &[corrupt.clone()])).unwrap_err();
        assert_matches!(err, Error::UndecodableBatch { base_offset: 7, .. });
        assert!(err.to_string().contains("CRC error"), "{err}");

        // also when a batch before it ends before the offset asked for
        let err = fetch(7, answer()).unwrap_err();
        assert_matches!(err, Error::UndecodableBatch { base_offset: 7, .. });
    }

    #[test]
    fn a_batch_with_an_unknown_compression_is_undecodable() {
        let mut batch = data(5, 6, NO_PRODUCER_ID, false);
        batch[22] |= 0x7; // attributes: compression 7
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());

        let err = fetch(5, response(&[], &[batch])).unwrap_err();
        assert_matches!(err, Error::UndecodableBatch { base_offset: 5, .. });
        assert_eq!(
            err.to_string(),
            "Cannot decode record batch at offset 5: Malformed data: Invalid compression type: 7"
        );
    }

    #[test]
    fn an_lz4_batch_is_undecodable_without_the_codec_or_when_corrupt() {
        let mut batch = data(5, 6, NO_PRODUCER_ID, false);
        batch[22] |= 0x3; // attributes: lz4, but the records are not compressed
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());

        let err = fetch(5, response(&[], &[batch])).unwrap_err();
        assert_matches!(err, Error::UndecodableBatch { base_offset: 5, .. });
        #[cfg(not(feature = "compression-lz4"))]
        assert_eq!(
            err.to_string(),
            "Cannot decode record batch at offset 5: Malformed data: Unimplemented compression: Lz4"
        );
    }

    #[test]
    fn a_timestamp_out_of_range_makes_its_batch_undecodable() {
        let batch = RecordBatch::read(&mut Cursor::new(data(5, 6, NO_PRODUCER_ID, false))).unwrap();
        let batch = RecordBatch {
            first_timestamp: i64::MAX,
            ..batch
        };
        let mut buf = vec![];
        batch.write(&mut buf).unwrap();
        let answer = response(&[], &[data(3, 4, NO_PRODUCER_ID, false), buf]);

        let fetched = fetch(3, answer.clone()).unwrap();
        assert_eq!(offsets(&fetched), vec![3, 4]);
        assert_eq!(fetched.next_offset, Some(5));

        let err = fetch(5, answer).unwrap_err();
        assert_matches!(err, Error::UndecodableBatch { base_offset: 5, .. });
    }
}
