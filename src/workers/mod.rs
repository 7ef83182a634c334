//! The background workers that apply Kafka topics to table `some_model`, one job per file. Files
//! import only files below them in this list, never above:
//!
//! - [`registry`]: starts and stops workers, stores their wishes and offsets in PostgreSQL, and
//!   plans an offset reset (asking the broker).
//! - [`supervisor`]: one per running worker; keeps it a member of its consumer group and owns
//!   one loop per partition the group assigns it.
//! - `membership`: joining, syncing and leaving the group; `assignor`: how the leader splits
//!   the partitions; `generation`: heartbeats, the offset mirror and the topic watch of one
//!   generation.
//! - `partition` ([`PartitionConsumer`]): a partition's step and the loop that repeats it.
//! - `commit`: a batch's transaction (offset, rows, dead letters), retries and counters.
//! - `resume`: where a partition resumes (stored offsets, fingerprints, recreated topics).
//! - `fetch`: reading a partition (fetch sizes, the batch fetched ahead, covering fetches);
//!   `fetch_budget`: the bytes all of a worker's partitions may hold, fetched and not applied.
//! - [`context`]: what a worker's loops share, built from the registry's [`WorkerDeps`];
//!   `lease`: the group lease every commit checks and the positions mirrored to Kafka.
//! - [`metrics`]: what the workers export to Prometheus (batch histograms, counters, state).
//! - [`failures`], [`stats`]: how a loop backs off and logs, what a worker reports.
//! - `kind`: which `Change` each [`WorkerKind`] applies (the kinds and their names are `model`'s).
//! - `batch`: decodes and folds a batch, isolates refused records.
//! - `upcreate`, `delete`: each kind's `Change`; a new kind is one such file, a variant of
//!   [`WorkerKind`] and its settings.
//! - `change`: the `Change` trait, all that differs between kinds; [`dead_letter`]: where records
//!   that cannot be applied go.

mod assignor;
mod batch;
mod change;
mod commit;
pub mod context;
pub mod dead_letter;
mod delete;
pub mod failures;
mod fetch;
mod fetch_budget;
mod generation;
mod kind;
mod lease;
mod membership;
pub mod metrics;
mod partition;
pub mod registry;
mod resume;
pub mod stats;
pub mod supervisor;
mod upcreate;

pub use context::{WorkerContext, WorkerDeps};
pub use kind::WorkerKind;
pub use partition::{PartitionConsumer, Step};
pub use registry::{OffsetTarget, WorkerRegistry};
pub use stats::{WorkerState, WorkerStats};
pub use supervisor::Supervisor;
