//! A TCP proxy that injects faults between the app and a server: let traffic pass, delay it,
//! cut every connection (and refuse new ones), or hang (accept, forward nothing); and the
//! settings that put it between the app and PostgreSQL or Kafka, or refuse to run.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    time::Duration,
};

use rowsync::config::Settings;
use secrecy::{ExposeSecret, SecretString};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

use crate::{
    helpers::{fresh_settings, TestApp},
    test_broker::TestBroker,
};

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Forward everything, each chunk this much later.
    Delay(Duration),
    /// Close every connection, and every new one at once.
    Cut,
    /// Keep connections open but forward nothing, like a server that stopped answering.
    Hang,
}

/// A running proxy; stops when the last handle is dropped.
#[derive(Clone)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    fault_tx: watch::Sender<Fault>,
    /// Held only so the accept loop lives as long as a handle does.
    _accept_loop: std::sync::Arc<AbortOnDrop>,
}

/// Aborts the accept loop when the last handle goes.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl FaultProxy {
    /// Listens on a free local port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().unwrap();
        let (fault_tx, fault_rx) = watch::channel(Fault::Pass);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(serve(inbound, upstream, fault_rx.clone()));
            }
        });
        Self {
            addr,
            fault_tx,
            _accept_loop: std::sync::Arc::new(AbortOnDrop(task)),
        }
    }

    /// Changes what happens to traffic, including on open connections.
    pub fn set(&self, fault: Fault) {
        self.fault_tx.send_replace(fault);
    }
}

/// Puts a new fault proxy between the app and PostgreSQL: in front of the server `settings`'
/// `DATABASE_URL` names (`TEST_DATABASE_URL`'s), with that URL rewritten to reach it only
/// through the proxy.
///
/// Refuses to run (panics, saying why) when the URL names no single TCP server a proxy can
/// front (a Unix socket, several hosts, `host=` in its parameters, no URL at all), or when the
/// rewritten URL would still reach anything but the proxy: a test that cuts PostgreSQL off must
/// not pass with PostgreSQL reachable.
pub async fn proxy_postgres(settings: &mut Settings) -> FaultProxy {
    let url = settings
        .database
        .database_url
        .as_ref()
        .map(|url| url.expose_secret().to_owned());
    let Some(url) = url else {
        refuse("the settings have no DATABASE_URL")
    };
    let config: tokio_postgres::Config = url
        .parse()
        .unwrap_or_else(|e| refuse(&format!("the URL does not parse ({e})")));
    let (host, port) = match (config.get_hosts(), config.get_ports()) {
        ([tokio_postgres::config::Host::Tcp(host)], [] | [_])
            if config.get_hostaddrs().is_empty() =>
        {
            (
                host.clone(),
                config.get_ports().first().copied().unwrap_or(5432),
            )
        }
        (hosts, _) => refuse(&format!(
            "the URL names {hosts:?} (and hostaddrs {:?})",
            config.get_hostaddrs()
        )),
    };
    let upstream = (host.as_str(), port)
        .to_socket_addrs()
        .unwrap_or_else(|e| refuse(&format!("{host}:{port} does not resolve ({e})")))
        .find(|addr| std::net::TcpStream::connect_timeout(addr, Duration::from_secs(2)).is_ok())
        .unwrap_or_else(|| {
            refuse(&format!(
                "nothing accepts connections at {host}:{port} (run scripts/dev-deps)"
            ))
        });
    let proxy = FaultProxy::start(upstream).await;
    let mut through = reqwest::Url::parse(&url)
        .unwrap_or_else(|e| refuse(&format!("the URL is not one a proxy can rewrite ({e})")));
    through
        .set_host(Some("127.0.0.1"))
        .unwrap_or_else(|e| refuse(&format!("the URL's host cannot be replaced ({e})")));
    through
        .set_port(Some(proxy.addr.port()))
        .unwrap_or_else(|()| refuse("the URL's port cannot be replaced"));
    let through = through.to_string();
    // The guard: as the app will read it, the rewritten URL reaches the proxy and nothing else.
    let check: tokio_postgres::Config = through.parse().expect("the rewritten URL parses");
    let proxied = tokio_postgres::config::Host::Tcp("127.0.0.1".to_owned());
    if check.get_hosts() != [proxied] || check.get_ports() != [proxy.addr.port()] {
        refuse(&format!(
            "rewritten, the URL still names {:?} ports {:?}, not only the proxy at {}",
            check.get_hosts(),
            check.get_ports(),
            proxy.addr
        ));
    }
    settings.database.database_url = Some(SecretString::from(through));
    proxy
}

fn refuse(why: &str) -> ! {
    panic!(
        "cannot put a fault proxy in front of PostgreSQL: {why}; set TEST_DATABASE_URL to a \
         postgres://user@host:port/database URL naming one TCP server"
    )
}

/// Puts `broker`'s fault proxy between the app and Kafka: `settings` bootstrap from the proxy,
/// and the broker advertises the proxy, so every connection goes through it. (A proxy in front
/// of the shared broker could not be: it advertises its own address, which clients would then
/// use directly.) Panics if the settings would still name another broker.
pub fn proxy_kafka(settings: &mut Settings, broker: &TestBroker) {
    settings.kafka.kafka_bootstrap_servers = vec![broker.bootstrap()];
    assert_eq!(
        settings.kafka.bootstrap_servers(),
        [broker.proxy.addr.to_string()],
        "cannot put a fault proxy in front of Kafka: the settings name other brokers"
    );
}

/// Fresh settings and the app started with them, reaching PostgreSQL only through the returned
/// fault proxy, with PostgreSQL calls bounded at `db_timeout_ms`.
pub async fn app_behind_postgres_proxy(db_timeout_ms: u64) -> (FaultProxy, TestApp) {
    let mut settings = fresh_settings();
    let postgres = proxy_postgres(&mut settings).await;
    settings.database.db_timeout_ms = db_timeout_ms;
    (postgres, TestApp::start(settings).await)
}

async fn serve(inbound: TcpStream, upstream: SocketAddr, mut fault_rx: watch::Receiver<Fault>) {
    let fault = *fault_rx.borrow_and_update();
    match fault {
        Fault::Cut => return,
        Fault::Hang => {
            hold_until_released(&mut fault_rx).await;
            return;
        }
        Fault::Pass | Fault::Delay(_) => {}
    }
    let Ok(outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let (upstream_rx, downstream_rx) = (fault_rx.clone(), fault_rx.clone());
    let pumps = async move {
        tokio::join!(
            pump(in_read, out_write, upstream_rx),
            pump(out_read, in_write, downstream_rx)
        )
    };
    tokio::select! {
        _ = pumps => {}
        _ = async {
            loop {
                if fault_rx.changed().await.is_err() {
                    return;
                }
                // A hang is the pumps' business: they hold what they read.
                if *fault_rx.borrow_and_update() == Fault::Cut {
                    return;
                }
            }
        } => {}
    }
}

/// Waits while the fault is `Hang`.
async fn hold_until_released(fault_rx: &mut watch::Receiver<Fault>) {
    while *fault_rx.borrow_and_update() == Fault::Hang {
        if fault_rx.changed().await.is_err() {
            return;
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault_rx: watch::Receiver<Fault>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let fault = *fault_rx.borrow();
        match fault {
            Fault::Delay(delay) => tokio::time::sleep(delay).await,
            Fault::Hang => {
                // Swallow it; once released, close so the client reconnects afresh.
                hold_until_released(&mut fault_rx).await;
                break;
            }
            Fault::Pass | Fault::Cut => {}
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[tokio::test]
async fn cutting_closes_open_connections_and_refuses_new_ones() {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                while let Ok(n) = socket.read(&mut buffer).await {
                    if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let proxy = FaultProxy::start(echo_addr).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut answer = [0u8; 4];
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"ping");

    proxy.set(Fault::Cut);
    let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut answer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

    proxy.set(Fault::Pass);
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client.write_all(b"pong").await.unwrap();
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"pong");
}
