//! The consumer scenarios: the upcreate and delete workers draining pre-produced topics, each
//! beside the same SQL sent straight to PostgreSQL by the benchmark; and end-to-end latency.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context};
use hdrhistogram::Histogram;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rowsync::db::rows;
use rskafka::{client::partition::Compression, record::Record};

use crate::{
    fixture::{self, Fixture, PARTITIONS},
    load,
    report::{Figure, Target},
    Sizes,
};

/// Rows the latency observer reads per poll.
const WINDOW: usize = 500;

/// A message of a partition, as the straight-SQL baseline applies it.
#[derive(Clone)]
struct Change {
    id: i64,
    name: String,
}

/// Mean records per batch the worker applied (from `/metrics`), the baseline's batch size.
async fn mean_batch(rowsync: &fixture::Rowsync) -> anyhow::Result<(usize, f64, f64)> {
    let records = rowsync
        .metric_sum("rowsync_worker_batch_records_sum")
        .await?;
    let batches = rowsync
        .metric_sum("rowsync_worker_batch_records_count")
        .await?;
    let apply_seconds = rowsync
        .metric_sum("rowsync_worker_batch_duration_seconds_sum")
        .await?;
    ensure!(batches > 0.0, "the worker applied no batch");
    Ok((
        (records / batches).round().max(1.0) as usize,
        batches,
        apply_seconds,
    ))
}

/// A worker drain measured beside the same changes sent straight to PostgreSQL.
struct SideBySide<'a> {
    /// `upcreate` or `delete`.
    worker: &'a str,
    start: &'a str,
    stop: &'a str,
    /// Runs on rowsync's table before each worker round.
    prepare: String,
    /// The baseline's own schema (same table, no rowsync), and what runs on it before each round.
    baseline_schema: String,
    baseline_prepare: String,
    upsert: bool,
    rounds: usize,
}

/// What [`SideBySide::run`] measured: median times, and the worker's mean batch.
struct Drained {
    worker: Duration,
    baseline: Duration,
    /// The baseline in batches of half a partition (each partition in two statements): what
    /// does not depend on how the worker happened to split its batches.
    baseline_halves: Duration,
    batch: usize,
    batches: f64,
    apply_seconds: f64,
}

impl SideBySide<'_> {
    /// Per round: the worker drains its topic from the earliest offset (timed from its consumer
    /// group's assignment to the last record consumed), then the benchmark applies the same changes
    /// straight to PostgreSQL in batches of the worker's mean size. Rounds alternate so that
    /// drift on a shared machine hits both sides alike; the medians count.
    async fn run(
        &self,
        fixture: &Fixture,
        rowsync: &fixture::Rowsync,
        changes: &[Vec<Change>],
        sizes: &Sizes,
    ) -> anyhow::Result<Drained> {
        let records: u64 = changes.iter().map(|p| p.len() as u64).sum();
        let (mut worker, mut baseline, mut halves) = (Vec::new(), Vec::new(), Vec::new());
        let half = changes.iter().map(Vec::len).max().unwrap_or(2).div_ceil(2);
        let mut batch = 1;
        for round in 0..self.rounds {
            fixture.db.batch_execute(&self.prepare).await?;
            rowsync
                .post_json(
                    &format!("/api/workers/{}/reset_offsets/", self.worker),
                    serde_json::json!({"to": "earliest"}),
                )
                .await?;
            rowsync.post(self.start).await?;
            // Timed from the group assignment: the join (~3 s) is the group's, not the drain's.
            let started = rowsync.wait_stable(self.worker).await?;
            rowsync
                .wait_consumed(self.worker, records * (round as u64 + 1), sizes.drain_limit)
                .await?;
            worker.push(started.elapsed());
            rowsync.post(self.stop).await?;

            batch = mean_batch(rowsync).await?.0;
            fixture.db.batch_execute(&self.baseline_prepare).await?;
            baseline.push(straight_sql(&self.baseline_schema, changes, batch, self.upsert).await?);
            fixture.db.batch_execute(&self.baseline_prepare).await?;
            halves.push(straight_sql(&self.baseline_schema, changes, half, self.upsert).await?);
        }
        let (_, batches, apply_seconds) = mean_batch(rowsync).await?;
        Ok(Drained {
            worker: median(worker),
            baseline: median(baseline),
            baseline_halves: median(halves),
            batch,
            batches: batches / self.rounds as f64,
            apply_seconds,
        })
    }
}

/// The median of some durations.
fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Applies each partition's changes in batches of `batch` on its own connection, the partitions
/// in parallel, exactly as the worker's SQL does (dedup, sort, one statement, one transaction).
async fn straight_sql(
    schema: &str,
    partitions: &[Vec<Change>],
    batch: usize,
    upsert: bool,
) -> anyhow::Result<Duration> {
    let pool = fixture::pool(schema, partitions.len())?;
    // Copies and connections are made before the clock starts.
    let mut clients = Vec::new();
    for _ in partitions {
        clients.push(pool.get().await?);
    }
    let inputs: Vec<(Vec<Change>, _)> = partitions.iter().cloned().zip(clients).collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (changes, mut client) in inputs {
        tasks.push(tokio::spawn(async move {
            for chunk in changes.chunks(batch) {
                // Last write per id wins, ids sorted: what the worker's Batch::decode does.
                let by_id: BTreeMap<i64, &str> =
                    chunk.iter().map(|c| (c.id, c.name.as_str())).collect();
                let ids: Vec<i64> = by_id.keys().copied().collect();
                loop {
                    let tx = client.transaction().await?;
                    let applied = if upsert {
                        let names: Vec<&str> = by_id.values().copied().collect();
                        rows::upsert(&tx, &ids, &names).await
                    } else {
                        rows::delete(&tx, &ids).await
                    };
                    match applied {
                        Ok(_) => {
                            tx.commit().await?;
                            break;
                        }
                        // Deadlock with another partition's batch: apply again, as the worker does.
                        Err(rowsync::error::Error::Postgres(e))
                            if e.code()
                                == Some(
                                    &tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED,
                                ) => {}
                        Err(other) => return Err(other.into()),
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

fn encode(changes: &[Vec<Change>], upsert: bool) -> Vec<Vec<Vec<u8>>> {
    changes
        .iter()
        .map(|partition| {
            partition
                .iter()
                .map(|c| {
                    if upsert {
                        serde_json::to_vec(&serde_json::json!({"id": c.id, "name": c.name}))
                    } else {
                        serde_json::to_vec(&serde_json::json!({"id": c.id}))
                    }
                    .expect("json")
                })
                .collect()
        })
        .collect()
}

/// Upcreate worker: `sizes.upserts` messages, ids repeating (inserts and updates), spread over
/// the partitions (one id can be on several).
pub async fn upsert(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let mut fixture = Fixture::new("upsert").await?;
    fixture.migrate().await?;
    let topic = fixture.topic("updates");
    fixture.create_topic(&topic).await?;

    let mut rng = StdRng::seed_from_u64(4);
    let id_space = (sizes.upserts / 4).max(1) as i64;
    let mut changes = vec![Vec::new(); PARTITIONS as usize];
    for n in 0..sizes.upserts {
        let id = rng.random_range(0..id_space);
        let partition = rng.random_range(0..PARTITIONS) as usize;
        changes[partition].push(Change {
            id,
            name: format!("name {n} of {id}"),
        });
    }
    // What the table must hold: per id, the last name of one of the partitions it is on
    // (Kafka orders records within a partition only).
    let mut allowed: HashMap<i64, HashSet<&str>> = HashMap::new();
    for partition in &changes {
        let mut last: HashMap<i64, &str> = HashMap::new();
        for c in partition {
            last.insert(c.id, &c.name);
        }
        for (id, name) in last {
            allowed.entry(id).or_default().insert(name);
        }
    }

    let produce_started = Instant::now();
    fixture.produce(&topic, encode(&changes, true)).await?;
    let produced_in = produce_started.elapsed();

    let rowsync = fixture.rowsync(&[]).await?;
    let baseline_schema = fixture.sibling_schema("baseline").await?;
    let drained = SideBySide {
        worker: "upcreate",
        start: "/api/some_models/start_upcreate_from_kafka/",
        stop: "/api/some_models/stop_upcreate_from_kafka/",
        prepare: "TRUNCATE some_model".into(),
        baseline_prepare: format!("TRUNCATE {baseline_schema}.some_model"),
        baseline_schema,
        upsert: true,
        rounds: sizes.rounds,
    }
    .run(&fixture, &rowsync, &changes, sizes)
    .await?;
    let Drained {
        worker: drained_in,
        baseline: baseline_in,
        baseline_halves,
        batch,
        batches,
        apply_seconds,
    } = drained;
    rowsync.stop().await?;

    // The table is what the topic implies.
    let table = fixture
        .db
        .query("SELECT id, name FROM some_model", &[])
        .await?;
    ensure!(
        table.len() == allowed.len(),
        "upsert: {} rows, expected {}",
        table.len(),
        allowed.len()
    );
    for row in &table {
        let (id, name): (i64, &str) = (row.get(0), row.get(1));
        ensure!(
            allowed.get(&id).is_some_and(|names| names.contains(name)),
            "upsert: row {id} is {name:?}, not the last write of any partition"
        );
    }

    let n = sizes.upserts as f64;
    let worker_rate = n / drained_in.as_secs_f64();
    let sql_rate = n / baseline_in.as_secs_f64();
    let apply_share =
        apply_seconds / (drained_in.as_secs_f64() * f64::from(PARTITIONS) * sizes.rounds as f64);
    fixture.cleanup().await;
    Ok(vec![
        Figure::new(
            "upsert",
            format!(
                "upcreate worker drains {} messages, {PARTITIONS} partitions (median of {} rounds)",
                sizes.upserts, sizes.rounds
            ),
            worker_rate,
            "msg/s",
        )
        .baseline(
            format!("same upserts straight to PostgreSQL, batches of {batch}"),
            sql_rate,
        )
        .target(Target::RatioAtLeast(0.7))
        .also(Target::AtLeast(sizes.upsert_floor)),
        Figure::new(
            "upsert",
            "the same drain beside straight SQL in two batches per partition",
            worker_rate,
            "msg/s",
        )
        .baseline(
            format!(
                "same upserts straight to PostgreSQL, batches of {}",
                changes.iter().map(Vec::len).max().unwrap_or(2).div_ceil(2)
            ),
            n / baseline_halves.as_secs_f64(),
        ),
        Figure::new(
            "upsert",
            "records per batch (mean)",
            batch as f64,
            "records",
        ),
        Figure::new("upsert", "batches applied", batches, "batches"),
        Figure::new(
            "upsert",
            "share of partition-loop time spent in the apply transaction",
            apply_share * 100.0,
            "%",
        ),
        Figure::new(
            "upsert",
            "benchmark produces the messages (rskafka, batches of 5,000)",
            n / produced_in.as_secs_f64(),
            "msg/s",
        ),
    ])
}

/// Delete worker: `sizes.deletes` messages naming existing rows, over the partitions.
pub async fn delete(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let mut fixture = Fixture::new("delete").await?;
    fixture.migrate().await?;
    let topic = fixture.topic("deletions");
    fixture.create_topic(&topic).await?;
    let n = sizes.deletes as i64;
    let fill = format!(
        "INSERT INTO some_model SELECT g, 'row ' || g FROM generate_series(0, {}) g",
        n - 1
    );
    fixture.db.batch_execute(&fill).await?;

    let mut rng = StdRng::seed_from_u64(5);
    let mut changes = vec![Vec::new(); PARTITIONS as usize];
    let mut ids: Vec<i64> = (0..n).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.random_range(0..=i));
    }
    for id in ids {
        let partition = rng.random_range(0..PARTITIONS) as usize;
        changes[partition].push(Change {
            id,
            name: String::new(),
        });
    }
    fixture.produce(&topic, encode(&changes, false)).await?;

    let rowsync = fixture.rowsync(&[]).await?;
    let refill = format!("TRUNCATE some_model; {fill}");
    let baseline_schema = fixture.sibling_schema("baseline").await?;
    let Drained {
        worker: drained_in,
        baseline: baseline_in,
        baseline_halves,
        batch,
        ..
    } = SideBySide {
        worker: "delete",
        start: "/api/some_models/start_delete_from_kafka/",
        stop: "/api/some_models/stop_delete_from_kafka/",
        baseline_prepare: refill.replace("some_model", &format!("{baseline_schema}.some_model")),
        prepare: refill,
        baseline_schema,
        upsert: false,
        rounds: sizes.delete_rounds,
    }
    .run(&fixture, &rowsync, &changes, sizes)
    .await?;
    rowsync.stop().await?;
    let left: i64 = fixture
        .db
        .query_one("SELECT count(*) FROM some_model", &[])
        .await?
        .get(0);
    ensure!(left == 0, "delete: {left} rows left");
    fixture.cleanup().await;
    Ok(vec![
        Figure::new(
            "delete",
            format!(
                "delete worker drains {} messages (median of {} rounds)",
                sizes.deletes, sizes.delete_rounds
            ),
            n as f64 / drained_in.as_secs_f64(),
            "msg/s",
        )
        .baseline(
            format!("same deletes straight to PostgreSQL, batches of {batch}"),
            n as f64 / baseline_in.as_secs_f64(),
        )
        .target(Target::RatioAtLeast(0.7)),
        Figure::new(
            "delete",
            "the same drain beside straight SQL in two batches per partition",
            n as f64 / drained_in.as_secs_f64(),
            "msg/s",
        )
        .baseline(
            format!(
                "same deletes straight to PostgreSQL, batches of {}",
                changes.iter().map(Vec::len).max().unwrap_or(2).div_ceil(2)
            ),
            n as f64 / baseline_halves.as_secs_f64(),
        ),
    ])
}

/// One message produced at a steady rate → visible in `GET /api/some_models/`.
pub async fn latency(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let fixture = Fixture::new("latency").await?;
    let topic = fixture.topic("updates");
    fixture.create_topic(&topic).await?;
    let rowsync = fixture.rowsync(&[]).await?;
    rowsync
        .post("/api/some_models/start_upcreate_from_kafka/")
        .await?;
    // Latency is measured once the worker holds its partitions (the group join is not in it).
    rowsync.wait_stable("upcreate").await?;

    let count = sizes.latency_messages;
    let interval = Duration::from_secs_f64(1.0 / sizes.latency_rate);
    let mut partitions = Vec::new();
    for p in 0..PARTITIONS {
        partitions.push(Arc::new(fixture.partition(&topic, p).await?));
    }
    let sent_at = Arc::new(std::sync::Mutex::new(vec![None::<Instant>; count]));
    let acked_us = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));

    // The observer: the top rows, polled back to back, note when each id first shows.
    let addr = rowsync.addr;
    let observer = tokio::spawn(async move {
        let mut seen = vec![None::<Instant>; count];
        let mut sender = load::connect(addr).await?;
        let deadline = Instant::now() + Duration::from_secs(60) + interval * count as u32;
        let mut missing = count;
        let mut polls = 0u64;
        let observing = Instant::now();
        while missing > 0 {
            polls += 1;
            ensure!(
                Instant::now() < deadline,
                "latency: {missing} messages never became visible"
            );
            // The window just above the lowest id not seen yet (ids below it are all seen).
            let lowest = seen.iter().position(Option::is_none).unwrap_or(count);
            let path = format!(
                "/api/some_models/?limit={WINDOW}&before_id={}",
                lowest + WINDOW
            );
            let (status, body) = load::fetch(&mut sender, addr, &path).await?;
            let now = Instant::now();
            ensure!(status == 200, "latency: GET answered {status}");
            let rows: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
            for row in rows {
                let id = row["id"].as_i64().context("id")? as usize;
                if id < count && seen[id].is_none() {
                    seen[id] = Some(now);
                    missing -= 1;
                }
            }
        }
        eprintln!(
            "  observer: {polls} polls in {:.1} s",
            observing.elapsed().as_secs_f64()
        );
        anyhow::Ok(seen)
    });

    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut producers = Vec::new();
    for id in 0..count {
        ticker.tick().await;
        let client = Arc::clone(&partitions[id % partitions.len()]);
        let sent_at = Arc::clone(&sent_at);
        let acked_us = Arc::clone(&acked_us);
        producers.push(tokio::spawn(async move {
            let record = Record {
                key: None,
                value: Some(format!(r#"{{"id": {id}, "name": "latency {id}"}}"#).into_bytes()),
                headers: Default::default(),
                timestamp: chrono::Utc::now(),
            };
            let sent = Instant::now();
            sent_at.lock().unwrap()[id] = Some(sent);
            client
                .produce(vec![record], Compression::NoCompression)
                .await?;
            acked_us
                .lock()
                .unwrap()
                .saturating_record(sent.elapsed().as_micros() as u64);
            anyhow::Ok(())
        }));
    }
    for producer in producers {
        producer.await??;
    }
    let seen = observer.await??;
    let sent_at = sent_at.lock().unwrap().clone();
    let mut visible_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for (sent, seen) in sent_at.iter().zip(&seen) {
        let (sent, seen) = (sent.context("sent")?, seen.context("seen")?);
        visible_us.saturating_record(seen.saturating_duration_since(sent).as_micros() as u64);
    }
    rowsync.stop().await?;
    fixture.cleanup().await;
    let acked = acked_us.lock().unwrap().clone();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let what = format!("{count} messages at {} msg/s", sizes.latency_rate);
    Ok(vec![
        Figure::new(
            "latency",
            format!("produced → visible in GET, p50 ({what})"),
            ms(&visible_us, 0.5),
            "ms",
        )
        .baseline("produce acknowledged, p50", ms(&acked, 0.5)),
        Figure::new(
            "latency",
            "produced → visible in GET, p99",
            ms(&visible_us, 0.99),
            "ms",
        )
        .baseline("produce acknowledged, p99", ms(&acked, 0.99))
        .target(Target::AtMost(50.0)),
        Figure::new(
            "latency",
            "produced → visible in GET, max",
            visible_us.max() as f64 / 1000.0,
            "ms",
        )
        .baseline("produce acknowledged, max", acked.max() as f64 / 1000.0),
    ])
}
