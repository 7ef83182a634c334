//! Shutdown signals: the first Ctrl-C or SIGTERM starts a graceful shutdown; a second one
//! exits the process at once.

/// Exit code after a second signal (128 + SIGINT, as shells report an interrupted program).
pub const FORCED_EXIT_CODE: i32 = 130;

/// Completes on the first Ctrl-C or SIGTERM, and arms the second one to exit immediately.
pub async fn signal() {
    received().await;
    tracing::info!(
        "shutdown signal received; finishing in-flight work (a second signal exits at once)"
    );
    tokio::spawn(async {
        received().await;
        tracing::warn!("second shutdown signal received; exiting now");
        std::process::exit(FORCED_EXIT_CODE);
    });
}

/// Completes on the next Ctrl-C or SIGTERM.
async fn received() {
    let ctrl_c = async {
        // Installing the handler fails only if the runtime has no signal driver.
        tokio::signal::ctrl_c().await.expect("Ctrl-C handler");
    };
    #[cfg(unix)]
    let terminate = async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler")
            .recv()
            .await;
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
