//! What the table must hold once the workers have applied their topics (per id, the last valid
//! upsert in partition order; deletes applied), and the check that it does: shared by the crash,
//! soak and real-producer tests. Waiting until the workers are done is the caller's.

use std::collections::BTreeMap;

use rowsync::kafka::codec::{decode_delete, decode_upsert};

use crate::helpers::TestApp;

/// The rows upserts leave: per id, the name of its last valid upsert in partition order, from
/// records given as (partition, offset, value) in any order; and how many records were invalid.
/// Each id's records must lie in one partition (the tests key them by id), else "last" would mean
/// nothing.
pub fn last_upserts<'a>(
    records: impl IntoIterator<Item = (i32, i64, Option<&'a [u8]>)>,
) -> (BTreeMap<i64, String>, u64) {
    let mut last: BTreeMap<i64, (i32, i64, String)> = BTreeMap::new();
    let mut invalid = 0;
    for (partition, offset, value) in records {
        let Ok(row) = decode_upsert(value) else {
            invalid += 1;
            continue;
        };
        let entry = last
            .entry(row.id)
            .or_insert((partition, offset, row.name.clone()));
        assert_eq!(entry.0, partition, "id {} spans partitions", row.id);
        if offset >= entry.1 {
            *entry = (partition, offset, row.name);
        }
    }
    let rows = last
        .into_iter()
        .map(|(id, (_, _, name))| (id, name))
        .collect();
    (rows, invalid)
}

/// The table an app's topics imply.
#[derive(Debug)]
pub struct ImpliedTable {
    /// id → name.
    pub rows: BTreeMap<i64, String>,
    /// Records on the updates topic.
    pub updates: usize,
    /// Of those, the ones no worker can apply.
    pub invalid_updates: u64,
}

impl ImpliedTable {
    /// Reads `app`'s updates and delete topics: the `initial` rows, upserted by every update,
    /// then without every id deleted. The two workers apply their topics in no set order, so an
    /// id both updated and deleted implies nothing: that fails the test.
    pub async fn read(app: &TestApp, initial: BTreeMap<i64, String>) -> Self {
        let topics = &app.settings.topics;
        let updates = app.read_topic(&topics.updates_topic).await;
        let (upserted, invalid_updates) = last_upserts(
            updates
                .iter()
                .map(|(p, r)| (*p, r.offset, r.record.value.as_deref())),
        );
        let mut rows = initial;
        rows.extend(upserted.clone());
        for (_, record) in app.read_topic(&topics.delete_topic).await {
            if let Ok(id) = decode_delete(record.record.value.as_deref()) {
                assert!(
                    !upserted.contains_key(&id),
                    "id {id} is both updated and deleted: the topics imply no one table"
                );
                rows.remove(&id);
            }
        }
        Self {
            rows,
            updates: updates.len(),
            invalid_updates,
        }
    }

    /// Asserts `app`'s table holds exactly these rows.
    pub async fn assert_table_matches(&self, app: &TestApp) {
        let table: BTreeMap<i64, String> = app
            .db
            .query("SELECT id, name FROM some_model", &[])
            .await
            .expect("reading the table")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if let Some(difference) = rows_differ(&table, &self.rows) {
            panic!("the table is not what the topics imply: {difference}");
        }
    }
}

/// How `have` differs from `want` (id → name), briefly: counts and the first few rows missing,
/// unexpected or with another name; `None` when they are equal.
pub fn rows_differ(have: &BTreeMap<i64, String>, want: &BTreeMap<i64, String>) -> Option<String> {
    if have == want {
        return None;
    }
    let missing: Vec<_> = want.keys().filter(|i| !have.contains_key(i)).collect();
    let extra: Vec<_> = have.keys().filter(|i| !want.contains_key(i)).collect();
    let renamed: Vec<_> = want
        .iter()
        .filter(|(i, n)| have.get(i).is_some_and(|h| h != *n))
        .map(|(i, n)| format!("{i}: {:?} instead of {n:?}", have[i]))
        .collect();
    Some(format!(
        "{} rows of {} expected; {} missing (ids {:?}), {} unexpected (ids {:?}), {} with another \
         name {:?}",
        have.len(),
        want.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)],
        renamed.len(),
        &renamed[..renamed.len().min(3)]
    ))
}
