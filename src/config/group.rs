//! How rowsync's replicas share partitions through Kafka's consumer groups: the group ids,
//! Kafka's own session, heartbeat and rebalance timeouts, and the replica's name in its groups.

use std::time::Duration;

/// Consumer-group membership: one group per worker, `KAFKA_GROUP_ID_PREFIX` + `-upcreate` /
/// `-delete`, whose coordinator assigns each replica its partitions.
#[derive(Debug, Clone, clap::Args)]
pub struct GroupSettings {
    /// Prefix of each worker's consumer group id: the groups are `<prefix>-upcreate` and
    /// `<prefix>-delete`. Replicas with the same prefix (and topics) share the work.
    #[arg(long, env = "KAFKA_GROUP_ID_PREFIX", default_value = "rowsync", value_parser = parse_group_prefix)]
    pub kafka_group_id_prefix: String,
    /// Kafka's `session.timeout.ms`: a replica that sends no heartbeat for this long is dropped
    /// from its groups and its partitions go to the others; it stops applying first.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1_000..=1_800_000))]
    pub kafka_session_timeout_ms: u32,
    /// Kafka's `heartbeat.interval.ms`: how often a member tells the coordinator it is alive
    /// (and hears of rebalances). At most a third of the session timeout.
    #[arg(long, env = "KAFKA_HEARTBEAT_INTERVAL_MS", default_value_t = 3_000, value_parser = clap::value_parser!(u32).range(100..))]
    pub kafka_heartbeat_interval_ms: u32,
    /// How long the coordinator waits for every member to rejoin during a rebalance (Java's
    /// `max.poll.interval.ms`). Must exceed `DB_TIMEOUT_MS` plus one fetch
    /// (`KAFKA_FETCH_MAX_WAIT_MS`): a member finishes its batch in flight before it rejoins.
    #[arg(long, env = "KAFKA_REBALANCE_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u32).range(1_000..))]
    pub kafka_rebalance_timeout_ms: u32,
    /// How often, in milliseconds, a group's leader re-reads its topic's partitions, asking for
    /// a rebalance when partitions were added (Kafka's `metadata.max.age.ms`); also how often
    /// the lag of partitions other replicas own is refreshed.
    #[arg(long, env = "KAFKA_METADATA_MAX_AGE_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub kafka_metadata_max_age_ms: u64,
    /// This replica's name: its client id towards Kafka, its `group.instance.id` with
    /// `KAFKA_STATIC_MEMBERSHIP`, and the owner shown per partition by `GET /api/workers/`.
    /// Default: the host name (a container's or pod's name). Two running replicas must never
    /// share one.
    #[arg(long, env = "REPLICA_ID", default_value_t = default_replica_id(), value_parser = parse_replica_id)]
    pub replica_id: String,
    /// Static membership (KIP-345): join with `REPLICA_ID` as `group.instance.id`, so that a
    /// replica restarted under the same name within the session timeout takes its partitions
    /// back without a rebalance. Needs JoinGroup v5 (Apache Kafka 2.3+). Off by default: the
    /// test broker (tansu) mishandles it (a leaving static member takes the others' membership
    /// with it, and generations stop advancing).
    #[arg(long, env = "KAFKA_STATIC_MEMBERSHIP", default_value_t = false, action = clap::ArgAction::Set)]
    pub kafka_static_membership: bool,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            kafka_group_id_prefix: "rowsync".to_owned(),
            kafka_session_timeout_ms: 10_000,
            kafka_heartbeat_interval_ms: 3_000,
            kafka_rebalance_timeout_ms: 60_000,
            kafka_metadata_max_age_ms: 30_000,
            replica_id: default_replica_id(),
            kafka_static_membership: false,
        }
    }
}

impl GroupSettings {
    /// The consumer group of the worker named `worker`.
    pub fn group_id(&self, worker: &str) -> String {
        format!("{}-{worker}", self.kafka_group_id_prefix)
    }

    /// `KAFKA_SESSION_TIMEOUT_MS`.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka_session_timeout_ms.into())
    }

    /// `KAFKA_HEARTBEAT_INTERVAL_MS`.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.kafka_heartbeat_interval_ms.into())
    }

    /// `KAFKA_REBALANCE_TIMEOUT_MS`.
    pub fn rebalance_timeout(&self) -> Duration {
        Duration::from_millis(self.kafka_rebalance_timeout_ms.into())
    }

    /// `KAFKA_METADATA_MAX_AGE_MS`.
    pub fn metadata_max_age(&self) -> Duration {
        Duration::from_millis(self.kafka_metadata_max_age_ms)
    }

    /// Refuses timeouts that cannot work together: one line naming the settings.
    pub fn check(&self, db_timeout: Duration, fetch_max_wait: Duration) -> Result<(), String> {
        if self.kafka_heartbeat_interval_ms.saturating_mul(3) > self.kafka_session_timeout_ms {
            return Err(format!(
                "KAFKA_HEARTBEAT_INTERVAL_MS ({}) must be at most a third of KAFKA_SESSION_TIMEOUT_MS ({})",
                self.kafka_heartbeat_interval_ms, self.kafka_session_timeout_ms
            ));
        }
        let batch = db_timeout + fetch_max_wait;
        if self.rebalance_timeout() <= batch {
            return Err(format!(
                "KAFKA_REBALANCE_TIMEOUT_MS ({}) must exceed DB_TIMEOUT_MS plus KAFKA_FETCH_MAX_WAIT_MS ({} ms): a replica finishes its batch in flight before it rejoins",
                self.kafka_rebalance_timeout_ms,
                batch.as_millis()
            ));
        }
        Ok(())
    }
}

/// The host name, or `rowsync` where it cannot be read.
fn default_replica_id() -> String {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    if parse_replica_id(&name).is_ok() {
        name
    } else {
        "rowsync".to_owned()
    }
}

/// A replica id: 1–249 characters, none of them control characters.
fn parse_replica_id(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 249 || value.chars().any(char::is_control) {
        return Err("expected 1 to 249 printable characters".to_owned());
    }
    Ok(value.to_owned())
}

/// A group id prefix: what Kafka accepts in a group id, kept to the characters of topic names
/// so that tools and ACLs quote nothing.
fn parse_group_prefix(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 200
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err("expected 1 to 200 of a-z, A-Z, 0-9, '.', '_' and '-'".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::{invalid, parse};

    const URL: [&str; 2] = ["--database-url", "postgres://h/d"];

    #[test]
    fn groups_are_named_by_prefix_and_worker() {
        let group = parse(&URL).unwrap().settings.group;
        assert_eq!(group.group_id("upcreate"), "rowsync-upcreate");
        assert_eq!(group.session_timeout(), Duration::from_secs(10));
        assert!(!group.replica_id.is_empty());
        let set = parse(&[
            URL[0],
            URL[1],
            "--kafka-group-id-prefix",
            "orders.sync",
            "--replica-id",
            "r-1",
        ])
        .unwrap()
        .settings
        .group;
        assert_eq!(set.group_id("delete"), "orders.sync-delete");
        assert_eq!(set.replica_id, "r-1");
    }

    #[test]
    fn malformed_names_are_refused() {
        let line = invalid(&[URL[0], URL[1], "--kafka-group-id-prefix", "a b"]);
        assert!(line.contains("--kafka-group-id-prefix"), "{line}");
        let line = invalid(&[URL[0], URL[1], "--replica-id", ""]);
        assert!(line.contains("--replica-id"), "{line}");
    }

    #[test]
    fn timeouts_that_cannot_work_together_are_refused() {
        let group = parse(&URL).unwrap().settings.group;
        let (db, fetch) = (Duration::from_secs(30), Duration::from_millis(500));
        assert_eq!(group.check(db, fetch), Ok(()));
        let error = group.check(Duration::from_secs(60), fetch).unwrap_err();
        assert!(error.contains("KAFKA_REBALANCE_TIMEOUT_MS"), "{error}");
        let mut chatty = group.clone();
        chatty.kafka_heartbeat_interval_ms = 5_000;
        let error = chatty.check(db, fetch).unwrap_err();
        assert!(error.contains("KAFKA_HEARTBEAT_INTERVAL_MS"), "{error}");
    }
}
