//! What a worker's partition loops share with its group membership: the [`Lease`] (how long
//! this replica may still apply, renewed by each heartbeat the coordinator accepted) and the
//! [`Positions`] PostgreSQL holds, which the membership mirrors to Kafka's committed offsets.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

/// Until when this replica may apply batches: the send time of the last heartbeat (or sync)
/// the coordinator accepted, plus the session timeout. The coordinator counts the session from
/// when the request arrived, later than it was sent, so the lease always ends first: a replica
/// that was paused (or cut off) stops applying before its partitions can go to another.
///
/// A new lease is unbounded (a partition consumer driven on its own, outside any group, as the
/// tests drive one); a membership revokes it before it first joins.
#[derive(Debug)]
pub struct Lease {
    origin: Instant,
    /// Milliseconds after `origin`; 0: no lease (not a member); `u64::MAX`: unbounded.
    until_ms: AtomicU64,
}

impl Default for Lease {
    fn default() -> Self {
        // An origin in the past, so that a deadline already passed stays representable.
        let now = Instant::now();
        Self {
            origin: now.checked_sub(Duration::from_secs(3600)).unwrap_or(now),
            until_ms: AtomicU64::new(u64::MAX),
        }
    }
}

impl Lease {
    /// Extends the lease to `sent + session` (never shortens it).
    pub fn renew(&self, sent: Instant, session: Duration) {
        let until = (sent + session)
            .saturating_duration_since(self.origin)
            .as_millis() as u64;
        self.until_ms.fetch_max(until.max(1), Ordering::AcqRel);
    }

    /// Ends the lease (membership lost, or left).
    pub fn revoke(&self) {
        self.until_ms.store(0, Ordering::Release);
    }

    /// Whether this replica may apply now.
    pub fn valid(&self) -> bool {
        let until = self.until_ms.load(Ordering::Acquire);
        until != 0 && self.origin.elapsed().as_millis() < u128::from(until)
    }

    /// When the lease ends (`None`: there is none, or it is unbounded).
    pub fn deadline(&self) -> Option<Instant> {
        match self.until_ms.load(Ordering::Acquire) {
            0 | u64::MAX => None,
            until => Some(self.origin + Duration::from_millis(until)),
        }
    }
}

/// The next offset of each partition as PostgreSQL holds it, set by the partition loops after
/// each commit, and the ones Kafka has not been told yet.
#[derive(Debug, Default)]
pub struct Positions {
    inner: Mutex<PositionsInner>,
}

#[derive(Debug, Default)]
struct PositionsInner {
    next: BTreeMap<i32, i64>,
    /// Changed since the last [`Positions::take_unsent`].
    unsent: BTreeMap<i32, i64>,
}

impl Positions {
    /// Records that PostgreSQL's next offset of `partition` is now `next`.
    pub fn set(&self, partition: i32, next: i64) {
        let mut inner = self.lock();
        if inner.next.insert(partition, next) != Some(next) {
            inner.unsent.insert(partition, next);
        }
    }

    /// The positions not sent to Kafka yet, among `partitions`; others stay unsent.
    pub fn take_unsent(&self, partitions: &[i32]) -> Vec<(i32, i64)> {
        let mut inner = self.lock();
        let taken: Vec<(i32, i64)> = inner
            .unsent
            .iter()
            .filter(|(p, _)| partitions.contains(p))
            .map(|(&p, &o)| (p, o))
            .collect();
        for (partition, _) in &taken {
            inner.unsent.remove(partition);
        }
        taken
    }

    /// Puts back positions whose commit failed, unless newer ones arrived meanwhile.
    pub fn unsend(&self, positions: &[(i32, i64)]) {
        let mut inner = self.lock();
        for &(partition, offset) in positions {
            if inner.next.get(&partition) == Some(&offset) {
                inner.unsent.entry(partition).or_insert(offset);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PositionsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_ends_a_session_after_the_heartbeat_was_sent() {
        let lease = Lease::default();
        assert!(
            lease.valid() && lease.deadline().is_none(),
            "unbounded until revoked"
        );
        lease.revoke();
        assert!(!lease.valid());
        let sent = Instant::now();
        lease.renew(sent, Duration::from_secs(10));
        assert!(lease.valid());
        assert!(
            lease.deadline().unwrap() <= sent + Duration::from_secs(10) + Duration::from_millis(1)
        );
        lease.renew(sent - Duration::from_secs(20), Duration::from_secs(10));
        assert!(lease.valid(), "an older heartbeat never shortens the lease");
        lease.revoke();
        assert!(!lease.valid());
        lease.renew(
            Instant::now() - Duration::from_secs(11),
            Duration::from_secs(10),
        );
        assert!(
            !lease.valid(),
            "a lease whose session has passed is not valid"
        );
    }

    #[test]
    fn positions_are_sent_once_and_only_for_the_partitions_asked() {
        let positions = Positions::default();
        positions.set(0, 10);
        positions.set(1, 20);
        positions.set(1, 20);
        assert_eq!(positions.take_unsent(&[1]), vec![(1, 20)]);
        assert_eq!(positions.take_unsent(&[0, 1]), vec![(0, 10)]);
        assert!(positions.take_unsent(&[0, 1]).is_empty());
        positions.unsend(&[(0, 10)]);
        positions.set(1, 25);
        positions.unsend(&[(1, 20)]);
        assert_eq!(positions.take_unsent(&[0, 1]), vec![(0, 10), (1, 25)]);
    }
}
