"""confluent-kafka (librdkafka) against a real sluice broker.

Sluice has no group coordinator yet, so consumers use manual assignment and never commit.
Producers keep idempotence off (librdkafka's default); sluice has no InitProducerId yet.
"""

import time

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic, OffsetSpec

from conftest import wait_until

pytestmark = pytest.mark.timeout(90)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
ACKS = ["0", "1", "all"]


# --------------------------------------------------------------------------- helpers


def admin(b):
    return AdminClient({"bootstrap.servers": b.bootstrap})


def topic_metadata(a, topic):
    return a.list_topics(timeout=10).topics.get(topic)


def create_topic(b, topic, partitions=1, **config):
    a = admin(b)
    a.create_topics([NewTopic(topic, partitions, 1, config=config)])[topic].result(15)
    wait_until(
        lambda: (md := topic_metadata(a, topic)) is not None
        and md.error is None
        and len(md.partitions) == partitions
        and all(p.leader == 1 for p in md.partitions.values()),
        15,
        f"topic {topic} with {partitions} led partitions in metadata",
    )


def producer(b, **conf):
    base = {
        "bootstrap.servers": b.bootstrap,
        "enable.idempotence": False,
        "linger.ms": 5,
        "message.timeout.ms": 20000,
    }
    base.update(conf)
    return Producer(base)


def consumer(b, **conf):
    base = {
        "bootstrap.servers": b.bootstrap,
        "group.id": "sluice-compat",  # required by librdkafka; never used (manual assignment)
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",  # an out-of-range fetch must surface, not silently reset
    }
    base.update(conf)
    return Consumer(base)


class Deliveries:
    """Delivery-report collector: `produce(..., on_delivery=d)`."""

    def __init__(self):
        self.reports = []  # (err, topic, partition, offset, key, value), in report order

    def __call__(self, err, msg):
        self.reports.append((err, msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value()))

    def errors(self):
        return [r for r in self.reports if r[0] is not None]


def flush(p, timeout=30):
    remaining = p.flush(timeout)
    assert remaining == 0, f"{remaining} messages still undelivered after {timeout}s"


def consume_until_eof(c, partitions, min_count, timeout=30):
    """Poll until every partition in `partitions` has reported EOF *after* at least
    `min_count` messages arrived in total (so late arrivals, e.g. with acks=0, are waited
    for). Returns the messages in consumption order; consumer errors fail the test."""
    msgs = []
    at_eof = set()
    deadline = time.monotonic() + timeout
    while True:
        if len(msgs) >= min_count and at_eof >= set(partitions):
            return msgs
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"consumed {len(msgs)}/{min_count} messages, EOF on {sorted(at_eof)} of "
                f"{sorted(partitions)} after {timeout}s"
            )
        m = c.poll(min(remaining, 0.5))
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                at_eof.add(m.partition())
                continue
            raise AssertionError(f"consumer error: {m.error()}")
        at_eof.discard(m.partition())
        msgs.append(m)


def read_partition(b, topic, partition, start, min_count, timeout=30, **conf):
    c = consumer(b, **conf)
    try:
        c.assign([TopicPartition(topic, partition, start)])
        return consume_until_eof(c, {partition}, min_count, timeout)
    finally:
        c.close()


# --------------------------------------------------------------------------- admin


def test_admin_create_topic_and_metadata(broker):
    b = broker()
    a = admin(b)
    a.create_topics([NewTopic("orders", 3, 1)])["orders"].result(15)
    md = a.list_topics(timeout=10)
    assert md.controller_id == 1
    assert list(md.brokers) == [1]
    assert md.brokers[1].host == "127.0.0.1" and md.brokers[1].port == b.port
    t = md.topics["orders"]
    assert t.error is None
    assert sorted(t.partitions) == [0, 1, 2]
    for pid, p in t.partitions.items():
        assert p.error is None, (pid, p.error)
        assert p.leader == 1
        assert p.replicas == [1]
        assert p.isrs == [1]
    assert b.topic_dirs("orders") == ["orders-0", "orders-1", "orders-2"]


@pytest.mark.parametrize(
    "new_topic, code",
    [
        (NewTopic("dup", 1, 1), KafkaError.TOPIC_ALREADY_EXISTS),
        (NewTopic("bad name!", 1, 1), KafkaError.TOPIC_EXCEPTION),  # INVALID_TOPIC_EXCEPTION (17)
        (NewTopic("x" * 250, 1, 1), KafkaError.TOPIC_EXCEPTION),  # longer than 249 chars
        (NewTopic("..", 1, 1), KafkaError.TOPIC_EXCEPTION),
        (NewTopic("zero-partitions", 0, 1), KafkaError.INVALID_PARTITIONS),
        (NewTopic("rf-three", 1, 3), KafkaError.INVALID_REPLICATION_FACTOR),
    ],
    ids=["duplicate", "invalid-char", "too-long", "dotdot", "zero-partitions", "rf3"],
)
def test_admin_create_topic_errors(broker, new_topic, code):
    b = broker()
    a = admin(b)
    a.create_topics([NewTopic("dup", 1, 1)])["dup"].result(15)
    with pytest.raises(KafkaException) as ei:
        a.create_topics([new_topic])[new_topic.topic].result(15)
    assert ei.value.args[0].code() == code, ei.value
    topics = a.list_topics(timeout=10).topics
    if new_topic.topic != "dup":
        assert new_topic.topic not in topics
    else:
        assert len(topics["dup"].partitions) == 1


def test_admin_validate_only_does_not_create(broker):
    b = broker()
    a = admin(b)
    a.create_topics([NewTopic("dry-run", 4, 1)], validate_only=True)["dry-run"].result(15)
    assert "dry-run" not in a.list_topics(timeout=10).topics
    assert b.topic_dirs("dry-run") == []
    # validation still reports errors in validate-only mode
    with pytest.raises(KafkaException) as ei:
        a.create_topics([NewTopic("dry-run", 0, 1)], validate_only=True)["dry-run"].result(15)
    assert ei.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    # and the topic can really be created afterwards
    a.create_topics([NewTopic("dry-run", 4, 1)])["dry-run"].result(15)
    assert len(a.list_topics(timeout=10).topics["dry-run"].partitions) == 4


def test_admin_create_partitions(broker):
    b = broker()
    a = admin(b)
    create_topic(b, "grow", 3)
    a.create_partitions([NewPartitions("grow", 5)])["grow"].result(15)
    wait_until(lambda: len(topic_metadata(a, "grow").partitions) == 5, 10, "5 partitions")
    parts = topic_metadata(a, "grow").partitions
    assert all(parts[i].leader == 1 and parts[i].error is None for i in range(5))
    # the new partitions are usable
    d = Deliveries()
    p = producer(b, acks="all")
    for part in range(5):
        p.produce("grow", value=f"p{part}".encode(), partition=part, on_delivery=d)
    flush(p)
    assert d.errors() == []
    assert sorted((r[2], r[3]) for r in d.reports) == [(i, 0) for i in range(5)]
    # shrinking is refused
    with pytest.raises(KafkaException) as ei:
        a.create_partitions([NewPartitions("grow", 4)])["grow"].result(15)
    assert ei.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    with pytest.raises(KafkaException) as ei:
        a.create_partitions([NewPartitions("no-such-topic", 4)])["no-such-topic"].result(15)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_admin_delete_topics(broker):
    b = broker()
    a = admin(b)
    create_topic(b, "doomed", 3)
    create_topic(b, "kept", 1)
    p = producer(b, acks="all")
    for i in range(30):
        p.produce("doomed", value=b"x%d" % i, partition=i % 3)
    flush(p)
    assert b.topic_dirs("doomed") == ["doomed-0", "doomed-1", "doomed-2"]

    a.delete_topics(["doomed"])["doomed"].result(15)
    wait_until(lambda: "doomed" not in a.list_topics(timeout=10).topics, 10, "topic gone from metadata")
    wait_until(lambda: b.topic_dirs("doomed") == [], 10, "partition directories removed from disk")
    assert "kept" in a.list_topics(timeout=10).topics

    with pytest.raises(KafkaException) as ei:
        a.delete_topics(["doomed"])["doomed"].result(15)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART

    # a topic of the same name can be created again and starts from offset 0
    create_topic(b, "doomed", 1)
    d = Deliveries()
    p = producer(b, acks="all")
    p.produce("doomed", value=b"reborn", partition=0, on_delivery=d)
    flush(p)
    assert [(r[0], r[3]) for r in d.reports] == [(None, 0)]
    msgs = read_partition(b, "doomed", 0, OFFSET_BEGINNING, 1)
    assert [(m.offset(), m.value()) for m in msgs] == [(0, b"reborn")]


# --------------------------------------------------------------------------- produce / consume


def make_records(n, t0):
    """(partition, key, value, headers, timestamp) with a mix of nulls, empties and sizes."""
    records = []
    for i in range(n):
        key = None if i % 13 == 0 else f"key-{i}".encode()
        if i % 17 == 0:
            value = b""
        else:
            value = (f"value-{i}-" * (1 + i % 50)).encode()
        headers = [("idx", str(i).encode()), ("kind", b"compat")]
        if i % 5 == 0:
            headers.append(("empty", b""))
        if i % 7 == 0:
            headers.append(("idx", b"dup-key"))  # duplicate header keys keep their order
        records.append((i % 2, key, value, headers, t0 + i))
    return records


@pytest.mark.parametrize("acks", ACKS)
@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume_codec_acks(broker, codec, acks):
    b = broker()
    topic = f"codec-{codec}-acks-{acks}"
    create_topic(b, topic, 2)
    t0 = int(time.time() * 1000) - 60_000
    records = make_records(400, t0)

    d = Deliveries()
    p = producer(b, acks=acks, **{"compression.type": codec, "linger.ms": 20})
    for part, key, value, headers, ts in records:
        p.produce(topic, value=value, key=key, headers=headers, partition=part, timestamp=ts,
                  on_delivery=d)
        p.poll(0)
    flush(p)
    assert d.errors() == []
    assert len(d.reports) == len(records)

    if acks != "0":
        # delivery reports carry contiguous offsets per partition, in produce order
        for part in (0, 1):
            offs = [r[3] for r in d.reports if r[2] == part]
            vals = [r[5] for r in d.reports if r[2] == part]
            expected_vals = [r[2] for r in records if r[0] == part]
            assert sorted(offs) == list(range(len(expected_vals)))
            by_off = dict(zip(offs, vals))
            assert [by_off[o] for o in range(len(expected_vals))] == expected_vals

    c = consumer(b)
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING), TopicPartition(topic, 1, OFFSET_BEGINNING)])
        msgs = consume_until_eof(c, {0, 1}, len(records), timeout=30)
    finally:
        c.close()
    assert len(msgs) == len(records)
    for part in (0, 1):
        got = [m for m in msgs if m.partition() == part]
        want = [r for r in records if r[0] == part]
        assert [m.offset() for m in got] == list(range(len(want)))
        for m, (_, key, value, headers, ts) in zip(got, want):
            assert m.key() == key
            assert m.value() == value
            assert m.headers() == headers
            assert m.timestamp() == (TIMESTAMP_CREATE_TIME, ts)


# --------------------------------------------------------------------------- positions


def test_consume_positions_and_offsets(broker):
    b = broker()
    topic = "positions"
    create_topic(b, topic, 1)
    tp = TopicPartition(topic, 0)
    t0 = (int(time.time()) - 3600) * 1000
    p = producer(b, acks="all")
    d = Deliveries()
    for i in range(10):
        p.produce(topic, value=f"v{i}".encode(), partition=0, timestamp=t0 + 1000 * i, on_delivery=d)
        p.flush(10)  # one batch per record: timestamp lookup must work across batches
    assert [(r[0], r[3]) for r in d.reports] == [(None, i) for i in range(10)]

    c = consumer(b)
    try:
        assert c.get_watermark_offsets(tp, timeout=10, cached=False) == (0, 10)

        def lookup(ts):
            res = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert res[0].error is None, res[0].error
            return res[0].offset

        assert lookup(t0 + 1500) == 2
        assert lookup(t0 + 2000) == 2
        assert lookup(t0) == 0
        assert lookup(t0 - 100_000) == 0
        assert lookup(t0 + 9000) == 9
        assert lookup(t0 + 9001) == -1  # no such record: Kafka answers offset -1

        # beginning
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        msgs = consume_until_eof(c, {0}, 10)
        assert [(m.offset(), m.value()) for m in msgs] == [(i, f"v{i}".encode()) for i in range(10)]
        assert [m.timestamp() for m in msgs] == [(TIMESTAMP_CREATE_TIME, t0 + 1000 * i) for i in range(10)]
        assert c.get_watermark_offsets(tp, cached=True)[1] == 10

        # explicit offset
        c.assign([TopicPartition(topic, 0, 7)])
        msgs = consume_until_eof(c, {0}, 3)
        assert [(m.offset(), m.value()) for m in msgs] == [(i, f"v{i}".encode()) for i in (7, 8, 9)]

        # seek within an assignment
        c.seek(TopicPartition(topic, 0, 4))
        msgs = consume_until_eof(c, {0}, 6)
        assert [m.offset() for m in msgs] == list(range(4, 10))

        # from a timestamp
        c.assign([TopicPartition(topic, 0, lookup(t0 + 1500))])
        msgs = consume_until_eof(c, {0}, 8)
        assert [m.value() for m in msgs] == [f"v{i}".encode() for i in range(2, 10)]
    finally:
        c.close()

    # end: sees only what is produced after the end offset was resolved
    c = consumer(b)
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_END)])
        assert consume_until_eof(c, {0}, 0) == []  # EOF at 10: the end has been resolved
        for i in range(10, 13):
            p.produce(topic, value=f"v{i}".encode(), partition=0, timestamp=t0 + 10_000 + 1000 * i)
            flush(p)  # one batch per record (see the *_within_batch tests for multi-record batches)
        msgs = consume_until_eof(c, {0}, 3)
        assert [(m.offset(), m.value()) for m in msgs] == [(i, f"v{i}".encode()) for i in (10, 11, 12)]
        assert c.get_watermark_offsets(tp, timeout=10, cached=False) == (0, 13)
        assert c.get_watermark_offsets(tp, cached=True)[1] == 13
    finally:
        c.close()

    # the same questions through the admin ListOffsets API (KIP-396)
    a = admin(b)

    def list_offset(spec):
        res = a.list_offsets({TopicPartition(topic, 0): spec}, request_timeout=10)
        return res[TopicPartition(topic, 0)].result(15)

    assert list_offset(OffsetSpec.earliest()).offset == 0
    assert list_offset(OffsetSpec.latest()).offset == 13
    info = list_offset(OffsetSpec.for_timestamp(t0 + 1500))
    assert (info.offset, info.timestamp) == (2, t0 + 2000)
    info = list_offset(OffsetSpec.max_timestamp())
    assert (info.offset, info.timestamp) == (12, t0 + 10_000 + 12_000)


def produce_one_batch(b, topic, timestamps, **conf):
    """Produce one record per timestamp as a single multi-record batch (long linger, one
    flush); returns the acknowledged offsets and asserts they came from one batch."""
    d = Deliveries()
    p = producer(b, acks="all", **{"linger.ms": 200, **conf})
    for i, ts in enumerate(timestamps):
        p.produce(topic, value=f"r{i}".encode(), partition=0, timestamp=ts, on_delivery=d)
    flush(p)
    assert d.errors() == []
    return [r[3] for r in d.reports]


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_offsets_for_times_within_a_batch(broker, codec):
    b = broker()
    topic = "ts-batch"
    create_topic(b, topic, 1)
    t0 = (int(time.time()) - 3600) * 1000
    offsets = produce_one_batch(b, topic, [t0 + 1000 * i for i in range(10)],
                                **{"compression.type": codec})
    assert offsets == list(range(10))
    c = consumer(b)
    try:
        res = c.offsets_for_times([TopicPartition(topic, 0, t0 + 1500)], timeout=10)
        assert res[0].error is None
        # Kafka answers with the first *record* whose timestamp is >= the target
        assert res[0].offset == 2
    finally:
        c.close()
    a = admin(b)
    tp = TopicPartition(topic, 0)
    info = a.list_offsets({tp: OffsetSpec.for_timestamp(t0 + 1500)})[tp].result(15)
    assert (info.offset, info.timestamp) == (2, t0 + 2000)


def test_list_offsets_max_timestamp_within_a_batch(broker):
    b = broker()
    topic = "maxts-batch"
    create_topic(b, topic, 1)
    t0 = (int(time.time()) - 3600) * 1000
    # the maximum timestamp is carried by the 4th record of the batch
    offsets = produce_one_batch(b, topic, [t0, t0 + 5000, t0 + 1000, t0 + 9000, t0 + 2000])
    assert offsets == list(range(5))
    a = admin(b)
    tp = TopicPartition(topic, 0)
    info = a.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(15)
    # KIP-734: the offset of the record carrying the largest timestamp
    assert (info.offset, info.timestamp) == (3, t0 + 9000)


def test_fetch_out_of_range_offset_is_reported(broker):
    b = broker()
    create_topic(b, "oor", 1)
    p = producer(b, acks="all")
    for i in range(5):
        p.produce("oor", value=b"%d" % i, partition=0)
    flush(p)
    c = consumer(b)  # auto.offset.reset=error
    try:
        c.assign([TopicPartition("oor", 0, 50)])
        deadline = time.monotonic() + 15
        err = None
        while err is None:
            assert time.monotonic() < deadline, "no error for a fetch beyond the log end"
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is not None, f"got a record at offset {m.offset()}"
            if m.error().code() != KafkaError._PARTITION_EOF:
                err = m.error()
        assert err.code() == KafkaError._AUTO_OFFSET_RESET, err
        assert "out of range" in err.str().lower(), err
    finally:
        c.close()
    # with auto.offset.reset=earliest the consumer recovers from the beginning
    msgs = read_partition(b, "oor", 0, 50, 5, **{"auto.offset.reset": "earliest"})
    assert [m.offset() for m in msgs] == list(range(5))


def test_many_segments_survive_restart(broker):
    b = broker(overrides={"log.segment.bytes": 65536})
    topic = "segmented"
    create_topic(b, topic, 1)
    n = 3000
    d = Deliveries()
    p = producer(b, acks="all", **{"batch.num.messages": 50})
    for i in range(n):
        p.produce(topic, key=b"%d" % i, value=(b"%06d" % i) * 80, partition=0, on_delivery=d)
        p.poll(0)
    flush(p)
    assert d.errors() == [] and sorted(r[3] for r in d.reports) == list(range(n))
    seg_files = sorted((b.data_dir / f"{topic}-0").glob("*.log"))
    assert len(seg_files) > 5, f"expected many segments, got {seg_files}"

    def check(start):
        msgs = read_partition(b, topic, 0, start, n - start, timeout=60)
        assert [m.offset() for m in msgs] == list(range(start, n))
        assert all(m.value() == (b"%06d" % m.offset()) * 80 for m in msgs)

    check(0)
    check(1777)  # lands inside some batch of some middle segment
    b.kill9()
    b.restart()
    check(0)
    check(n - 1)
    d2 = Deliveries()
    p = producer(b, acks="all")
    p.produce(topic, value=b"next", partition=0, on_delivery=d2)
    flush(p)
    assert [(r[0], r[3]) for r in d2.reports] == [(None, n)]


def test_relaxed_durability_round_trip(broker):
    b = broker(durability="relaxed")
    create_topic(b, "relaxed", 1)
    d = Deliveries()
    p = producer(b, acks="all")
    for i in range(100):
        p.produce("relaxed", value=b"%d" % i, partition=0, on_delivery=d)
    flush(p)
    assert d.errors() == [] and sorted(r[3] for r in d.reports) == list(range(100))
    b.stop()  # a graceful stop flushes the page cache writes
    b.restart()
    msgs = read_partition(b, "relaxed", 0, OFFSET_BEGINNING, 100)
    assert [m.value() for m in msgs] == [b"%d" % i for i in range(100)]


# --------------------------------------------------------------------------- auto-create


def test_auto_create_topic_on_produce(broker):
    b = broker()
    d = Deliveries()
    p = producer(b, acks="all")
    p.produce("auto-created", key=b"k", value=b"hello", on_delivery=d)
    flush(p)
    assert [(r[0], r[2], r[3]) for r in d.reports] == [(None, 0, 0)]
    md = topic_metadata(admin(b), "auto-created")
    assert md is not None and md.error is None
    assert sorted(md.partitions) == [0]
    msgs = read_partition(b, "auto-created", 0, OFFSET_BEGINNING, 1)
    assert [(m.key(), m.value()) for m in msgs] == [(b"k", b"hello")]


def test_auto_create_uses_num_partitions(broker):
    b = broker(overrides={"num.partitions": 3})
    d = Deliveries()
    p = producer(b, acks="all")
    p.produce("auto-three", value=b"hello", on_delivery=d)
    flush(p)
    assert d.errors() == []
    md = topic_metadata(admin(b), "auto-three")
    assert md is not None and sorted(md.partitions) == [0, 1, 2]


def test_auto_create_disabled(broker):
    b = broker(overrides={"auto.create.topics.enable": "false"})
    d = Deliveries()
    # librdkafka holds records for an unknown topic for topic.metadata.propagation.max.ms
    # (30 s by default) before failing them with the broker's error; shorten both windows.
    p = producer(b, acks="all", **{"message.timeout.ms": 3000, "topic.metadata.propagation.max.ms": 500})
    p.produce("not-there", value=b"hello", on_delivery=d)
    flush(p, timeout=15)
    assert len(d.reports) == 1
    err = d.reports[0][0]
    assert err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err
    assert topic_metadata(admin(b), "not-there") is None
    assert b.topic_dirs("not-there") == []


# --------------------------------------------------------------------------- restart / crash


def test_restart_preserves_log(broker):
    b = broker()
    topic = "durable"
    create_topic(b, topic, 2)
    d = Deliveries()
    p = producer(b, acks="all", **{"compression.type": "lz4"})
    for i in range(200):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 2, headers=[("i", b"%d" % i)],
                  on_delivery=d)
    flush(p)
    assert d.errors() == []
    acked = {(r[2], r[3]): r[5] for r in d.reports}
    del p

    b.stop()
    b.restart()

    for part in (0, 1):
        msgs = read_partition(b, topic, part, OFFSET_BEGINNING, 100)
        assert [(m.offset(), m.value()) for m in msgs] == sorted(
            (o, v) for (pp, o), v in acked.items() if pp == part
        )
        assert all(m.headers() == [("i", m.value()[1:])] for m in msgs)

    d2 = Deliveries()
    p = producer(b, acks="all")
    for i in range(200, 210):
        p.produce(topic, value=b"v%d" % i, partition=i % 2, on_delivery=d2)
    flush(p)
    assert d2.errors() == []
    for part in (0, 1):
        assert sorted(r[3] for r in d2.reports if r[2] == part) == list(range(100, 105))
    c = consumer(b)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False) == (0, 105)
    finally:
        c.close()
    msgs = read_partition(b, topic, 1, 100, 5)
    assert [m.value() for m in msgs] == [b"v%d" % i for i in range(201, 210, 2)]


def test_kill9_during_produce_loses_no_acknowledged_record(broker):
    b = broker()  # default durability: fsync
    topic = "crash"
    create_topic(b, topic, 1)
    total, kill_after = 30_000, 5_000
    acked = {}  # value -> offset
    failed = []

    def on_delivery(err, msg):
        if err is None:
            acked[int(msg.value())] = msg.offset()
        else:
            failed.append((int(msg.value()), err.code()))

    # Small batches pipelined on one connection (no idempotence: many requests in flight), so
    # the kill lands while several produce requests are being written / fsynced.
    p = producer(b, acks="all", retries=0,
                 **{"linger.ms": 5, "batch.num.messages": 100, "message.timeout.ms": 30000})
    sent = 0
    deadline = time.monotonic() + 60
    # Keep at most ~1000 records outstanding so the kill lands mid-stream.
    while len(acked) < kill_after:
        assert time.monotonic() < deadline, f"only {len(acked)} acknowledged after 60s"
        assert not failed, f"delivery failures before the kill: {failed[:5]}"
        if sent < total and sent - len(acked) < 1000:
            p.produce(topic, value=b"%08d" % sent, partition=0, on_delivery=on_delivery)
            sent += 1
            p.poll(0)
        else:
            p.poll(0.005)
    b.kill9()
    acked_at_kill = len(acked)
    outstanding_at_kill = sent - acked_at_kill
    # keep streaming while the broker is down (these queue up in the client), bring it back
    # and stream the rest
    for _ in range(2000):
        p.produce(topic, value=b"%08d" % sent, partition=0, on_delivery=on_delivery)
        sent += 1
    p.poll(0)
    b.restart()
    deadline = time.monotonic() + 60
    while sent < total:
        assert time.monotonic() < deadline, f"stuck after restart: {len(acked)} acknowledged"
        if sent - len(acked) - len(failed) < 1000:
            p.produce(topic, value=b"%08d" % sent, partition=0, on_delivery=on_delivery)
            sent += 1
            p.poll(0)
        else:
            p.poll(0.005)
    flush(p, timeout=60)
    assert len(acked) + len(failed) == sent
    assert len(acked) > acked_at_kill, "nothing acknowledged after the restart"
    print(f"sent={sent} acked_at_kill={acked_at_kill} outstanding_at_kill={outstanding_at_kill} acked={len(acked)} failed={len(failed)} "
          f"failed_codes={sorted({c for _, c in failed})}")
    assert acked_at_kill >= kill_after

    c = consumer(b)
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
        assert lo == 0
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        msgs = consume_until_eof(c, {0}, hi, timeout=60)
    finally:
        c.close()
    log = [(m.offset(), int(m.value())) for m in msgs]
    assert [o for o, _ in log] == list(range(hi)), "offsets are not contiguous from 0"
    values = [v for _, v in log]
    assert len(set(values)) == len(values), "a value appears twice"
    assert values == sorted(values), "values are out of order"
    at = dict(log)
    lost = {v: o for v, o in acked.items() if at.get(o) != v}
    assert not lost, f"{len(lost)} acknowledged records not at their acknowledged offsets, e.g. " \
        f"{sorted(lost.items())[:5]}"


# --------------------------------------------------------------------------- sizes


def test_large_message_round_trips(broker):
    b = broker()
    create_topic(b, "big", 1)
    value = bytes(range(256)) * (900 * 1024 // 256)
    assert len(value) == 900 * 1024
    d = Deliveries()
    p = producer(b, acks="all")
    p.produce("big", key=b"big", value=value, partition=0, on_delivery=d)
    p.produce("big", value=b"after", partition=0, on_delivery=d)
    flush(p)
    assert [(r[0], r[3]) for r in d.reports] == [(None, 0), (None, 1)]
    msgs = read_partition(b, "big", 0, OFFSET_BEGINNING, 2)
    assert [m.offset() for m in msgs] == [0, 1]
    assert msgs[0].value() == value and msgs[0].key() == b"big"
    assert msgs[1].value() == b"after"
    # a fetch size smaller than the first batch must still return that batch (KIP-74)
    msgs = read_partition(b, "big", 0, OFFSET_BEGINNING, 2,
                          **{"max.partition.fetch.bytes": 1024, "fetch.max.bytes": 2048,
                             "message.max.bytes": 1000})
    assert [m.offset() for m in msgs] == [0, 1]
    assert msgs[0].value() == value


def test_message_larger_than_broker_limit_is_refused(broker):
    b = broker(overrides={"message.max.bytes": 100000})
    create_topic(b, "limited", 1)
    d = Deliveries()
    p = producer(b, acks="all", **{"message.max.bytes": 1000000, "compression.type": "none"})
    p.produce("limited", value=b"s" * 100, partition=0, on_delivery=d)
    flush(p)
    p.produce("limited", value=b"\x01" * 200_000, partition=0, on_delivery=d)
    flush(p)
    p.produce("limited", value=b"t" * 100, partition=0, on_delivery=d)
    flush(p)
    assert len(d.reports) == 3
    assert d.reports[0][0] is None and d.reports[0][3] == 0
    err = d.reports[1][0]
    assert err is not None, "a 200 KB record was accepted by a broker with message.max.bytes=100000"
    assert err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    assert d.reports[2][0] is None and d.reports[2][3] == 1
    msgs = read_partition(b, "limited", 0, OFFSET_BEGINNING, 2)
    assert [m.value() for m in msgs] == [b"s" * 100, b"t" * 100]
