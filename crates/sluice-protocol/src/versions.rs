//! The single table of Kafka APIs and versions Sluice implements.
//!
//! ApiVersions answers from this table and the dispatcher refuses anything outside it, so the two
//! can never disagree. Add a row only together with a handler and a test that uses it.

use kafka_protocol::messages::ApiKey;

/// `(api, min_version, max_version)` for every API the broker serves.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 3),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::DescribeCluster, 0, 2),
];

/// The supported version range of `api`, if Sluice serves it at all.
pub fn supported_range(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(key, _, _)| *key == api)
        .map(|&(_, min, max)| (min, max))
}

/// Whether `api` at `version` is served.
pub fn is_supported(api: ApiKey, version: i16) -> bool {
    matches!(supported_range(api), Some((min, max)) if (min..=max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_within_what_the_codec_knows() {
        for &(api, min, max) in SUPPORTED {
            let codec = api.valid_versions();
            assert!(min <= max, "{api:?}");
            assert!(
                codec.min <= min && max <= codec.max,
                "{api:?} {min}..={max} outside codec range {}..={}",
                codec.min,
                codec.max
            );
        }
    }

    #[test]
    fn lookups() {
        assert!(is_supported(ApiKey::ApiVersions, 0));
        assert!(is_supported(ApiKey::Produce, 3));
        assert!(!is_supported(ApiKey::Produce, 2));
        assert!(!is_supported(ApiKey::AddPartitionsToTxn, 0));
        assert_eq!(supported_range(ApiKey::Metadata), Some((0, 12)));
    }

    /// The README's "Supported Kafka APIs" table is what users read; keep it true.
    #[test]
    fn readme_table_matches() {
        let readme = include_str!("../../../README.md");
        let mut rows = Vec::new();
        for line in readme.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // | API | key | versions | notes |
            if cells.len() < 5 {
                continue;
            }
            let (Ok(key), Some((min, max))) = (cells[2].parse::<i16>(), cells[3].split_once('-'))
            else {
                continue;
            };
            rows.push((
                key,
                min.parse::<i16>().unwrap(),
                max.parse::<i16>().unwrap(),
            ));
        }
        let mut table: Vec<_> = SUPPORTED
            .iter()
            .map(|&(k, min, max)| (k as i16, min, max))
            .collect();
        rows.sort_unstable();
        table.sort_unstable();
        assert_eq!(
            rows, table,
            "README.md API table and versions::SUPPORTED disagree"
        );
    }

    #[test]
    fn no_duplicate_rows() {
        for (i, (a, _, _)) in SUPPORTED.iter().enumerate() {
            assert!(SUPPORTED[i + 1..].iter().all(|(b, _, _)| a != b), "{a:?}");
        }
    }
}
