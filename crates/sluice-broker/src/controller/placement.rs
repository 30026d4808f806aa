//! The controller's pure decisions about where things go: topic names, replica assignments
//! given by clients, and the placement of new partitions over the live brokers.

use kafka_protocol::ResponseError;
use sluice_meta::BrokerId;

use crate::error::ApiError;

/// Kafka's topic name rules: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), ApiError> {
    let invalid = |why: String| Err(ApiError::new(ResponseError::InvalidTopicException, why));
    if name.is_empty() {
        return invalid("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return invalid(format!("Topic name cannot be \"{name}\""));
    }
    if name.len() > 249 {
        return invalid(format!(
            "Topic name is illegal, it can't be longer than 249 characters, topic name: {name}"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid(format!("Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"));
    }
    Ok(())
}

/// A client's explicit assignment: every partition names at least one registered broker, none
/// twice.
pub fn validate_assignment(
    assignment: &[Vec<BrokerId>],
    brokers: &[BrokerId],
) -> Result<(), ApiError> {
    let bad = |why: String| Err(ApiError::new(ResponseError::InvalidReplicaAssignment, why));
    if assignment.is_empty() {
        return bad("Replica assignment is empty.".into());
    }
    for (p, replicas) in assignment.iter().enumerate() {
        if replicas.is_empty() {
            return bad(format!("Partition {p} has no replicas."));
        }
        if let Some(b) = replicas.iter().find(|b| !brokers.contains(b)) {
            return bad(format!("Partition {p} names unknown broker {b}."));
        }
        let mut sorted = replicas.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != replicas.len() {
            return bad(format!("Partition {p} lists a broker twice."));
        }
    }
    Ok(())
}

/// Round-robin placement over `brokers` (the live ones): partition i's replicas start at
/// broker `(first + i) mod n`, so replicas and first replicas (the preferred leaders) spread
/// evenly.
pub fn place_replicas(
    partitions: i32,
    rf: i16,
    brokers: &[BrokerId],
    first: usize,
) -> Result<Vec<Vec<BrokerId>>, ApiError> {
    if rf <= 0 || rf as usize > brokers.len() {
        return Err(ApiError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "Replication factor: {rf} larger than available brokers: {}.",
                brokers.len()
            ),
        ));
    }
    Ok((0..partitions as usize)
        .map(|p| {
            (0..rf as usize)
                .map(|r| brokers[(first + p + r) % brokers.len()])
                .collect()
        })
        .collect())
}

/// The live brokers in the order placement walks them: with racks, one broker of each rack in
/// turn (racks and brokers by name and id), as Kafka's rack-aware assignment does, so that
/// consecutive brokers, and so the replicas of one partition, sit in different racks while
/// there are racks to spare. Brokers without a rack form one rack of their own.
pub fn rack_alternated(brokers: &[(BrokerId, Option<String>)]) -> Vec<BrokerId> {
    let mut racks: std::collections::BTreeMap<Option<&str>, Vec<BrokerId>> = Default::default();
    for (id, rack) in brokers {
        racks.entry(rack.as_deref()).or_default().push(*id);
    }
    if racks.len() <= 1 {
        let mut ids: Vec<BrokerId> = brokers.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        return ids;
    }
    for ids in racks.values_mut() {
        ids.sort_unstable();
    }
    let longest = racks.values().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| racks.values().filter_map(move |ids| ids.get(i).copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[i32]) -> Vec<BrokerId> {
        v.iter().copied().map(BrokerId).collect()
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "bad name!", "ü", &"x".repeat(250)] {
            assert_eq!(
                validate_topic_name(bad).unwrap_err().code,
                ResponseError::InvalidTopicException,
                "{bad}"
            );
        }
    }

    #[test]
    fn placement() {
        assert_eq!(
            place_replicas(3, 1, &ids(&[1]), 0).unwrap(),
            vec![ids(&[1]); 3]
        );
        assert_eq!(
            place_replicas(2, 2, &ids(&[1, 2, 3]), 0).unwrap(),
            vec![ids(&[1, 2]), ids(&[2, 3])]
        );
        assert_eq!(
            place_replicas(2, 2, &ids(&[1, 2, 3]), 2).unwrap(),
            vec![ids(&[3, 1]), ids(&[1, 2])]
        );
        assert_eq!(
            place_replicas(1, 3, &ids(&[1]), 0).unwrap_err().code,
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            place_replicas(1, 0, &ids(&[1]), 0).unwrap_err().code,
            ResponseError::InvalidReplicationFactor
        );
    }

    #[test]
    fn racks_alternate() {
        let b = |id, rack: &str| (BrokerId(id), Some(rack.to_string()));
        assert_eq!(
            rack_alternated(&[b(1, "a"), b(2, "a"), b(3, "b"), b(4, "b"), b(5, "c")]),
            ids(&[1, 3, 5, 2, 4])
        );
        assert_eq!(
            rack_alternated(&[(BrokerId(2), None), (BrokerId(1), None)]),
            ids(&[1, 2])
        );
    }

    #[test]
    fn assignments() {
        let brokers = ids(&[1, 2]);
        assert!(validate_assignment(&[ids(&[1, 2])], &brokers).is_ok());
        for bad in [vec![], vec![ids(&[])], vec![ids(&[3])], vec![ids(&[1, 1])]] {
            assert_eq!(
                validate_assignment(&bad, &brokers).unwrap_err().code,
                ResponseError::InvalidReplicaAssignment
            );
        }
    }
}
