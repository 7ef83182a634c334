//! Reads of single rows by id, as `write_to_kafka` makes them: reads asked for together share
//! one query (`WHERE id = ANY($1)`), so a burst of calls costs PostgreSQL one statement and the
//! pool one connection instead of one each (group commit, for reads).
//!
//! Each read is as fresh as a query of its own: the shared query starts after every read it
//! answers was asked for, so it sees every change committed before that.
//!
//! The task running the shared queries is the caller's: it runs on the caller's `TaskTracker`
//! and ends when the caller's token is cancelled (or every [`RowReads`] handle is gone).

use std::{collections::HashMap, time::Duration};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::rows;
use crate::{
    error::{bounded, Error, Result},
    model::Row,
};

/// Most reads answered by one query.
const MAX_READS: usize = 1024;

/// A read waiting for the next shared query.
struct Waiting {
    id: i64,
    answer: oneshot::Sender<Result<Option<Row>>>,
}

/// Where reads wait for the task running the shared queries.
pub struct RowReads {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl RowReads {
    /// Starts the task on `tasks`, until `cancel` fires; each shared query gets `timeout` for a
    /// connection and its answer. Reads still waiting when it stops fail.
    pub fn spawn(
        pool: Pool,
        timeout: Duration,
        tasks: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        tasks.spawn(cancel.run_until_cancelled_owned(read_rounds(pool, queued, timeout)));
        Self { queue }
    }

    /// The row with this id, if any. Callers bound the wait themselves.
    pub async fn get(&self, id: i64) -> Result<Option<Row>> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Waiting { id, answer })
            .map_err(|_| Error::PostgresShared("the row reader stopped".into()))?;
        answered
            .await
            .map_err(|_| Error::PostgresShared("the row reader stopped".into()))?
    }
}

/// Takes every read queued, answers them all with one query, and goes again; reads asked for
/// meanwhile wait for the next query. A lone read is queried at once.
async fn read_rounds(pool: Pool, mut queue: mpsc::UnboundedReceiver<Waiting>, timeout: Duration) {
    let mut round = Vec::new();
    while queue.recv_many(&mut round, MAX_READS).await > 0 {
        // Callers that gave up meanwhile (their bound passed, their client left) are not read
        // for, so a backlog after an outage clears instead of costing a query per dead call.
        round.retain(|waiting| !waiting.answer.is_closed());
        if round.is_empty() {
            continue;
        }
        let mut ids: Vec<i64> = round.iter().map(|w| w.id).collect();
        ids.sort_unstable();
        ids.dedup();
        let read = bounded("reading rows", timeout, async {
            let client = pool.get().await?;
            rows::get_many(&client, &ids).await
        })
        .await;
        match read {
            Ok(found) => {
                let found: HashMap<i64, Row> = found.into_iter().map(|r| (r.id, r)).collect();
                for Waiting { id, answer } in round.drain(..) {
                    // A caller that gave up is skipped.
                    let _ = answer.send(Ok(found.get(&id).cloned()));
                }
            }
            Err(error) => {
                let message = error.to_string();
                for waiting in round.drain(..) {
                    let _ = waiting
                        .answer
                        .send(Err(Error::PostgresShared(message.clone())));
                }
            }
        }
    }
}
