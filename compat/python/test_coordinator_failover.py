"""kafka-python's group consumer through the loss of its group coordinator (issue 14).

Three `sluice serve` processes (each a voter and a broker); a kafka-python KafkaConsumer in a
group consumes and commits; the broker that coordinates the group (the leader of its
__consumer_offsets partition) is killed -9. The consumer finds the new coordinator, keeps its group and goes on;
nothing is skipped and the committed offsets end at the high watermarks.
"""

import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, TopicPartition as KTP

from conftest import Broker, free_port, wait_until

pytestmark = pytest.mark.timeout(240)

TOPIC, GROUP, PARTS = "kp-failover", "kp-failover-g", 4


@pytest.fixture
def cluster(request, tmp_path):
    """Three nodes, every one a voter and a broker, on free loopback ports."""
    controller_ports = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(controller_ports))
    nodes = []
    for i, cport in enumerate(controller_ports):
        b = Broker(
            data_dir=tmp_path / f"data{i + 1}",
            log_path=tmp_path / f"node{i + 1}.log",
            overrides={
                "group.initial.rebalance.delay.ms": 0,
                "broker.heartbeat.interval.ms": 200,
                "broker.session.timeout.ms": 3000,
            },
            node_id=i + 1,
            extra_args=["--controller-listen", f"127.0.0.1:{cport}", "--voters", voters],
        )
        nodes.append(b)
    request.node._sluice_brokers = nodes
    # The quorum needs a majority before any node accepts clients: start them all, then wait.
    for b in nodes:
        b.spawn()
    for b in nodes:
        b.wait_accepting()
    yield nodes
    for b in nodes:
        b.cleanup()


def offsets_partition(group, partitions):
    """Kafka's placement of a group in __consumer_offsets: abs(javaHashCode(group)) % n."""
    h = 0
    for ch in group:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def coordinator_of(bootstrap, group, not_node=None):
    """The node id of the group's coordinator: the leader of its __consumer_offsets partition
    (other than `not_node`, a node just killed)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    result = {}

    def led():
        md = admin.list_topics(topic="__consumer_offsets", timeout=5)
        parts = md.topics["__consumer_offsets"].partitions
        if not parts:
            return False
        leader = parts[offsets_partition(group, len(parts))].leader
        result["id"] = leader
        return leader >= 0 and leader != not_node

    wait_until(led, 60, f"the coordinator of {group}", interval=0.2)
    return result["id"]


def produce(bootstrap, tag, n):
    """n records round-robin over the partitions, acks=all; (partition, offset) -> value."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "message.timeout.ms": 60000})
    acked = {}

    def delivered(err, msg):
        assert err is None, err
        acked[(msg.partition(), msg.offset())] = msg.value().decode()

    for i in range(n):
        p.produce(TOPIC, value=f"{tag}-{i}", partition=i % PARTS, on_delivery=delivered)
    assert p.flush(90) == 0, "records left unacknowledged"
    return acked


def test_kafka_python_group_consumer_survives_a_coordinator_kill(cluster):
    bootstrap = ",".join(b.bootstrap for b in cluster)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, PARTS, 3)])[TOPIC].result(30)
    acked = produce(bootstrap, "before", 40)

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=GROUP, client_id="kp-failover",
        enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=10000, heartbeat_interval_ms=500, request_timeout_ms=15000,
    )
    # Subscribe once the consumer's metadata knows the topic: kafka-python 3.0.12 loses a
    # rebalance otherwise and is evicted (see ksubscribe in test_groups.py).
    wait_until(lambda: consumer.partitions_for_topic(TOPIC), 15, f"metadata for {TOPIC}")
    consumer.subscribe([TOPIC])
    seen = {}

    def consume_until(want, timeout, what):
        deadline = time.monotonic() + timeout
        while not set(want) <= set(seen):
            assert time.monotonic() < deadline, f"{what}: {len(set(want) & set(seen))}/{len(want)}"
            for recs in consumer.poll(timeout_ms=200).values():
                for r in recs:
                    seen.setdefault((r.partition, r.offset), r.value.decode())
            try:
                consumer.commit()
            except Exception as e:  # a coordinator moving: the next round commits again
                print(f"commit failed, retried: {e!r}")

    try:
        consume_until(acked, 60, "records before the kill")
        old = coordinator_of(bootstrap, GROUP)
        victim = next(b for b in cluster if b.node_id == old)
        print(f"killing node {old}, the coordinator")
        victim.kill9()
        killed = time.monotonic()
        survivors = ",".join(b.bootstrap for b in cluster if b is not victim)
        new = coordinator_of(survivors, GROUP, not_node=old)
        assert new != old
        acked.update(produce(survivors, "after", 40))
        consume_until(acked, 90, "records after the kill")
        print(f"node {new} coordinates; consuming again {time.monotonic() - killed:.1f}s after")
        deadline = time.monotonic() + 60
        while True:
            try:
                consumer.commit()
                break
            except Exception as e:
                assert time.monotonic() < deadline, f"the final commit never succeeded: {e!r}"
                consumer.poll(timeout_ms=200)
        committed = {p: consumer.committed(KTP(TOPIC, p)) for p in range(PARTS)}
        ends = consumer.end_offsets([KTP(TOPIC, p) for p in range(PARTS)])
    finally:
        consumer.close()
    assert seen == acked, "every acknowledged record read, where it was acknowledged"
    assert committed == {tp.partition: end for tp, end in ends.items()}
