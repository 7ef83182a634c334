//! SASL to Kafka (`KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT` / `SASL_SSL`) against the tansu that
//! authenticates (built by `scripts/dev-deps`; these tests fail, naming the command, when it is
//! missing), and the Kafka security settings' checks at start-up.

use std::time::Duration;

use rowsync::config::{KafkaSaslMechanism, KafkaSecurityProtocol, Settings};
use secrecy::SecretString;
use serde_json::Value;

use crate::{
    helpers::{drop_schema, eventually, kafka_client, produce, update, TestApp},
    process::RowsyncProcess,
    secure_app::{assert_round_trip, run_to_exit, security_env, settings_for},
    test_broker::{SaslUser, SecureBroker, TempDir},
    tls_proxy::{server_config, TestCa, Validity},
};

const ALICE: SaslUser = SaslUser {
    name: "alice",
    password: "alice-scram-512-secret",
    mechanism: "scram512",
};

const BOB: SaslUser = SaslUser {
    name: "bob",
    password: "bob-scram-256-secret",
    mechanism: "scram256",
};

/// Settings for SASL to `broker` as `user` with `password`.
fn sasl_settings(
    broker: &SecureBroker,
    protocol: KafkaSecurityProtocol,
    mechanism: KafkaSaslMechanism,
    user: &str,
    password: &str,
) -> Settings {
    let mut settings = settings_for(&broker.bootstrap);
    settings.kafka.kafka_security_protocol = protocol;
    settings.kafka.kafka_sasl_mechanism = Some(mechanism);
    settings.kafka.kafka_sasl_username = Some(user.to_owned());
    settings.kafka.kafka_sasl_password = Some(SecretString::from(password.to_owned()));
    settings
}

#[tokio::test]
async fn scram_sha_512_over_sasl_plaintext_carries_workers_write_to_kafka_and_readiness() {
    let broker = SecureBroker::sasl(&[ALICE], None).await;
    let app = TestApp::start(sasl_settings(
        &broker,
        KafkaSecurityProtocol::SaslPlaintext,
        KafkaSaslMechanism::ScramSha512,
        ALICE.name,
        ALICE.password,
    ))
    .await;
    assert_round_trip(&app).await;
    app.cleanup().await;
}

#[tokio::test]
async fn scram_sha_256_works_too() {
    let broker = SecureBroker::sasl(&[BOB], None).await;
    let app = TestApp::start(sasl_settings(
        &broker,
        KafkaSecurityProtocol::SaslPlaintext,
        KafkaSaslMechanism::ScramSha256,
        BOB.name,
        BOB.password,
    ))
    .await;
    assert_round_trip(&app).await;
    app.cleanup().await;
}

/// The managed-cloud case: SCRAM over TLS (the TLS proxy in front of the authenticating tansu).
#[tokio::test]
async fn sasl_ssl_with_scram_sha_512_through_the_tls_proxy() {
    let ca = TestCa::new("sasl-ssl");
    let server = ca.server_cert("server", &["127.0.0.1"], Validity::Current);
    let broker = SecureBroker::sasl(&[ALICE], Some(server_config(&server, None))).await;
    let mut settings = sasl_settings(
        &broker,
        KafkaSecurityProtocol::SaslSsl,
        KafkaSaslMechanism::ScramSha512,
        ALICE.name,
        ALICE.password,
    );
    settings.kafka.kafka_ssl_ca_location = Some(ca.cert_path.clone());
    let app = TestApp::start(settings.clone()).await;
    assert_round_trip(&app).await;
    let proxy = broker.tls.as_ref().unwrap();
    assert!(proxy.handshakes() > 2, "{}", proxy.handshakes());
    app.cleanup().await;

    // A wrong password over TLS: the same line as without TLS.
    settings.kafka.kafka_sasl_password = Some(SecretString::from("not-alices-secret".to_owned()));
    settings.database.db_schema = Some(format!("{}_wrong", settings.database.schema()));
    let exit = run_to_exit(&settings, &[]).await;
    exit.one_error_line(&["authentication failed (SASL SCRAM-SHA-512)"]);
    assert!(
        !exit.output.contains("not-alices-secret"),
        "{}",
        exit.output
    );
}

#[tokio::test]
async fn wrong_credentials_stop_start_up_with_one_line_that_never_shows_the_password() {
    let broker = SecureBroker::sasl(&[ALICE, BOB], None).await;
    let cases = [
        (
            ALICE.name,
            "wrong-password-secret",
            KafkaSaslMechanism::ScramSha512,
        ),
        (
            "mallory",
            "mallory-password-secret",
            KafkaSaslMechanism::ScramSha512,
        ),
        // Bob has SCRAM-SHA-256 credentials only.
        (BOB.name, BOB.password, KafkaSaslMechanism::ScramSha512),
    ];
    for (user, password, mechanism) in cases {
        let settings = sasl_settings(
            &broker,
            KafkaSecurityProtocol::SaslPlaintext,
            mechanism,
            user,
            password,
        );
        let exit = run_to_exit(&settings, &[]).await;
        exit.one_error_line(&[
            "connecting to Kafka: kafka: authentication failed (SASL SCRAM-SHA-512)",
            "KAFKA_SASL_USERNAME",
            "KAFKA_SASL_PASSWORD",
        ]);
        assert!(
            !exit.output.contains(password),
            "the password leaked:\n{}",
            exit.output
        );
    }
}

#[tokio::test]
async fn the_password_never_shows_in_debug_logs_readiness_or_worker_status_when_refused_later() {
    let mut broker = SecureBroker::sasl(&[ALICE], None).await;
    let settings = sasl_settings(
        &broker,
        KafkaSecurityProtocol::SaslPlaintext,
        KafkaSaslMechanism::ScramSha512,
        ALICE.name,
        ALICE.password,
    );
    // The password from a file, as Docker and Kubernetes secrets write it: with a newline.
    let secrets = TempDir::new("rowsync-sasl-secret");
    let password_file = secrets.path().join("kafka-password");
    std::fs::write(&password_file, format!("{}\n", ALICE.password)).unwrap();
    let password_file = password_file.display().to_string();
    let logs = secrets.path().join("rowsync.json");
    let env = security_env(&settings);
    let mut env: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, _)| *k != "KAFKA_SASL_PASSWORD")
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    env.extend([
        ("KAFKA_SASL_PASSWORD_FILE", password_file.as_str()),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "debug"),
    ]);
    let mut process = RowsyncProcess::start_with(&settings, &env, Some(&logs)).await;
    process.start_upcreate().await;
    let kafka = kafka_client(&settings.kafka).await;
    produce(
        &kafka,
        &settings.topics.updates_topic,
        1,
        &[&update(5, "five")],
    )
    .await;
    eventually("the worker applies the record", || async {
        (process.rows().await.len() == 1).then_some(())
    })
    .await;

    // The broker now knows another password for alice (a rotation rowsync has not seen).
    broker
        .restart_with_users(&[SaslUser {
            password: "rotated-password-secret",
            ..ALICE
        }])
        .await;
    let ready = eventually("readiness to report the refusal", || async {
        let response = process.ready().await;
        let status = response.status().as_u16();
        let body = response.text().await.ok()?;
        // (While tansu briefly ran without authentication, it offered no mechanism at all.)
        (status == 503 && body.contains("check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"))
            .then_some(body)
    })
    .await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    let kafka_check = ready["checks"]["kafka"].as_str().unwrap();
    assert!(
        kafka_check.starts_with("kafka: authentication failed (SASL SCRAM-SHA-512): "),
        "{ready}"
    );
    let workers = eventually("the worker to report the refusal", || async {
        let body = process.workers().await.to_string();
        let refused = "kafka: authentication failed (SASL SCRAM-SHA-512): ";
        let fix = "check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD";
        (body.contains(refused) && body.contains(fix)).then_some(body)
    })
    .await;
    let row = process.write_to_kafka(5).await;
    assert_eq!(row.status(), 503);
    let row = row.text().await.unwrap();

    process.signal("TERM");
    assert_eq!(process.wait(Duration::from_secs(30)).await, Some(0));
    let text = std::fs::read_to_string(&logs).unwrap();
    assert!(
        text.lines().count() > 20 && text.contains("\"level\":\"DEBUG\""),
        "debug logs expected:\n{text}"
    );
    assert!(
        text.contains("authentication failed (SASL SCRAM-SHA-512)"),
        "the refusal is logged:\n{text}"
    );
    for (what, body) in [
        ("logs", text.as_str()),
        ("/health/ready", kafka_check),
        ("/api/workers/", workers.as_str()),
        ("write_to_kafka", row.as_str()),
    ] {
        for secret in [ALICE.password, "rotated-password-secret"] {
            assert!(!body.contains(secret), "{secret} leaked in {what}:\n{body}");
        }
    }
    drop_schema(settings.database.schema()).await;
}

#[tokio::test]
async fn sasl_against_a_broker_without_it_says_the_broker_does_not_offer_the_mechanism() {
    // The shared broker (memory storage) authenticates nobody.
    let mut settings = crate::helpers::fresh_settings();
    settings.kafka.kafka_security_protocol = KafkaSecurityProtocol::SaslPlaintext;
    settings.kafka.kafka_sasl_mechanism = Some(KafkaSaslMechanism::ScramSha512);
    settings.kafka.kafka_sasl_username = Some("alice".to_owned());
    settings.kafka.kafka_sasl_password = Some(SecretString::from("whatever-secret".to_owned()));
    let exit = run_to_exit(&settings, &[]).await;
    exit.one_error_line(&[
        "authentication failed (SASL SCRAM-SHA-512): the broker does not offer SASL mechanism \
         SCRAM-SHA-512",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SECURITY_PROTOCOL",
    ]);
}

#[tokio::test]
async fn kafka_security_settings_that_do_not_fit_stop_start_up_with_one_line_naming_them() {
    let missing = std::env::temp_dir().join("rowsync-no-such-file.pem");
    let missing = missing.display().to_string();
    let secret = TempDir::new("rowsync-sasl-settings");
    let password_file = secret.path().join("password");
    std::fs::write(&password_file, "from-file-secret\n").unwrap();
    let password_file = password_file.display().to_string();
    // (the environment added, what the one error line must say)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &[("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")],
            &["KAFKA_SASL_MECHANISM is required with KAFKA_SECURITY_PROTOCOL=SASL_SSL"],
        ),
        (
            &[
                ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
                ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256"),
            ],
            &["KAFKA_SASL_USERNAME is required with KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT"],
        ),
        (
            &[
                ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                ("KAFKA_SASL_MECHANISM", "PLAIN"),
                ("KAFKA_SASL_USERNAME", "alice"),
            ],
            &["KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE) is required"],
        ),
        (
            &[("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")],
            &[
                "KAFKA_SASL_MECHANISM is set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not \
                 authenticate with SASL",
            ],
        ),
        (
            &[("KAFKA_SSL_CA_LOCATION", "/etc/ssl/ca.pem")],
            &["KAFKA_SSL_CA_LOCATION is set, but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use TLS"],
        ),
        (
            &[
                ("KAFKA_SECURITY_PROTOCOL", "SSL"),
                ("KAFKA_SSL_CERTIFICATE_LOCATION", "/etc/ssl/client.pem"),
            ],
            &["KAFKA_SSL_CERTIFICATE_LOCATION needs KAFKA_SSL_KEY_LOCATION"],
        ),
        (
            &[
                ("KAFKA_SECURITY_PROTOCOL", "SSL"),
                ("KAFKA_SSL_CA_LOCATION", missing.as_str()),
            ],
            &["KAFKA_SSL_CA_LOCATION: cannot read", missing.as_str()],
        ),
        (
            &[("KAFKA_SECURITY_PROTOCOL", "TLS")],
            &["invalid value 'TLS'", "KAFKA_SECURITY_PROTOCOL", "SASL_SSL"],
        ),
        (
            &[
                ("KAFKA_SECURITY_PROTOCOL", "SSL"),
                ("KAFKA_SSL_ENDPOINT_IDENTIFICATION", "off"),
            ],
            &["KAFKA_SSL_ENDPOINT_IDENTIFICATION", "https", "none"],
        ),
        (
            &[
                ("KAFKA_SASL_PASSWORD", "from-env-secret"),
                ("KAFKA_SASL_PASSWORD_FILE", password_file.as_str()),
            ],
            &["KAFKA_SASL_PASSWORD>", "cannot be used with", "KAFKA_SASL_PASSWORD_FILE"],
        ),
        (
            &[("KAFKA_SASL_PASSWORD_FILE", missing.as_str())],
            &["KAFKA_SASL_PASSWORD_FILE", "cannot read", missing.as_str()],
        ),
    ];
    for (env, needles) in cases {
        let settings = crate::helpers::fresh_settings();
        let exit = run_to_exit(&settings, env).await;
        exit.one_error_line(needles);
        for secret in ["from-env-secret", "from-file-secret"] {
            assert!(!exit.output.contains(secret), "{}", exit.output);
        }
    }
}
