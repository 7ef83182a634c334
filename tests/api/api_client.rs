//! One client of the app's REST API, whoever runs the app (in this process, or the binary as a
//! child process): a method per endpoint, and `raw` for the requests a test gets wrong on purpose.
//! Tests never build URLs or requests themselves.

use std::fmt::Display;

use reqwest::{Method, Response};
use rowsync::model::Row;
use serde_json::Value;

/// A client of one running app's API; cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiClient {
    /// `http://127.0.0.1:<port>`: where the app listens.
    base: String,
    port: u16,
    http: reqwest::Client,
    /// Sent as `Authorization: Bearer …` with every request, when set.
    token: Option<String>,
}

impl ApiClient {
    /// A client of the app listening on `port` of 127.0.0.1.
    pub fn on_port(port: u16) -> Self {
        Self {
            base: format!("http://127.0.0.1:{port}"),
            port,
            http: reqwest::Client::new(),
            token: None,
        }
    }

    /// The same client, sending `token` as its bearer token.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The port the app listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether anything accepts TCP connections on the app's port (a closed listener does not).
    pub async fn accepts_connections(&self) -> bool {
        tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_ok()
    }

    /// Sends `method path` with `headers` and `body` exactly as given (plus the bearer token, if
    /// any); reqwest's error where it could not (a header value it refuses, nothing listening).
    pub async fn try_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> reqwest::Result<Response> {
        // Tests name methods in any case, as the spec does ("get").
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("an HTTP method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        request.send().await
    }

    /// [`try_raw`](Self::try_raw), failing the test if the request could not be sent.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Response {
        self.try_raw(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} not sent: {e}"))
    }

    /// `GET path`, as it answers.
    pub async fn get(&self, path: &str) -> Response {
        self.raw("GET", path, &[], None).await
    }

    /// `POST path` without a body, as it answers.
    pub async fn post(&self, path: &str) -> Response {
        self.raw("POST", path, &[], None).await
    }

    /// `method path`, with `json` as an `application/json` body when given.
    pub async fn send(&self, method: &str, path: &str, json: Option<&Value>) -> Response {
        match json {
            Some(json) => {
                let body = serde_json::to_vec(json).expect("JSON serialises");
                let headers = [("content-type", "application/json")];
                self.raw(method, path, &headers, Some(body)).await
            }
            None => self.raw(method, path, &[], None).await,
        }
    }

    /// `GET /health/live` answers 200 (false while nothing answers).
    pub async fn live(&self) -> bool {
        self.try_raw("GET", "/health/live", &[], None)
            .await
            .is_ok_and(|r| r.status() == 200)
    }

    /// `GET /health/ready`, as it answers.
    pub async fn ready(&self) -> Response {
        self.get("/health/ready").await
    }

    /// `GET /metrics`, asserting 200: the Prometheus text.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200);
        response.text().await.expect("the metrics text")
    }

    /// `GET /api/some_models/`, asserting 200.
    pub async fn rows(&self) -> Vec<Row> {
        let response = self.get("/api/some_models/").await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("an array of rows")
    }

    /// `POST /api/some_models/{id}/write_to_kafka/`, as it answers (`id` need not be a number).
    pub async fn write_to_kafka(&self, id: impl Display) -> Response {
        self.post(&format!("/api/some_models/{id}/write_to_kafka/"))
            .await
    }

    /// POSTs to a start/stop path and checks the answer names the worker and its state.
    pub async fn control(&self, path: &str, worker: &str, state: &str) {
        self.control_with("POST", path, worker, state).await;
    }

    async fn control_with(&self, method: &str, path: &str, worker: &str, state: &str) {
        let response = self.raw(method, path, &[], None).await;
        assert_eq!(response.status(), 200, "{method} {path}");
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body["worker"], worker, "{body}");
        assert_eq!(body["state"], state, "{body}");
    }

    /// Starts the upsert worker, asserting it runs.
    pub async fn start_upcreate(&self) {
        self.control(
            "/api/some_models/start_upcreate_from_kafka/",
            "upcreate",
            "running",
        )
        .await;
    }

    /// Stops the upsert worker, asserting it stopped.
    pub async fn stop_upcreate(&self) {
        self.control(
            "/api/some_models/stop_upcreate_from_kafka/",
            "upcreate",
            "stopped",
        )
        .await;
    }

    /// Starts the delete worker with `DELETE` (the original API's method), asserting it runs.
    pub async fn start_delete(&self) {
        self.control_with(
            "DELETE",
            "/api/some_models/start_delete_from_kafka/",
            "delete",
            "running",
        )
        .await;
    }

    /// Stops the delete worker, asserting it stopped.
    pub async fn stop_delete(&self) {
        self.control(
            "/api/some_models/stop_delete_from_kafka/",
            "delete",
            "stopped",
        )
        .await;
    }

    /// `GET /api/workers/`, asserting 200.
    pub async fn workers(&self) -> Value {
        let response = self.get("/api/workers/").await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("JSON body")
    }

    /// `GET /api/workers/{name}/`, asserting 200.
    pub async fn worker(&self, name: &str) -> Value {
        let response = self.get(&format!("/api/workers/{name}/")).await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("JSON body")
    }

    /// Sum of one per-partition counter of a worker.
    pub async fn worker_total(&self, name: &str, counter: &str) -> u64 {
        let worker = self.worker(name).await;
        worker["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|p| p[counter].as_u64().expect("a counter"))
            .sum()
    }

    /// `POST /api/workers/{worker}/reset_offsets` with `body`, as it answers.
    pub async fn reset_offsets(&self, worker: &str, body: &Value) -> Response {
        let path = format!("/api/workers/{worker}/reset_offsets");
        self.send("POST", &path, Some(body)).await
    }
}

/// A client that asks for a response and then reads nothing: `GET path` sent over a raw TCP
/// connection to the app on `port`, the socket kept unread until the test reads it.
pub async fn unread_request(port: u16, path: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting to the app");
    socket
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .expect("sending the request");
    socket
}

/// Reads `socket` until the server ends it (EOF or reset), `enough` says what was read will do,
/// or `within` has passed; what was read and whether the server ended it.
pub async fn read_until_closed(
    socket: &mut tokio::net::TcpStream,
    within: std::time::Duration,
    enough: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buffer)).await {
            Err(_) => return (received, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (received, true),
            Ok(Ok(n)) => {
                received.extend_from_slice(&buffer[..n]);
                if enough(&received) {
                    return (received, false);
                }
            }
        }
    }
}
