//! Topic configs are never accepted silently (issue 9): settings Sluice would ignore are
//! refused with INVALID_CONFIG and a reason, and settings accepted ahead of replication say in
//! their DescribeConfigs documentation that they are not enforced yet.

mod common;

use common::*;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::DescribeConfigsRequest;
use rdkafka::admin::{AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

const TOPIC: i8 = 2;

/// AlterConfigs v2 on the wire: `(error code, message)`.
fn alter_raw(broker: &Broker, topic: &str, name: &str, value: &str) -> (i16, String) {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let mut conn = RawConn::connect(broker);
    let req = kafka_protocol::messages::AlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(kstr(topic))
            .with_configs(vec![AlterableConfig::default()
                .with_name(kstr(name))
                .with_value(Some(kstr(value)))]),
    ]);
    let resp = conn.call(2, &req);
    let r = &resp.responses[0];
    (
        r.error_code,
        r.error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

fn alter(broker: &Broker, topic: &str, name: &str, value: &str) -> Result<(), RDKafkaErrorCode> {
    let a = admin(broker);
    let res = block_on(a.alter_configs(
        &[AlterConfig::new(ResourceSpecifier::Topic(topic)).set(name, value)],
        &admin_opts(),
    ))
    .expect("AlterConfigs request");
    assert_eq!(res.len(), 1);
    match &res[0] {
        Ok(_) => Ok(()),
        Err((_, code)) => Err(*code),
    }
}

/// `(value, documentation)` of `name` on `topic`, via DescribeConfigs v4.
fn describe(broker: &Broker, topic: &str, name: &str) -> (String, String) {
    let mut conn = RawConn::connect(broker);
    let req = DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(kstr(topic))
            .with_configuration_keys(Some(vec![kstr(name)]))])
        .with_include_documentation(true);
    let resp = conn.call(4, &req);
    let r = &resp.results[0];
    assert_eq!(r.error_code, 0, "DescribeConfigs {topic}");
    let c = r
        .configs
        .iter()
        .find(|c| c.name.as_str() == name)
        .unwrap_or_else(|| panic!("{name} described"));
    (
        c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
        c.documentation
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default(),
    )
}

#[test]
fn ignored_settings_are_refused_and_unenforced_ones_say_so() {
    let broker = Broker::start();

    eprintln!("--- CreateTopics refuses preallocate=true");
    let a = admin(&broker);
    let res = block_on(a.create_topics(
        &[NewTopic::new("prealloc", 1, TopicReplication::Fixed(1)).set("preallocate", "true")],
        &admin_opts(),
    ))
    .expect("CreateTopics request");
    assert_eq!(
        res,
        vec![Err((
            "prealloc".to_string(),
            RDKafkaErrorCode::InvalidConfig
        ))]
    );

    create_topic_sync(&broker, "cfg", 1);
    eprintln!("--- AlterConfigs refuses values that would have no effect");
    for (name, value) in [
        ("preallocate", "true"),
        ("segment.jitter.ms", "1000"),
        ("file.delete.delay.ms", "0"),
    ] {
        // On the wire: rdkafka 0.39's alter_configs reports per-resource errors as Ok.
        let (code, message) = alter_raw(&broker, "cfg", name, value);
        assert_eq!(code, 40, "{name}={value}: INVALID_CONFIG");
        assert!(message.contains("not supported"), "{name}: {message}");
        let (_, doc) = describe(&broker, "cfg", name);
        assert!(doc.contains("Not supported"), "{name}: {doc}");
    }
    // Their defaults are what Sluice does, so they are accepted.
    assert_eq!(alter_raw(&broker, "cfg", "segment.jitter.ms", "0").0, 0);
    assert_eq!(describe(&broker, "cfg", "segment.jitter.ms").0, "0");

    eprintln!("--- replication settings are stored and say what they do");
    let (value, _) = describe(&broker, "cfg", "min.insync.replicas");
    assert_eq!(value, "2", "Sluice's default");
    assert_eq!(alter(&broker, "cfg", "min.insync.replicas", "3"), Ok(()));
    let (value, doc) = describe(&broker, "cfg", "min.insync.replicas");
    assert_eq!(value, "3");
    assert!(
        doc.contains("Capped at the partition's replica count"),
        "{doc}"
    );
    assert_eq!(
        alter(&broker, "cfg", "unclean.leader.election.enable", "true"),
        Ok(())
    );
    let (value, doc) = describe(&broker, "cfg", "unclean.leader.election.enable");
    assert_eq!(value, "true");
    assert!(doc.contains("are lost"), "{doc}");
}

/// `compression.type` on a topic recompresses every batch that arrives in another codec: what is
/// stored (and fetched) carries the topic's codec, and every record reads back unchanged.
#[test]
fn compression_type_recompresses_batches() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
    use kafka_protocol::messages::{BrokerId, TopicName};
    use rdkafka::Offset;
    use sluice_protocol::batch::{Batches, Compression};

    let broker = Broker::start();
    for (topic, codec) in [
        ("to-zstd", "zstd"),
        ("to-gzip", "gzip"),
        ("to-plain", "uncompressed"),
    ] {
        let t = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("compression.type", codec);
        let res = block_on(admin(&broker).create_topics([&t], &admin_opts())).unwrap();
        assert!(res[0].is_ok(), "{res:?}");
    }
    let recs: Vec<Rec> = (0..50)
        .map(|i| Rec::kv(&format!("k{i}"), &format!("value number {i}")))
        .collect();
    let cases = [
        ("to-zstd", "none", Compression::Zstd),
        ("to-gzip", "lz4", Compression::Gzip),
        ("to-plain", "snappy", Compression::None),
    ];
    for (topic, producer_codec, stored) in cases {
        let p = producer(
            &broker,
            &[
                ("acks", "all"),
                ("compression.type", producer_codec),
                ("linger.ms", "50"),
            ],
        );
        let offs = block_on(produce(&p, topic, Some(0), &recs));
        assert_eq!(offs.len(), 50, "{topic}");
        // What the broker stored, as a fetch returns it: every batch in the topic's codec.
        let mut conn = RawConn::connect(&broker);
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(kstr(topic)))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]);
        let resp = conn.call(11, &req);
        let records = resp.responses[0].partitions[0].records.clone().unwrap();
        let mut batches = 0;
        for item in Batches::new(&records) {
            let (h, _) = item.unwrap();
            assert_eq!(h.compression().unwrap(), stored, "{topic}");
            batches += 1;
        }
        assert!(batches > 0, "{topic}: nothing fetched");
        // And every record reads back as produced.
        let c = consumer(&broker, &[]);
        let got = consume_n(&c, topic, 0, Offset::Beginning, 50, CLIENT_TIMEOUT);
        let values: Vec<_> = got.iter().map(|g| g.value.clone().unwrap()).collect();
        let keys: Vec<_> = got.iter().map(|g| g.key.clone().unwrap()).collect();
        assert_eq!(
            values,
            recs.iter()
                .map(|r| r.value.clone().unwrap())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            keys,
            recs.iter()
                .map(|r| r.key.clone().unwrap())
                .collect::<Vec<_>>()
        );
    }
}
