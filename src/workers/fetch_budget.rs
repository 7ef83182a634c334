//! A worker's fetch budget ([`FetchBudget`]): the record bytes its partitions hold, fetched and
//! not yet applied, counted together, so that a backlog's memory stays bounded whatever the
//! number of partitions and however large the producer's record batches (librdkafka's
//! `queued.max.messages.kbytes`). A partition fetches only once its turn comes and the bytes it
//! expects fit under the budget; what it holds goes back when its batch is applied.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicI64, Ordering::Relaxed},
        Arc, Mutex, MutexGuard,
    },
};

use rskafka::record::RecordAndOffset;
use tokio::sync::Notify;

/// The bytes one worker's partitions hold, against `KAFKA_FETCH_BUDGET_BYTES`.
pub(super) struct FetchBudget {
    limit: i64,
    /// Short critical sections only (never held across `.await`), hence a std mutex.
    state: Mutex<State>,
    /// Signalled whenever bytes come back or the head of the queue changes.
    changed: Notify,
    /// Where the bytes held are mirrored for `/metrics` (`rowsync_worker_fetch_held_bytes`).
    gauge: Arc<AtomicI64>,
}

#[derive(Default)]
struct State {
    /// Bytes reserved by fetches in flight and held by answers not yet applied.
    held: i64,
    /// Tickets of the fetches waiting, first come first served (a large fetch is not overtaken
    /// for ever by small ones).
    waiting: VecDeque<u64>,
    next_ticket: u64,
    /// Record bytes of the worker's last answer, from any partition: what a partition expects
    /// when it knows no better. `None` until the first answer.
    last_answer: Option<i64>,
}

/// Bytes one fetch holds from its worker's budget, until it is dropped (its batch applied, or
/// abandoned).
pub(super) struct Held {
    budget: Arc<FetchBudget>,
    bytes: i64,
}

impl FetchBudget {
    /// A budget of `limit` bytes, none held, mirroring what is held to `gauge`.
    pub(super) fn new(limit: i64, gauge: Arc<AtomicI64>) -> Arc<Self> {
        gauge.store(0, Relaxed);
        Arc::new(Self {
            limit,
            state: Mutex::default(),
            changed: Notify::new(),
            gauge,
        })
    }

    /// Adds `bytes` (negative: returns them) to what is held.
    fn add(&self, state: &mut State, bytes: i64) {
        state.held += bytes;
        self.gauge.store(state.held, Relaxed);
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(super) fn held(&self) -> i64 {
        self.lock().held
    }

    /// Waits for this fetch's turn and for room, then reserves what it expects to bring: at
    /// least `at_least` (its size limit, its partition's last answer), at least the worker's
    /// last answer, and, before the worker's first answer, the whole budget, so that the first
    /// fetch learns how large the producer's batches are before the others fetch together. A
    /// fetch goes when it fits under the budget, or when nothing at all is held (so one larger
    /// than the budget still goes, alone). Abandoning the wait (dropping the future) leaves the
    /// queue.
    pub(super) async fn reserve(self: &Arc<Self>, at_least: i64) -> Held {
        let ticket = {
            let mut state = self.lock();
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting.push_back(ticket);
            ticket
        };
        let mut queued = Queued {
            budget: self,
            ticket: Some(ticket),
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so a release between the look and the wait is not missed.
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                let bytes = at_least.max(state.last_answer.unwrap_or(self.limit));
                let fits = state.held == 0 || state.held.saturating_add(bytes) <= self.limit;
                if state.waiting.front() == Some(&ticket) && fits {
                    state.waiting.pop_front();
                    self.add(&mut state, bytes);
                    queued.ticket = None;
                    drop(state);
                    // The next in line may fit too.
                    self.changed.notify_waiters();
                    return Held {
                        budget: Arc::clone(self),
                        bytes,
                    };
                }
            }
            notified.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A place in the queue, given up if its fetch is abandoned while waiting.
struct Queued<'a> {
    budget: &'a FetchBudget,
    ticket: Option<u64>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.budget.lock().waiting.retain(|&t| t != ticket);
            self.budget.changed.notify_waiters();
        }
    }
}

impl Held {
    /// Bytes held.
    pub(super) fn bytes(&self) -> i64 {
        self.bytes
    }

    /// Holds what an answer really brought instead of what was reserved (more when the broker
    /// returned a whole record batch larger than the fetch asked for, since a batch is never
    /// split), and makes it what the worker's next fetches expect.
    pub(super) fn settle(&mut self, records: &[RecordAndOffset]) {
        let bytes = record_bytes(records);
        let mut state = self.budget.lock();
        self.budget.add(&mut state, bytes - self.bytes);
        state.last_answer = Some(bytes);
        drop(state);
        if bytes < self.bytes {
            self.budget.changed.notify_waiters();
        }
        self.bytes = bytes;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        self.budget.add(&mut state, -self.bytes);
        drop(state);
        self.budget.changed.notify_waiters();
    }
}

/// What the budget counts of fetched records: their keys', values' and headers' bytes.
pub(super) fn record_bytes(records: &[RecordAndOffset]) -> i64 {
    records
        .iter()
        .map(|r| {
            let record = &r.record;
            let headers: usize = record
                .headers
                .iter()
                .map(|(name, value)| name.len() + value.as_ref().map_or(0, Vec::len))
                .sum();
            (record.key.as_ref().map_or(0, Vec::len)
                + record.value.as_ref().map_or(0, Vec::len)
                + headers) as i64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use rskafka::record::Record;

    use super::*;

    fn records(count: usize, value_bytes: usize) -> Vec<RecordAndOffset> {
        (0..count)
            .map(|offset| RecordAndOffset {
                record: Record {
                    key: Some(b"id".to_vec()),
                    value: Some(vec![b'x'; value_bytes]),
                    headers: [("h".to_owned(), Some(b"vv".to_vec()))].into(),
                    timestamp: Utc::now(),
                },
                offset: offset as i64,
            })
            .collect()
    }

    fn budget(limit: i64) -> Arc<FetchBudget> {
        FetchBudget::new(limit, Arc::default())
    }

    /// Whether `reserve` is still waiting after the runtime has had a chance to run it.
    async fn waits(future: impl std::future::Future) -> bool {
        tokio::time::timeout(Duration::from_millis(50), future)
            .await
            .is_err()
    }

    #[test]
    fn counts_keys_values_and_headers() {
        assert_eq!(record_bytes(&records(3, 10)), 3 * (2 + 10 + 1 + 2));
        assert_eq!(record_bytes(&[]), 0);
    }

    #[tokio::test]
    async fn the_first_fetch_goes_alone_and_teaches_the_others_the_batch_size() {
        let budget = budget(1000);
        // Before any answer a fetch reserves the whole budget: the next one waits.
        let mut first = budget.reserve(100).await;
        assert_eq!(budget.held(), 1000);
        assert!(waits(budget.reserve(100)).await);
        // Its answer (a batch of 300 bytes, larger than the 100 asked for) is what others expect.
        first.settle(&records(20, 10));
        assert_eq!((first.bytes(), budget.held()), (300, 300));
        let second = budget.reserve(100).await;
        assert_eq!((second.bytes(), budget.held()), (300, 600));
        let third = budget.reserve(100).await;
        assert_eq!(budget.held(), 900);
        // 900 + 300 > 1000: the fourth waits until a batch is applied.
        assert!(waits(budget.reserve(100)).await);
        drop(second);
        let fourth = budget.reserve(100).await;
        assert_eq!(budget.held(), 900);
        drop((first, third, fourth));
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn the_gauge_follows_what_is_held() {
        let gauge = Arc::new(AtomicI64::new(7));
        let budget = FetchBudget::new(1000, Arc::clone(&gauge));
        assert_eq!(gauge.load(Relaxed), 0);
        let mut held = budget.reserve(100).await;
        assert_eq!(gauge.load(Relaxed), 1000);
        held.settle(&records(10, 10));
        assert_eq!(gauge.load(Relaxed), 150);
        drop(held);
        assert_eq!(gauge.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn an_answer_larger_than_the_budget_is_held_and_blocks_the_rest_until_applied() {
        let budget = budget(1000);
        let mut only = budget.reserve(100).await;
        only.settle(&records(100, 10));
        assert_eq!(budget.held(), 1500);
        assert!(waits(budget.reserve(100)).await);
        drop(only);
        // Nothing held: even a fetch expecting more than the whole budget goes, alone.
        let big = budget.reserve(5000).await;
        assert_eq!(budget.held(), 5000);
        drop(big);
    }

    #[tokio::test]
    async fn fetches_go_in_turn_and_an_abandoned_wait_leaves_the_queue() {
        let budget = budget(1000);
        let mut holder = budget.reserve(0).await;
        holder.settle(&records(10, 10)); // 150 held, 150 expected of each answer
        let big = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.reserve(900).await }
        });
        while budget.lock().waiting.is_empty() {
            tokio::task::yield_now().await;
        }
        // 150 + 900 > 1000: the large fetch waits, and a small one that would fit (150 + 150)
        // queues behind it rather than overtaking it.
        assert!(waits(budget.reserve(0)).await);
        big.abort();
        assert!(big.await.is_err_and(|joined| joined.is_cancelled()));
        // The abandoned waits left the queue: the next fetch is not stuck behind them.
        let next = budget.reserve(0).await;
        assert_eq!((next.bytes(), budget.held()), (150, 300));
        drop((holder, next));
        assert_eq!(budget.held(), 0);
    }
}
