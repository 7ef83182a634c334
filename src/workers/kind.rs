//! Which [`Change`] each worker ([`WorkerKind`], defined with the domain in `model`) applies.
//! What a kind does with a record lives in its own file ([`upcreate`], [`delete`]).
//!
//! [`Change`]: super::change::Change
//! [`upcreate`]: super::upcreate
//! [`delete`]: super::delete

use rskafka::record::RecordAndOffset;

pub use crate::model::WorkerKind;

use super::{
    batch::{Batch, DecodedBatch},
    delete::Delete,
    upcreate::Upcreate,
};

impl WorkerKind {
    /// Decodes a batch of this worker's records with its [`Change`](super::change::Change): the
    /// kind is looked up once per batch, each record is decoded without dynamic dispatch.
    pub(super) fn decode(self, records: &[RecordAndOffset]) -> Box<dyn DecodedBatch> {
        match self {
            WorkerKind::Upcreate => Box::new(Batch::<Upcreate>::decode(records)),
            WorkerKind::Delete => Box::new(Batch::<Delete>::decode(records)),
        }
    }
}
