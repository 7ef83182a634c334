//! Shutdown signals: the first Ctrl-C or SIGTERM starts a graceful shutdown; a second one
//! exits the process at once. The task watching for that second signal is the one nobody stops:
//! it lives until the process exits, which it may cause.

/// Exit code after a second signal (128 + SIGINT, as shells report an interrupted program).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Completes on the first Ctrl-C or SIGTERM, and arms the second one to exit immediately.
pub async fn signal() {
    let mut signals = Signals::listen();
    signals.next().await;
    tracing::info!(
        "shutdown signal received; finishing in-flight work (a second signal exits at once)"
    );
    // The same listeners, installed before the first signal, so a second one is seen however
    // soon it follows (one installed afterwards would miss a signal sent before its first poll).
    tokio::spawn(async move {
        signals.next().await;
        tracing::warn!("second shutdown signal received; exiting now");
        std::process::exit(FORCED_EXIT_CODE);
    });
}

/// Listeners for Ctrl-C (SIGINT) and SIGTERM.
#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn listen() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        // Installing a handler fails only if the runtime has no signal driver.
        Self {
            interrupt: signal(SignalKind::interrupt()).expect("SIGINT handler"),
            terminate: signal(SignalKind::terminate()).expect("SIGTERM handler"),
        }
    }

    /// Completes on the next signal received since [`listen`](Self::listen) or the last call.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
    }
}

/// Ctrl-C, where there are no Unix signals.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn listen() -> Self {
        Self
    }

    async fn next(&mut self) {
        tokio::signal::ctrl_c().await.expect("Ctrl-C handler");
    }
}
