//! The full listing's plan (issue 15): first byte and body throughput of `GET /api/some_models/`
//! on tables of 100 k, 1 M and 10 M rows, right after a bulk load (never analyzed) and after
//! ANALYZE, with the temporary files PostgreSQL wrote, each beside today's statement measured
//! in the same run.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use futures_util::{pin_mut, TryStreamExt};
use http_body_util::BodyExt;
use hyper::Request;
use rowsync::{db::rows, http::listing_cache::MAX_CACHED_BYTES};
use tokio_postgres::types::ToSql;

use crate::{
    fixture::{connect_db_at, Fixture, Rowsync},
    load,
    report::{Figure, Target},
    Sizes,
};

/// Today's statement: the pages', and the full listing's until issue 15 (with a null `LIMIT`).
const PAGE_STATEMENT: &str = "SELECT id, name FROM some_model ORDER BY id DESC LIMIT $1";
/// Largest `limit` a page may ask for.
const MAX_PAGE: usize = 1_000_000;

/// One timed read of a listing.
struct Read {
    first: Duration,
    total: Duration,
    bytes: usize,
}

/// Timings of one side, in milliseconds, and its throughput.
#[derive(Default)]
struct Side {
    first_ms: Vec<f64>,
    rate: Vec<f64>,
}

impl Side {
    fn push(&mut self, read: &Read, rate: f64) {
        self.first_ms.push(read.first.as_secs_f64() * 1000.0);
        self.rate.push(rate);
    }
}

/// The `q` quantile (nearest rank) of some numbers, which it sorts.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len().max(1));
    values.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// `GET path`, counting the body's rows (`{`) as it streams, without keeping it.
async fn get(rowsync: &Rowsync, path: &str) -> anyhow::Result<(Read, usize)> {
    let mut sender = load::connect(rowsync.addr).await?;
    let request = Request::builder()
        .uri(path)
        .header(hyper::header::HOST, rowsync.addr.to_string())
        .body(http_body_util::Empty::new())?;
    let started = Instant::now();
    let response = sender.send_request(request).await?;
    ensure!(
        response.status() == 200,
        "GET {path}: {}",
        response.status()
    );
    let mut body = response.into_body();
    let (mut first, mut bytes, mut rows) = (None, 0, 0);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if !data.is_empty() {
                first.get_or_insert_with(|| started.elapsed());
                bytes += data.len();
                rows += data.iter().filter(|b| **b == b'{').count();
            }
        }
    }
    let read = Read {
        first: first.context("an empty body")?,
        total: started.elapsed(),
        bytes,
    };
    Ok((read, rows))
}

/// Today's statement as the full listing ran it: prepared, `LIMIT NULL`, on a connection of its
/// own (so PostgreSQL plans it afresh, as for a listing connection's first five listings;
/// from the sixth, PostgreSQL may switch to a generic plan). Read straight from PostgreSQL.
async fn old_statement(fixture: &Fixture) -> anyhow::Result<(Read, usize)> {
    let client = connect_db_at(&fixture.url, &fixture.name).await?;
    let statement = client.prepare(PAGE_STATEMENT).await?;
    let limit: Option<i64> = None;
    let started = Instant::now();
    let rows = client
        .query_raw(&statement, [&limit as &(dyn ToSql + Sync)])
        .await?;
    pin_mut!(rows);
    let (mut first, mut count, mut bytes) = (None, 0, 0);
    while let Some(row) = rows.try_next().await? {
        first.get_or_insert_with(|| started.elapsed());
        count += 1;
        bytes += row.get::<_, &str>(1).len() + 8;
    }
    let read = Read {
        first: first.context("no rows")?,
        total: started.elapsed(),
        bytes,
    };
    Ok((read, count))
}

/// Temporary files and bytes PostgreSQL has counted in the fixture's database, once every
/// backend has reported the `rows` tuples read since `read_before` (backends report when idle
/// or on exit, within about a second).
async fn temp_counts(
    fixture: &Fixture,
    read_before: i64,
    rows: i64,
) -> anyhow::Result<(i64, i64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = fixture
            .db
            .query_one(
                "SELECT temp_files, temp_bytes, tup_returned + tup_fetched FROM pg_stat_database \
                 WHERE datname = current_database()",
                &[],
            )
            .await?;
        let (files, bytes, read): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if read - read_before >= rows || Instant::now() > deadline {
            return Ok((files, bytes, read));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The plan's first node line, for the report.
async fn plan_of(fixture: &Fixture, explain: &str) -> anyhow::Result<String> {
    let text = fixture
        .db
        .simple_query(explain)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect::<Vec<_>>();
    Ok(summary(&text))
}

/// The node names of a plan, outermost first: `Gather Merge > Sort > Parallel Seq Scan`.
fn summary(plan: &[String]) -> String {
    plan.iter()
        .filter_map(|line| {
            let line = line.trim_start().trim_start_matches("->").trim();
            let node = line.split("  (").next()?;
            let node = node.split(" using ").next()?.split(" on ").next()?;
            (!node.contains(':')).then(|| node.to_owned())
        })
        .collect::<Vec<_>>()
        .join(" > ")
}

/// One table size: load, then the never-analyzed and the analyzed state.
async fn one_size(rows: usize, requests: usize) -> anyhow::Result<Vec<Figure>> {
    let fixture = Fixture::in_own_database("plan").await?;
    fixture.migrate().await?;
    let started = Instant::now();
    // Autovacuum would analyze the table in the middle of the "never analyzed" rounds.
    fixture
        .db
        .batch_execute(&format!(
            "ALTER TABLE some_model SET (autovacuum_enabled = off); \
             INSERT INTO some_model \
             SELECT g, 'row ' || g || repeat('x', (g % 31)::int) FROM generate_series(1, {rows}) g; \
             SELECT count(*) FROM some_model"
        ))
        .await?;
    eprintln!(
        "  loaded {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The load's own counts (`generate_series` spills its rows to a temporary file) are
    // reported now, not when this idle connection gets to it, up to 10 s later.
    fixture
        .db
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await?;
    let rowsync = fixture.rowsync(&[]).await?;
    rowsync.reset_peak()?;
    let before = rowsync.rss_mb()?;
    let mut figures = Vec::new();
    for analyzed in [false, true] {
        if analyzed {
            fixture.db.batch_execute("ANALYZE some_model").await?;
        }
        let state = if analyzed {
            "analyzed"
        } else {
            "never analyzed"
        };
        let old_plan = plan_of(
            &fixture,
            &format!("EXPLAIN {}", PAGE_STATEMENT.replace("$1", "NULL")),
        )
        .await?;
        let new_plan = summary(&rows::explain_all(&fixture.db).await?);
        let page = rows.min(MAX_PAGE);
        let (mut new, mut page_side, mut old) = (Side::default(), Side::default(), Side::default());
        let (mut new_temp, mut old_temp) = ((0, 0), (0, 0));
        for round in 0..requests {
            // Each listing fresh, never a hit of the listing cache: bodies over 4 MiB (100 k
            // rows and more) are never kept; a smaller table changes before each listing (a
            // no-op update of one row).
            if rows < 100_000 {
                fixture
                    .db
                    .batch_execute("UPDATE some_model SET name = name WHERE id = 1")
                    .await?;
            }
            // The first round also counts temporary files. A backend reports its counts when
            // it exits, or idle after up to 10 s: the timed rounds do not wait for that.
            let counted = round == 0;
            let before_counts = temp_counts(&fixture, 0, 0).await?;
            let (read, listed) = get(&rowsync, "/api/some_models/").await?;
            ensure!(listed == rows, "listed {listed} of {rows} rows");
            ensure!(
                rows < 100_000 || read.bytes > MAX_CACHED_BYTES,
                "a body the cache keeps"
            );
            new.push(&read, read.bytes as f64 / 1e6 / read.total.as_secs_f64());
            if counted {
                let after = temp_counts(&fixture, before_counts.2, rows as i64).await?;
                new_temp = (after.0 - before_counts.0, after.1 - before_counts.1);
            }

            let (read, listed) = get(&rowsync, &format!("/api/some_models/?limit={page}")).await?;
            ensure!(listed == page, "paged {listed} of {page} rows");
            page_side.push(&read, read.bytes as f64 / 1e6 / read.total.as_secs_f64());

            let before_counts = temp_counts(&fixture, 0, 0).await?;
            let (read, read_rows) = old_statement(&fixture).await?;
            ensure!(
                read_rows == rows,
                "today's statement read {read_rows} of {rows}"
            );
            old.push(&read, 0.0);
            if counted {
                let after = temp_counts(&fixture, before_counts.2, rows as i64).await?;
                old_temp = (after.0 - before_counts.0, after.1 - before_counts.1);
            }
        }
        let what = format!("{rows} rows, {state}");
        let first_target = if rows >= 1_000_000 {
            Target::AtMost(5.0)
        } else {
            Target::None
        };
        figures.extend([
            Figure::new(
                "plan",
                format!("{what}: plan now `{new_plan}`, today `{old_plan}`; first byte, median of {requests} fresh (uncached) GETs"),
                quantile(&mut new.first_ms, 0.5),
                "ms",
            )
            .baseline("today's statement, first row, median", quantile(&mut old.first_ms, 0.5))
            .target(first_target),
            Figure::new(
                "plan",
                format!("{what}: today's code path, `?limit={page}` (today's statement, prepared once per connection): first byte, median"),
                quantile(&mut page_side.first_ms, 0.5),
                "ms",
            ),
            Figure::new("plan", format!("{what}: first byte, p99 (nearest rank)"), quantile(&mut new.first_ms, 0.99), "ms")
                .baseline("today's statement, first row, p99", quantile(&mut old.first_ms, 0.99)),
            Figure::new("plan", format!("{what}: whole body, median"), quantile(&mut new.rate, 0.5), "MB/s")
                .baseline(
                    format!("today's code path: `?limit={page}`, median"),
                    quantile(&mut page_side.rate, 0.5),
                )
                .target(Target::RatioAtLeast(1.0)),
            Figure::new(
                "plan",
                format!("{what}: temporary files of one listing ({:.1} MB)", new_temp.1 as f64 / 1e6),
                new_temp.0 as f64,
                "files",
            )
            .baseline(format!("today's statement ({:.1} MB)", old_temp.1 as f64 / 1e6), old_temp.0 as f64)
            .target(Target::AtMost(0.0)),
        ]);
    }
    figures.push(
        Figure::new(
            "plan",
            format!("{rows} rows: server peak resident memory"),
            rowsync.peak_rss_mb()?,
            "MB",
        )
        .baseline("before the listings", before)
        .target(Target::AtMost(64.0)),
    );
    rowsync.stop().await?;
    fixture.cleanup().await;
    Ok(figures)
}

/// Every size of `sizes.plan_sizes`, one after the other, each in a database of its own.
pub async fn plan(sizes: &Sizes) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for &(rows, requests) in sizes.plan_sizes {
        figures.extend(one_size(rows, requests).await?);
    }
    Ok(figures)
}
