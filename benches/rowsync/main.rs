//! The rowsync benchmark: every figure of the performance targets beside a baseline measured
//! in the same run, printed as a Markdown table (and written to `target/bench-report.md`).
//!
//! `cargo bench --bench rowsync` runs the full sizes (about 10 minutes on 2 cores);
//! `cargo bench --bench rowsync -- --smoke` runs tiny sizes, as does `cargo test --all-targets`
//! (so CI runs it and it never rots);
//! `--only upsert,list` picks scenarios. PostgreSQL and the broker come from `DATABASE_URL` and
//! `KAFKA_BOOTSTRAP_SERVERS` (defaults: local ones; `scripts/dev-deps` starts them).

mod backlog;
mod consumers;
mod fixture;
mod http;
mod listing_plan;
mod load;
mod report;

use std::time::Duration;

use clap::Parser;

/// Command line.
#[derive(Parser)]
struct Args {
    /// Tiny sizes: proves every scenario runs and checks its results, measures nothing useful.
    #[arg(long)]
    smoke: bool,
    /// Only these scenarios: process, upsert, delete, latency, list, stream, plan, publish,
    /// restlog, backlog.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Passed by `cargo bench`. Without it (`cargo test --all-targets` runs this binary too)
    /// the sizes are the smoke ones.
    #[arg(long, hide = true)]
    bench: bool,
}

/// How much each scenario does.
pub struct Sizes {
    pub upserts: usize,
    pub upsert_floor: f64,
    pub deletes: usize,
    pub drain_limit: Duration,
    pub latency_messages: usize,
    pub latency_rate: f64,
    pub list_rows: usize,
    pub large_rows: usize,
    pub stream_rounds: usize,
    /// Table sizes of the listing-plan scenario, each with its number of fresh listings per
    /// state (never analyzed, analyzed).
    pub plan_sizes: &'static [(usize, usize)],
    pub warmup: Duration,
    pub load: Duration,
    pub produce_rounds: usize,
    /// Pairs of response-log slices (one with the log on, one off).
    pub log_pairs: usize,
    /// Length of each response-log slice.
    pub log_slice: Duration,
    pub startups: usize,
    /// Times each drain (worker and straight SQL, alternating) is repeated; the median counts.
    pub rounds: usize,
    /// The same for the delete drain, which lasts well under a second and so is noisier.
    pub delete_rounds: usize,
    /// Upserts of the backlog scenario (drained at 3, 12 and 48 partitions).
    pub backlog: usize,
    /// Rounds of each backlog drain (with and without the budget); the median counts.
    pub backlog_rounds: usize,
    /// How long a drained process may take to be back under 25 MB.
    pub idle_wait: Duration,
}

impl Sizes {
    fn full() -> Self {
        Self {
            upserts: 1_000_000,
            upsert_floor: 100_000.0,
            deletes: 200_000,
            drain_limit: Duration::from_secs(300),
            latency_messages: 10_000,
            latency_rate: 1_000.0,
            list_rows: 10_000,
            large_rows: 1_000_000,
            stream_rounds: 3,
            plan_sizes: &[(100_000, 25), (1_000_000, 15), (10_000_000, 5)],
            warmup: Duration::from_secs(2),
            load: Duration::from_secs(10),
            produce_rounds: 200,
            log_pairs: 20,
            log_slice: Duration::from_secs(1),
            startups: 5,
            rounds: 3,
            delete_rounds: 9,
            backlog: std::env::var("BENCH_BACKLOG")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2_000_000),
            backlog_rounds: std::env::var("BENCH_BACKLOG_ROUNDS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(3),
            idle_wait: Duration::from_secs(30),
        }
    }

    fn smoke() -> Self {
        Self {
            upserts: 3_000,
            upsert_floor: 100_000.0,
            deletes: 2_000,
            drain_limit: Duration::from_secs(60),
            latency_messages: 100,
            latency_rate: 100.0,
            list_rows: 100,
            large_rows: 10_000,
            stream_rounds: 1,
            plan_sizes: &[(3_000, 3)],
            warmup: Duration::from_millis(200),
            load: Duration::from_millis(500),
            produce_rounds: 5,
            log_pairs: 2,
            log_slice: Duration::from_millis(200),
            startups: 1,
            rounds: 2,
            delete_rounds: 2,
            backlog: 4_800,
            backlog_rounds: 1,
            idle_wait: Duration::from_secs(1),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let smoke = args.smoke || !args.bench;
    let sizes = if smoke { Sizes::smoke() } else { Sizes::full() };
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut figures = Vec::new();
    macro_rules! scenario {
        ($name:literal, $run:expr) => {
            if wanted($name) {
                eprintln!("bench: {} …", $name);
                let started = std::time::Instant::now();
                let result = $run
                    .await
                    .map_err(|e| e.context(concat!("scenario ", $name)))?;
                for figure in &result {
                    eprintln!("  {}: {:.2} {}", figure.what, figure.value, figure.unit);
                }
                eprintln!(
                    "bench: {} done in {:.1} s",
                    $name,
                    started.elapsed().as_secs_f64()
                );
                figures.extend(result);
            }
        };
    }
    scenario!("process", http::startup(&sizes));
    scenario!("upsert", consumers::upsert(&sizes));
    scenario!("delete", consumers::delete(&sizes));
    scenario!("latency", consumers::latency(&sizes));
    scenario!("list", http::list(&sizes));
    scenario!("stream", http::stream(&sizes));
    scenario!("plan", listing_plan::plan(&sizes));
    scenario!("publish", http::write_to_kafka(&sizes));
    scenario!("restlog", http::response_log(&sizes));
    scenario!("backlog", backlog::backlog(&sizes));

    let table = report::table(&figures);
    let machine = format!(
        "{} cores, {}; sizes: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_owned())
            )
            .unwrap_or_default(),
        if smoke {
            "smoke (tiny; figures meaningless)"
        } else {
            "full"
        }
    );
    let report = format!("{machine}\n\n{table}");
    println!("{report}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(if smoke {
        "target/bench-report-smoke.md"
    } else {
        "target/bench-report.md"
    });
    std::fs::write(&path, &report)?;
    eprintln!("bench: report written to {}", path.display());
    if !smoke {
        let missed = figures.iter().filter(|f| f.met() == Some(false)).count();
        eprintln!("bench: {missed} target(s) missed");
    }
    Ok(())
}
