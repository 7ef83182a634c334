//! The topics rowsync reads and writes, and where each worker's dead letters go.

use crate::model::WorkerKind;

/// The topics rowsync reads and writes.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicSettings {
    /// Topic the upcreate worker reads: `{"id": 5, "name": "smth"}`.
    #[arg(long, env = "UPDATES_TOPIC", default_value = "updates")]
    pub updates_topic: String,
    /// Topic the delete worker reads: `{"id": 1}`.
    #[arg(long, env = "DELETE_TOPIC", default_value = "deletions")]
    pub delete_topic: String,
    /// Topic `write_to_kafka` publishes rows to.
    #[arg(
        long,
        env = "OBJECTS_TO_KAFKA_TOPIC",
        default_value = "some_model_objects"
    )]
    pub objects_to_kafka_topic: String,
    /// Topic every REST response under `/api` is logged to.
    #[arg(long, env = "REST_LOG_TOPIC", default_value = "django-responses")]
    pub rest_log_topic: String,
    /// Whether responses under `/api` are published to `REST_LOG_TOPIC` (`false`: not logged,
    /// and the topic is not created).
    #[arg(long, env = "REST_LOG_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub rest_log_enabled: bool,
    /// Whether records a worker cannot apply go to a dead-letter topic (`false`: logged,
    /// counted and skipped).
    #[arg(long, env = "DEAD_LETTER_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub dead_letter_enabled: bool,
    /// Dead-letter topic of the upcreate worker (default `<UPDATES_TOPIC>.dlq`).
    #[arg(long, env = "UPDATES_DLQ_TOPIC")]
    pub updates_dlq_topic: Option<String>,
    /// Dead-letter topic of the delete worker (default `<DELETE_TOPIC>.dlq`).
    #[arg(long, env = "DELETE_DLQ_TOPIC")]
    pub delete_dlq_topic: Option<String>,
}

impl TopicSettings {
    /// The topic worker `kind` reads.
    pub fn source_topic(&self, kind: WorkerKind) -> &str {
        match kind {
            WorkerKind::Upcreate => &self.updates_topic,
            WorkerKind::Delete => &self.delete_topic,
        }
    }

    /// The dead-letter topic of worker `kind` (its own setting, else `<source topic>.dlq`),
    /// unless dead-lettering is off.
    pub fn dead_letter_topic(&self, kind: WorkerKind) -> Option<String> {
        if !self.dead_letter_enabled {
            return None;
        }
        let configured = match kind {
            WorkerKind::Upcreate => &self.updates_dlq_topic,
            WorkerKind::Delete => &self.delete_dlq_topic,
        };
        Some(
            configured
                .clone()
                .unwrap_or_else(|| format!("{}.dlq", self.source_topic(kind))),
        )
    }
}
