//! Issue 15: the full listing reads the table through its primary key whatever the table's
//! statistics: no sort, no temporary files, ids in order. The test works in a database of its
//! own, as `pg_stat_database` counts temporary files per database.

use rowsync::{config::Settings, db::rows, http::listing_cache::MAX_CACHED_BYTES, model::Row};

use crate::helpers::{database_url, eventually, fresh_settings, TestApp};

/// Rows loaded: enough for PostgreSQL to sort a never-analyzed table rather than read its
/// index, and for the sort to spill to temporary files (with the default `work_mem` of 4 MB).
const ROWS: i64 = 200_000;

/// Today's statement for pages, which was also the full listing's until issue 15 (with a null
/// `LIMIT`): what PostgreSQL would plan for the listing without the listing's own settings.
const PAGE_STATEMENT_UNLIMITED: &str =
    "EXPLAIN SELECT id, name FROM some_model ORDER BY id DESC LIMIT NULL";

/// `url` pointing at database `name` instead.
fn url_of_database(url: &str, name: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (path, query) = match rest.split_once('?') {
                Some((path, query)) => (path, format!("?{query}")),
                None => (rest, String::new()),
            };
            let authority = path.split_once('/').map_or(path, |(a, _)| a);
            format!("{scheme}://{authority}/{name}{query}")
        }
        // libpq's key=value form: the last value of a key wins.
        None => format!("{url} dbname={name}"),
    }
}

/// An app on a database of its own, and a client of that database with the app's schema.
struct OwnDatabase {
    app: TestApp,
    db: tokio_postgres::Client,
    name: String,
}

impl OwnDatabase {
    async fn start() -> Self {
        let mut settings: Settings = fresh_settings();
        let name = format!("{}_db", settings.database.schema());
        let admin = connect(&database_url(), None).await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("creating the test database");
        let url = url_of_database(&database_url(), &name);
        settings.database.database_url = Some(url.clone().into());
        let app = TestApp::start(settings).await;
        let db = connect(&url, Some(app.settings.database.schema())).await;
        // Autovacuum would analyze the table under the test's feet.
        db.batch_execute("ALTER TABLE some_model SET (autovacuum_enabled = off)")
            .await
            .expect("switching autovacuum off for the table");
        Self { app, db, name }
    }

    /// Temporary files written in this database so far, and tuples read (sequentially or
    /// through an index), as PostgreSQL has counted them.
    async fn counters(&self) -> (i64, i64) {
        let row = self
            .db
            .query_one(
                "SELECT temp_files, tup_returned + tup_fetched FROM pg_stat_database \
                 WHERE datname = current_database()",
                &[],
            )
            .await
            .expect("reading pg_stat_database");
        (row.get(0), row.get(1))
    }

    /// Lists the whole table over HTTP: the rows, after checking the body is too large for
    /// the listing cache (so PostgreSQL answered it).
    async fn list(&self) -> Vec<Row> {
        let response = self.app.get("/api/some_models/").await;
        assert_eq!(response.status(), 200);
        let body = response.bytes().await.expect("the whole body");
        assert!(
            body.len() > MAX_CACHED_BYTES,
            "not a listing the cache keeps"
        );
        serde_json::from_slice(&body).expect("a JSON array of rows")
    }

    /// A full listing over HTTP: every row, highest id first, and not one temporary file.
    async fn list_without_temporary_files(&self) {
        // This connection's own counts (the load's `generate_series` spills its rows to a
        // temporary file) are reported at its next statement's end, not a second later.
        self.db
            .batch_execute("SELECT pg_stat_force_next_flush()")
            .await
            .expect("flushing this connection's statistics");
        let (temp_before, read_before) = self.counters().await;
        let rows = self.list().await;
        let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
        let expected: Vec<i64> = (1..=ROWS).rev().collect();
        assert!(ids == expected, "every id once, highest first");
        // The listing's connection reports its counts once idle, within a second or so.
        let temp_after = eventually("PostgreSQL to count the listing's reads", || async {
            let (temp, read) = self.counters().await;
            (read - read_before >= ROWS).then_some(temp)
        })
        .await;
        assert_eq!(temp_after, temp_before, "the listing wrote temporary files");
    }

    async fn cleanup(self) {
        self.app.cleanup().await;
        drop(self.db);
        let admin = connect(&database_url(), None).await;
        admin
            .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", self.name))
            .await
            .expect("dropping the test database");
    }
}

async fn connect(url: &str, schema: Option<&str>) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = url.parse().expect("a valid URL");
    if let Some(schema) = schema {
        config.options(format!("-c search_path={schema}"));
    }
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL is up (run scripts/dev-deps)");
    tokio::spawn(connection);
    client
}

async fn plan(db: &tokio_postgres::Client, explain: &str) -> String {
    db.simple_query(explain)
        .await
        .expect("EXPLAIN")
        .iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The listing's own plan: the index, read backwards, and no sort.
async fn assert_listing_reads_the_index(db: &tokio_postgres::Client) {
    let plan = rows::explain_all(db).await.expect("EXPLAIN").join("\n");
    assert!(!plan.contains("Sort"), "the listing sorts:\n{plan}");
    assert!(
        plan.contains("Index Scan Backward using some_model_pkey"),
        "the listing does not read the primary key:\n{plan}"
    );
}

#[tokio::test]
async fn a_freshly_loaded_never_analyzed_table_is_listed_from_its_index_without_temporary_files() {
    let test = OwnDatabase::start().await;
    test.db
        .batch_execute(&format!(
            "INSERT INTO some_model \
             SELECT g, 'row ' || g || repeat('x', (g % 31)::int) FROM generate_series(1, {ROWS}) g"
        ))
        .await
        .expect("bulk-loading the table");
    let analyzed: i64 = test
        .db
        .query_one(
            "SELECT count(*) FROM pg_stats WHERE tablename = 'some_model' \
             AND schemaname = current_schema()",
            &[],
        )
        .await
        .expect("reading pg_stats")
        .get(0);
    assert_eq!(analyzed, 0, "the table must never have been analyzed");
    // The state the issue describes: planned freely, the listing's statement sorts.
    let unguided = plan(&test.db, PAGE_STATEMENT_UNLIMITED).await;
    assert!(
        unguided.contains("Sort"),
        "the fixture no longer makes PostgreSQL sort:\n{unguided}"
    );

    assert_listing_reads_the_index(&test.db).await;
    test.list_without_temporary_files().await;
    test.cleanup().await;
}
