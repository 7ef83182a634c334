//! A broker of a test's own: a tansu process (memory storage) behind a [`FaultProxy`], so a test
//! can cut the app off from it, or restart it (losing every topic) without disturbing other tests.
//! [`SecureBroker`]: a tansu behind a TLS-terminating proxy, or the SASL-capable tansu with users
//! of the test's own (and optionally the TLS proxy in front).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use rustls::ServerConfig;
use tokio::process::{Child, Command};

use crate::{
    fault_proxy::FaultProxy, helpers::eventually_within, process::free_port, tls_proxy::TlsProxy,
};

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
        let mut command = Command::new(tansu());
        command.args(["broker", "--storage-engine", "memory://tansu/"]);
        let within = Duration::from_secs(20);
        self.child = Some(launch(command, self.listen, self.proxy.addr, within).await);
    }
}

/// Starts the tansu `command` on `listen`, advertising `advertised`, and waits (at most `within`)
/// until it accepts connections. Killed when dropped.
async fn launch(
    mut command: Command,
    listen: SocketAddr,
    advertised: SocketAddr,
    within: Duration,
) -> Child {
    let child = command
        .arg("--listener-url")
        .arg(format!("tcp://{listen}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://{advertised}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting tansu");
    eventually_within(within, &format!("tansu to listen on {listen}"), || async {
        tokio::net::TcpStream::connect(listen).await.ok().map(drop)
    })
    .await;
    child
}

/// A directory of a test's own under the system's temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let unique: u64 = rand::random();
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{unique:x}", std::process::id()));
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The command `scripts/dev-deps` runs to build the SASL-capable tansu (into `--root`).
pub const SASL_TANSU_BUILD: &str =
    "cargo install --locked tansu --version 0.6.0 --no-default-features --features libsql";

/// The tansu that can authenticate (SASL SCRAM users in sqlite storage), which `scripts/dev-deps`
/// builds and caches outside the checkout; `TANSU_SASL` overrides it. Missing, the test fails
/// with the command that builds it.
pub fn sasl_tansu() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU_SASL") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "TANSU_SASL={} does not exist",
            path.display()
        );
        return path;
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    let root = PathBuf::from(home).join(".cache/rowsync/tansu-0.6.0-libsql");
    let installed = root.join("bin/tansu");
    assert!(
        installed.exists(),
        "the SASL-capable tansu is not installed at {}; run scripts/dev-deps, which runs \
         `{SASL_TANSU_BUILD} --root {}` (about 16 minutes on 2 cores), or set TANSU_SASL",
        installed.display(),
        root.display()
    );
    installed
}

/// A SCRAM user a [`SecureBroker`] knows.
#[derive(Clone, Copy, Debug)]
pub struct SaslUser {
    pub name: &'static str,
    pub password: &'static str,
    /// As `tansu user create --mechanism` names it: `scram256` or `scram512`.
    pub mechanism: &'static str,
}

/// A tansu of a test's own that clients reach through TLS, SASL authentication, or both.
///
/// With TLS, tansu advertises the TLS proxy's address, so every connection a client makes after
/// bootstrapping goes through TLS as well. With SASL it is the SASL-capable tansu on sqlite
/// storage in a temporary directory, with authentication required.
pub struct SecureBroker {
    /// Where clients bootstrap from: the TLS proxy, or tansu itself.
    pub bootstrap: String,
    pub tls: Option<TlsProxy>,
    listen: SocketAddr,
    advertised: SocketAddr,
    child: Option<Child>,
    /// `Some`: the SASL-capable tansu, its storage in this directory.
    sasl_dir: Option<TempDir>,
}

impl SecureBroker {
    /// The dev-deps tansu (memory storage, no authentication) behind a TLS proxy presenting
    /// `tls`.
    pub async fn tls(tls: Arc<ServerConfig>) -> Self {
        Self::start(None, Some(tls)).await
    }

    /// The SASL-capable tansu with `users`, authentication required; behind a TLS proxy
    /// presenting `tls` when given (SASL_SSL).
    pub async fn sasl(users: &[SaslUser], tls: Option<Arc<ServerConfig>>) -> Self {
        let mut broker = Self::start(Some(users), tls).await;
        broker.spawn(true).await;
        broker
    }

    async fn start(users: Option<&[SaslUser]>, tls: Option<Arc<ServerConfig>>) -> Self {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let tls = match tls {
            Some(config) => Some(TlsProxy::start(listen, config).await),
            None => None,
        };
        let advertised = tls.as_ref().map_or(listen, |proxy| proxy.addr);
        let mut broker = Self {
            bootstrap: advertised.to_string(),
            tls,
            listen,
            advertised,
            child: None,
            sasl_dir: users.map(|_| TempDir::new("rowsync-sasl-broker")),
        };
        match users {
            Some(users) => broker.set_users(users).await,
            None => broker.spawn(false).await,
        }
        broker
    }

    /// Stops the broker, gives `users` (new ones, or new passwords) to its storage with
    /// authentication off, and starts it again with authentication on, on the same port.
    pub async fn restart_with_users(&mut self, users: &[SaslUser]) {
        self.set_users(users).await;
        self.spawn(true).await;
    }

    /// With tansu stopped: starts it without authentication, creates `users`, stops it.
    async fn set_users(&mut self, users: &[SaslUser]) {
        self.stop().await;
        self.spawn(false).await;
        let binary = sasl_tansu();
        for user in users {
            let output = tokio::time::timeout(
                Duration::from_secs(30),
                Command::new(&binary)
                    .args(["user", "create", user.name, user.password])
                    .args(["--mechanism", user.mechanism])
                    .arg("--broker")
                    .arg(format!("tcp://{}", self.listen))
                    .kill_on_drop(true)
                    .output(),
            )
            .await
            .expect("tansu user create finishes in time")
            .expect("running tansu user create");
            assert!(
                output.status.success(),
                "tansu user create {} failed: {}",
                user.name,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        self.stop().await;
    }

    /// Stops tansu (SIGTERM, then SIGKILL after 10 s) and waits until it has exited.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                child.kill().await.expect("killing tansu");
            }
        }
    }

    async fn spawn(&mut self, authentication: bool) {
        let command = match &self.sasl_dir {
            Some(dir) => {
                let mut command = Command::new(sasl_tansu());
                command.current_dir(dir.path()).args([
                    "broker",
                    "--storage-engine",
                    "sqlite://tansu.db",
                ]);
                if authentication {
                    command.arg("--authentication");
                }
                command
            }
            None => {
                let mut command = Command::new(tansu());
                command.args(["broker", "--storage-engine", "memory://tansu/"]);
                command
            }
        };
        let within = Duration::from_secs(30);
        self.child = Some(launch(command, self.listen, self.advertised, within).await);
    }
}

impl Drop for SecureBroker {
    /// Kills tansu and waits (briefly) for it to exit before its storage directory goes.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
