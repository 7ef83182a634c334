//! What every scenario stands on: its own PostgreSQL schema and topic names, a Kafka client,
//! and the release `rowsync` binary run as a child process (so its memory is its own).

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::Stdio,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context};
use rskafka::{
    client::{
        partition::{Compression, PartitionClient, UnknownTopicHandling},
        Client, ClientBuilder,
    },
    record::Record,
};
use serde_json::Value;
use tokio::process::{Child, Command};

/// Partitions of every topic a scenario uses.
pub const PARTITIONS: i32 = 3;
/// rowsync's `KAFKA_FETCH_MAX_WAIT_MS` in every scenario unless the environment sets it.
pub const FETCH_MAX_WAIT_MS: &str = "10";
/// Most records the benchmark puts in one produce request.
const PRODUCE_BATCH: usize = 5_000;

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// `url` pointing at database `name` instead (a `postgres://` URL or libpq's key=value form).
pub fn url_of_database(url: &str, name: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (path, query) = match rest.split_once('?') {
                Some((path, query)) => (path, format!("?{query}")),
                None => (rest, String::new()),
            };
            let authority = path.split_once('/').map_or(path, |(a, _)| a);
            format!("{scheme}://{authority}/{name}{query}")
        }
        // The last value of a key wins.
        None => format!("{url} dbname={name}"),
    }
}

/// Connects to PostgreSQL with `search_path` set to `schema`.
pub async fn connect_db(schema: &str) -> anyhow::Result<tokio_postgres::Client> {
    connect_db_at(&database_url(), schema).await
}

/// Connects to the PostgreSQL at `url` with `search_path` set to `schema`.
pub async fn connect_db_at(url: &str, schema: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.options(format!("-c search_path={schema}"));
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL (run scripts/dev-deps)")?;
    tokio::spawn(connection);
    Ok(client)
}

/// A pool of `size` connections to `schema`, for the straight-SQL baselines.
pub fn pool(schema: &str, size: usize) -> anyhow::Result<deadpool_postgres::Pool> {
    let mut config: tokio_postgres::Config = database_url().parse()?;
    config.options(format!("-c search_path={schema}"));
    let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
    Ok(deadpool_postgres::Pool::builder(manager)
        .max_size(size)
        .build()?)
}

/// One scenario's schema, topic names and clients.
pub struct Fixture {
    /// Schema name, also the prefix of every topic name.
    pub name: String,
    pub db: tokio_postgres::Client,
    pub kafka: Arc<Client>,
    schemas: Vec<String>,
    /// Where the schema lives: [`database_url`], or a database of the fixture's own.
    pub url: String,
    /// The database of the fixture's own, dropped by [`cleanup`](Self::cleanup).
    own_database: Option<String>,
}

impl Fixture {
    pub async fn new(label: &str) -> anyhow::Result<Self> {
        Self::create(label, false).await
    }

    /// A fixture in a database of its own, for figures PostgreSQL counts per database
    /// (`pg_stat_database`), which other users of the shared database would blur.
    pub async fn in_own_database(label: &str) -> anyhow::Result<Self> {
        Self::create(label, true).await
    }

    async fn create(label: &str, own_database: bool) -> anyhow::Result<Self> {
        let name = format!(
            "bench_{label}_{}_{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let url = match own_database {
            true => {
                connect_db("public")
                    .await?
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await?;
                url_of_database(&database_url(), &name)
            }
            false => database_url(),
        };
        let admin = connect_db_at(&url, "public").await?;
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await?;
        let db = connect_db_at(&url, &name).await?;
        let kafka = ClientBuilder::new(vec![bootstrap()])
            .build()
            .await
            .context("connecting to the broker (run scripts/dev-deps)")?;
        Ok(Self {
            name: name.clone(),
            db,
            kafka: Arc::new(kafka),
            schemas: vec![name.clone()],
            url,
            own_database: own_database.then_some(name),
        })
    }

    /// Another empty schema with table `some_model` as rowsync's migrations made it here,
    /// for a straight-SQL baseline.
    pub async fn sibling_schema(&mut self, suffix: &str) -> anyhow::Result<String> {
        let schema = format!("{}_{suffix}", self.name);
        self.db
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; \
                 CREATE TABLE {schema}.some_model (LIKE {}.some_model INCLUDING ALL)",
                self.name
            ))
            .await?;
        self.schemas.push(schema.clone());
        Ok(schema)
    }

    pub fn topic(&self, topic: &str) -> String {
        format!("{}.{topic}", self.name)
    }

    /// The environment rowsync runs with in this fixture.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", self.url.clone()),
            ("DB_SCHEMA", self.name.clone()),
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap()),
            ("UPDATES_TOPIC", self.topic("updates")),
            ("DELETE_TOPIC", self.topic("deletions")),
            ("OBJECTS_TO_KAFKA_TOPIC", self.topic("some_model_objects")),
            ("REST_LOG_TOPIC", self.topic("django-responses")),
            ("TOPIC_PARTITIONS", PARTITIONS.to_string()),
            (
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            ),
            // tansu holds a fetch for its whole max wait even when records arrive meanwhile
            // (Kafka answers at once): the setting README.md gives for tansu.
            ("KAFKA_FETCH_MAX_WAIT_MS", FETCH_MAX_WAIT_MS.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        // Tuning the run may set for rowsync (later entries win).
        .chain(
            [
                "KAFKA_FETCH_MAX_WAIT_MS",
                "KAFKA_FETCH_MAX_BYTES",
                "KAFKA_FETCH_BUDGET_BYTES",
                "DB_POOL_SIZE",
                "_RJEM_MALLOC_CONF",
            ]
            .into_iter()
            .filter_map(|k| Some((k.to_owned(), std::env::var(k).ok()?))),
        )
        .collect()
    }

    /// `rowsync migrate`: creates the table in this fixture's schema.
    pub async fn migrate(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_rowsync"))
            .arg("migrate")
            .env_clear()
            .envs(self.env())
            .stdin(Stdio::null())
            .status()
            .await?;
        ensure!(status.success(), "rowsync migrate failed: {status}");
        Ok(started.elapsed())
    }

    /// Starts rowsync (with `extra` environment) and waits until it is ready.
    pub async fn rowsync(&self, extra: &[(&str, &str)]) -> anyhow::Result<Rowsync> {
        Rowsync::start(self.env(), extra).await
    }

    pub async fn create_topic(&self, topic: &str) -> anyhow::Result<()> {
        self.create_topic_with(topic, PARTITIONS).await
    }

    pub async fn create_topic_with(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let controller = self.kafka.controller_client()?;
        controller
            .create_topic(topic, partitions, 1, 10_000)
            .await
            .with_context(|| format!("creating topic {topic}"))
    }

    pub async fn partition(&self, topic: &str, partition: i32) -> anyhow::Result<PartitionClient> {
        Ok(self
            .kafka
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await?)
    }

    /// Produces `values[p]` to partition `p` of `topic`, partitions in parallel, in batches.
    pub async fn produce(&self, topic: &str, values: Vec<Vec<Vec<u8>>>) -> anyhow::Result<()> {
        let mut tasks = Vec::new();
        for (partition, values) in values.into_iter().enumerate() {
            let client = self.partition(topic, partition as i32).await?;
            tasks.push(tokio::spawn(async move {
                let mut values = values.into_iter().peekable();
                while values.peek().is_some() {
                    let batch: Vec<Record> = values
                        .by_ref()
                        .take(PRODUCE_BATCH)
                        .map(|value| Record {
                            key: None,
                            value: Some(value),
                            headers: Default::default(),
                            timestamp: chrono::Utc::now(),
                        })
                        .collect();
                    client.produce(batch, Compression::NoCompression).await?;
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    }

    /// Drops the schemas and deletes the topics; failures are only reported.
    pub async fn cleanup(self) {
        for schema in &self.schemas {
            if let Err(error) = self
                .db
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await
            {
                eprintln!("bench: dropping schema {schema}: {error}");
            }
        }
        if let Some(database) = &self.own_database {
            let dropped = match connect_db("public").await {
                Ok(admin) => admin
                    .batch_execute(&format!("DROP DATABASE {database} WITH (FORCE)"))
                    .await
                    .map_err(anyhow::Error::from),
                Err(error) => Err(error),
            };
            if let Err(error) = dropped {
                eprintln!("bench: dropping database {database}: {error}");
            }
        }
        if let Ok(controller) = self.kafka.controller_client() {
            for topic in [
                "updates",
                "deletions",
                "some_model_objects",
                "django-responses",
            ] {
                for name in [self.topic(topic), format!("{}.dlq", self.topic(topic))] {
                    let _ = controller.delete_topic(&name, 5_000).await;
                }
            }
        }
    }
}

/// A running `rowsync` process.
pub struct Rowsync {
    child: Child,
    pub addr: SocketAddr,
    /// From spawning the process to `/health/ready` answering 200.
    pub ready_after: Duration,
    http: reqwest::Client,
}

impl Rowsync {
    async fn start(env: Vec<(String, String)>, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_rowsync"))
            .env_clear()
            .envs(env)
            .env("LISTEN_ADDR", addr.to_string())
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting rowsync")?;
        let http = reqwest::Client::new();
        let url = format!("http://{addr}/health/ready");
        let deadline = started + Duration::from_secs(30);
        loop {
            if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "rowsync was not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Self {
            child,
            addr,
            ready_after: started.elapsed(),
            http,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("rowsync has exited")
    }

    fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?))?;
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .with_context(|| format!("{field} in /proc/PID/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("a number")?
            .parse()?)
    }

    /// Resident memory now, in MB (10^6 bytes, as the targets are given).
    pub fn rss_mb(&self) -> anyhow::Result<f64> {
        Ok(self.status_kib("VmRSS:")? as f64 * 1024.0 / 1e6)
    }

    /// Peak resident memory since start or the last [`reset_peak`](Self::reset_peak), in MB.
    pub fn peak_rss_mb(&self) -> anyhow::Result<f64> {
        Ok(self.status_kib("VmHWM:")? as f64 * 1024.0 / 1e6)
    }

    /// CPU time rowsync has used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.pid()?)
    }

    /// Resets the peak resident memory to the current one (Linux `clear_refs` 5).
    pub fn reset_peak(&self) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()?), "5").context("resetting VmHWM")
    }

    pub async fn post(&self, path: &str) -> anyhow::Result<Value> {
        json_answer(self.http.post(self.url(path)), "POST", path).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        json_answer(self.http.post(self.url(path)).json(&body), "POST", path).await
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        json_answer(self.http.get(self.url(path)), "GET", path).await
    }

    /// The samples of `/metrics` whose name starts with `prefix`, by their full line key.
    pub async fn metrics(&self, prefix: &str) -> anyhow::Result<HashMap<String, f64>> {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                Some((key.to_owned(), value.parse().ok()?))
            })
            .collect())
    }

    /// Sum of the samples of `/metrics` whose name starts with `prefix`.
    pub async fn metric_sum(&self, prefix: &str) -> anyhow::Result<f64> {
        Ok(self.metrics(prefix).await?.values().sum())
    }

    /// Waits until `worker` holds its consumer group's assignment (the join takes ~3 s on Kafka
    /// and tansu alike: drains are timed from here); returns when it did.
    pub async fn wait_stable(&self, worker: &str) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.get_json(&format!("/api/workers/{worker}/")).await?;
            if status["group"]["phase"] == "stable" {
                return Ok(Instant::now());
            }
            ensure!(
                Instant::now() < deadline,
                "{worker} did not join its group within 60 s: {status}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until `worker` has consumed `records` records (applied and invalid), within `limit`.
    pub async fn wait_consumed(
        &self,
        worker: &str,
        records: u64,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let status = self.get_json(&format!("/api/workers/{worker}")).await?;
            let consumed: u64 = status["partitions"]
                .as_array()
                .context("partitions")?
                .iter()
                .map(|p| {
                    p["records_applied"].as_u64().unwrap_or(0)
                        + p["records_invalid"].as_u64().unwrap_or(0)
                })
                .sum();
            if consumed >= records {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                bail!(
                    "{worker} consumed {consumed} of {records} records within {limit:?}: {status}"
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.pid()?;
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()?;
        ensure!(status.success(), "kill -TERM {pid}");
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("rowsync did not exit within 30 s of SIGTERM")??;
        ensure!(exit.success(), "rowsync exited with {exit}");
        Ok(())
    }
}

/// Sends `request`; a 2xx answer's JSON body, or an error naming the request and the answer.
async fn json_answer(
    request: reqwest::RequestBuilder,
    method: &str,
    path: &str,
) -> anyhow::Result<Value> {
    let response = request.send().await?;
    let status = response.status();
    let body = response.text().await?;
    ensure!(status.is_success(), "{method} {path}: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// CPU time (user + system) process `pid` has used so far, in seconds, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("/proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // In USER_HZ ticks, 100 per second on Linux (x86 and ARM).
    Ok(ticks / 100.0)
}

/// The local tansu broker's process id, when the broker is tansu on this machine.
pub fn local_broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == "tansu").then_some(pid)
        })
}
