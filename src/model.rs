//! The domain: a row of table `some_model`, as the API, the topics and the database all see it.

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
