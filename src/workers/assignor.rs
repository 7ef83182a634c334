//! How a group's leader splits partitions among its members: Kafka's round-robin assignor
//! (protocol name `roundrobin`, as Java's `RoundRobinAssignor`), and what rowsync adds in the
//! consumer protocol's `user_data`: each member's replica name, and for every member the whole
//! assignment, so each replica can show who owns every partition.
//!
//! Round-robin rather than sticky: a partition that moves costs only a read of its position
//! from PostgreSQL (offsets never live in the consumer, so there is no state to keep warm), and
//! under the eager protocol every member stops all its partitions at each rebalance anyway. It
//! is balanced (counts differ by at most one) and deterministic: members are ordered by replica
//! name, so replicas that restart under the same `REPLICA_ID` get the same partitions back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The assignor's protocol name in JoinGroup, as Kafka's tools show it.
pub const ASSIGNOR: &str = "roundrobin";

/// What a member subscribes with, as the leader reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// Its member id in this generation.
    pub member_id: String,
    /// Its replica name (from its subscription's user data; the member id if it has none).
    pub replica: String,
    /// The topics it reads.
    pub topics: Vec<String>,
}

/// A member's subscription `user_data`.
#[derive(Debug, Serialize, Deserialize)]
struct SubscriptionData {
    replica: String,
}

/// An assignment's `user_data`: the owner of every partition of every topic, by replica name.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Owners {
    pub owners: BTreeMap<String, BTreeMap<i32, String>>,
}

/// The `user_data` a replica subscribes with.
pub fn subscription_data(replica: &str) -> Vec<u8> {
    serde_json::to_vec(&SubscriptionData {
        replica: replica.to_owned(),
    })
    .expect("a string serialises")
}

/// The replica named in a subscription's `user_data`, if it names one.
pub fn replica_of(user_data: Option<&[u8]>) -> Option<String> {
    let data: SubscriptionData = serde_json::from_slice(user_data?).ok()?;
    Some(data.replica)
}

/// Splits each topic's partitions round-robin among the members subscribed to it, ordered by
/// replica name (then member id). Returns every member's partitions by topic (members with
/// nothing get an empty map) and the owners of all partitions.
pub fn assign(
    partitions: &BTreeMap<String, Vec<i32>>,
    members: &[Subscriber],
) -> (BTreeMap<String, BTreeMap<String, Vec<i32>>>, Owners) {
    let mut ordered: Vec<&Subscriber> = members.iter().collect();
    ordered.sort_by(|a, b| (&a.replica, &a.member_id).cmp(&(&b.replica, &b.member_id)));
    let mut assignment: BTreeMap<String, BTreeMap<String, Vec<i32>>> = members
        .iter()
        .map(|m| (m.member_id.clone(), BTreeMap::new()))
        .collect();
    let mut owners = Owners::default();
    for (topic, topic_partitions) in partitions {
        let readers: Vec<&&Subscriber> = ordered
            .iter()
            .filter(|m| m.topics.iter().any(|t| t == topic))
            .collect();
        if readers.is_empty() {
            continue;
        }
        let mut sorted = topic_partitions.clone();
        sorted.sort_unstable();
        for (i, partition) in sorted.into_iter().enumerate() {
            let member = readers[i % readers.len()];
            assignment
                .get_mut(&member.member_id)
                .expect("every member has an entry")
                .entry(topic.clone())
                .or_default()
                .push(partition);
            owners
                .owners
                .entry(topic.clone())
                .or_default()
                .insert(partition, member.replica.clone());
        }
    }
    (assignment, owners)
}

impl Owners {
    /// The owners carried in an assignment's `user_data` (none if it carries none).
    pub fn decode(user_data: Option<&[u8]>) -> Self {
        user_data
            .and_then(|data| serde_json::from_slice(data).ok())
            .unwrap_or_default()
    }

    /// As an assignment's `user_data`.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("maps of strings serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, replica: &str, topics: &[&str]) -> Subscriber {
        Subscriber {
            member_id: id.to_owned(),
            replica: replica.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn partitions_are_split_disjointly_and_evenly_in_replica_order() {
        let partitions = BTreeMap::from([("updates".to_owned(), vec![4, 0, 3, 1, 2])]);
        let members = [
            member("m-z", "replica-b", &["updates"]),
            member("m-a", "replica-a", &["updates"]),
        ];
        let (assignment, owners) = assign(&partitions, &members);
        assert_eq!(assignment["m-a"]["updates"], vec![0, 2, 4]);
        assert_eq!(assignment["m-z"]["updates"], vec![1, 3]);
        assert_eq!(owners.owners["updates"][&3], "replica-b");
        assert_eq!(Owners::decode(Some(&owners.encode())), owners);
    }

    #[test]
    fn a_member_gets_only_the_topics_it_reads() {
        let partitions = BTreeMap::from([("a".to_owned(), vec![0, 1]), ("b".to_owned(), vec![0])]);
        let members = [member("1", "r1", &["a"]), member("2", "r2", &["a", "b"])];
        let (assignment, _) = assign(&partitions, &members);
        assert_eq!(assignment["1"], BTreeMap::from([("a".to_owned(), vec![0])]));
        assert_eq!(
            assignment["2"],
            BTreeMap::from([("a".to_owned(), vec![1]), ("b".to_owned(), vec![0])])
        );
    }

    #[test]
    fn more_members_than_partitions_leaves_some_idle() {
        let partitions = BTreeMap::from([("t".to_owned(), vec![0])]);
        let members = [member("1", "r1", &["t"]), member("2", "r2", &["t"])];
        let (assignment, _) = assign(&partitions, &members);
        assert_eq!(assignment["1"]["t"], vec![0]);
        assert!(assignment["2"].is_empty());
    }

    #[test]
    fn the_replica_is_read_back_from_subscription_data() {
        assert_eq!(
            replica_of(Some(&subscription_data("r-1"))).as_deref(),
            Some("r-1")
        );
        assert_eq!(replica_of(Some(b"not json")), None);
        assert_eq!(replica_of(None), None);
    }
}
