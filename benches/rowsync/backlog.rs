//! Draining a backlog: the upcreate worker drains `sizes.backlog` upserts spread over 3, 12 and
//! 48 partitions, with the fetch budget (`KAFKA_FETCH_BUDGET_BYTES`, default) and, as the
//! same-run baseline, without it (a budget too large to bind: each partition fetches up to
//! `KAFKA_FETCH_MAX_BYTES`, as before the budget existed). Reports, medians over rounds: peak
//! resident memory while draining, drain throughput (timed from the group assignment to the
//! last record, so the consumer group's join, ~3 s on Kafka and tansu alike, is reported apart),
//! and how long the process takes to be back under 25 MB once idle. `BENCH_BACKLOG` overrides
//! the number of upserts, `BENCH_BACKLOG_PARTITIONS` the partition counts, `BENCH_BACKLOG_ROUNDS`
//! the rounds (3).

use std::time::{Duration, Instant};

use crate::{
    fixture::Fixture,
    report::{Figure, Target},
    Sizes,
};

/// A budget so large it never binds: each partition fetches up to `KAFKA_FETCH_MAX_BYTES`.
const UNBOUNDED: &str = "1099511627776";

/// One drain's figures.
struct Drain {
    join: Duration,
    drain: Duration,
    peak_mb: f64,
    /// From the last record applied to resident memory under 25 MB (`None`: not within
    /// `sizes.idle_wait`, 30 s in full runs).
    settle: Option<Duration>,
    /// Resident memory when it got under 25 MB, or after `sizes.idle_wait` idle.
    idle_mb: f64,
}

pub async fn backlog(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    // `BENCH_BACKLOG_PARTITIONS=3,12` narrows the partition counts (to study one).
    let counts: Vec<i32> = std::env::var("BENCH_BACKLOG_PARTITIONS")
        .ok()
        .map(|v| v.split(',').filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![3, 12, 48]);
    for partitions in counts {
        let fixture = Fixture::new(&format!("backlog{partitions}")).await?;
        fixture.migrate().await?;
        let topic = fixture.topic("updates");
        fixture.create_topic_with(&topic, partitions).await?;
        let per = sizes.backlog / partitions as usize;
        let values: Vec<Vec<Vec<u8>>> = (0..partitions as usize)
            .map(|p| {
                (0..per)
                    .map(|n| {
                        let id = (n * partitions as usize + p) as i64;
                        serde_json::to_vec(
                            &serde_json::json!({"id": id, "name": format!("name {n}")}),
                        )
                        .expect("json")
                    })
                    .collect()
            })
            .collect();
        let records = (per * partitions as usize) as u64;
        fixture.produce(&topic, values).await?;

        let (mut budget, mut baseline) = (Vec::new(), Vec::new());
        for _ in 0..sizes.backlog_rounds {
            // Alternating, so drift on a shared machine hits both alike.
            budget.push(drain(&fixture, records, &[], sizes).await?);
            baseline.push(
                drain(
                    &fixture,
                    records,
                    &[("KAFKA_FETCH_BUDGET_BYTES", UNBOUNDED)],
                    sizes,
                )
                .await?,
            );
        }
        let (with, without) = (median_of(&budget), median_of(&baseline));
        let rate = |d: &Drain| records as f64 / d.drain.as_secs_f64();
        let label = |what: &str| format!("{what}, {records} upserts over {partitions} partitions");
        figures.push(
            Figure::new(
                "backlog",
                label("peak resident memory while draining"),
                with.peak_mb,
                "MB",
            )
            .baseline("without the fetch budget", without.peak_mb)
            .target(Target::AtMost(64.0)),
        );
        let throughput = Figure::new(
            "backlog",
            label("drain throughput"),
            rate(&with),
            "records/s",
        )
        .baseline("without the fetch budget", rate(&without));
        figures.push(if partitions == 3 {
            throughput.target(Target::RatioAtLeast(0.9))
        } else {
            throughput
        });
        figures.push(
            Figure::new(
                "backlog",
                label("idle: from the last record to under 25 MB resident (30: not within 30 s)"),
                with.settle.map_or(30.0, |d| d.as_secs_f64()),
                "s",
            )
            .baseline(
                "without the fetch budget",
                without.settle.map_or(30.0, |d| d.as_secs_f64()),
            )
            .target(Target::AtMost(10.0)),
        );
        figures.push(
            Figure::new(
                "backlog",
                label("resident memory once idle (under 25 MB, or after 30 s)"),
                with.idle_mb,
                "MB",
            )
            .baseline("without the fetch budget", without.idle_mb)
            .target(Target::AtMost(25.0)),
        );
        figures.push(Figure::new(
            "backlog",
            label("group join after start (not in the throughput)"),
            with.join.as_secs_f64(),
            "s",
        ));
        fixture.cleanup().await;
    }
    Ok(figures)
}

/// One drain from the earliest offset by a fresh process (so its peak is this drain's alone).
async fn drain(
    fixture: &Fixture,
    records: u64,
    extra: &[(&str, &str)],
    sizes: &Sizes,
) -> anyhow::Result<Drain> {
    fixture
        .db
        .batch_execute("TRUNCATE some_model; DELETE FROM kafka_offsets")
        .await?;
    let rowsync = fixture.rowsync(extra).await?;
    rowsync.reset_peak()?;
    let started = Instant::now();
    rowsync
        .post("/api/some_models/start_upcreate_from_kafka/")
        .await?;
    let joined = rowsync.wait_stable("upcreate").await?;
    let join = started.elapsed();
    rowsync
        .wait_consumed("upcreate", records, sizes.drain_limit)
        .await?;
    let drain = joined.elapsed();
    let peak_mb = rowsync.peak_rss_mb()?;
    let idle = Instant::now();
    let (mut settle, mut idle_mb) = (None, rowsync.rss_mb()?);
    while idle.elapsed() < sizes.idle_wait {
        idle_mb = rowsync.rss_mb()?;
        if idle_mb < 25.0 {
            settle = Some(idle.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rowsync
        .post("/api/some_models/stop_upcreate_from_kafka/")
        .await?;
    rowsync.stop().await?;
    Ok(Drain {
        join,
        drain,
        peak_mb,
        settle,
        idle_mb,
    })
}

/// The median round of each figure (taken figure by figure).
fn median_of(rounds: &[Drain]) -> Drain {
    fn median<T: Copy + PartialOrd>(mut values: Vec<T>) -> T {
        values.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
        values[values.len() / 2]
    }
    Drain {
        join: median(rounds.iter().map(|d| d.join).collect()),
        drain: median(rounds.iter().map(|d| d.drain).collect()),
        peak_mb: median(rounds.iter().map(|d| d.peak_mb).collect()),
        idle_mb: median(rounds.iter().map(|d| d.idle_mb).collect()),
        settle: median(
            rounds
                .iter()
                .map(|d| d.settle.unwrap_or(Duration::MAX))
                .collect(),
        )
        .checked_sub(Duration::ZERO)
        .filter(|d| *d != Duration::MAX),
    }
}
