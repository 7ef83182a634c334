//! A TCP proxy that injects faults between the app and a server: let traffic pass, delay it,
//! cut every connection (and refuse new ones), or hang (accept, forward nothing).

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
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
