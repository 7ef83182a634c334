//! PostgreSQL: the connection pool and the embedded migrations; every connection goes through
//! [`tls`]. The SQL lives in [`rows`], [`offsets`] and [`workers`]; [`errors`] says what
//! PostgreSQL's errors mean; [`row_reads`] shares single-row reads; [`pool_metrics`] exports the
//! pools' usage; [`close_idle_connections`] closes what a pool no longer uses.

pub mod changes;
pub mod errors;
pub mod offsets;
pub mod pool_metrics;
pub mod row_reads;
pub mod rows;
pub mod tls;
pub mod workers;

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::{config::DatabaseSettings, error::error_chain};

mod embedded {
    refinery::embed_migrations!("sql");
}

/// How rowsync opens every PostgreSQL connection (pool, change listener, migrations): the
/// settings and the TLS connector that `DB_SSLMODE` and friends ask for.
#[derive(Debug, Clone)]
pub struct Connector {
    pub config: tokio_postgres::Config,
    pub tls: tls::MakePgTls,
}

/// A connection opened by a [`Connector`].
pub type Connection = tokio_postgres::Connection<tokio_postgres::Socket, tls::PgTlsStream>;

impl Connector {
    /// Reads the settings and any certificate files; an error is one line naming the setting.
    pub fn new(settings: &DatabaseSettings) -> anyhow::Result<Self> {
        let pg = settings.pg_config()?;
        let tls = tls::MakePgTls::new(&pg.tls).map_err(anyhow::Error::msg)?;
        Ok(Self {
            config: pg.config,
            tls,
        })
    }

    /// Opens one connection; its error is one line naming the setting to fix.
    pub async fn connect(&self) -> anyhow::Result<(tokio_postgres::Client, Connection)> {
        self.config.connect(self.tls.clone()).await.map_err(|e| {
            let text = errors::describe(&e);
            anyhow::Error::msg(match text.strip_prefix("PostgreSQL: ") {
                Some(rest) => format!("PostgreSQL at {}: {rest}", self.addresses()),
                None => text,
            })
        })
    }

    /// The servers connected to, `host:port` (no credentials), for error messages.
    fn addresses(&self) -> String {
        let ports = self.config.get_ports();
        self.config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match host {
                    tokio_postgres::config::Host::Tcp(host) => format!("{host}:{port}"),
                    #[cfg(unix)]
                    tokio_postgres::config::Host::Unix(dir) => {
                        format!("{}/.s.PGSQL.{port}", dir.display())
                    }
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Builds the main pool (`DB_POOL_SIZE`): the workers, `write_to_kafka`'s row reads, small
/// listing pages and readiness draw from it. Connections open lazily, each bounded in time.
pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<Pool> {
    pool_of_size(settings, settings.db_pool_size as usize)
}

/// Builds a pool of `size` connections with `settings`. The streamed full listings get one of
/// their own (`LISTING_MAX_CONCURRENT` connections): a listing holds its connection until the
/// client has read the whole body, so clients that stop reading must never be able to take the
/// connections the workers and `write_to_kafka` need.
pub fn pool_of_size(settings: &DatabaseSettings, size: usize) -> anyhow::Result<Pool> {
    let connector = Connector::new(settings)?;
    let manager = Manager::from_config(
        connector.config,
        connector.tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        // The most recently used connection first: a quiet spell leaves the others unused, so
        // `close_idle_connections` can close them.
        .queue_mode(QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.timeout()))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .context("building the PostgreSQL pool")
}

/// Closes the connections `pool` has left unused for longer than `idle_timeout`, all but the
/// most recently used one, looking a few times per timeout, until `cancel`. A connection keeps
/// buffers as large as the largest statement it sent and the largest answer it read (hundreds
/// of KB after a full-size batch), so a replica that goes quiet gives that memory back; the one
/// kept open spares occasional requests a new connection (a few milliseconds, more with TLS).
pub async fn close_idle_connections(pool: Pool, idle_timeout: Duration, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval((idle_timeout / 4).max(Duration::from_millis(250)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // The most recently used idle connection stays; only older ones can go.
        let last_used =
            |metrics: &deadpool_postgres::Metrics| metrics.recycled.unwrap_or(metrics.created);
        let mut freshest = None;
        pool.retain(|_, metrics| {
            freshest = freshest.max(Some(last_used(&metrics)));
            true
        });
        let Some(freshest) = freshest else { continue };
        let closed = pool
            .retain(|_, metrics| {
                let used = last_used(&metrics);
                used.elapsed() < idle_timeout || used >= freshest
            })
            .removed
            .len();
        if closed > 0 {
            tracing::debug!(closed, "closed idle PostgreSQL connections");
        }
    }
}

/// Creates the schema if needed and applies pending migrations.
///
/// Runs under a PostgreSQL advisory lock keyed by the schema, so replicas starting together
/// migrate one at a time (refinery has no locking of its own).
pub async fn migrate(settings: &DatabaseSettings) -> anyhow::Result<()> {
    let (mut client, connection) = Connector::new(settings)?.connect().await?;
    let connection = tokio::spawn(connection);

    let lock_key = format!("rowsync.migrate.{}", settings.schema());
    client
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&lock_key])
        .await
        .context("taking the migration lock")?;
    let outcome = async {
        if let Some(schema) = &settings.db_schema {
            // `schema` is a validated identifier (see config::parse_identifier).
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .await
                .context("creating the schema")?;
        }
        let report = embedded::migrations::runner()
            .run_async(&mut client)
            .await
            .map_err(|e| anyhow::anyhow!("applying migrations: {}", error_chain(&e)))?;
        for migration in report.applied_migrations() {
            tracing::info!(migration = %migration, "applied migration");
        }
        anyhow::Ok(())
    }
    .await;
    // The lock dies with the session anyway; unlocking early lets the next replica go.
    let _ = client
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&lock_key])
        .await;
    drop(client);
    let _ = connection.await;
    outcome
}

/// Whether every embedded migration has been applied to the configured schema.
pub async fn migrations_applied(client: &deadpool_postgres::Client) -> crate::error::Result<bool> {
    let latest = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or_default();
    // Before the first migration the history table does not exist: not applied.
    let row = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        return Ok(false);
    }
    let applied: Option<i64> = client
        .query_one(
            "SELECT max(version)::bigint FROM refinery_schema_history",
            &[],
        )
        .await?
        .get(0);
    Ok(applied.is_some_and(|v| v >= i64::from(latest)))
}
