//! Secrets from files (`POSTGRES_PASSWORD_FILE`, `API_TOKEN_FILE`): one trailing newline
//! trimmed, never together with the value itself, never printed. A password needs a server that
//! asks for one: the shared PostgreSQL trusts 127.0.0.1, so these tests start their own.

use secrecy::SecretString;

use crate::{
    helpers::{cleanup_settings, database_url, eventually, fresh_settings, pairs, TestApp},
    pg_support::{rowsync_exit, single_line, start_rowsync, stop_rowsync, PgCluster, TempFile},
};

/// A cluster that asks every TCP client for a SCRAM-SHA-256 password, with role `rowsync`.
async fn cluster_with_password(password: &str) -> PgCluster {
    let cluster = PgCluster::start(&["host all all 127.0.0.1/32 scram-sha-256"], None).await;
    cluster.create_user("rowsync", Some(password)).await;
    cluster
}

#[tokio::test]
async fn postgres_password_file_logs_in_and_a_wrong_one_stops_start_up_without_showing_it() {
    let cluster = cluster_with_password("right-pw-secret").await;
    let settings = fresh_settings();
    let port = cluster.port.to_string();
    let database = [
        ("DB_HOST", "127.0.0.1"),
        ("DB_PORT", port.as_str()),
        ("DB_NAME", "postgres"),
        ("POSTGRES_USER", "rowsync"),
    ];
    // As `docker secret` and `kubectl create secret --from-file` write it: with a newline.
    let right = TempFile::new("pw", "right-pw-secret\n");
    let env = [&database[..], &[("POSTGRES_PASSWORD_FILE", right.path())]].concat();
    let process = start_rowsync(&settings, &env).await;
    let ready = process.ready().await;
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    cluster
        .superuser()
        .await
        .execute(
            &format!(
                "INSERT INTO \"{}\".some_model (id, name) VALUES (5, 'smth')",
                settings.database.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    let rows = eventually("the row in the listing", || async {
        let rows = pairs(&process.rows().await);
        (rows.len() == 1).then_some(rows)
    })
    .await;
    assert_eq!(rows, [(5, "smth".to_owned())]);
    // The server did ask: rowsync's connections logged in with SCRAM as `rowsync`; this
    // server offers no TLS, so the default sslmode (prefer) fell back to plaintext.
    let logged_in = cluster
        .superuser()
        .await
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.usename = 'rowsync'",
            &[],
        )
        .await
        .unwrap();
    assert!(!logged_in.is_empty());
    assert!(logged_in.iter().all(|row| !row.get::<_, bool>(0)));
    stop_rowsync(process).await;

    // The same with a URL that carries no password: the file fills it in.
    let url = format!("postgres://rowsync@127.0.0.1:{port}/postgres");
    let process = start_rowsync(
        &settings,
        &[
            ("DATABASE_URL", &url),
            ("POSTGRES_PASSWORD_FILE", right.path()),
        ],
    )
    .await;
    assert_eq!(process.ready().await.status(), 200);
    stop_rowsync(process).await;

    let wrong = TempFile::new("pw", "wrong-pw-secret\n");
    let env = [&database[..], &[("POSTGRES_PASSWORD_FILE", wrong.path())]].concat();
    let (code, printed) = rowsync_exit(&settings, &env).await;
    assert_eq!(code, Some(1), "{printed}");
    let line = single_line(&printed);
    assert!(line.contains("PostgreSQL authentication failed"), "{line}");
    assert!(line.contains("POSTGRES_PASSWORD_FILE"), "{line}");
    assert!(!printed.contains("wrong-pw-secret"), "{printed}");
    assert!(!printed.contains("right-pw-secret"), "{printed}");

    // sslmode=require against a server without TLS.
    let env = [
        &database[..],
        &[
            ("POSTGRES_PASSWORD_FILE", right.path()),
            ("DB_SSLMODE", "require"),
        ],
    ]
    .concat();
    let (code, printed) = rowsync_exit(&settings, &env).await;
    assert_eq!(code, Some(1), "{printed}");
    let line = single_line(&printed);
    assert!(line.contains("does not offer TLS"), "{line}");
    assert!(line.contains("DB_SSLMODE"), "{line}");

    // No password at all, where the server asks for one.
    let (code, printed) = rowsync_exit(&settings, &database).await;
    assert_eq!(code, Some(1), "{printed}");
    let line = single_line(&printed);
    assert!(line.contains("asks for a password"), "{line}");
    assert!(line.contains("POSTGRES_PASSWORD_FILE"), "{line}");
    cleanup_settings(&settings).await;
}

#[tokio::test]
async fn readiness_reports_an_authentication_failure_as_such() {
    let cluster = cluster_with_password("first-pw-secret").await;
    let mut settings = fresh_settings();
    let database = &mut settings.database;
    database.database_url = None;
    database.db_host = Some("127.0.0.1".to_owned());
    database.db_port = cluster.port;
    database.db_name = Some("postgres".to_owned());
    database.postgres_user = Some("rowsync".to_owned());
    database.postgres_password_file = Some(SecretString::from("first-pw-secret"));
    let app = TestApp::start(settings).await;
    assert_eq!(app.ready().await.status(), 200);

    let admin = cluster.superuser().await;
    admin
        .batch_execute("ALTER ROLE rowsync PASSWORD 'second-pw-secret'")
        .await
        .unwrap();
    let body = cluster
        .readiness_fails_with(&app, "authentication failed")
        .await;
    let postgres = body["checks"]["postgres"].as_str().unwrap();
    assert_eq!(body["status"], "unavailable", "{body}");
    assert!(postgres.contains("POSTGRES_PASSWORD_FILE"), "{postgres}");
    assert!(postgres.contains("\"rowsync\""), "{postgres}");
    assert!(!postgres.contains("timed out"), "{postgres}");
    let text = body.to_string();
    assert!(!text.contains("first-pw-secret"), "{text}");
    assert!(!text.contains("second-pw-secret"), "{text}");
    app.cleanup().await;
}

#[tokio::test]
async fn api_token_file_guards_state_changes_with_the_trimmed_token() {
    let settings = fresh_settings();
    let token = TempFile::new("token", "token-from-file\n");
    let url = database_url();
    let process = start_rowsync(
        &settings,
        &[("DATABASE_URL", &url), ("API_TOKEN_FILE", token.path())],
    )
    .await;
    let anonymous = process
        .post("/api/some_models/start_upcreate_from_kafka/")
        .await;
    assert_eq!(anonymous.status(), 401);
    let with_newline = process
        .with_token("token-from-file\n")
        .try_raw(
            "POST",
            "/api/some_models/start_upcreate_from_kafka/",
            &[],
            None,
        )
        .await;
    // reqwest refuses a header with a newline; either way it is not accepted.
    assert!(with_newline.map_or(true, |r| r.status() == 401));
    let authorised = process.with_token("token-from-file");
    authorised.start_upcreate().await;
    authorised.stop_upcreate().await;
    stop_rowsync(process).await;
    cleanup_settings(&settings).await;
}

#[tokio::test]
async fn a_value_and_its_file_together_stop_start_up_with_one_line_naming_both() {
    let settings = fresh_settings();
    let file = TempFile::new("secret", "from-file-secret\n");
    let url = database_url();
    for (value, file_setting) in [
        ("POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE"),
        ("API_TOKEN", "API_TOKEN_FILE"),
    ] {
        let (code, printed) = rowsync_exit(
            &settings,
            &[
                ("DATABASE_URL", &url),
                (value, "from-env-secret"),
                (file_setting, file.path()),
            ],
        )
        .await;
        assert_eq!(code, Some(2), "{printed}");
        let line = single_line(&printed);
        assert!(line.contains(file_setting), "{line}");
        assert!(
            line.replace(file_setting, "").contains(value),
            "{value} missing in: {line}"
        );
        assert!(!printed.contains("from-env-secret"), "{printed}");
        assert!(!printed.contains("from-file-secret"), "{printed}");
    }
}
