//! Topic administration through a real Kafka admin client: CreateTopics (and its error codes),
//! Metadata, DeleteTopics, CreatePartitions.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::admin::{NewPartitions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;

#[tokio::test]
async fn create_describe_delete_and_grow_topics() {
    let broker = Broker::start();
    let a = admin(&broker);
    let opts = admin_opts();

    eprintln!("--- create two topics with 3 partitions each");
    let res = a
        .create_topics(
            &[
                NewTopic::new("admin-a", 3, TopicReplication::Fixed(1)),
                NewTopic::new("admin-b", 3, TopicReplication::Fixed(1)),
            ],
            &opts,
        )
        .await
        .expect("CreateTopics request");
    assert_eq!(
        res,
        vec![Ok("admin-a".to_string()), Ok("admin-b".to_string())]
    );

    eprintln!("--- invalid creations are refused with the Kafka error code");
    let cases: [(NewTopic<'_>, RDKafkaErrorCode); 4] = [
        (
            NewTopic::new("admin-a", 3, TopicReplication::Fixed(1)),
            RDKafkaErrorCode::TopicAlreadyExists,
        ),
        (
            NewTopic::new("bad name!", 1, TopicReplication::Fixed(1)),
            RDKafkaErrorCode::InvalidTopic,
        ),
        (
            NewTopic::new("admin-zero", 0, TopicReplication::Fixed(1)),
            RDKafkaErrorCode::InvalidPartitions,
        ),
        (
            NewTopic::new("admin-rf3", 1, TopicReplication::Fixed(3)),
            RDKafkaErrorCode::InvalidReplicationFactor,
        ),
    ];
    for (topic, expected) in &cases {
        let res = a
            .create_topics([topic], &opts)
            .await
            .expect("CreateTopics request");
        assert_eq!(res.len(), 1);
        assert_eq!(
            topic_error(&res[0]),
            Some(*expected),
            "creating {:?}: got {:?}",
            topic.name,
            res[0]
        );
    }

    eprintln!("--- metadata lists the topics, 3 partitions each, led by broker 1");
    let c = consumer(&broker, &[]);
    let md = c
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("Metadata request");
    assert!(
        md.brokers()
            .iter()
            .any(|b| b.id() == 1 && b.port() == broker.port() as i32),
        "broker list: {:?}",
        md.brokers()
            .iter()
            .map(|b| (b.id(), b.host().to_string(), b.port()))
            .collect::<Vec<_>>()
    );
    for name in ["admin-a", "admin-b"] {
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("{name} missing from metadata"));
        assert_eq!(t.error(), None, "{name} topic error");
        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        ids.sort();
        assert_eq!(ids, vec![0, 1, 2], "{name} partitions");
        for p in t.partitions() {
            assert_eq!(p.leader(), 1, "{name}-{} leader", p.id());
            assert_eq!(p.error(), None, "{name}-{} error", p.id());
            assert_eq!(p.replicas(), &[1], "{name}-{} replicas", p.id());
            assert_eq!(p.isr(), &[1], "{name}-{} isr", p.id());
        }
    }
    for refused in ["bad name!", "admin-zero", "admin-rf3"] {
        assert!(
            md.topics().iter().all(|t| t.name() != refused),
            "refused topic {refused} appears in metadata"
        );
    }

    eprintln!("--- delete admin-b: it disappears from metadata");
    let res = a
        .delete_topics(&["admin-b"], &opts)
        .await
        .expect("DeleteTopics request");
    assert_eq!(res, vec![Ok("admin-b".to_string())]);
    wait_metadata(&c, "admin-b gone from metadata", |md| {
        let names: Vec<&str> = md.topics().iter().map(|t| t.name()).collect();
        (!names.contains(&"admin-b") && names.contains(&"admin-a")).then_some(())
    });
    let md = c
        .fetch_metadata(Some("admin-b"), Duration::from_secs(10))
        .expect("Metadata request for a deleted topic");
    let t = md.topics().iter().find(|t| t.name() == "admin-b");
    if let Some(t) = t {
        assert!(
            t.error().is_some() && t.partitions().is_empty(),
            "deleted topic still described: error {:?}, {} partitions",
            t.error(),
            t.partitions().len()
        );
    }

    eprintln!("--- deleting it again: UnknownTopicOrPartition");
    let res = a
        .delete_topics(&["admin-b"], &opts)
        .await
        .expect("DeleteTopics request");
    assert_eq!(
        topic_error(&res[0]),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition),
        "{:?}",
        res
    );

    eprintln!("--- grow admin-a from 3 to 5 partitions");
    let res = a
        .create_partitions(&[NewPartitions::new("admin-a", 5)], &opts)
        .await
        .expect("CreatePartitions request");
    assert_eq!(res, vec![Ok("admin-a".to_string())]);
    wait_metadata(&c, "admin-a has 5 partitions", |md| {
        let t = md.topics().iter().find(|t| t.name() == "admin-a")?;
        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        ids.sort();
        (ids == vec![0, 1, 2, 3, 4] && t.partitions().iter().all(|p| p.leader() == 1)).then_some(())
    });

    eprintln!("--- shrinking is refused with InvalidPartitions");
    let res = a
        .create_partitions(&[NewPartitions::new("admin-a", 2)], &opts)
        .await
        .expect("CreatePartitions request");
    assert_eq!(
        topic_error(&res[0]),
        Some(RDKafkaErrorCode::InvalidPartitions),
        "{:?}",
        res
    );

    eprintln!("--- a new partition takes writes");
    let p = producer(&broker, &[("acks", "all")]);
    let offs = produce(&p, "admin-a", Some(4), &[Rec::kv("k", "v")]).await;
    assert_eq!(offs, vec![(4, 0)]);
}
