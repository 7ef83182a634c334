//! The domain: a row of table `some_model`, as the API, the topics and the database all see it,
//! and the workers that apply Kafka topics to it ([`WorkerKind`]), as settings, the API, the logs
//! and the stored offsets name them. What a worker does is `workers`'.

use std::fmt;

use poem_openapi::Object;
use serde::{Deserialize, Serialize};

/// Longest `name` a row may have, in characters (the column is `varchar(200)`).
pub const NAME_MAX_CHARS: usize = 200;

/// One row of table `some_model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Object)]
pub struct Row {
    /// The row's key, a 64-bit integer.
    pub id: i64,
    /// Free text of at most 200 characters.
    #[oai(validator(max_length = 200))]
    pub name: String,
}

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
}

impl fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
