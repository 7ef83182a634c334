//! The binary's start-up errors: one clear line naming the setting.

use std::process::Command;

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
