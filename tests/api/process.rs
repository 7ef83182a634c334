//! The real `rowsync` binary as a child process, configured like a deployment (environment
//! variables), for what only a process can show: signals, exit codes, kill -9. Its API is reached
//! through the same [`ApiClient`] as an in-process app's.

use std::{cell::RefCell, ops::Deref, process::Stdio, time::Duration};

use rowsync::config::Settings;
use secrecy::ExposeSecret;
use tokio::process::{Child, Command};

use crate::helpers::{eventually, ApiClient, TestApp};

/// A running `rowsync` process; derefs to the client of its API. Killed when dropped.
pub struct RowsyncProcess {
    pub child: Child,
    pub api: ApiClient,
}

impl Deref for RowsyncProcess {
    type Target = ApiClient;

    fn deref(&self) -> &ApiClient {
        &self.api
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A line of `/proc/<pid>/status` (`VmHWM:`, the peak resident set; `VmRSS:`, the current), in
/// KiB.
pub fn memory_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The binary the tests run: `ROWSYNC_BIN` when set (`scripts/test` points the load tests at
/// the shipped static release binary), else the one cargo built for the tests.
pub fn binary() -> std::path::PathBuf {
    std::env::var_os("ROWSYNC_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_rowsync").into())
}

/// An in-process app started on `settings` (creating the schema, its table and the topics) and
/// stopped again: its database and Kafka clients then watch what child processes do.
pub async fn observer(settings: &Settings) -> TestApp {
    let mut observer = TestApp::start(settings.clone()).await;
    observer.stop().await;
    observer
}

/// The binary with no inherited environment (nor a `.env` file), listening on `port`, given the
/// schema, brokers, topics and consumer-group settings of `settings`; how it reaches PostgreSQL, and its log filter, are
/// the caller's to add. Killed when dropped.
pub fn command(settings: &Settings, port: u16) -> Command {
    let (topics, group) = (&settings.topics, &settings.group);
    let mut command = Command::new(binary());
    command
        .env_clear()
        .current_dir(std::env::temp_dir())
        .env("DB_SCHEMA", settings.database.schema())
        .env(
            "KAFKA_BOOTSTRAP_SERVERS",
            settings.kafka.bootstrap_servers().join(","),
        )
        .env("UPDATES_TOPIC", &topics.updates_topic)
        .env("DELETE_TOPIC", &topics.delete_topic)
        .env("OBJECTS_TO_KAFKA_TOPIC", &topics.objects_to_kafka_topic)
        .env("REST_LOG_TOPIC", &topics.rest_log_topic)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("KAFKA_GROUP_ID_PREFIX", &group.kafka_group_id_prefix)
        .env("REPLICA_ID", &group.replica_id)
        .env(
            "KAFKA_SESSION_TIMEOUT_MS",
            group.kafka_session_timeout_ms.to_string(),
        )
        .env(
            "KAFKA_HEARTBEAT_INTERVAL_MS",
            group.kafka_heartbeat_interval_ms.to_string(),
        )
        .env(
            "KAFKA_REBALANCE_TIMEOUT_MS",
            group.kafka_rebalance_timeout_ms.to_string(),
        )
        .env(
            "KAFKA_METADATA_MAX_AGE_MS",
            group.kafka_metadata_max_age_ms.to_string(),
        )
        .env(
            "KAFKA_STATIC_MEMBERSHIP",
            group.kafka_static_membership.to_string(),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// `settings`' `DATABASE_URL`, which every test's settings carry.
pub fn database_url_of(settings: &Settings) -> &str {
    settings
        .database
        .database_url
        .as_ref()
        .expect("tests use a URL")
        .expose_secret()
}

impl RowsyncProcess {
    /// Starts the binary with `settings` (on a free port) and waits until it is live.
    pub async fn start(settings: &Settings) -> Self {
        Self::start_with(settings, &[], None).await
    }

    /// Like [`start`](Self::start), with extra environment variables and stdout (the logs)
    /// written to `logs` when given.
    pub async fn start_with(
        settings: &Settings,
        extra_env: &[(&str, &str)],
        logs: Option<&std::path::Path>,
    ) -> Self {
        let port = free_port();
        let mut command = command(settings, port);
        command
            .env("DATABASE_URL", database_url_of(settings))
            .env("DB_TIMEOUT_MS", settings.database.db_timeout_ms.to_string())
            .env(
                "KAFKA_FETCH_MAX_BYTES",
                settings.kafka.kafka_fetch_max_bytes.to_string(),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            );
        command.envs(extra_env.iter().copied());
        if let Some(path) = logs {
            command.stdout(std::fs::File::create(path).expect("creating the log file"));
        }
        Self::spawn(command, port).await
    }

    /// Spawns `command`, which listens on `port`, and waits until it is live; fails the test if
    /// it exits first.
    pub async fn spawn(mut command: Command, port: u16) -> Self {
        // Borrowed by the check below between its awaits, never across one.
        let child = RefCell::new(command.spawn().expect("starting rowsync"));
        let api = ApiClient::on_port(port);
        eventually("rowsync to become live", || async {
            if let Ok(Some(status)) = child.borrow_mut().try_wait() {
                panic!("rowsync exited ({status}) before it was live");
            }
            api.live().await.then_some(())
        })
        .await;
        Self {
            child: child.into_inner(),
            api,
        }
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) to the process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the process is running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Waits for the process to exit (bounded); returns its exit code (`None`: killed by a signal).
    pub async fn wait(&mut self, within: Duration) -> Option<i32> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("rowsync exits in time")
            .expect("waiting for rowsync")
            .code()
    }
}
