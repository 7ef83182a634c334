//! The `rowsync` binary: wiring only. Loads `.env`, parses settings, then serves, migrates or
//! probes a running instance (`healthcheck`).

use std::process::ExitCode;

use rowsync::{
    app::{migrate_only, Application},
    cli::{Cli, CliError, Command},
    healthcheck, shutdown, telemetry,
};

// musl's allocator roughly halves Kafka throughput in the static build; mimalloc restores it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often the allocator task looks at whether the process has gone idle.
const ALLOCATOR_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// Less CPU than this between two checks counts as idle.
const IDLE_CPU: std::time::Duration = std::time::Duration::from_millis(5);

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal; the environment alone may hold every setting.
    let _ = dotenvy::dotenv();
    let cli = match Cli::try_parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(CliError::Info(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(CliError::Invalid(line)) => {
            eprintln!("{line}");
            return ExitCode::from(2);
        }
        Err(CliError::InvalidHealthcheck(line)) => {
            eprintln!("{line}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::init();
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Healthcheck => return probe(cli.settings.listen_addr).await,
        Command::Migrate => migrate_only(&cli.settings).await,
        Command::Serve => serve(cli).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    tokio::spawn(return_freed_memory());
    let app = Application::build(cli.settings).await?;
    app.run_until_stopped(shutdown::signal()).await
}

/// Gives the OS back the memory mimalloc holds free once the process goes idle (and during
/// start-up, whose garbage is freed all at once).
///
/// mimalloc returns freed memory only when the thread that holds it next calls into it, so an
/// idle process kept ~20 MB resident. Returning it at every free instead (purge delay 0) made
/// busy threads fault pages straight back in, and collecting on a timer under load cost CPU on
/// every request (BENCHMARKS.md); a busy process now keeps reusing its pages, and one that has
/// used under [`IDLE_CPU`] in the last [`ALLOCATOR_CHECK_EVERY`] is collected once.
async fn return_freed_memory() {
    let mut ticks = tokio::time::interval(ALLOCATOR_CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_cpu = process_cpu_time();
    let mut collected = false;
    for tick in 0u32.. {
        ticks.tick().await;
        let cpu = process_cpu_time();
        let idle = cpu.saturating_sub(last_cpu) < IDLE_CPU;
        last_cpu = cpu;
        if tick < 4 || (idle && !collected) {
            // SAFETY: mi_collect has no preconditions.
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
        collected = idle;
    }
}

/// CPU time (user and system) this process has used so far.
fn process_cpu_time() -> std::time::Duration {
    // SAFETY: getrusage writes one plain struct, zeroed beforehand.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec as u64)
            + std::time::Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// `rowsync healthcheck`: 0 when the API listening on `listen_addr` is live, else 1.
async fn probe(listen_addr: std::net::SocketAddr) -> ExitCode {
    let addr = healthcheck::probe_addr(listen_addr);
    match healthcheck::check(addr, healthcheck::TIMEOUT).await {
        Ok(()) => {
            println!("healthy: {addr} answered 200");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("unhealthy: {error}");
            ExitCode::FAILURE
        }
    }
}
