//! The allocator's settings and the task that gives its free memory back to the OS once the
//! process goes idle. The binary installs jemalloc as its global allocator with [`CONF`]; tests
//! run on the system allocator, where the collector's calls reach an unused jemalloc.
//!
//! Its one task is owned by the [`IdleCollector`] that started it and is aborted when that is
//! dropped (the binary holds it while it serves).

use std::{ffi::c_char, time::Duration};

use tokio::time::MissedTickBehavior;
use tokio_util::task::AbortOnDropHandle;

/// How often the collector looks at whether the process has gone idle.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// Less CPU than this between two checks counts as idle.
const IDLE_CPU: Duration = Duration::from_millis(5);
/// Checks at start-up that collect whether idle or not: start-up's garbage is freed all at once.
const START_UP_CHECKS: u32 = 4;

/// jemalloc's options, read before `main` (the binary exports them as `malloc_conf`). Freed
/// pages go back to the OS over about a second while the process is busy (`dirty_decay_ms`;
/// jemalloc's default is 10 s) and at once from the "muzzy" state; the rest the collector gives
/// back once the process is idle. Background purging threads would do that on their own, but
/// jemalloc cannot run them in a static musl binary.
pub const CONF: MallocConf = MallocConf(c"dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string for jemalloc's `malloc_conf` symbol.
#[repr(transparent)]
pub struct MallocConf(*const c_char);

// SAFETY: it points at a 'static C string that nothing writes.
unsafe impl Sync for MallocConf {}

/// Owns the task that returns freed memory once the process is idle; dropping it stops the task.
pub struct IdleCollector {
    _task: AbortOnDropHandle<()>,
}

impl IdleCollector {
    /// Starts collecting: during start-up, then at every check that finds the process idle.
    pub fn start() -> Self {
        Self {
            _task: AbortOnDropHandle::new(tokio::spawn(return_freed_memory())),
        }
    }
}

/// While busy, decay returns freed pages as the threads allocate; an idle thread never does, so
/// once the process is idle every arena's free pages are purged, from this one task (jemalloc
/// purges any thread's arena from any thread, which mimalloc, used before, could not: measured
/// in BENCHMARKS.md, "The allocator's trade-off").
async fn return_freed_memory() {
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_cpu = process_cpu_time();
    for tick in 0u32.. {
        ticks.tick().await;
        let cpu = process_cpu_time();
        let idle = cpu.saturating_sub(last_cpu) < IDLE_CPU;
        last_cpu = cpu;
        // Every idle check, not only the first: what is freed while idle (a pooled connection
        // closed after `DB_POOL_IDLE_TIMEOUT_MS`, say) decays only as threads allocate. A purge
        // with nothing to give back costs microseconds.
        if tick < START_UP_CHECKS || idle {
            let status = purge_all_arenas();
            if status != 0 {
                tracing::debug!(status, "jemalloc refused to purge its arenas");
            }
        }
    }
}

/// Returns every arena's unused dirty pages to the OS (`arena.<MALLCTL_ARENAS_ALL>.purge`;
/// `MALLCTL_ARENAS_ALL` is 4096 in jemalloc 5). 0, or jemalloc's error number.
fn purge_all_arenas() -> i32 {
    // SAFETY: a void mallctl: no value read or written.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
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

    #[test]
    fn the_purge_is_a_command_jemalloc_knows() {
        // A name it did not know would give ENOENT.
        assert_eq!(purge_all_arenas(), 0);
    }
}
