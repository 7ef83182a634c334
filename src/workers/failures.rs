//! How a partition loop lives with a failure that repeats: capped exponential backoff that only
//! progress resets, a few log lines a minute however often it retries, and the failure's story
//! (error, first and last time, attempts) in the worker's status.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use chrono::Utc;

use super::stats::WorkerStats;

/// While the same error repeats, it is logged again at most this often.
const REPEAT_LOG_EVERY: Duration = Duration::from_secs(60);
/// A different error is logged at once, but never more often than this.
const CHANGED_LOG_EVERY: Duration = Duration::from_secs(10);

/// What kind of failure a partition loop met, which decides how fast it retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Kafka or PostgreSQL failed, or timed out: retried from 100 ms, doubling to 5 s.
    Transient,
    /// The batch at `offset` cannot be decoded (a codec rowsync lacks, a corrupt batch): the
    /// partition is stalled there; retried from 1 s, doubling to 60 s, since only an operator
    /// (`reset_offsets`) or a repaired topic moves it on.
    Stalled { offset: i64 },
}

impl FailureKind {
    /// A fresh backoff at this failure's pace.
    pub(super) fn backoff(self) -> ExponentialBackoff {
        let (min, max) = match self {
            FailureKind::Transient => (Duration::from_millis(100), Duration::from_secs(5)),
            FailureKind::Stalled { .. } => (Duration::from_secs(1), Duration::from_secs(60)),
        };
        ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Whether the partition is stalled on a batch it cannot decode.
    pub fn is_stalled(self) -> bool {
        matches!(self, FailureKind::Stalled { .. })
    }
}

/// The current run of failures of one partition loop.
struct Failing {
    kind: FailureKind,
    message: String,
    since: Instant,
    attempts: u64,
    /// When a line about this run was last logged, and the attempts since then.
    logged_at: Instant,
    unlogged: u64,
    backoff: ExponentialBackoff,
}

/// One partition loop's failures: backoff, log rate and status. Owned by the loop.
pub struct Failures {
    stats: Arc<WorkerStats>,
    worker: &'static str,
    topic: String,
    partition: i32,
    current: Option<Failing>,
}

impl Failures {
    /// No failure yet.
    pub fn new(stats: Arc<WorkerStats>, worker: &'static str, topic: &str, partition: i32) -> Self {
        Self {
            stats,
            worker,
            topic: topic.to_owned(),
            partition,
            current: None,
        }
    }

    /// Clears the failure a previous run of this partition's loop may have left in the status
    /// (a worker stopped while failing, then started again).
    pub fn clear_status(&self) {
        self.stats.update_existing(self.partition, |p| {
            p.failing_since = None;
            p.last_error = None;
            p.last_error_at = None;
            p.failed_attempts = 0;
            p.stalled_at_offset = None;
        });
    }

    /// Records a failed attempt (logging it only when due) and returns how long to wait
    /// before the next one.
    pub fn failed(&mut self, kind: FailureKind, message: String) -> Duration {
        let (worker, topic, partition) = (self.worker, self.topic.as_str(), self.partition);
        let now = Instant::now();
        let failing = match &mut self.current {
            None => {
                match kind {
                    FailureKind::Transient => tracing::warn!(
                        worker, topic, partition, error = %message,
                        "partition failing; retrying with backoff (logged again at most once a minute while it repeats)"
                    ),
                    FailureKind::Stalled { offset } => tracing::error!(
                        worker, topic, partition, offset, error = %message,
                        "partition stalled: the record batch at this offset cannot be decoded; retrying slowly (reset_offsets moves past it)"
                    ),
                }
                self.current.insert(Failing {
                    kind,
                    message,
                    since: now,
                    attempts: 1,
                    logged_at: now,
                    unlogged: 0,
                    backoff: kind.backoff(),
                })
            }
            Some(failing) => {
                failing.attempts += 1;
                failing.unlogged += 1;
                if failing.kind.is_stalled() != kind.is_stalled() {
                    // Stalling, or no longer stalled but still failing: retry at that pace.
                    failing.backoff = kind.backoff();
                }
                let changed = failing.message != message || failing.kind != kind;
                let since_logged = now.duration_since(failing.logged_at);
                let due = if changed {
                    since_logged >= CHANGED_LOG_EVERY
                } else {
                    since_logged >= REPEAT_LOG_EVERY
                };
                if due {
                    let failing_for_s = now.duration_since(failing.since).as_secs();
                    let repeats = failing.unlogged;
                    match kind {
                        FailureKind::Transient => tracing::warn!(
                            worker, topic, partition, error = %message, attempts = failing.attempts,
                            repeats, failing_for_s, "partition still failing"
                        ),
                        FailureKind::Stalled { offset } => tracing::error!(
                            worker, topic, partition, offset, error = %message,
                            attempts = failing.attempts, repeats, failing_for_s,
                            "partition still stalled"
                        ),
                    }
                    failing.logged_at = now;
                    failing.unlogged = 0;
                }
                failing.kind = kind;
                failing.message = message;
                failing
            }
        };
        let delay = failing.backoff.next().unwrap_or(Duration::from_secs(5));
        let (message, attempts, stalled_at) = (
            failing.message.clone(),
            failing.attempts,
            match failing.kind {
                FailureKind::Stalled { offset } => Some(offset),
                FailureKind::Transient => None,
            },
        );
        self.stats.update(partition, |p| {
            let at = Utc::now();
            p.failing_since.get_or_insert(at);
            p.last_error = Some(message);
            p.last_error_at = Some(at);
            p.failed_attempts = attempts;
            p.stalled_at_offset = stalled_at;
        });
        delay
    }

    /// Records progress (a batch applied, or a fetch that found nothing new): the failure, if
    /// any, is over; logs that once and resets the backoff.
    pub fn progressed(&mut self) {
        let Some(failing) = self.current.take() else {
            return;
        };
        tracing::info!(
            worker = self.worker,
            topic = %self.topic,
            partition = self.partition,
            attempts = failing.attempts,
            failing_for_s = failing.since.elapsed().as_secs(),
            "partition recovered"
        );
        self.clear_status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::WorkerKind;

    fn failures() -> (Failures, Arc<WorkerStats>) {
        let stats = Arc::new(WorkerStats::new(WorkerKind::Upcreate, "t"));
        (Failures::new(Arc::clone(&stats), "upcreate", "t", 0), stats)
    }

    #[test]
    fn a_fresh_loop_clears_an_old_failure_but_adds_no_partition_to_the_status() {
        let (failures, stats) = failures();
        failures.clear_status();
        // A partition shows up once positioned (with its offsets) or failing (with its error).
        assert!(stats.status().partitions.is_empty());
        stats.update(0, |p| p.last_error = Some("old".into()));
        failures.clear_status();
        assert_eq!(stats.status().partitions[0].last_error, None);
    }

    #[test]
    fn only_progress_resets_the_backoff_which_grows_to_its_cap() {
        let (mut failures, stats) = failures();
        let delays: Vec<Duration> = (0..12)
            .map(|_| failures.failed(FailureKind::Transient, "down".into()))
            .collect();
        // Jitter adds up to one more delay; the trend still doubles and stops at the cap.
        assert!(delays[0] < Duration::from_millis(250), "{delays:?}");
        assert!(delays[6] >= Duration::from_millis(3200), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(10)),
            "{delays:?}"
        );
        let partition = &stats.status().partitions[0];
        assert_eq!(partition.failed_attempts, 12);
        assert_eq!(partition.last_error.as_deref(), Some("down"));
        assert!(partition.failing_since.unwrap() <= partition.last_error_at.unwrap());

        failures.progressed();
        let partition = &stats.status().partitions[0];
        assert_eq!(partition.failed_attempts, 0);
        assert!(partition.last_error.is_none() && partition.failing_since.is_none());
        assert!(
            failures.failed(FailureKind::Transient, "down".into()) < Duration::from_millis(250)
        );
    }

    #[test]
    fn a_stalled_partition_retries_from_a_second_up_to_a_minute_and_says_where() {
        let (mut failures, stats) = failures();
        let stalled = FailureKind::Stalled { offset: 42 };
        let delays: Vec<Duration> = (0..10)
            .map(|_| failures.failed(stalled, "cannot decode".into()))
            .collect();
        assert!(delays[0] >= Duration::from_secs(1), "{delays:?}");
        assert!(delays[9] >= Duration::from_secs(60), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(120)),
            "{delays:?}"
        );
        // Sixty seconds of retries: a handful of attempts.
        let mut elapsed = Duration::ZERO;
        let attempts = delays
            .iter()
            .take_while(|d| {
                elapsed += **d;
                elapsed <= Duration::from_secs(60)
            })
            .count();
        assert!(attempts <= 7, "{delays:?}");
        assert_eq!(stats.status().partitions[0].stalled_at_offset, Some(42));
        failures.progressed();
        assert_eq!(stats.status().partitions[0].stalled_at_offset, None);
    }
}
