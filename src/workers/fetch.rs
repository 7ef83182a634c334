//! Reading one partition ([`Fetcher`]): its connection, fetch sizes that start small and grow,
//! the next batch fetched (and decoded) while the current one is applied, each fetch waiting
//! for room in the worker's [`FetchBudget`], and covering fetches from a batch boundary. Where
//! to read from is [`resume`](super::resume)'s; what to do with the records is
//! [`partition`](super::partition)'s.

use std::{sync::Arc, time::Duration};

use rskafka::{
    client::{
        error::{Error as KafkaError, ProtocolError},
        partition::{FetchedRecords, OffsetAt, PartitionClient},
    },
    record::RecordAndOffset,
};
use tokio::task::JoinHandle;

use super::{
    batch::DecodedBatch,
    context::WorkerContext,
    fetch_budget::{FetchBudget, Held},
};
use crate::error::{bounded, Error, Result};

/// Bytes the first fetch after (re)positioning asks for; each fetch that returns records
/// doubles it, up to `KAFKA_FETCH_MAX_BYTES` or the partition's share of
/// `KAFKA_FETCH_BUDGET_BYTES`, whichever is smaller. A worker starting on a backlog applies its first
/// small batch while the larger ones are still being fetched, instead of leaving PostgreSQL
/// idle until a full-size fetch arrives.
pub(super) const FIRST_FETCH_BYTES: i32 = 64 * 1024;

/// The next fetch size: doubled after a fetch that returned records, capped at `max`.
fn grown_fetch_bytes(current: i32, max: i32) -> i32 {
    current.saturating_mul(2).min(max)
}

/// Reads one partition for one worker: connected once, dropped (and connected again) after
/// Kafka errors. Owns its fetch ahead, aborted when it is dropped.
pub(super) struct Fetcher {
    context: Arc<WorkerContext>,
    partition: i32,
    client: Arc<PartitionClient>,
    /// The fetch (and decoding) of the batch after the one being applied, started before
    /// applying it so the broker's answer, the decoding and PostgreSQL's work overlap: the
    /// offset it fetches from, and the task.
    prefetch: Option<(i64, JoinHandle<Result<Answer>>)>,
    /// Bytes the next fetch asks for: [`FIRST_FETCH_BYTES`] after positioning, growing to the
    /// configured maximum.
    fetch_bytes: i32,
    /// Record bytes of this partition's last answer: what its next fetch reserves at least
    /// (the broker answers with whole batches, so an answer can be larger than asked for).
    last_answer_bytes: i64,
}

/// A fetch's answer: its records from the offset asked for on, and those records decoded when
/// they were decoded ahead (only when they start at that offset).
pub(super) struct Answer {
    fetched: FetchedRecords,
    batch: Option<Box<dyn DecodedBatch>>,
    /// The records' bytes, held from the worker's fetch budget until they are applied.
    held: Held,
}

impl Answer {
    /// The partition's high watermark when the broker answered.
    pub(super) fn high_watermark(&self) -> i64 {
        self.fetched.high_watermark
    }
}

/// What a fetch brought, from the position on.
pub(super) enum Fetched {
    /// Records from the position on, their decoded batch if it was decoded ahead, and the
    /// offset to resume from once they are applied (past any markers after them).
    Records {
        records: Vec<RecordAndOffset>,
        batch: Option<Box<dyn DecodedBatch>>,
        next: i64,
        /// The records' share of the worker's fetch budget: drop it once they are applied.
        held: Held,
    },
    /// Only batches with nothing to apply (transaction markers, aborted records) up to `to`.
    Skipped {
        to: i64,
    },
    Nothing,
    OutOfRange,
}

impl Fetcher {
    /// Connects to the partition's leader.
    pub(super) async fn connect(context: Arc<WorkerContext>, partition: i32) -> Result<Self> {
        let client = context
            .kafka
            .partition_client(&context.topic, partition)
            .await?;
        Ok(Self {
            fetch_bytes: FIRST_FETCH_BYTES.min(context.partition_fetch_max()),
            context,
            partition,
            client: Arc::new(client),
            prefetch: None,
            last_answer_bytes: 0,
        })
    }

    /// Starts again from small fetches (after positioning).
    pub(super) fn start_small(&mut self) {
        self.fetch_bytes = FIRST_FETCH_BYTES.min(self.context.partition_fetch_max());
    }

    /// Lets the next fetch ask for more (after a fetch that brought records).
    pub(super) fn grow(&mut self) {
        self.fetch_bytes = grown_fetch_bytes(self.fetch_bytes, self.context.partition_fetch_max());
    }

    /// Starts fetching from `from` in the background, for the next step, once the worker's
    /// fetch budget has room.
    pub(super) fn start_prefetch(&mut self, from: i64) {
        self.drop_prefetch();
        let client = Arc::clone(&self.client);
        let budget = Arc::clone(&self.context.fetch_budget);
        let expected = self.expected_bytes();
        let (max_bytes, max_wait) = (self.fetch_bytes, self.context.fetch_max_wait_ms);
        let timeout = self.context.kafka.timeout();
        let kind = self.context.kind;
        let task = tokio::spawn(async move {
            let mut answer = budgeted_fetch(
                &budget, expected, &client, from, max_bytes, max_wait, timeout,
            )
            .await?;
            // Decoded here only when the batch starts where asked; otherwise `records` fetches
            // again and the batch is decoded when applied.
            let records = &answer.fetched.records;
            answer.batch = records
                .first()
                .is_some_and(|r| r.offset == from)
                .then(|| kind.decode(records));
            Ok(answer)
        });
        self.prefetch = Some((from, task));
    }

    /// What the next fetch reserves at least: what it asks for, or this partition's last
    /// answer if that was larger.
    fn expected_bytes(&self) -> i64 {
        i64::from(self.fetch_bytes).max(self.last_answer_bytes)
    }

    /// Abandons a background fetch (its records were never applied, so nothing is lost).
    pub(super) fn drop_prefetch(&mut self) {
        if let Some((_, task)) = self.prefetch.take() {
            task.abort();
        }
    }

    /// The answer to a fetch from `position`: the one made ahead when it was made from there,
    /// else a new one. Records the high watermark. `None`: Kafka says `position` is out of range.
    pub(super) async fn answer(&mut self, position: i64) -> Result<Option<Answer>> {
        let answer = match self.prefetch.take() {
            Some((at, task)) if at == position => match task.await {
                Ok(answer) => answer,
                Err(joined) => Err(Error::Prefetch(joined.to_string())),
            },
            other => {
                if let Some((_, task)) = other {
                    task.abort();
                }
                let (max_bytes, max_wait) = (self.fetch_bytes, self.context.fetch_max_wait_ms);
                budgeted_fetch(
                    &self.context.fetch_budget,
                    self.expected_bytes(),
                    &self.client,
                    position,
                    max_bytes,
                    max_wait,
                    self.context.kafka.timeout(),
                )
                .await
            }
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(Error::Kafka(KafkaError::ServerError {
                protocol_error: ProtocolError::OffsetOutOfRange,
                ..
            })) => return Ok(None),
            Err(error) => return Err(error),
        };
        self.last_answer_bytes = answer.held.bytes();
        self.context.stats.update(self.partition, |p| {
            p.high_watermark = Some(answer.high_watermark());
        });
        Ok(Some(answer))
    }

    /// What `answer` holds from `position` on, fetched again from a batch boundary when the
    /// broker answered from past it.
    pub(super) async fn records(&self, answer: Answer, position: i64) -> Result<Fetched> {
        let Answer {
            fetched:
                FetchedRecords {
                    mut records,
                    high_watermark,
                    mut next_offset,
                    first_offset,
                    last_stable_offset,
                },
            mut batch,
            mut held,
        } = answer;
        keep_from(&mut records, position);
        // Kafka answers a fetch from inside a record batch with that whole batch; tansu answers
        // with the *next* batch, or nothing. Fetch again from where a batch starts so no record
        // is skipped.
        // Records at or past the last stable offset (an open transaction's) are not served yet.
        let skipped_ahead = first_offset.is_some_and(|first| first > position);
        let stuck = first_offset.is_none()
            && position
                < last_stable_offset
                    .unwrap_or(high_watermark)
                    .min(high_watermark);
        if skipped_ahead || stuck {
            let covering = self.covering(position).await?;
            (records, next_offset) = (covering.records, covering.next_offset);
            batch = None;
            held.settle(&records);
        }
        // Past the last batch of the answer: transaction markers and aborted records after the
        // last record are moved past too.
        let next = next_offset
            .unwrap_or(position)
            .max(records.last().map_or(position, |r| r.offset + 1));
        Ok(if !records.is_empty() {
            Fetched::Records {
                records,
                batch,
                next,
                held,
            }
        } else if next > position {
            Fetched::Skipped { to: next }
        } else if position > high_watermark {
            // Some brokers (tansu) never say "out of range": a recreated topic just ends earlier.
            Fetched::OutOfRange
        } else {
            Fetched::Nothing
        })
    }

    /// Records from `position` on, fetched from a batch boundary at or before it: steps back
    /// 1, 2, 4, … offsets (down to the earliest) until the answer's first batch covers
    /// `position`. A gap that remains when fetching from the earliest offset is real (compaction).
    pub(super) async fn covering(&self, position: i64) -> Result<FetchedRecords> {
        let timeout = self.context.kafka.timeout()
            + Duration::from_millis(self.context.fetch_max_wait_ms as u64);
        let earliest = self.earliest().await?;
        let mut back = 1;
        loop {
            let from = (position - back).max(earliest);
            let mut fetched = bounded(
                "fetching records",
                timeout,
                self.client
                    .fetch_records_detailed(from, 1..self.context.partition_fetch_max(), 1),
            )
            .await?;
            keep_from(&mut fetched.records, position);
            // Batches in one answer follow each other: one starting at or before `position`
            // and an answer reaching past it cover it.
            let covers = fetched.first_offset.is_some_and(|first| first <= position)
                && fetched.next_offset.is_some_and(|next| next > position);
            if from == earliest || covers {
                return Ok(fetched);
            }
            back = back.saturating_mul(2);
        }
    }

    /// The partition's earliest offset.
    pub(super) async fn earliest(&self) -> Result<i64> {
        bounded(
            "listing the earliest offset",
            self.context.kafka.timeout(),
            self.client.get_offset(OffsetAt::Earliest),
        )
        .await
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.drop_prefetch();
    }
}

/// One fetch request from `position`, bounded by the request timeout plus the broker's wait.
async fn raw_fetch(
    client: &PartitionClient,
    position: i64,
    max_bytes: i32,
    max_wait_ms: i32,
    timeout: Duration,
) -> Result<FetchedRecords> {
    bounded(
        "fetching records",
        timeout + Duration::from_millis(max_wait_ms as u64),
        client.fetch_records_detailed(position, 1..max_bytes, max_wait_ms),
    )
    .await
}

/// One fetch from `position` once `budget` has room for `expected` bytes, holding the bytes of
/// the records at or after `position` it brought.
async fn budgeted_fetch(
    budget: &Arc<FetchBudget>,
    expected: i64,
    client: &PartitionClient,
    position: i64,
    max_bytes: i32,
    max_wait_ms: i32,
    timeout: Duration,
) -> Result<Answer> {
    let mut held = budget.reserve(expected).await;
    let mut fetched = raw_fetch(client, position, max_bytes, max_wait_ms, timeout).await?;
    keep_from(&mut fetched.records, position);
    held.settle(&fetched.records);
    Ok(Answer {
        fetched,
        batch: None,
        held,
    })
}

/// Keeps the records at or after `position`, each offset once, in order. A batch can start
/// before the offset asked for, and tansu can repeat batches in one answer.
fn keep_from(records: &mut Vec<RecordAndOffset>, position: i64) {
    let mut next = position;
    records.retain(|r| {
        let keep = r.offset >= next;
        if keep {
            next = r.offset + 1;
        }
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_start_small_and_double_up_to_the_maximum() {
        let max = 1024 * 1024;
        let mut sizes = vec![FIRST_FETCH_BYTES.min(max)];
        while *sizes.last().unwrap() < max {
            sizes.push(grown_fetch_bytes(*sizes.last().unwrap(), max));
        }
        assert_eq!(sizes, [64, 128, 256, 512, 1024].map(|k| k * 1024));
        // A maximum below the first size, or not a power of two, is never exceeded.
        assert_eq!(FIRST_FETCH_BYTES.min(4096), 4096);
        assert_eq!(grown_fetch_bytes(64 * 1024, 100_000), 100_000);
        assert_eq!(grown_fetch_bytes(i32::MAX, i32::MAX), i32::MAX);
    }
}
