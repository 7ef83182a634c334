//! A broker of a test's own: a tansu process (memory storage) behind a [`FaultProxy`], so a test
//! can cut the app off from it, or restart it (losing every topic) without disturbing other tests.

use std::{net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

use crate::fault_proxy::FaultProxy;

/// A tansu process advertising its proxy's address, so every client goes through the proxy.
pub struct TestBroker {
    pub proxy: FaultProxy,
    listen: SocketAddr,
    child: Option<Child>,
}

/// The broker `scripts/dev-deps` installs (`TANSU` overrides it).
fn tansu() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return path.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let installed = target.join("tools/broker/bin/tansu");
    assert!(
        installed.exists(),
        "tansu is not installed at {}; run scripts/dev-deps (or set TANSU)",
        installed.display()
    );
    installed
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl TestBroker {
    /// Starts tansu on a free port behind a new proxy.
    pub async fn start() -> Self {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let proxy = FaultProxy::start(listen).await;
        let mut broker = Self {
            proxy,
            listen,
            child: None,
        };
        broker.spawn().await;
        broker
    }

    /// Another handle on the proxy, for a task that injects faults.
    pub fn proxy_handle(&self) -> FaultProxy {
        self.proxy.clone()
    }

    /// The address clients bootstrap from (the proxy).
    pub fn bootstrap(&self) -> String {
        self.proxy.addr.to_string()
    }

    /// Kills the broker and starts a fresh one on the same port: every topic and record is gone.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("killing tansu");
        }
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let child = Command::new(tansu())
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://{}", self.listen))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{}", self.proxy.addr))
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting tansu");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(self.listen).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tansu did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
