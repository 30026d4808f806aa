//! What changed between two metadata images, and what it means for one broker.
//!
//! The broker keeps an immutable image (a [`ClusterState`]) and, when records apply, builds the
//! next one and the delta between them. The delta drives everything that reacts to metadata:
//! the replica manager opens, leads, follows and removes partitions from
//! [`MetadataDelta::local`]; the group coordinator loads or unloads offsets partitions; topic
//! and broker config changes are pushed to the logs. Computed by comparing the two images, so it
//! is the same however many records lie between them (Kafka's `TopicsDelta.localChanges`).

use sluice_types::{BrokerId, PartitionId, TopicPartition};
use uuid::Uuid;

use crate::state::{ClusterState, PartitionInfo, TopicInfo};

/// One partition hosted by the local broker after the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPartition {
    pub tp: TopicPartition,
    pub topic_id: Uuid,
    pub info: PartitionInfo,
    /// What the previous image said about it; `None` if the broker did not host it.
    pub previous: Option<PartitionInfo>,
}

/// The partition changes the local broker must act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalChanges {
    /// Partitions this broker leads that are new here or changed (new leader epoch, ISR).
    pub leaders: Vec<LocalPartition>,
    /// Partitions this broker hosts but does not lead (another broker leads, or none does)
    /// that are new here or changed.
    pub followers: Vec<LocalPartition>,
    /// Partitions this broker hosted and no longer does (topic deleted, replica moved away):
    /// their data goes.
    pub removed: Vec<(TopicPartition, Uuid)>,
}

impl LocalChanges {
    pub fn is_empty(&self) -> bool {
        self.leaders.is_empty() && self.followers.is_empty() && self.removed.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataDelta {
    pub local: LocalChanges,
    /// Topics in the new image that were not in the old one (by id).
    pub created_topics: Vec<String>,
    /// Topics of the old image gone from the new one (by id).
    pub deleted_topics: Vec<TopicInfo>,
    /// Topics (in both images) whose config overrides changed.
    pub changed_topic_configs: Vec<String>,
    pub broker_configs_changed: bool,
    pub brokers_changed: bool,
}

impl MetadataDelta {
    /// The changes from `old` to `new` as seen by broker `local`.
    pub fn between(old: &ClusterState, new: &ClusterState, local: BrokerId) -> MetadataDelta {
        let mut delta = MetadataDelta {
            broker_configs_changed: old.broker_configs != new.broker_configs,
            brokers_changed: old.brokers != new.brokers,
            ..MetadataDelta::default()
        };
        for topic in new.topics() {
            let before = old.topic_by_id(&topic.topic_id);
            match before {
                None => delta.created_topics.push(topic.name.clone()),
                Some(b) if b.configs != topic.configs => {
                    delta.changed_topic_configs.push(topic.name.clone())
                }
                Some(_) => {}
            }
            for (i, info) in topic.partitions.iter().enumerate() {
                let tp = TopicPartition::new(topic.name.clone(), PartitionId(i as i32));
                let previous = before
                    .and_then(|b| b.partitions.get(i))
                    .filter(|p| p.replicas.contains(&local))
                    .cloned();
                if !info.replicas.contains(&local) {
                    if previous.is_some() {
                        delta.local.removed.push((tp, topic.topic_id));
                    }
                    continue;
                }
                if previous.as_ref() == Some(info) {
                    continue;
                }
                let change = LocalPartition {
                    tp,
                    topic_id: topic.topic_id,
                    info: info.clone(),
                    previous,
                };
                if info.leader == local {
                    delta.local.leaders.push(change);
                } else {
                    delta.local.followers.push(change);
                }
            }
        }
        for topic in old.topics() {
            if new.topic_by_id(&topic.topic_id).is_some() {
                continue;
            }
            for (i, p) in topic.partitions.iter().enumerate() {
                if p.replicas.contains(&local) {
                    let tp = TopicPartition::new(topic.name.clone(), PartitionId(i as i32));
                    delta.local.removed.push((tp, topic.topic_id));
                }
            }
            delta.deleted_topics.push(topic.clone());
        }
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{MetadataRecord, TopicConfigs};
    use sluice_types::LeaderEpoch;

    fn apply(s: &ClusterState, records: &[MetadataRecord]) -> ClusterState {
        let mut next = s.clone();
        for r in records {
            next.replay(next.last_offset + 1, r).unwrap();
        }
        next
    }

    fn register(id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            broker_id: BrokerId(id),
            host: "h".into(),
            port: 1,
            rack: None,
            incarnation_id: None,
            directory_id: None,
            fenced: false,
        }
    }

    fn leader(topic_id: Uuid, partition: i32, to: i32) -> MetadataRecord {
        MetadataRecord::PartitionChange {
            topic_id,
            partition: PartitionId(partition),
            leader: Some(BrokerId(to)),
            isr: None,
            elr: None,
            replicas: None,
            adding: None,
            removing: None,
        }
    }

    #[test]
    fn local_changes_follow_placement_and_leadership() {
        let t = Uuid::from_u128(1);
        let base = apply(&ClusterState::new(), &[register(1), register(2)]);
        // Partition 0 on [1, 2] (1 leads), partition 1 on [2] only.
        let created = apply(
            &base,
            &[MetadataRecord::CreateTopic {
                name: "t".into(),
                topic_id: t,
                replicas: vec![vec![BrokerId(1), BrokerId(2)], vec![BrokerId(2)]],
                configs: TopicConfigs::new(),
            }],
        );
        let d = MetadataDelta::between(&base, &created, BrokerId(1));
        assert_eq!(d.created_topics, vec!["t".to_string()]);
        assert_eq!(d.local.leaders.len(), 1);
        assert_eq!(d.local.leaders[0].tp, TopicPartition::new("t", 0));
        assert!(d.local.leaders[0].previous.is_none());
        assert!(d.local.followers.is_empty() && d.local.removed.is_empty());
        let d2 = MetadataDelta::between(&base, &created, BrokerId(2));
        assert_eq!(d2.local.followers.len(), 1);
        assert_eq!(d2.local.leaders.len(), 1);

        // Leadership moves to 2: broker 1 becomes a follower with the new epoch.
        let moved = apply(&created, &[leader(t, 0, 2)]);
        let d = MetadataDelta::between(&created, &moved, BrokerId(1));
        assert!(d.local.leaders.is_empty());
        assert_eq!(d.local.followers.len(), 1);
        assert_eq!(d.local.followers[0].info.leader_epoch, LeaderEpoch(1));
        assert!(d.created_topics.is_empty());

        // Nothing changed: nothing to do.
        assert!(MetadataDelta::between(&moved, &moved, BrokerId(1))
            .local
            .is_empty());

        // Deleted: both brokers remove what they hosted.
        let deleted = apply(&moved, &[MetadataRecord::DeleteTopic { topic_id: t }]);
        let d = MetadataDelta::between(&moved, &deleted, BrokerId(2));
        assert_eq!(d.local.removed.len(), 2);
        assert_eq!(d.deleted_topics.len(), 1);
        let d = MetadataDelta::between(&moved, &deleted, BrokerId(1));
        assert_eq!(d.local.removed, vec![(TopicPartition::new("t", 0), t)]);
    }

    #[test]
    fn a_replica_moved_away_is_removed_and_configs_are_reported() {
        let t = Uuid::from_u128(1);
        let s = apply(
            &ClusterState::new(),
            &[
                register(1),
                register(2),
                MetadataRecord::CreateTopic {
                    name: "t".into(),
                    topic_id: t,
                    replicas: vec![vec![BrokerId(1)]],
                    configs: TopicConfigs::new(),
                },
            ],
        );
        let next = apply(
            &s,
            &[
                MetadataRecord::PartitionChange {
                    topic_id: t,
                    partition: PartitionId(0),
                    leader: Some(BrokerId(2)),
                    isr: Some(vec![BrokerId(2)]),
                    elr: None,
                    replicas: Some(vec![BrokerId(2)]),
                    adding: None,
                    removing: None,
                },
                MetadataRecord::SetTopicConfigs {
                    topic_id: t,
                    configs: TopicConfigs::from([("retention.ms".into(), "1".into())]),
                },
            ],
        );
        let d = MetadataDelta::between(&s, &next, BrokerId(1));
        assert_eq!(d.local.removed, vec![(TopicPartition::new("t", 0), t)]);
        assert_eq!(d.changed_topic_configs, vec!["t".to_string()]);
        assert!(!d.broker_configs_changed);
    }
}
