//! TLS to PostgreSQL, libpq's sslmode semantics, on rowsync's own connections (the pool and the
//! change listener). The shared PostgreSQL serves TLS with Debian's self-signed "snakeoil"
//! certificate, whose only name is `localhost`; client certificates need a cluster of the test's
//! own (see `pg_support`).

use rowsync::{
    app::Application,
    config::{Settings, SslMode},
};
use secrecy::SecretString;

use crate::{
    helpers::{database_url, eventually, fresh_settings, TestApp},
    pg_support::{rowsync_exit, single_line, PgCluster, ServerTls, TempFile, TestCa},
};

/// The shared server's certificate: self-signed, `CN=localhost`, `DNS:localhost` only.
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// The shared PostgreSQL's URL with `params` added, on `host`.
fn url(host: &str, params: &str) -> String {
    let base = database_url().replace("127.0.0.1", host);
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}{params}")
}

/// Fresh settings whose connections carry an application name of their own, to find them in
/// `pg_stat_activity`.
fn settings_with_url(host: &str, params: &str) -> (Settings, String) {
    let mut settings = fresh_settings();
    let name = format!("rowsync_{}", settings.database.schema());
    let separator = if params.is_empty() { "" } else { "&" };
    settings.database.database_url = Some(SecretString::from(url(
        host,
        &format!("application_name={name}{separator}{params}"),
    )));
    (settings, name)
}

/// Waits until the app's pool and its change listener are connected (the listener is the one
/// whose last statement is `LISTEN`), then asserts whether every connection of the app is
/// encrypted, as PostgreSQL itself reports in `pg_stat_ssl`.
async fn assert_own_connections_encrypted(app: &TestApp, name: &str, encrypted: bool) {
    let connections = eventually("the pool's and the listener's connections", || async {
        let rows = app
            .db
            .query(
                "SELECT s.ssl, a.query FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.application_name = $1",
                &[&name],
            )
            .await
            .expect("querying pg_stat_ssl");
        let connections: Vec<(bool, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let listener = connections.iter().any(|(_, q)| q.starts_with("LISTEN"));
        (listener && connections.len() >= 2).then_some(connections)
    })
    .await;
    for (ssl, query) in &connections {
        assert_eq!(
            *ssl, encrypted,
            "connection last running {query:?}: ssl = {ssl}; all: {connections:?}"
        );
    }
    // The listing goes through the pool (and a round trip on the listener); still as asserted.
    assert!(app.rows().await.is_empty());
    let rows = app
        .db
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = $1",
            &[&name],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 2);
    assert!(rows.iter().all(|r| r.get::<_, bool>(0) == encrypted));
}

#[tokio::test]
async fn require_encrypts_the_pool_and_the_change_listener() {
    let (settings, name) = settings_with_url("127.0.0.1", "sslmode=require");
    let app = TestApp::start(settings).await;
    assert_own_connections_encrypted(&app, &name, true).await;
    app.cleanup().await;
}

#[tokio::test]
async fn the_default_prefer_gets_tls_from_a_server_that_offers_it() {
    let (settings, name) = settings_with_url("127.0.0.1", "");
    assert_eq!(settings.database.db_sslmode, None);
    let app = TestApp::start(settings).await;
    assert_own_connections_encrypted(&app, &name, true).await;
    app.cleanup().await;
}

#[tokio::test]
async fn disable_stays_plaintext() {
    let (mut settings, name) = settings_with_url("127.0.0.1", "");
    settings.database.db_sslmode = Some(SslMode::Disable);
    let app = TestApp::start(settings).await;
    assert_own_connections_encrypted(&app, &name, false).await;
    app.cleanup().await;
}

#[tokio::test]
async fn verify_ca_accepts_the_server_certificate_as_root_whatever_the_host_name() {
    // 127.0.0.1 is not a name of the certificate: verify-ca does not care.
    let (mut settings, name) = settings_with_url("127.0.0.1", "");
    settings.database.db_sslmode = Some(SslMode::VerifyCa);
    settings.database.db_sslrootcert = Some(SNAKEOIL.into());
    let app = TestApp::start(settings).await;
    assert_own_connections_encrypted(&app, &name, true).await;
    app.cleanup().await;
}

#[tokio::test]
async fn verify_full_connects_to_localhost_with_the_url_parameters() {
    let (settings, name) = settings_with_url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={SNAKEOIL}"),
    );
    let app = TestApp::start(settings).await;
    assert_own_connections_encrypted(&app, &name, true).await;
    let ready = app.ready().await;
    assert_eq!(ready.status(), 200);
    app.cleanup().await;
}

#[tokio::test]
async fn verify_full_against_127_0_0_1_stops_start_up_with_one_line_naming_the_settings() {
    let settings = fresh_settings();
    // Trust authentication ignores the password: it is there to prove it never shows.
    let with_password = database_url().replace("postgres@", "postgres:hunter2-url-secret@");
    let separator = if with_password.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{with_password}{separator}sslmode=verify-full&sslrootcert={SNAKEOIL}");
    let (code, printed) = rowsync_exit(&settings, &[("DATABASE_URL", &url)]).await;
    assert_eq!(code, Some(1), "{printed}");
    let line = single_line(&printed);
    for expected in [
        "PostgreSQL certificate not valid for host 127.0.0.1 (sslmode=verify-full)",
        "localhost",
        "DB_HOST",
        "DB_SSLMODE",
    ] {
        assert!(line.contains(expected), "{expected:?} missing in: {line}");
    }
    assert!(!printed.contains("hunter2-url-secret"), "{printed}");

    // The same with the DB_* settings.
    let (code, printed) = rowsync_exit(
        &settings,
        &[
            ("DB_HOST", "127.0.0.1"),
            ("DB_NAME", "postgres"),
            ("POSTGRES_USER", "postgres"),
            ("POSTGRES_PASSWORD", "hunter2-env-secret"),
            ("DB_SSLMODE", "verify-full"),
            ("DB_SSLROOTCERT", SNAKEOIL),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{printed}");
    let line = single_line(&printed);
    assert!(
        line.contains("not valid for host 127.0.0.1 (sslmode=verify-full)"),
        "{line}"
    );
    assert!(!printed.contains("hunter2-env-secret"), "{printed}");
}

/// Application::build's error, formatted as `main` prints it.
async fn start_up_error(settings: Settings) -> String {
    match Application::build(settings).await {
        Ok(_) => panic!("the app started, but it should not have"),
        Err(error) => format!("{error:#}"),
    }
}

#[tokio::test]
async fn verify_full_without_a_root_certificate_trusts_only_mozillas_roots() {
    let (mut settings, _) = settings_with_url("localhost", "");
    settings.database.db_sslmode = Some(SslMode::VerifyFull);
    let error = start_up_error(settings).await;
    assert!(!error.contains('\n'), "{error}");
    for expected in ["not trusted", "UnknownIssuer", "Mozilla", "DB_SSLROOTCERT"] {
        assert!(error.contains(expected), "{expected:?} missing in: {error}");
    }
}

#[tokio::test]
async fn require_with_an_explicit_root_certificate_checks_the_chain_as_libpq_does() {
    let other_ca = TestCa::new("not the snakeoil");
    let root = TempFile::new("other-ca.pem", &other_ca.cert_pem());
    let (mut settings, _) = settings_with_url("127.0.0.1", "sslmode=require");
    settings.database.db_sslrootcert = Some(root.0.clone());
    let error = start_up_error(settings).await;
    assert!(error.contains("not trusted"), "{error}");
    assert!(error.contains("sslmode=require"), "{error}");
    assert!(error.contains("DB_SSLROOTCERT"), "{error}");

    // With the right root, require still ignores the host name (as verify-ca).
    let (mut settings, name) = settings_with_url("127.0.0.1", "sslmode=require");
    settings.database.db_sslrootcert = Some(SNAKEOIL.into());
    let app = TestApp::start(settings).await;
    assert_own_connections_encrypted(&app, &name, true).await;
    app.cleanup().await;
}

#[tokio::test]
async fn unreadable_certificate_files_stop_start_up_with_one_line_naming_the_setting() {
    let settings = fresh_settings();
    let url = database_url();
    let garbage = TempFile::new("garbage.pem", "not a certificate\n");
    let ca = TestCa::new("ca");
    let client = ca.leaf("postgres", &[]);
    let other = ca.leaf("postgres", &[]);
    let cert = TempFile::new("client.crt", &client.cert);
    let key = TempFile::new("client.key", &client.key);
    let other_key = TempFile::new("other.key", &other.key);
    // The settings given, and what the line must say.
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            vec![("DB_SSLROOTCERT", "/nonexistent/ca.pem")],
            &["DB_SSLROOTCERT", "/nonexistent/ca.pem"],
        ),
        (
            vec![("DB_SSLROOTCERT", garbage.path())],
            &["DB_SSLROOTCERT", "no PEM certificate"],
        ),
        (
            vec![
                ("DB_SSLCERT", "/nonexistent/client.crt"),
                ("DB_SSLKEY", key.path()),
            ],
            &["DB_SSLCERT", "/nonexistent/client.crt"],
        ),
        (
            vec![
                ("DB_SSLCERT", cert.path()),
                ("DB_SSLKEY", "/nonexistent/client.key"),
            ],
            &["DB_SSLKEY", "/nonexistent/client.key"],
        ),
        (
            vec![("DB_SSLCERT", cert.path()), ("DB_SSLKEY", garbage.path())],
            &["DB_SSLKEY", "no PEM private key"],
        ),
        (
            vec![("DB_SSLCERT", cert.path()), ("DB_SSLKEY", other_key.path())],
            &["DB_SSLCERT", "DB_SSLKEY", "do not belong together"],
        ),
        (
            vec![("DB_SSLCERT", cert.path())],
            &["DB_SSLCERT", "DB_SSLKEY"],
        ),
    ];
    for (env, expected) in cases {
        let mut env = env.clone();
        env.push(("DATABASE_URL", &url));
        let (code, printed) = rowsync_exit(&settings, &env).await;
        assert_eq!(code, Some(1), "{env:?}: {printed}");
        let line = single_line(&printed);
        for text in expected {
            assert!(line.contains(text), "{env:?}: {text:?} missing in: {line}");
        }
        assert!(!line.contains("PRIVATE KEY-----\n"), "{line}");
    }
}

/// A cluster that serves TLS with a certificate from `ca` (for localhost and 127.0.0.1) and
/// lets `certuser` in only with a client certificate from `ca`; everyone else by password.
async fn cluster_demanding_client_certificates(ca: &TestCa) -> PgCluster {
    let cluster = PgCluster::start(
        &[
            "hostssl all certuser 127.0.0.1/32 cert",
            "host all all 127.0.0.1/32 scram-sha-256",
        ],
        Some(&ServerTls {
            server: ca.leaf("localhost", &["localhost", "127.0.0.1"]),
            client_ca: ca.cert_pem(),
        }),
    )
    .await;
    cluster.create_user("certuser", None).await;
    cluster
}

/// Settings for `certuser` on `cluster` with verify-full against 127.0.0.1.
fn cluster_settings(cluster: &PgCluster, root: &TempFile) -> Settings {
    let mut settings = fresh_settings();
    let database = &mut settings.database;
    database.database_url = None;
    database.db_host = Some("127.0.0.1".to_owned());
    database.db_port = cluster.port;
    database.db_name = Some("postgres".to_owned());
    database.postgres_user = Some("certuser".to_owned());
    database.db_sslmode = Some(SslMode::VerifyFull);
    database.db_sslrootcert = Some(root.0.clone());
    settings
}

#[tokio::test]
async fn a_client_certificate_logs_in_where_the_server_demands_one() {
    let ca = TestCa::new("rowsync test CA");
    let cluster = cluster_demanding_client_certificates(&ca).await;
    let root = TempFile::new("ca.pem", &ca.cert_pem());
    let client = ca.leaf("certuser", &[]);
    let cert = TempFile::new("client.crt", &client.cert);
    let key = TempFile::new("client.key", &client.key);
    let mut settings = cluster_settings(&cluster, &root);
    settings.database.db_sslcert = Some(cert.0.clone());
    settings.database.db_sslkey = Some(key.0.clone());

    let app = TestApp::start(settings).await;
    let ready = app.ready().await;
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    cluster
        .superuser()
        .await
        .execute(
            &format!(
                "INSERT INTO \"{}\".some_model (id, name) VALUES (7, 'seven')",
                app.settings.database.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    let rows = eventually("the row inserted on the cluster", || async {
        let rows = app.rows().await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(rows[0].id, 7);
    // Every connection of certuser (pool and listener) is TLS with our client certificate.
    let connections = cluster
        .superuser()
        .await
        .query(
            "SELECT s.ssl, coalesce(s.client_dn, '') FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'certuser'",
            &[],
        )
        .await
        .unwrap();
    assert!(connections.len() >= 2, "{}", connections.len());
    for row in &connections {
        assert!(row.get::<_, bool>(0));
        assert_eq!(row.get::<_, String>(1), "/CN=certuser");
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_missing_or_foreign_client_certificate_stops_start_up_naming_db_sslcert() {
    let ca = TestCa::new("rowsync test CA");
    let cluster = cluster_demanding_client_certificates(&ca).await;
    let root = TempFile::new("ca.pem", &ca.cert_pem());
    let settings = cluster_settings(&cluster, &root);
    let port = cluster.port.to_string();
    let base = [
        ("DB_HOST", "127.0.0.1"),
        ("DB_PORT", port.as_str()),
        ("DB_NAME", "postgres"),
        ("POSTGRES_USER", "certuser"),
        ("DB_SSLMODE", "verify-full"),
        ("DB_SSLROOTCERT", root.path()),
    ];

    // No certificate: PostgreSQL refuses the login.
    let (code, printed) = rowsync_exit(&settings, &base).await;
    assert_eq!(code, Some(1), "{printed}");
    let line = single_line(&printed);
    assert!(line.contains("client certificate"), "{line}");
    assert!(line.contains("DB_SSLCERT"), "{line}");

    // A certificate from another CA: the TLS handshake fails.
    let foreign = TestCa::new("someone else").leaf("certuser", &[]);
    let cert = TempFile::new("client.crt", &foreign.cert);
    let key = TempFile::new("client.key", &foreign.key);
    let env = [
        &base[..],
        &[("DB_SSLCERT", cert.path()), ("DB_SSLKEY", key.path())],
    ]
    .concat();
    let (code, printed) = rowsync_exit(&settings, &env).await;
    assert_eq!(code, Some(1), "{printed}");
    let line = single_line(&printed);
    assert!(
        line.contains("refused the TLS client certificate"),
        "{line}"
    );
    assert!(line.contains("DB_SSLCERT"), "{line}");
    drop(cluster);
}

#[tokio::test]
async fn readiness_reports_an_untrusted_server_certificate_as_such() {
    let ca = TestCa::new("rowsync test CA");
    let cluster = PgCluster::start(
        &["host all all 127.0.0.1/32 scram-sha-256"],
        Some(&ServerTls {
            server: ca.leaf("localhost", &["localhost", "127.0.0.1"]),
            client_ca: ca.cert_pem(),
        }),
    )
    .await;
    cluster
        .create_user("rowsync", Some("pw-readiness-secret"))
        .await;
    let root = TempFile::new("ca.pem", &ca.cert_pem());
    let mut settings = cluster_settings(&cluster, &root);
    settings.database.postgres_user = Some("rowsync".to_owned());
    settings.database.postgres_password = Some(SecretString::from("pw-readiness-secret"));
    let app = TestApp::start(settings).await;
    assert_eq!(app.ready().await.status(), 200);

    // The server now presents a certificate from a CA rowsync does not trust.
    cluster.install_server_cert(&TestCa::new("impostor").leaf("localhost", &["127.0.0.1"]));
    cluster.reload().await;
    let body = cluster.readiness_fails_with(&app, "not trusted").await;
    let postgres = body["checks"]["postgres"].as_str().unwrap();
    assert_eq!(body["status"], "unavailable", "{body}");
    assert!(
        postgres.contains("PostgreSQL certificate of 127.0.0.1"),
        "{postgres}"
    );
    assert!(postgres.contains("DB_SSLROOTCERT"), "{postgres}");
    assert!(!postgres.contains("timed out"), "{postgres}");
    assert!(!body.to_string().contains("pw-readiness-secret"), "{body}");
    app.cleanup().await;
}
