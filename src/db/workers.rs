//! The SQL for workers' desired state: which workers should run, surviving restarts.

use deadpool_postgres::GenericClient;

use crate::error::Result;

/// Records whether `worker` should be running.
pub async fn set_desired(client: &impl GenericClient, worker: &str, running: bool) -> Result<()> {
    let statement = client
        .prepare_cached(
            "INSERT INTO worker_desired_state (worker, running) VALUES ($1, $2) \
             ON CONFLICT (worker) DO UPDATE SET running = EXCLUDED.running, updated_at = now()",
        )
        .await?;
    client.execute(&statement, &[&worker, &running]).await?;
    Ok(())
}

/// Names of the workers that should be running.
pub async fn desired_running(client: &impl GenericClient) -> Result<Vec<String>> {
    let statement = client
        .prepare_cached("SELECT worker FROM worker_desired_state WHERE running ORDER BY worker")
        .await?;
    Ok(client
        .query(&statement, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
