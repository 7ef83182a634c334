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

/// How often the allocator is asked to return memory freed since (see [`return_freed_memory`]).
const ALLOCATOR_COLLECT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// Every this many collects, and during the first second or two, everything free is returned
/// (forced), not only what is past mimalloc's purge delay.
const ALLOCATOR_FORCE_EVERY: u32 = 10;

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

/// Asks mimalloc every [`ALLOCATOR_COLLECT_EVERY`] to give the OS back memory freed more than
/// its purge delay ago, and every [`ALLOCATOR_FORCE_EVERY`]th time (and while start-up's
/// garbage is fresh) everything free. mimalloc returns freed memory only when a thread next
/// calls into it, so an idle process kept ~20 MB resident; returning memory at every free
/// instead (purge delay 0) made busy threads fault pages back in (+6 µs of CPU per logged
/// request, BENCHMARKS.md), and forcing every 500 ms cost +3 µs. Busy threads now reuse their
/// pages and an idle process shrinks within seconds.
async fn return_freed_memory() {
    let mut ticks = tokio::time::interval(ALLOCATOR_COLLECT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for tick in 0u32.. {
        ticks.tick().await;
        let force = tick < 4 || tick % ALLOCATOR_FORCE_EVERY == 0;
        // SAFETY: mi_collect has no preconditions.
        unsafe { libmimalloc_sys::mi_collect(force) };
    }
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
