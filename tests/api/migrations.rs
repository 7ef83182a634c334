//! Migrations: `rowsync migrate`, and replicas migrating one schema at the same time.

use std::process::Command;

use crate::helpers::{database_url, fresh_settings};

async fn table_exists(schema: &str, table: &str) -> bool {
    let (client, connection) = tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL is up (run scripts/dev-deps)");
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
            &[&schema, &table],
        )
        .await
        .unwrap();
    let exists = row.get::<_, i64>(0) == 1;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .unwrap();
    exists
}

#[tokio::test]
async fn replicas_migrating_together_all_succeed() {
    let settings = fresh_settings();
    let runs = (0..4).map(|_| {
        let database = settings.database.clone();
        tokio::spawn(async move { rowsync::db::migrate(&database).await })
    });
    for run in runs {
        run.await
            .unwrap()
            .expect("every concurrent migration succeeds");
    }
    assert!(table_exists(settings.database.schema(), "some_model").await);
}

#[tokio::test]
async fn the_migrate_subcommand_creates_the_schema_and_tables_then_exits() {
    let settings = fresh_settings();
    let schema = settings.database.schema().to_owned();
    let output = Command::new(env!("CARGO_BIN_EXE_rowsync"))
        .env_clear()
        .current_dir(std::env::temp_dir())
        .env("DATABASE_URL", database_url())
        .env("DB_SCHEMA", &schema)
        .env("KAFKA_HOST", "unused.invalid")
        .arg("migrate")
        .output()
        .expect("running rowsync migrate");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(table_exists(&schema, "kafka_offsets").await);
}
