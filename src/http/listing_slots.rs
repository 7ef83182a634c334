//! The slots of the streamed listings: one per connection of the listing pool. A listing that
//! finds none free waits in a short, bounded queue ([`QUEUE_WAIT`], at most [`QUEUE_PER_SLOT`]
//! waiters per slot), so a burst of quick listings is served; past either bound it is refused
//! (503 with `Retry-After`), so clients that stop reading never pile up requests behind them.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Longest a listing waits for a free slot.
pub const QUEUE_WAIT: Duration = Duration::from_millis(500);
/// Waiters allowed per slot.
pub const QUEUE_PER_SLOT: usize = 4;

/// The streamed listings' slots and their queue.
pub struct ListingSlots {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Counts a waiter while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ListingSlots {
    /// `size` slots: as many as the listing pool has connections.
    pub fn new(size: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(size)),
            waiting: AtomicUsize::new(0),
            max_waiting: size * QUEUE_PER_SLOT,
        }
    }

    /// A slot, held until the listing's body is over; `None` when none came free within
    /// [`QUEUE_WAIT`] or the queue is full.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return Some(slot);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let _waiting = Waiting(&self.waiting);
        tokio::time::timeout(QUEUE_WAIT, Arc::clone(&self.slots).acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_house_waits_briefly_then_is_refused() {
        let slots = ListingSlots::new(1);
        let held = slots.acquire().await.expect("a free slot");
        let started = tokio::time::Instant::now();
        assert!(slots.acquire().await.is_none());
        assert!(started.elapsed() >= QUEUE_WAIT);
        drop(held);
        assert!(slots.acquire().await.is_some(), "free again");
    }

    #[tokio::test]
    async fn a_waiter_gets_a_slot_freed_within_the_wait() {
        let slots = Arc::new(ListingSlots::new(1));
        let held = slots.acquire().await.expect("a free slot");
        let waiter = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.acquire().await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert!(waiter.await.unwrap());
    }
}
