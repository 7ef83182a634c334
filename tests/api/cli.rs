//! The binary's start-up errors (one clear line naming the setting) and `rowsync healthcheck`.

use std::{
    net::TcpListener,
    process::Command,
    time::{Duration, Instant},
};

use crate::helpers::spawn_app;

fn rowsync() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rowsync"));
    // No inherited settings, and a working directory without a .env file.
    command.env_clear().current_dir(std::env::temp_dir());
    command
}

#[test]
fn a_missing_setting_stops_start_up_with_one_line_naming_it() {
    let output = rowsync()
        .env(
            "DATABASE_URL",
            "postgres://postgres:hunter2@127.0.0.1/postgres",
        )
        .output()
        .expect("running rowsync");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("KAFKA_HOST"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_malformed_setting_stops_start_up_with_one_line_naming_it() {
    let output = rowsync()
        .env("DB_HOST", "db")
        .env("DB_NAME", "postgres")
        .env("POSTGRES_USER", "postgres")
        .env("POSTGRES_PASSWORD", "hunter2")
        .env("KAFKA_HOST", "kafka")
        .env("KAFKA_PORT", "ninety-ninety-two")
        .output()
        .expect("running rowsync");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("KAFKA_PORT"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn an_unreachable_database_fails_start_up_without_printing_the_password() {
    let output = rowsync()
        .env(
            "DATABASE_URL",
            "postgres://postgres:hunter2@127.0.0.1:1/postgres",
        )
        .env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .output()
        .expect("running rowsync");
    assert_eq!(output.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("PostgreSQL"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn an_empty_api_token_stops_start_up_naming_it() {
    let output = rowsync()
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1/postgres")
        .env("KAFKA_HOST", "kafka")
        .env("API_TOKEN", "")
        .output()
        .expect("running rowsync");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("API_TOKEN"), "{stderr}");
}

#[test]
fn migrate_without_settings_stops_with_one_line_naming_the_missing_ones() {
    let output = rowsync().arg("migrate").output().expect("running rowsync");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DB_HOST"), "{stderr}");
    assert!(stderr.contains("KAFKA_HOST"), "{stderr}");
}

/// Runs `rowsync healthcheck` with only `env` set; returns its exit code and how long it took.
fn healthcheck(env: &[(&str, &str)]) -> (Option<i32>, Duration, String) {
    let started = Instant::now();
    let output = rowsync()
        .arg("healthcheck")
        .envs(env.iter().copied())
        .output()
        .expect("running rowsync healthcheck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), started.elapsed(), text)
}

#[tokio::test]
async fn healthcheck_exits_0_against_a_live_api_without_any_other_setting() {
    let app = spawn_app().await;
    let port = app.port();
    let (code, took, text) = tokio::task::spawn_blocking(move || {
        // A malformed unrelated setting must not matter: the probe reads LISTEN_ADDR only.
        healthcheck(&[
            ("LISTEN_ADDR", &format!("0.0.0.0:{port}")),
            ("DB_PORT", "abc"),
        ])
    })
    .await
    .expect("the probe ran");
    assert_eq!(code, Some(0), "{text}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    app.cleanup().await;
}

#[test]
fn healthcheck_exits_1_when_nothing_listens() {
    // Bind and drop, so the port is very likely free.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let (code, took, text) = healthcheck(&[("LISTEN_ADDR", &format!("127.0.0.1:{port}"))]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("unhealthy"), "{text}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn healthcheck_exits_1_within_about_two_seconds_when_the_api_hangs() {
    // Bound but never accepting: the kernel completes the handshake, nobody ever answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding loopback");
    let port = listener.local_addr().expect("a bound address").port();
    let (code, took, text) = healthcheck(&[("LISTEN_ADDR", &format!("127.0.0.1:{port}"))]);
    assert_eq!(code, Some(1), "{text}");
    assert!(took >= Duration::from_millis(1_500), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    drop(listener);
}

#[test]
fn healthcheck_exits_1_on_a_malformed_listen_addr_naming_it() {
    let (code, _, text) = healthcheck(&[("LISTEN_ADDR", "nowhere")]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    assert!(text.contains("LISTEN_ADDR"), "{text}");
}
