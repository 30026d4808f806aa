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

    eprintln!("--- replication settings are stored, and documented as not enforced yet");
    assert_eq!(alter(&broker, "cfg", "min.insync.replicas", "2"), Ok(()));
    let (value, doc) = describe(&broker, "cfg", "min.insync.replicas");
    assert_eq!(value, "2");
    assert!(doc.contains("Not enforced yet"), "{doc}");
    assert_eq!(
        alter(&broker, "cfg", "unclean.leader.election.enable", "true"),
        Ok(())
    );
    let (value, doc) = describe(&broker, "cfg", "unclean.leader.election.enable");
    assert_eq!(value, "true");
    assert!(doc.contains("Not enforced yet"), "{doc}");
}
