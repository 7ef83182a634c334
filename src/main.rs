//! The `rowsync` binary: wiring only. Loads `.env`, parses settings, then serves, migrates or
//! probes a running instance (`healthcheck`).

use std::process::ExitCode;

use rowsync::{
    allocator,
    app::{migrate_only, Application},
    cli::{Cli, CliError, Command},
    healthcheck, shutdown, telemetry,
};

// jemalloc (BENCHMARKS.md, "The allocator's trade-off"): musl's own allocator slows the static
// build's Kafka work, and jemalloc, unlike mimalloc before it, gives back the pages any thread
// freed from one place; `allocator` holds its options and returns free memory once idle.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this symbol before `main` (prefixed: `_rjem_`).
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: allocator::MallocConf = allocator::CONF;

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
    // Held while serving: dropping it stops the collector's task.
    let _idle_collector = allocator::IdleCollector::start();
    let app = Application::build(cli.settings).await?;
    app.run_until_stopped(shutdown::signal()).await
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
