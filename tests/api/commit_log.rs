//! The soaks' commit log: a trigger records, in the transaction that moves it, each move of the
//! upcreate worker's stored offset (from where, to where, by which connection), so a soak can
//! check that every partition's batches chain from offset 0 to the topic's end with none
//! applied twice, and count what each batch held.

use std::collections::BTreeMap;

use crate::helpers::TestApp;

/// Adds the commit log to the test's schema. An insert of a stored offset is a partition's
/// first batch: from offset 0. `replica` is the committing connection's `application_name`.
pub async fn log_commits(app: &TestApp) {
    let schema = app.settings.database.schema();
    app.db
        .batch_execute(&format!(
            r#"
            CREATE TABLE soak_commits (
                id bigserial PRIMARY KEY,
                partition integer NOT NULL,
                from_offset bigint,
                to_offset bigint NOT NULL,
                replica text NOT NULL
            );
            CREATE FUNCTION soak_log_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO "{schema}".soak_commits (partition, from_offset, to_offset, replica)
                VALUES (NEW.partition, CASE WHEN TG_OP = 'UPDATE' THEN OLD.next_offset END,
                        NEW.next_offset, current_setting('application_name'));
                RETURN NULL;
            END $$;
            CREATE TRIGGER soak_log_commit AFTER INSERT OR UPDATE ON kafka_offsets
                FOR EACH ROW WHEN (NEW.worker = 'upcreate') EXECUTE FUNCTION soak_log_commit();
            "#
        ))
        .await
        .expect("adding the commit log");
}

/// A committed batch: it moved `partition`'s next offset from `from` (`None`: nothing stored,
/// so offset 0) to `to`, on a connection named `replica`.
pub struct Commit {
    pub partition: i32,
    pub from: Option<i64>,
    pub to: i64,
    pub replica: String,
}

impl Commit {
    /// How many of a partition's `offsets` (in order) this batch covers.
    pub fn covers(&self, offsets: &[i64]) -> u64 {
        let from = self.from.unwrap_or(0);
        (offsets.partition_point(|o| *o < self.to) - offsets.partition_point(|o| *o < from)) as u64
    }
}

/// Every batch the commit log holds.
pub async fn committed_batches(app: &TestApp) -> Vec<Commit> {
    let sql = "SELECT partition, from_offset, to_offset, replica FROM soak_commits";
    let rows = app
        .db
        .query(sql, &[])
        .await
        .expect("reading the commit log");
    rows.iter()
        .map(|r| Commit {
            partition: r.get(0),
            from: r.get(1),
            to: r.get(2),
            replica: r.get(3),
        })
        .collect()
}

/// PostgreSQL's next offsets of the upcreate worker, by partition (empty while PostgreSQL is
/// unreachable, which the replicas soak's faults make it).
pub async fn stored_offsets(app: &TestApp) -> BTreeMap<i32, i64> {
    let sql = "SELECT partition, next_offset FROM kafka_offsets WHERE worker = 'upcreate'";
    let rows = app.db.query(sql, &[]).await.unwrap_or_default();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// Asserts that each partition's committed batches chain from offset 0 to its end (`ends`):
/// each starts where another ended, no two start at one offset (applied twice), none is off
/// the chain.
pub fn assert_tiled(ends: &BTreeMap<i32, i64>, commits: &[Commit]) {
    for (&partition, &end) in ends {
        let mut by_start: BTreeMap<i64, &Commit> = BTreeMap::new();
        for commit in commits.iter().filter(|c| c.partition == partition) {
            let start = commit.from.unwrap_or(0);
            if let Some(other) = by_start.insert(start, commit) {
                panic!(
                    "partition {partition}: two batches committed from offset {start}, to {} by \
                     {} and to {} by {}: applied twice",
                    other.to, other.replica, commit.to, commit.replica
                );
            }
        }
        let (mut at, mut chained) = (0, 0);
        while let Some(commit) = by_start.get(&at) {
            assert!(
                commit.to > at,
                "partition {partition}: a batch from {at} to {}",
                commit.to
            );
            at = commit.to;
            chained += 1;
        }
        assert_eq!(
            at, end,
            "partition {partition}: the committed batches end at {at}"
        );
        assert_eq!(
            chained,
            by_start.len(),
            "partition {partition}: batches off the chain"
        );
    }
}
