//! The workers rowsync runs ([`WorkerKind`]), their names, and which [`Change`] each applies.
//! What a kind does with a record lives in its own file ([`upcreate`], [`delete`]).
//!
//! [`Change`]: super::change::Change
//! [`upcreate`]: super::upcreate
//! [`delete`]: super::delete

use std::fmt;

use rskafka::record::RecordAndOffset;

use super::{
    batch::{Batch, DecodedBatch},
    delete::Delete,
    upcreate::Upcreate,
};

/// The two workers rowsync runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkerKind {
    /// Upserts rows from `UPDATES_TOPIC` messages `{"id": 5, "name": "smth"}`.
    Upcreate,
    /// Deletes rows named by `DELETE_TOPIC` messages `{"id": 1}`.
    Delete,
}

impl WorkerKind {
    /// Every worker, in a fixed order.
    pub const ALL: [WorkerKind; 2] = [WorkerKind::Upcreate, WorkerKind::Delete];

    /// The worker's name in the API, the logs and the stored offsets.
    pub fn name(self) -> &'static str {
        match self {
            WorkerKind::Upcreate => "upcreate",
            WorkerKind::Delete => "delete",
        }
    }

    /// The worker named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Decodes a batch of this worker's records with its [`Change`](super::change::Change): the
    /// kind is looked up once per batch, each record is decoded without dynamic dispatch.
    pub(super) fn decode(self, records: &[RecordAndOffset]) -> Box<dyn DecodedBatch> {
        match self {
            WorkerKind::Upcreate => Box::new(Batch::<Upcreate>::decode(records)),
            WorkerKind::Delete => Box::new(Batch::<Delete>::decode(records)),
        }
    }
}

impl fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
