//! Gives mimalloc's free memory back to the OS once the process goes idle. The binary installs
//! mimalloc as its global allocator; this module only asks it to collect.
//!
//! Its one task is owned by the [`IdleCollector`] that started it and is aborted when that is
//! dropped (the binary holds it while it serves).

use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::task::AbortOnDropHandle;

/// How often the collector looks at whether the process has gone idle.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Less CPU than this between two checks counts as idle.
const IDLE_CPU: Duration = Duration::from_millis(5);
/// Checks at start-up that collect whether idle or not: start-up's garbage is freed all at once.
const START_UP_CHECKS: u32 = 4;

/// Owns the task that returns freed memory once the process is idle; dropping it stops the task.
pub struct IdleCollector {
    _task: AbortOnDropHandle<()>,
}

impl IdleCollector {
    /// Starts collecting: during start-up, then once after each busy stretch.
    pub fn start() -> Self {
        Self {
            _task: AbortOnDropHandle::new(tokio::spawn(return_freed_memory())),
        }
    }
}

/// mimalloc returns freed memory only when the thread holding it next calls into it, so an idle
/// process would keep it; a busy one keeps reusing its pages, so only an idle one is collected
/// (the variants tried, measured: BENCHMARKS.md, "The allocator's trade-off").
async fn return_freed_memory() {
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_cpu = process_cpu_time();
    let mut collected = false;
    for tick in 0u32.. {
        ticks.tick().await;
        let cpu = process_cpu_time();
        let idle = cpu.saturating_sub(last_cpu) < IDLE_CPU;
        last_cpu = cpu;
        if tick < START_UP_CHECKS || (idle && !collected) {
            // SAFETY: mi_collect has no preconditions.
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
        collected = idle;
    }
}

/// CPU time (user and system) this process has used so far.
fn process_cpu_time() -> Duration {
    // SAFETY: getrusage writes one plain struct, zeroed beforehand.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive_tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    #[tokio::test]
    async fn dropping_the_collector_stops_its_task() {
        let before = alive_tasks();
        let collector = IdleCollector::start();
        assert_eq!(alive_tasks(), before + 1);
        drop(collector);
        // An aborted task ends the next time the runtime gets to it.
        for _ in 0..100 {
            if alive_tasks() == before {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the collector's task outlived it");
    }
}
