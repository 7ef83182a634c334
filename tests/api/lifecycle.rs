//! What the app starts, it stops: after a graceful shutdown every task it started has ended, and
//! a start that fails (its port is taken) resumes no worker and leaves nothing running. The app
//! runs on a runtime of its own, so what it leaves there can be counted.

use std::{future::Future, time::Duration};

use rowsync::{app::Application, config::Settings};
use serde_json::Value;
use tokio::{
    runtime::{Builder, Runtime},
    sync::oneshot,
    task::JoinHandle,
};

use crate::{
    helpers::{eventually, fresh_settings, update, ApiClient, TestApp},
    process::{command, database_url_of, RowsyncProcess},
};

/// A runtime where only the app runs.
struct AppRuntime(Option<Runtime>);

impl AppRuntime {
    fn new() -> Self {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the app");
        Self(Some(runtime))
    }

    fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.as_ref().expect("running").spawn(work)
    }

    /// Waits until no task is left on this runtime.
    async fn empties(&self, what: &str) {
        let metrics = self.0.as_ref().expect("running").metrics();
        eventually(what, || async {
            match metrics.num_alive_tasks() {
                0 => Ok(()),
                alive => Err(format!("{alive} tasks still alive")),
            }
        })
        .await;
    }
}

impl Drop for AppRuntime {
    fn drop(&mut self) {
        // A runtime cannot be dropped, blocking, inside the test's own.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[tokio::test]
async fn after_shutdown_every_task_the_app_started_has_ended() {
    let settings = fresh_settings();
    // An in-process app only to create the schema and topics, and to clean them up.
    let mut observer = TestApp::start(settings.clone()).await;
    observer.stop().await;
    observer.insert_rows(&[(1, "one")]).await;

    let runtime = AppRuntime::new();
    let app = runtime
        .spawn(Application::build(settings.clone()))
        .await
        .expect("the build did not panic")
        .expect("the app starts");
    let tasks = app.tasks();
    assert_eq!(
        tasks.len(),
        7,
        "the change listener (2 tasks), the workers' desired-state follower, the shared row \
         reads, the response-log publisher and each pool's closing of idle connections (2)"
    );
    let api = ApiClient::on_port(app.port());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let serving = runtime.spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));
    // Every kind of task at work: a worker, a shared read and a keyed produce, the listing
    // cache's round trip, the response log.
    api.start_upcreate().await;
    assert_eq!(api.write_to_kafka(1).await.status(), 200);
    assert_eq!(api.rows().await.len(), 1);
    drop(api);

    stop_tx.send(()).expect("the app is serving");
    serving
        .await
        .expect("the app did not panic")
        .expect("the app stopped cleanly");
    assert!(
        tasks.is_closed() && tasks.is_empty(),
        "{} of the app's tasks still running after it stopped",
        tasks.len()
    );
    // Nor is anything else left: workers, producers' partition tasks, connections.
    runtime
        .empties("every task of the stopped app to end")
        .await;
    observer.cleanup().await;
}

/// Fresh settings, with the wish that upcreate runs stored (so a start resumes it), a stopped
/// app on them (to read the schema and clean up) and a port held by someone else.
async fn upcreate_wanted_and_a_taken_port() -> (Settings, TestApp, std::net::TcpListener) {
    let settings = fresh_settings();
    let mut observer = TestApp::start(settings.clone()).await;
    observer.start_upcreate().await;
    observer.stop().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    (settings, observer, taken)
}

#[tokio::test]
async fn a_start_that_cannot_bind_its_port_resumes_no_worker_and_leaves_nothing_running() {
    let (settings, observer, taken) = upcreate_wanted_and_a_taken_port().await;
    // A record a resumed worker would apply at once.
    observer
        .produce(&settings.topics.updates_topic, 0, &[&update(1, "applied")])
        .await;
    let mut on_a_taken_port = settings.clone();
    on_a_taken_port.listen_addr = taken.local_addr().expect("a bound address");

    let runtime = AppRuntime::new();
    let built = runtime
        .spawn(Application::build(on_a_taken_port))
        .await
        .expect("the build did not panic");
    let error = match built {
        Ok(_) => panic!("the app started on a port already taken"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("binding"), "{error}");
    runtime
        .empties("every task of the failed start to end")
        .await;

    // No worker ran: the record is not applied.
    let applied = observer
        .db
        .query("SELECT id FROM some_model", &[])
        .await
        .expect("reading the table");
    assert!(applied.is_empty(), "a worker ran and applied the record");
    // The wish to run is kept: a start that can bind resumes the worker, which applies it.
    drop(taken);
    let app = TestApp::start(settings).await;
    eventually("the resumed worker to apply the record", || async {
        (app.rows().await.len() == 1).then_some(())
    })
    .await;
    app.cleanup().await;
}

/// JSON log lines about a worker: their event, or their span, names one.
fn worker_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line.get("worker").is_some() || line["span"].get("worker").is_some())
        .collect()
}

#[tokio::test]
async fn the_binary_on_a_taken_port_exits_1_naming_it_before_any_worker_is_resumed() {
    let (settings, observer, taken) = upcreate_wanted_and_a_taken_port().await;
    let port = taken.local_addr().expect("a bound address").port();
    let json_logs = [("LOG_FORMAT", "json"), ("RUST_LOG", "info")];

    let output = command(&settings, port)
        .env("DATABASE_URL", database_url_of(&settings))
        .envs(json_logs)
        .output()
        .await
        .expect("running rowsync");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(1), "{logs}");
    assert!(
        logs.contains(&format!("binding 127.0.0.1:{port}")),
        "{logs}"
    );
    assert!(
        worker_lines(&logs).is_empty(),
        "a worker was resumed before the bind failed:\n{logs}"
    );

    // The same start on a free port resumes the worker, and its log says so.
    let log_file = std::env::temp_dir().join(format!(
        "rowsync-resume-{}.json",
        settings.database.schema()
    ));
    let mut process = RowsyncProcess::start_with(&settings, &json_logs, Some(&log_file)).await;
    process.signal("TERM");
    assert_eq!(process.wait(Duration::from_secs(20)).await, Some(0));
    let resumed = std::fs::read_to_string(&log_file).expect("reading the logs");
    let _ = std::fs::remove_file(&log_file);
    assert!(!worker_lines(&resumed).is_empty(), "{resumed}");
    observer.cleanup().await;
}
