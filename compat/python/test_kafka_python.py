"""kafka-python 3.x against a real sluice broker.

No `api_version=` anywhere: the client must negotiate by itself (ApiVersions v4 first).
Producers pass enable_idempotence=False (sluice has no InitProducerId yet); consumers have no
group (group_id=None) and use assign() + seek*().
"""

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import codec as kcodec
from kafka import errors as Errors

from conftest import wait_until

pytestmark = pytest.mark.timeout(90)

CODECS = {
    None: lambda: True,
    "gzip": kcodec.has_gzip,
    "snappy": kcodec.has_snappy,
    "lz4": kcodec.has_lz4,
    "zstd": kcodec.has_zstd,
}


# --------------------------------------------------------------------------- helpers


def admin(b):
    return KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=15000)


def producer(b, **kw):
    conf = dict(bootstrap_servers=b.bootstrap, enable_idempotence=False, linger_ms=5,
                request_timeout_ms=15000)
    conf.update(kw)
    return KafkaProducer(**conf)


def consumer(b, **kw):
    conf = dict(bootstrap_servers=b.bootstrap, group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    conf.update(kw)
    return KafkaConsumer(**conf)


def create_topic(b, topic, partitions):
    a = admin(b)
    try:
        a.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}},
                        wait_for_metadata=True)
    finally:
        a.close()


def consume(c, count, timeout=30):
    """Poll until at least `count` records arrived (deadline), then make sure nothing more
    is available up to the end offsets; returns the records in consumption order."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        assert time.monotonic() < deadline, f"consumed {len(out)}/{count} records in {timeout}s"
        for recs in c.poll(timeout_ms=200).values():
            out.extend(recs)
    assignment = c.assignment()
    ends = c.end_offsets(list(assignment))
    for tp in assignment:
        assert c.position(tp) == ends[tp], (tp, c.position(tp), ends[tp])
    return out


def make_records(n, t0):
    records = []
    for i in range(n):
        key = None if i % 13 == 0 else f"key-{i}".encode()
        value = b"" if i % 17 == 0 else (f"value-{i}-" * (1 + i % 50)).encode()
        headers = [("idx", str(i).encode()), ("kind", b"compat")]
        if i % 7 == 0:
            headers.append(("idx", b"dup-key"))
        records.append((i % 2, key, value, headers, t0 + i))
    return records


# --------------------------------------------------------------------------- admin


def test_admin_topics(broker):
    b = broker()
    a = admin(b)
    try:
        a.create_topics({"kp-admin": {"num_partitions": 3, "replication_factor": 1}})
        wait_until(lambda: "kp-admin" in a.list_topics(), 10, "topic in list_topics")
        (desc,) = a.describe_topics(["kp-admin"])
        assert desc["error_code"] == 0
        parts = sorted(desc["partitions"], key=lambda p: p["partition_index"])
        assert [p["partition_index"] for p in parts] == [0, 1, 2]
        assert all(p["leader_id"] == 1 and p["replica_nodes"] == [1] and p["error_code"] == 0
                   for p in parts)
        assert b.topic_dirs("kp-admin") == ["kp-admin-0", "kp-admin-1", "kp-admin-2"]

        with pytest.raises(Errors.TopicAlreadyExistsError):
            a.create_topics({"kp-admin": {"num_partitions": 3, "replication_factor": 1}})
        with pytest.raises(Errors.InvalidTopicError):
            a.create_topics({"bad/name": {"num_partitions": 1, "replication_factor": 1}})
        with pytest.raises(Errors.InvalidPartitionsError):
            a.create_topics({"kp-zero": {"num_partitions": 0, "replication_factor": 1}})
        with pytest.raises(Errors.InvalidReplicationFactorError):
            a.create_topics({"kp-rf3": {"num_partitions": 1, "replication_factor": 3}})
        # broker defaults (-1 / -1) are accepted too
        a.create_topics(["kp-defaults"], wait_for_metadata=True)
        (desc,) = a.describe_topics(["kp-defaults"])
        assert len(desc["partitions"]) == 1
        # validate_only creates nothing
        a.create_topics({"kp-dry": {"num_partitions": 2, "replication_factor": 1}},
                        validate_only=True)
        assert "kp-dry" not in a.list_topics()

        a.create_partitions({"kp-admin": 5})
        wait_until(lambda: len(a.describe_topics(["kp-admin"])[0]["partitions"]) == 5, 10,
                   "5 partitions")

        a.delete_topics(["kp-admin"])
        wait_until(lambda: "kp-admin" not in a.list_topics(), 10, "topic gone from list_topics")
        wait_until(lambda: b.topic_dirs("kp-admin") == [], 10, "partition directories removed")
        with pytest.raises(Errors.UnknownTopicOrPartitionError):
            a.delete_topics(["kp-admin"])
        assert "kp-defaults" in a.list_topics()
        assert "kp-zero" not in a.list_topics() and "kp-rf3" not in a.list_topics()
    finally:
        a.close()


# --------------------------------------------------------------------------- produce / consume


@pytest.mark.parametrize("acks", [0, 1, "all"], ids=["acks0", "acks1", "acksall"])
@pytest.mark.parametrize("compression", list(CODECS), ids=lambda c: c or "none")
def test_produce_consume(broker, compression, acks):
    if not CODECS[compression]():
        pytest.skip(f"kafka-python has no {compression} codec installed")
    b = broker()
    topic = f"kp-{compression or 'none'}-{acks}"
    create_topic(b, topic, 2)
    t0 = int(time.time() * 1000) - 60_000
    records = make_records(300, t0)

    p = producer(b, acks=acks, compression_type=compression, linger_ms=20)
    try:
        futures = [
            p.send(topic, value=value, key=key, headers=headers, partition=part, timestamp_ms=ts)
            for part, key, value, headers, ts in records
        ]
        p.flush(timeout=30)
        metas = [f.get(timeout=30) for f in futures]
    finally:
        p.close(timeout=10)
    if acks != 0:
        for part in (0, 1):
            offs = [m.offset for m, r in zip(metas, records) if r[0] == part]
            assert offs == list(range(len(offs))), f"partition {part}: offsets not contiguous"

    c = consumer(b)
    try:
        tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got = consume(c, len(records))
    finally:
        c.close()
    assert len(got) == len(records)
    for part in (0, 1):
        mine = [r for r in got if r.partition == part]
        want = [r for r in records if r[0] == part]
        assert [r.offset for r in mine] == list(range(len(want)))
        for r, (_, key, value, headers, ts) in zip(mine, want):
            assert r.key == key
            assert r.value == value
            assert list(r.headers) == headers
            assert r.timestamp == ts
            assert r.timestamp_type == 0  # CreateTime


# --------------------------------------------------------------------------- offsets


def test_consumer_offsets_and_seek(broker):
    b = broker()
    topic = "kp-offsets"
    create_topic(b, topic, 1)
    tp = TopicPartition(topic, 0)
    t0 = (int(time.time()) - 3600) * 1000
    p = producer(b, acks="all")
    try:
        for i in range(10):
            # one batch per record: the timestamp lookup is exact only across batches
            meta = p.send(topic, value=f"v{i}".encode(), partition=0,
                          timestamp_ms=t0 + 1000 * i).get(timeout=15)
            assert meta.offset == i

        c = consumer(b)
        try:
            assert c.beginning_offsets([tp]) == {tp: 0}
            assert c.end_offsets([tp]) == {tp: 10}
            found = c.offsets_for_times({tp: t0 + 1500})[tp]
            assert (found.offset, found.timestamp) == (2, t0 + 2000)
            assert c.offsets_for_times({tp: t0 - 10_000})[tp].offset == 0
            assert c.offsets_for_times({tp: t0 + 9001})[tp] is None

            c.assign([tp])
            c.seek_to_beginning(tp)
            assert [r.value for r in consume(c, 10)] == [f"v{i}".encode() for i in range(10)]

            c.seek(tp, 7)
            got = consume(c, 3)
            assert [(r.offset, r.value) for r in got] == [(i, f"v{i}".encode()) for i in (7, 8, 9)]

            c.seek(tp, found.offset)
            assert [r.offset for r in consume(c, 8)] == list(range(2, 10))

            c.seek_to_end(tp)
            assert c.position(tp) == 10
            for i in range(10, 13):
                p.send(topic, value=f"v{i}".encode(), partition=0)
            p.flush(timeout=15)
            got = consume(c, 3)
            assert [(r.offset, r.value) for r in got] == [(i, f"v{i}".encode()) for i in (10, 11, 12)]
            assert c.end_offsets([tp]) == {tp: 13}
        finally:
            c.close()
    finally:
        p.close(timeout=10)


def test_offsets_for_times_within_a_batch(broker):
    b = broker()
    topic = "kp-ts-batch"
    create_topic(b, topic, 1)
    tp = TopicPartition(topic, 0)
    t0 = (int(time.time()) - 3600) * 1000
    p = producer(b, acks="all", linger_ms=200, compression_type="gzip")
    try:
        futures = [p.send(topic, value=b"r%d" % i, partition=0, timestamp_ms=t0 + 1000 * i)
                   for i in range(10)]
        p.flush(timeout=15)
        assert [f.get(timeout=15).offset for f in futures] == list(range(10))
    finally:
        p.close(timeout=10)
    c = consumer(b)
    try:
        found = c.offsets_for_times({tp: t0 + 1500})[tp]
        assert (found.offset, found.timestamp) == (2, t0 + 2000)
        c.assign([tp])
        c.seek(tp, found.offset)
        assert [r.value for r in consume(c, 8)] == [b"r%d" % i for i in range(2, 10)]
    finally:
        c.close()


def test_auto_create_on_produce(broker):
    b = broker()
    p = producer(b, acks="all")
    try:
        meta = p.send("kp-auto", key=b"k", value=b"v").get(timeout=15)
    finally:
        p.close(timeout=10)
    assert (meta.topic, meta.partition, meta.offset) == ("kp-auto", 0, 0)
    a = admin(b)
    try:
        assert "kp-auto" in a.list_topics()
    finally:
        a.close()


# --------------------------------------------------------------------------- restart


def test_restart_between_produce_and_consume(broker):
    b = broker()
    topic = "kp-restart"
    create_topic(b, topic, 2)
    p = producer(b, acks="all", compression_type="gzip")
    try:
        futures = [p.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 2,
                          headers=[("i", b"%d" % i)]) for i in range(100)]
        p.flush(timeout=15)
        acked = {(f.get(timeout=15).partition, f.get(timeout=15).offset): b"v%d" % i
                 for i, f in enumerate(futures)}
    finally:
        p.close(timeout=10)

    b.stop()
    b.restart()

    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    c = consumer(b)
    try:
        assert c.end_offsets(tps) == {tps[0]: 50, tps[1]: 50}
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got = consume(c, 100)
        assert {(r.partition, r.offset): r.value for r in got} == acked
        assert all(list(r.headers) == [("i", r.value[1:])] for r in got)
    finally:
        c.close()

    p = producer(b, acks="all")
    try:
        metas = [p.send(topic, value=b"after", partition=part).get(timeout=15) for part in (0, 1)]
    finally:
        p.close(timeout=10)
    assert [(m.partition, m.offset) for m in metas] == [(0, 50), (1, 50)]
