//! The real `rowsync` binary as a child process, configured like a deployment (environment
//! variables), for what only a process can show: signals, exit codes, kill -9.

use std::{process::Stdio, time::Duration};

use rowsync::config::Settings;
use secrecy::ExposeSecret;
use tokio::process::{Child, Command};

use crate::helpers::DEADLINE;

/// A running `rowsync` process.
pub struct RowsyncProcess {
    pub child: Child,
    pub address: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
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
        let database = &settings.database;
        let topics = &settings.topics;
        let mut command = Command::new(env!("CARGO_BIN_EXE_rowsync"));
        command
            .env_clear()
            .current_dir(std::env::temp_dir())
            .env(
                "DATABASE_URL",
                database
                    .database_url
                    .as_ref()
                    .expect("tests use a URL")
                    .expose_secret(),
            )
            .env("DB_SCHEMA", database.schema())
            .env("DB_TIMEOUT_MS", database.db_timeout_ms.to_string())
            .env(
                "KAFKA_BOOTSTRAP_SERVERS",
                settings.kafka.bootstrap_servers().join(","),
            )
            .env("UPDATES_TOPIC", &topics.updates_topic)
            .env("DELETE_TOPIC", &topics.delete_topic)
            .env("OBJECTS_TO_KAFKA_TOPIC", &topics.objects_to_kafka_topic)
            .env("REST_LOG_TOPIC", &topics.rest_log_topic)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "KAFKA_FETCH_MAX_BYTES",
                settings.kafka.kafka_fetch_max_bytes.to_string(),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command.envs(extra_env.iter().copied());
        if let Some(path) = logs {
            command.stdout(std::fs::File::create(path).expect("creating the log file"));
        }
        let child = command.spawn().expect("starting rowsync");
        let process = Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
        };
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let client = reqwest::Client::new();
        loop {
            let live = client
                .get(format!("{}/health/live", process.address))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if live {
                return process;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "rowsync did not become live"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
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
