//! TLS to Kafka (`KAFKA_SECURITY_PROTOCOL=SSL`): through a TLS-terminating proxy in front of a
//! tansu of the test's own that advertises the proxy, so every connection rowsync makes (the
//! bootstrap, partition leaders, the controller) is TLS. Certificates are made by the tests.

use std::time::Duration;

use rowsync::config::{EndpointIdentification, KafkaSecurityProtocol, Settings};
use serde_json::Value;

use crate::{
    helpers::{drop_schema, eventually, kafka_client, produce, update, TestApp, PARTITIONS},
    process::RowsyncProcess,
    secure_app::{assert_round_trip, run_to_exit, security_env, settings_for},
    test_broker::{SecureBroker, TempDir},
    tls_proxy::{server_config, TestCa, Validity},
};

/// Settings for TLS to `broker`, trusting `ca`.
fn tls_settings(broker: &SecureBroker, ca: &TestCa) -> Settings {
    let mut settings = settings_for(&broker.bootstrap);
    settings.kafka.kafka_security_protocol = KafkaSecurityProtocol::Ssl;
    settings.kafka.kafka_ssl_ca_location = Some(ca.cert_path.clone());
    settings
}

/// A broker behind the TLS proxy presenting a certificate `ca` signs for these names.
async fn broker_with_cert(ca: &TestCa, names: &[&str], validity: Validity) -> SecureBroker {
    let server = ca.server_cert("server", names, validity);
    SecureBroker::tls(server_config(&server, None)).await
}

#[tokio::test]
async fn tls_carries_workers_write_to_kafka_and_readiness_through_the_proxy() {
    let ca = TestCa::new("tls");
    let broker = broker_with_cert(&ca, &["localhost", "127.0.0.1"], Validity::Current).await;
    let app = TestApp::start(tls_settings(&broker, &ca)).await;
    assert_round_trip(&app).await;
    let proxy = broker.tls.as_ref().unwrap();
    // The broker advertises only the proxy: beyond the bootstrap connections (the app's and the
    // test client's), partition leaders and the controller were reached through TLS too.
    assert!(
        proxy.handshakes() > 2,
        "{} TLS handshakes",
        proxy.handshakes()
    );
    assert_eq!(proxy.refused(), 0);
    app.cleanup().await;
}

#[tokio::test]
async fn mutual_tls_works_and_a_client_without_a_certificate_is_refused() {
    let ca = TestCa::new("mtls");
    let server = ca.server_cert("server", &["127.0.0.1"], Validity::Current);
    let client = ca.client_cert("rowsync", "rowsync");
    let broker = SecureBroker::tls(server_config(&server, Some(&ca.cert_path))).await;

    let mut settings = tls_settings(&broker, &ca);
    settings.kafka.kafka_ssl_certificate_location = Some(client.cert.clone());
    settings.kafka.kafka_ssl_key_location = Some(client.key.clone());
    let app = TestApp::start(settings).await;
    assert_round_trip(&app).await;
    app.cleanup().await;

    let refused_before = broker.tls.as_ref().unwrap().refused();
    let exit = run_to_exit(&tls_settings(&broker, &ca), &[]).await;
    exit.one_error_line(&[
        "connecting to Kafka",
        "TLS: the broker requires a client certificate",
        "KAFKA_SSL_CERTIFICATE_LOCATION",
        "KAFKA_SSL_KEY_LOCATION",
    ]);
    assert!(broker.tls.as_ref().unwrap().refused() > refused_before);

    // A certificate the broker's CA did not sign is refused as well.
    let stranger = ca.sibling("stranger").client_cert("rowsync", "rowsync");
    let mut settings = tls_settings(&broker, &ca);
    settings.kafka.kafka_ssl_certificate_location = Some(stranger.cert);
    settings.kafka.kafka_ssl_key_location = Some(stranger.key);
    let exit = run_to_exit(&settings, &[]).await;
    exit.one_error_line(&[
        "TLS: the broker refused rowsync's client certificate",
        "KAFKA_SSL_CERTIFICATE_LOCATION",
    ]);
}

#[tokio::test]
async fn a_broker_certificate_no_trusted_ca_signed_stops_start_up_naming_kafka_ssl_ca_location() {
    let ca = TestCa::new("right");
    let wrong = ca.sibling("wrong");
    let broker = broker_with_cert(&ca, &["127.0.0.1"], Validity::Current).await;
    let mut settings = tls_settings(&broker, &ca);
    settings.kafka.kafka_ssl_ca_location = Some(wrong.cert_path.clone());
    let exit = run_to_exit(&settings, &[]).await;
    let line = exit.one_error_line(&[
        "connecting to Kafka: kafka: TLS: the broker's certificate is not signed by a trusted CA",
        "KAFKA_SSL_CA_LOCATION",
    ]);
    assert!(line.contains("UnknownIssuer"), "{line}");

    // Unset, only the public roots compiled into the binary are trusted: the test CA is not.
    settings.kafka.kafka_ssl_ca_location = None;
    let exit = run_to_exit(&settings, &[]).await;
    exit.one_error_line(&[
        "TLS: the broker's certificate is not signed by a trusted CA",
        "KAFKA_SSL_CA_LOCATION",
    ]);
}

#[tokio::test]
async fn an_expired_broker_certificate_stops_start_up_saying_so() {
    let ca = TestCa::new("expired");
    let broker = broker_with_cert(&ca, &["127.0.0.1"], Validity::Expired).await;
    let exit = run_to_exit(&tls_settings(&broker, &ca), &[]).await;
    exit.one_error_line(&[
        "connecting to Kafka: kafka: TLS: the broker's certificate is not valid now",
        "certificate expired",
        "renewed certificate",
    ]);
}

#[tokio::test]
async fn a_certificate_for_another_host_stops_start_up_naming_kafka_ssl_endpoint_identification() {
    let ca = TestCa::new("name");
    let broker = broker_with_cert(&ca, &["kafka.example.com"], Validity::Current).await;
    let exit = run_to_exit(&tls_settings(&broker, &ca), &[]).await;
    exit.one_error_line(&[
        "connecting to Kafka: kafka: TLS: certificate not valid for name \"127.0.0.1\"",
        "kafka.example.com",
        "KAFKA_SSL_ENDPOINT_IDENTIFICATION=none",
    ]);
}

#[tokio::test]
async fn endpoint_identification_none_accepts_another_host_name_and_warns() {
    let ca = TestCa::new("none");
    let broker = broker_with_cert(&ca, &["kafka.example.com"], Validity::Current).await;
    let mut settings = tls_settings(&broker, &ca);
    settings.kafka.kafka_ssl_endpoint_identification = Some(EndpointIdentification::None);
    let logs = TempDir::new("rowsync-tls-logs");
    let log_file = logs.path().join("rowsync.json");
    let env = security_env(&settings);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([("LOG_FORMAT", "json"), ("RUST_LOG", "info")]);
    let mut process = RowsyncProcess::start_with(&settings, &env, Some(&log_file)).await;
    let ready: Value = process.ready().await.json().await.unwrap();
    assert_eq!(ready["checks"]["kafka"], "ok", "{ready}");
    assert_eq!(ready["status"], "ok", "{ready}");
    // A record published through TLS to the wrongly named broker.
    process.start_upcreate().await;
    let kafka = kafka_client(&settings.kafka).await;
    produce(
        &kafka,
        &settings.topics.updates_topic,
        0,
        &[&update(7, "seven")],
    )
    .await;
    eventually("the worker applies the record", || async {
        (process.rows().await.len() == 1).then_some(())
    })
    .await;
    process.signal("TERM");
    assert_eq!(process.wait(Duration::from_secs(20)).await, Some(0));
    let text = std::fs::read_to_string(&log_file).unwrap();
    let warning = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .find(|line| {
            line["level"] == "WARN"
                && line["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("KAFKA_SSL_ENDPOINT_IDENTIFICATION=none"))
        });
    assert!(warning.is_some(), "no warning about host names in\n{text}");
    drop_schema(settings.database.schema()).await;
}

#[tokio::test]
async fn a_certificate_refused_after_start_up_shows_in_readiness_and_worker_status() {
    let ca = TestCa::new("later");
    let good = ca.server_cert("good", &["127.0.0.1"], Validity::Current);
    let expired = ca.server_cert("expired", &["127.0.0.1"], Validity::Expired);
    let broker = SecureBroker::tls(server_config(&good, None)).await;
    let app = TestApp::start(tls_settings(&broker, &ca)).await;
    app.start_upcreate().await;
    eventually("the worker to run on every partition", || async {
        let worker = app.worker("upcreate").await;
        (worker["partitions"].as_array()?.len() == PARTITIONS as usize).then_some(())
    })
    .await;
    let proxy = broker.tls.as_ref().unwrap();
    // The broker's certificate is replaced by an expired one, and every connection reopens.
    proxy.set_config(server_config(&expired, None));
    proxy.cut_connections();

    let ready = eventually("readiness to fail on the certificate", || async {
        let response = app.ready().await;
        let status = response.status();
        let ready: Value = response.json().await.ok()?;
        (status == 503).then_some(ready)
    })
    .await;
    let kafka = ready["checks"]["kafka"].as_str().unwrap_or_default();
    assert!(
        kafka.starts_with("kafka: TLS: the broker's certificate is not valid now")
            && kafka.contains("certificate expired"),
        "{ready}"
    );
    let error = eventually("the worker to report the certificate", || async {
        let worker = app.worker("upcreate").await;
        worker["partitions"]
            .as_array()?
            .iter()
            .filter_map(|p| p["last_error"].as_str())
            .find(|e| e.contains("TLS:"))
            .map(str::to_owned)
    })
    .await;
    assert!(
        error.starts_with("kafka: TLS: the broker's certificate is not valid now"),
        "{error}"
    );

    // A renewed certificate: both recover by themselves.
    proxy.set_config(server_config(&good, None));
    eventually("readiness to recover", || async {
        (app.ready().await.status() == 200).then_some(())
    })
    .await;
    app.produce(
        &app.settings.topics.updates_topic,
        0,
        &[&update(3, "three")],
    )
    .await;
    eventually("the worker to apply again", || async {
        (app.rows().await.len() == 1).then_some(())
    })
    .await;
    app.cleanup().await;
}
