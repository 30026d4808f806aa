"""Retention, compaction, DeleteRecords and topic/broker configs with real clients.

confluent-kafka (librdkafka) drives most tests; kafka-python covers DeleteRecords, the cluster
default BROKER resource ("" — confluent-kafka refuses it client-side) and DescribeConfigs
documentation (raw requests through the admin client's connection manager).

The broker's background maintenance is sped up with `log.retention.check.interval.ms` and
`log.cleaner.backoff.ms`; small `segment.bytes` topic configs give closed segments quickly.
Nothing sleeps for synchronisation: every wait is a bounded `wait_until`.
"""

import struct
from types import SimpleNamespace
import time
import warnings

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    OffsetSpec,
)
from kafka import KafkaAdminClient, KafkaProducer
from kafka import TopicPartition as KTopicPartition
from kafka import errors as Errors
from kafka.protocol.admin import (
    DescribeConfigsRequest,
    IncrementalAlterConfigsRequest,
)

from conftest import wait_until

pytestmark = pytest.mark.timeout(90)

# Background maintenance every 300 ms instead of 5 min / 15 s.
FAST = {"log.retention.check.interval.ms": 300, "log.cleaner.backoff.ms": 300}

HOUR_MS = 3_600_000



# --------------------------------------------------------------------------- helpers


def now_ms():
    return int(time.time() * 1000)


def admin(b):
    return AdminClient({"bootstrap.servers": b.bootstrap})


def kadmin(b):
    return KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=15000)


def create_topic(b, topic, partitions=1, **config):
    a = admin(b)
    cfg = {k.replace("_", "."): str(v) for k, v in config.items()}
    a.create_topics([NewTopic(topic, partitions, 1, config=cfg)])[topic].result(15)
    wait_until(
        lambda: (md := a.list_topics(timeout=10).topics.get(topic)) is not None
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
        "acks": "all",
    }
    base.update(conf)
    return Producer(base)


def consumer(b, **conf):
    base = {
        "bootstrap.servers": b.bootstrap,
        "group.id": "sluice-storage-compat",  # never joined: manual assignment, no commits
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",
        "fetch.wait.max.ms": 20,  # quick EOF: the broker holds an empty fetch this long
    }
    base.update(conf)
    return Consumer(base)


class Deliveries:
    def __init__(self):
        self.reports = []  # (err, offset, key, value)

    def __call__(self, err, msg):
        self.reports.append((err, msg.offset(), msg.key(), msg.value()))

    def errors(self):
        return [r for r in self.reports if r[0] is not None]


def flush(p, timeout=30):
    remaining = p.flush(timeout)
    assert remaining == 0, f"{remaining} messages still undelivered after {timeout}s"


def produce_each(p, topic, records, d):
    """Produce `records` [(key, value, timestamp_or_None)] one batch each (flush after every
    record), so that small segments roll between them. Returns their offsets."""
    first = len(d.reports)
    for key, value, ts in records:
        kw = {"timestamp": ts} if ts is not None else {}
        p.produce(topic, key=key, value=value, partition=0, on_delivery=d, **kw)
        flush(p)
    new = d.reports[first:]
    assert [r for r in new if r[0] is not None] == []
    return [r[1] for r in new]


def watermarks(b, topic, partition=0):
    c = consumer(b)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()


def list_earliest(b, topic, partition=0):
    a = admin(b)
    tp = TopicPartition(topic, partition)
    res = a.list_offsets({tp: OffsetSpec.earliest()}, request_timeout=10)
    return res[tp].result().offset


def read_all(b, topic, partition=0, start=OFFSET_BEGINNING, timeout=30, **conf):
    """Everything from `start` to the partition end as [(offset, key, value)]; errors fail."""
    c = consumer(b, **conf)
    out = []
    try:
        c.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no EOF on {topic}-{partition} after {timeout}s ({len(out)} read)"
            m = c.poll(min(remaining, 0.5))
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                raise AssertionError(f"consumer error: {m.error()}")
            out.append((m.offset(), m.key(), m.value()))
    finally:
        c.close()


def read_from_low(b, topic, partition=0):
    """`read_all` from the current low watermark as an explicit offset: librdkafka resolves
    OFFSET_BEGINNING only after an internal ~0.5 s delay, too slow inside polling loops."""
    return read_all(b, topic, partition, start=watermarks(b, topic, partition)[0])


def first_error(b, topic, start, partition=0, timeout=15, **conf):
    """Polls from `start` until a non-EOF error arrives; a record fails the test."""
    c = consumer(b, **conf)
    try:
        c.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"no consumer error from offset {start}"
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is not None, f"got a record at offset {m.offset()}"
            if m.error().code() != KafkaError._PARTITION_EOF:
                return m.error()
    finally:
        c.close()


def segment_files(b, topic, partition=0):
    """[(base_offset, size)] of the partition's `.log` segment files, oldest first."""
    d = b.data_dir / f"{topic}-{partition}"
    out = []
    for p in d.glob("*.log"):
        try:
            out.append((int(p.stem), p.stat().st_size))
        except FileNotFoundError:
            pass  # deleted by retention between the listing and the stat: gone
    return sorted(out)


def batches_on_disk(b, topic, partition=0):
    """[(base_offset, last_offset, codec, record_count)] of every batch in the segment files."""
    out = []
    d = b.data_dir / f"{topic}-{partition}"
    for path in sorted(d.glob("*.log"), key=lambda p: int(p.stem)):
        data = path.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base, length = struct.unpack_from(">qi", data, pos)
            if length <= 0:
                break
            attrs = struct.unpack_from(">h", data, pos + 21)[0]
            last_delta = struct.unpack_from(">i", data, pos + 23)[0]
            count = struct.unpack_from(">i", data, pos + 57)[0]
            out.append((base, base + last_delta, attrs & 7, count))
            pos += 12 + length
    return out


def wait_equal(get, expected, timeout, what, details=lambda: "", interval=0.1):
    """Polls `get()` until it equals `expected`; on timeout shows the last value seen."""
    last = []

    def cond():
        last[:] = [get()]
        return last[0] == expected

    try:
        wait_until(cond, timeout, what, interval)
    except AssertionError as e:
        raise AssertionError(
            f"{e}\n  expected: {expected}\n  last seen: {last[0]}\n{details()}") from None


def describe(a, restype, name, timeout=15):
    res = ConfigResource(restype, name)
    return a.describe_configs([res])[res].result(timeout)


def incremental(a, restype, name, ops, validate_only=False, timeout=15):
    """ops: [(name, AlterConfigOpType, value)]"""
    entries = [ConfigEntry(n, v, incremental_operation=op) for n, op, v in ops]
    res = ConfigResource(restype, name, incremental_configs=entries)
    return a.incremental_alter_configs([res], validate_only=validate_only)[res].result(timeout)


def legacy_alter(a, restype, name, configs, validate_only=False, timeout=15):
    res = ConfigResource(restype, name, set_config={k: str(v) for k, v in configs.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        futs = a.alter_configs([res], validate_only=validate_only)
    return futs[res].result(timeout)


def kafka_error(excinfo):
    err = excinfo.value.args[0]
    assert isinstance(err, KafkaError), excinfo.value
    return err


def src(entry):
    return ConfigSource(entry.source)


def raw(ka, request, node_id=None):
    """Sends a raw request through kafka-python's admin client; returns the response."""
    return ka._manager.run(lambda: ka._manager.send(request, node_id=node_id))


def raw_describe(b, restype, name, keys=None):
    """DescribeConfigs with synonyms and documentation through kafka-python (confluent-kafka
    keys synonyms by name in a dict, so e.g. a STATIC and a DEFAULT `log.cleanup.policy`
    collapse into one). Returns {name: entry} with `.value`, `.source` (ConfigSource),
    `.read_only`, `.synonyms` [(name, value, ConfigSource)], `.doc`, `.type`."""
    ka = kadmin(b)
    try:
        resp = raw(ka, DescribeConfigsRequest(
            resources=[(restype, name, keys)], include_synonyms=True,
            include_documentation=True), node_id=1 if restype == 4 else None)
    finally:
        ka.close()
    (result,) = resp.results
    assert result.error_code == 0, result
    out = {}
    for c in result.configs:
        out[c.name] = SimpleNamespace(
            value=c.value, source=ConfigSource(c.config_source), read_only=c.read_only,
            synonyms=[(s.name, s.value, ConfigSource(s.source)) for s in c.synonyms],
            doc=c.documentation, type=c.config_type)
    return out


# --------------------------------------------------------------------------- retention


def test_retention_by_time_deletes_old_closed_segments(broker):
    b = broker(overrides=FAST)
    topic = "ret-time"
    create_topic(b, topic, segment_bytes=1024, retention_ms=10 * 60 * 1000)
    p = producer(b, **{"linger.ms": 0})
    d = Deliveries()
    old_ts = now_ms() - HOUR_MS
    old = produce_each(p, topic, [(b"o%d" % i, b"old-%03d-" % i + b"x" * 300, old_ts + i)
                                  for i in range(20)], d)
    assert old == list(range(20))
    # Each new record is larger than what fits behind anything else in a 1024-byte segment, so
    # the first one starts a new segment: every segment before it holds only old records.
    new = produce_each(p, topic, [(b"n%d" % i, b"new-%d-" % i + b"y" * 900, None)
                                  for i in range(3)], d)
    assert new == [20, 21, 22]

    wait_until(lambda: watermarks(b, topic)[0] >= 20, 20, "retention to delete the old segments")
    assert watermarks(b, topic) == (20, 23)
    assert list_earliest(b, topic) == 20
    bases = [base for base, _ in segment_files(b, topic)]
    assert bases[0] == 20 and len(bases) == 3, bases  # the new segments, the active one too

    msgs = read_all(b, topic)
    assert [(o, k) for o, k, _ in msgs] == [(20, b"n0"), (21, b"n1"), (22, b"n2")]
    assert all(v.startswith(b"new-%d-" % (o - 20)) for o, _, v in msgs)

    # A consumer positioned below the log start: reset to the new start with "earliest" ...
    assert [o for o, _, _ in read_all(b, topic, start=0, **{"auto.offset.reset": "earliest"})] \
        == [20, 21, 22]
    assert [o for o, _, _ in read_all(b, topic, start=5, **{"auto.offset.reset": "earliest"})] \
        == [20, 21, 22]
    # ... and an OFFSET_OUT_OF_RANGE error with "error".
    err = first_error(b, topic, 0)
    assert err.code() == KafkaError._AUTO_OFFSET_RESET, err
    assert "out of range" in err.str().lower(), err

    # The new log start survives a restart; producing continues at the high watermark.
    b.restart()
    assert watermarks(b, topic) == (20, 23)
    assert produce_each(producer(b), topic, [(b"after", b"restart", None)], Deliveries()) == [23]


def test_retention_by_size_bounds_the_partition(broker):
    b = broker(overrides=FAST)
    topic = "ret-size"
    retention = 3000
    create_topic(b, topic, segment_bytes=1024, retention_bytes=retention)
    p = producer(b, **{"linger.ms": 0})
    d = Deliveries()
    n = 40
    offsets = produce_each(p, topic, [(b"k%d" % i, b"%03d" % i + b"z" * 300, None)
                                      for i in range(n)], d)
    assert offsets == list(range(n))

    def bounded():
        segs = segment_files(b, topic)
        total = sum(size for _, size in segs)
        # Kafka's rule: the oldest segment goes while the rest still holds >= retention.bytes.
        return watermarks(b, topic)[0] > 0 and total - segs[0][1] < retention

    wait_until(bounded, 20, "size-based retention to bound the partition")
    segs = segment_files(b, topic)
    total = sum(size for _, size in segs)
    assert total >= retention, f"retention deleted too much: {segs}"
    low, high = watermarks(b, topic)
    assert high == n
    assert low == segs[0][0], (low, segs)
    assert list_earliest(b, topic) == low
    msgs = read_all(b, topic)
    assert [o for o, _, _ in msgs] == list(range(low, n))
    assert all(v.startswith(b"%03d" % o) for o, _, v in msgs)


def test_retention_follows_cleanup_policy(broker):
    """Time retention applies to "delete" and "compact,delete" topics, never to "compact"."""
    b = broker(overrides=FAST)
    policies = {"ret-delete": "delete", "ret-both": "compact,delete", "ret-compact": "compact"}
    for topic, policy in policies.items():
        create_topic(b, topic, segment_bytes=1024, retention_ms=HOUR_MS, cleanup_policy=policy)
    p = producer(b, **{"linger.ms": 0})
    d = Deliveries()
    old_ts = now_ms() - 3 * HOUR_MS
    for topic in policies:
        produce_each(p, topic, [(b"o%d" % i, b"x" * 300, old_ts) for i in range(9)], d)
        produce_each(p, topic, [(b"new", b"y" * 900, None)], d)
    wait_until(lambda: watermarks(b, "ret-delete")[0] == 9, 20, "retention on ret-delete")
    wait_until(lambda: watermarks(b, "ret-both")[0] == 9, 20, "retention on ret-both")
    # Each maintenance round visits a snapshot of all partitions, one after the other. A topic
    # created now is only in later snapshots; once a second such topic saw retention, a whole
    # round over the compact-only topic (with its data) has completed.
    for i in range(2):
        sync = f"ret-sync-{i}"
        create_topic(b, sync, segment_bytes=1024, retention_ms=HOUR_MS)
        produce_each(p, sync, [(b"o", b"x" * 300, old_ts), (b"new", b"y" * 900, None)], d)
        wait_until(lambda: watermarks(b, sync)[0] == 1, 20, f"retention on {sync}")
    assert watermarks(b, "ret-compact") == (0, 10)
    assert [o for o, _, _ in read_all(b, "ret-compact")] == list(range(10))


# --------------------------------------------------------------------------- compaction


def is_filler(key):
    return key == b"filler"


def roll_filler(p, topic, d, count=3):
    """Large records under one key from an uncompressing producer `p`: each fills a 1024-byte
    segment, so everything produced before lands in closed (cleanable) segments."""
    produce_each(p, topic, [(b"filler", b"F" * 800, None)] * count, d)


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
def test_compaction_keeps_latest_per_key_with_exact_offsets(broker, codec):
    b = broker(overrides=FAST)
    topic = f"compact-{codec}"
    create_topic(b, topic, cleanup_policy="compact", segment_bytes=1024,
                 min_cleanable_dirty_ratio="0.01", delete_retention_ms=10 * 60 * 1000)
    # Several records per batch (the cleaner must rewrite batches, keeping their codec).
    p = producer(b, **{"compression.type": codec, "linger.ms": 50, "batch.num.messages": 7})
    d = Deliveries()
    keys = [b"k%d" % i for i in range(10)]
    rounds = 5
    for r in range(rounds):
        for k in keys:
            value = b"v%d-" % r + k + b"-" + b"p" * 40
            if r == 2 and k == b"k5":
                value = None  # tombstone, then re-set in later rounds
            if r == rounds - 1 and k in (b"k3", b"k7"):
                value = None  # final tombstones
            p.produce(topic, key=k, value=value, partition=0, on_delivery=d)
        flush(p)
    filler = producer(b, **{"linger.ms": 0})
    roll_filler(filler, topic, d)
    assert d.errors() == []
    produced = [(o, k, v) for _, o, k, v in d.reports]
    assert sorted(o for o, _, _ in produced) == list(range(len(produced)))
    latest = {}
    for o, k, v in produced:
        if not is_filler(k):
            latest[k] = (o, k, v)
    expected = sorted(latest.values())
    assert [k for _, k, v in expected if v is None] == [b"k3", b"k7"]
    assert latest[b"k5"][2].startswith(b"v4-k5")
    high = watermarks(b, topic)[1]

    def keyed():
        return [m for m in read_from_low(b, topic) if not is_filler(m[1])]

    wait_equal(keyed, expected, 30, "compaction to keep only the latest per key",
               lambda: f"  batches on disk: {batches_on_disk(b, topic)}")
    assert keyed() == expected  # exact offsets, values, and the tombstones of k3/k7 (for now)
    assert watermarks(b, topic) == (0, high)
    # The rewritten batches kept the producer's codec.
    want_codec = {"none": 0, "gzip": 1, "zstd": 4}[codec]
    first_filler = min(o for o, k, _ in produced if is_filler(k))
    keyed_batches = [bt for bt in batches_on_disk(b, topic) if bt[3] > 0 and bt[1] < first_filler]
    assert keyed_batches and all(bt[2] == want_codec for bt in keyed_batches), keyed_batches
    # A fetch from a surviving offset starts exactly there; one from a compacted-away offset
    # (a gap) starts at the next survivor -- no OFFSET_OUT_OF_RANGE (auto.offset.reset=error).
    o3 = latest[b"k3"][0]
    assert read_all(b, topic, start=o3)[0][:2] == (o3, b"k3")
    survivors = [o for o, _, _ in read_all(b, topic)]
    assert 5 not in survivors
    assert read_all(b, topic, start=5)[0][0] == min(o for o in survivors if o > 5)

    # Tombstones expire delete.retention.ms after a pass cleaned their segment: shorten it live,
    # and keep adding dirty (filler) segments so that further passes run.
    incremental(admin(b), ConfigResource.Type.TOPIC, topic,
                [("delete.retention.ms", AlterConfigOpType.SET, "500")])
    without_tombstones = [e for e in expected if e[2] is not None]

    def tombstones_gone():
        if keyed() == without_tombstones:
            return True
        roll_filler(filler, topic, d, count=1)
        return False

    wait_until(tombstones_gone, 30, "tombstones to be removed after delete.retention.ms",
               interval=0.3)
    # The latest filler record is still there, after all the keyed ones.
    last = read_all(b, topic)[-1]
    assert last[1] == b"filler" and last[0] == d.reports[-1][1]


@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_keyless_produce_to_compacted_topic_is_rejected(broker, policy):
    b = broker()
    topic = "keyless-" + policy.replace(",", "-")
    create_topic(b, topic, cleanup_policy=policy)
    p = producer(b)
    d = Deliveries()
    p.produce(topic, value=b"no key", partition=0, on_delivery=d)
    flush(p)
    p.produce(topic, key=b"k", value=b"keyed", partition=0, on_delivery=d)
    flush(p)
    (err, _, _, _), (ok, offset, _, _) = d.reports
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, err
    assert ok is None and offset == 0
    # kafka-python: the send future fails with InvalidRecordError (not retried)
    kp = KafkaProducer(bootstrap_servers=b.bootstrap, enable_idempotence=False,
                       request_timeout_ms=15000)
    try:
        with pytest.raises(Errors.InvalidRecordError):
            kp.send(topic, value=b"no key either", partition=0).get(timeout=15)
        assert kp.send(topic, key=b"k", value=b"again", partition=0).get(timeout=15).offset == 1
    finally:
        kp.close()
    assert read_all(b, topic) == [(0, b"k", b"keyed"), (1, b"k", b"again")]


# --------------------------------------------------------------------------- DeleteRecords


def produce_n(b, topic, n, start=0):
    p = producer(b, **{"linger.ms": 0})
    d = Deliveries()
    for i in range(start, start + n):
        p.produce(topic, key=b"%d" % i, value=b"%04d" % i + b"r" * 150, partition=0,
                  on_delivery=d)
        if i % 5 == 4:
            flush(p)
    flush(p)
    assert d.errors() == []
    return sorted(r[1] for r in d.reports)


def test_delete_records_confluent(broker):
    b = broker()
    topic = "delrec"
    create_topic(b, topic, segment_bytes=1024)
    assert produce_n(b, topic, 50) == list(range(50))
    a = admin(b)

    def delete(offset):
        tp = TopicPartition(topic, 0, offset)
        return a.delete_records([tp])[tp].result(15).low_watermark

    assert delete(17) == 17
    assert watermarks(b, topic) == (17, 50)
    assert list_earliest(b, topic) == 17
    # segments entirely below the new start are gone; the one holding 17 stays
    segs = segment_files(b, topic)
    assert segs[0][0] <= 17 and (len(segs) == 1 or segs[1][0] > 17), segs
    msgs = read_all(b, topic)
    assert [o for o, _, _ in msgs] == list(range(17, 50))
    assert msgs[0][2].startswith(b"0017")
    assert read_all(b, topic, start=3, **{"auto.offset.reset": "earliest"})[0][0] == 17
    err = first_error(b, topic, 3)
    assert err.code() == KafkaError._AUTO_OFFSET_RESET, err
    # a lower offset changes nothing
    assert delete(5) == 17
    # above the high watermark -> OFFSET_OUT_OF_RANGE, nothing changes
    with pytest.raises(KafkaException) as ei:
        delete(51)
    assert kafka_error(ei).code() == KafkaError.OFFSET_OUT_OF_RANGE, ei.value
    assert watermarks(b, topic) == (17, 50)
    # -1 = the high watermark
    assert delete(-1) == 50
    assert watermarks(b, topic) == (50, 50)
    assert read_all(b, topic) == []
    assert produce_n(b, topic, 3, start=50) == [50, 51, 52]
    assert [o for o, _, _ in read_all(b, topic)] == [50, 51, 52]


def test_delete_records_kafka_python(broker):
    b = broker()
    topic = "delrec-kp"
    create_topic(b, topic, segment_bytes=1024)
    assert produce_n(b, topic, 30) == list(range(30))
    ka = kadmin(b)
    try:
        tp = KTopicPartition(topic, 0)
        res = ka.delete_records({tp: 12})
        assert res[tp]["low_watermark"] == 12, res
        assert watermarks(b, topic) == (12, 30)
        with pytest.raises(Errors.OffsetOutOfRangeError):
            ka.delete_records({tp: 31})
        assert watermarks(b, topic) == (12, 30)
        res = ka.delete_records({tp: -1})
        assert res[tp]["low_watermark"] == 30, res
        with pytest.raises(Errors.UnknownTopicOrPartitionError):
            ka.delete_records({KTopicPartition(topic, 7): 1}, partition_leader_id=1)
    finally:
        ka.close()
    assert watermarks(b, topic) == (30, 30)


@pytest.mark.parametrize("how", ["graceful", "kill9"])
def test_delete_records_survives_restart(broker, how):
    b = broker()
    topic = "delrec-restart"
    create_topic(b, topic, segment_bytes=1024)
    assert produce_n(b, topic, 40) == list(range(40))
    a = admin(b)
    tp = TopicPartition(topic, 0, 23)  # inside a segment
    assert a.delete_records([tp])[tp].result(15).low_watermark == 23
    if how == "kill9":
        b.kill9()
    else:
        b.stop()
    b.restart()
    assert watermarks(b, topic) == (23, 40)
    assert list_earliest(b, topic) == 23
    assert [o for o, _, _ in read_all(b, topic)] == list(range(23, 40))
    err = first_error(b, topic, 22)
    assert err.code() == KafkaError._AUTO_OFFSET_RESET, err
    assert produce_n(b, topic, 2, start=40) == [40, 41]
    a = admin(b)
    tp = TopicPartition(topic, 0, -1)
    assert a.delete_records([tp])[tp].result(15).low_watermark == 42
    b.kill9()
    b.restart()
    assert watermarks(b, topic) == (42, 42)
    assert read_all(b, topic) == []


# --------------------------------------------------------------------------- configs

TOPIC = ConfigResource.Type.TOPIC
BROKER = ConfigResource.Type.BROKER


def test_describe_topic_configs_values_sources_synonyms(broker):
    b = broker(overrides={"log.retention.hours": 48, "log.cleanup.policy": "compact"})
    create_topic(b, "described", segment_bytes=4096, max_message_bytes=20000)
    cfg = describe(admin(b), TOPIC, "described")
    for name in ("cleanup.policy", "retention.ms", "retention.bytes", "segment.bytes",
                 "min.cleanable.dirty.ratio", "delete.retention.ms", "max.message.bytes",
                 "message.timestamp.type", "compression.type", "segment.ms"):
        assert name in cfg, sorted(cfg)
    # topic overrides
    e = cfg["segment.bytes"]
    assert (e.value, src(e), e.is_default) == ("4096", ConfigSource.DYNAMIC_TOPIC_CONFIG, False)
    e = cfg["max.message.bytes"]
    assert (e.value, src(e)) == ("20000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    # static broker settings flow into the topic through their synonyms
    e = cfg["retention.ms"]
    assert (e.value, src(e)) == ("172800000", ConfigSource.STATIC_BROKER_CONFIG)
    e = cfg["cleanup.policy"]
    assert (e.value, src(e)) == ("compact", ConfigSource.STATIC_BROKER_CONFIG)
    # plain defaults
    e = cfg["min.cleanable.dirty.ratio"]
    assert (e.value, src(e)) == ("0.5", ConfigSource.DEFAULT_CONFIG)
    assert e.is_default and not e.is_read_only and not e.is_sensitive
    assert (cfg["retention.bytes"].value, src(cfg["retention.bytes"])) == \
        ("-1", ConfigSource.DEFAULT_CONFIG)

    # Synonyms (most specific first), documentation and types: DescribeConfigs v4 through
    # kafka-python.
    full = raw_describe(b, 2, "described")
    assert sorted(full) == sorted(cfg)
    assert all(e.doc for e in full.values()), [n for n, e in full.items() if not e.doc]
    e = full["segment.bytes"]
    assert (e.value, e.source, e.type) == ("4096", ConfigSource.DYNAMIC_TOPIC_CONFIG, 3)  # INT
    assert e.synonyms == [("segment.bytes", "4096", ConfigSource.DYNAMIC_TOPIC_CONFIG),
                          ("log.segment.bytes", "1073741824", ConfigSource.DEFAULT_CONFIG)]
    e = full["retention.ms"]
    assert (e.value, e.source, e.type) == ("172800000", ConfigSource.STATIC_BROKER_CONFIG, 5)
    assert e.synonyms[0] == ("log.retention.hours", "48", ConfigSource.STATIC_BROKER_CONFIG)
    assert len(e.synonyms) == 2 and e.synonyms[1][2] == ConfigSource.DEFAULT_CONFIG, e.synonyms
    e = full["cleanup.policy"]
    assert e.type == 7  # LIST
    assert e.synonyms == [("log.cleanup.policy", "compact", ConfigSource.STATIC_BROKER_CONFIG),
                          ("log.cleanup.policy", "delete", ConfigSource.DEFAULT_CONFIG)]
    e = full["min.cleanable.dirty.ratio"]
    assert e.type == 6  # DOUBLE
    assert e.synonyms == [("log.cleaner.min.cleanable.ratio", "0.5", ConfigSource.DEFAULT_CONFIG)]
    # a subset of keys
    assert sorted(raw_describe(b, 2, "described", ["retention.ms", "segment.bytes"])) == \
        ["retention.ms", "segment.bytes"]
    # unknown topic -> per-resource error
    ka = kadmin(b)
    try:
        resp = raw(ka, DescribeConfigsRequest(resources=[(2, "nope", None)],
                                              include_synonyms=False))
        assert resp.results[0].error_code == Errors.UnknownTopicOrPartitionError.errno
    finally:
        ka.close()
    with pytest.raises(KafkaException) as ei:
        describe(admin(b), TOPIC, "nope")
    assert kafka_error(ei).code() == KafkaError.UNKNOWN_TOPIC_OR_PART, ei.value


def test_incremental_alter_topic_configs(broker):
    b = broker()
    topic = "inc"
    create_topic(b, topic)
    a = admin(b)
    incremental(a, TOPIC, topic, [("retention.ms", AlterConfigOpType.SET, "123456"),
                                  ("segment.bytes", AlterConfigOpType.SET, "65536")])
    cfg = describe(a, TOPIC, topic)
    assert (cfg["retention.ms"].value, src(cfg["retention.ms"])) == \
        ("123456", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert cfg["segment.bytes"].value == "65536"
    # APPEND / SUBTRACT on the list-typed cleanup.policy (default "delete")
    incremental(a, TOPIC, topic, [("cleanup.policy", AlterConfigOpType.APPEND, "compact")])
    assert describe(a, TOPIC, topic)["cleanup.policy"].value == "delete,compact"
    incremental(a, TOPIC, topic, [("cleanup.policy", AlterConfigOpType.SUBTRACT, "delete")])
    e = describe(a, TOPIC, topic)["cleanup.policy"]
    assert (e.value, src(e)) == ("compact", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    # the policy is live: keyless records are now refused
    d = Deliveries()
    p = producer(b)
    p.produce(topic, value=b"keyless", partition=0, on_delivery=d)
    flush(p)
    assert d.reports[0][0] is not None and d.reports[0][0].code() == KafkaError.INVALID_RECORD
    # APPEND on a non-list config -> INVALID_CONFIG
    with pytest.raises(KafkaException) as ei:
        incremental(a, TOPIC, topic, [("retention.ms", AlterConfigOpType.APPEND, "5")])
    assert kafka_error(ei).code() == KafkaError.INVALID_CONFIG, ei.value
    # DELETE reverts to the default; other overrides stay
    incremental(a, TOPIC, topic, [("retention.ms", AlterConfigOpType.DELETE, None)])
    cfg = describe(a, TOPIC, topic)
    assert (cfg["retention.ms"].value, src(cfg["retention.ms"])) == \
        ("604800000", ConfigSource.DEFAULT_CONFIG)
    assert cfg["segment.bytes"].value == "65536"
    assert cfg["cleanup.policy"].value == "compact"

    # kafka-python's incremental alter (it negotiates IncrementalAlterConfigs)
    from kafka.admin import ConfigResource as KRes, ConfigResourceType as KType
    ka = kadmin(b)
    try:
        res = ka.alter_configs([KRes(KType.TOPIC, topic, configs={
            "cleanup.policy": ("APPEND", "delete"), "retention.bytes": ("SET", "999999"),
            "segment.bytes": ("DELETE", None)})])
        assert res == {"topic": {topic: "OK"}}, res
    finally:
        ka.close()
    cfg = describe(a, TOPIC, topic)
    assert cfg["cleanup.policy"].value == "compact,delete"
    assert cfg["retention.bytes"].value == "999999"
    assert (cfg["segment.bytes"].value, src(cfg["segment.bytes"])) == \
        ("1073741824", ConfigSource.DEFAULT_CONFIG)


def test_legacy_alter_configs_replaces_the_whole_set(broker):
    b = broker()
    topic = "legacy"
    create_topic(b, topic, segment_bytes=65536, retention_ms=111111)
    a = admin(b)
    legacy_alter(a, TOPIC, topic, {"retention.bytes": "777777", "cleanup.policy": "compact"})
    cfg = describe(a, TOPIC, topic)
    assert (cfg["retention.bytes"].value, src(cfg["retention.bytes"])) == \
        ("777777", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert cfg["cleanup.policy"].value == "compact"
    # not listed -> back to the defaults
    assert (cfg["segment.bytes"].value, src(cfg["segment.bytes"])) == \
        ("1073741824", ConfigSource.DEFAULT_CONFIG)
    assert (cfg["retention.ms"].value, src(cfg["retention.ms"])) == \
        ("604800000", ConfigSource.DEFAULT_CONFIG)
    # validate_only changes nothing
    legacy_alter(a, TOPIC, topic, {"retention.bytes": "5"}, validate_only=True)
    assert describe(a, TOPIC, topic)["retention.bytes"].value == "777777"
    # an invalid value rejects the whole request
    with pytest.raises(KafkaException) as ei:
        legacy_alter(a, TOPIC, topic, {"retention.bytes": "1", "segment.ms": "0"})
    assert kafka_error(ei).code() == KafkaError.INVALID_CONFIG
    assert describe(a, TOPIC, topic)["retention.bytes"].value == "777777"
    # an empty set clears every override
    legacy_alter(a, TOPIC, topic, {})
    cfg = describe(a, TOPIC, topic)
    assert all(src(e) == ConfigSource.DEFAULT_CONFIG for e in cfg.values()), \
        {n: src(e) for n, e in cfg.items() if src(e) != ConfigSource.DEFAULT_CONFIG}


@pytest.mark.parametrize("name,value,needle", [
    ("retention.ms", "abc", "retention.ms"),
    ("retention.ms", "-2", "retention.ms"),
    ("cleanup.policy", "bogus", "cleanup.policy"),
    ("min.cleanable.dirty.ratio", "1.5", "min.cleanable.dirty.ratio"),
    ("segment.bytes", "13", "segment.bytes"),
    ("compression.type", "brotli", "compression.type"),
    ("message.timestamp.type", "Now", "message.timestamp.type"),
    ("no.such.config", "1", "no.such.config"),
])
def test_invalid_topic_configs_are_rejected(broker, name, value, needle):
    b = broker()
    topic = "validated"
    create_topic(b, topic, retention_ms=222222)
    a = admin(b)
    for validate_only in (True, False):
        with pytest.raises(KafkaException) as ei:
            incremental(a, TOPIC, topic, [(name, AlterConfigOpType.SET, value)],
                        validate_only=validate_only)
        err = kafka_error(ei)
        assert err.code() == KafkaError.INVALID_CONFIG, err
        assert needle in err.str(), err
    # nothing changed
    cfg = describe(a, TOPIC, topic)
    assert cfg["retention.ms"].value == "222222"
    assert "no.such.config" not in cfg
    # CreateTopics validates the same way
    with pytest.raises(KafkaException) as ei:
        a.create_topics([NewTopic("bad-" + topic, 1, 1, config={name: value})])[
            "bad-" + topic].result(15)
    assert kafka_error(ei).code() == KafkaError.INVALID_CONFIG, ei.value


def test_validate_only_alter_changes_nothing(broker):
    b = broker()
    create_topic(b, "vo")
    a = admin(b)
    incremental(a, TOPIC, "vo", [("retention.ms", AlterConfigOpType.SET, "1000"),
                                 ("cleanup.policy", AlterConfigOpType.SET, "compact")],
                validate_only=True)
    cfg = describe(a, TOPIC, "vo")
    assert src(cfg["retention.ms"]) == ConfigSource.DEFAULT_CONFIG
    assert cfg["cleanup.policy"].value == "delete"
    with pytest.raises(KafkaException) as ei:
        incremental(a, TOPIC, "no-such-topic", [("retention.ms", AlterConfigOpType.SET, "1")])
    assert kafka_error(ei).code() == KafkaError.UNKNOWN_TOPIC_OR_PART, ei.value


def test_broker_configs_describe_and_dynamic_defaults(broker):
    b = broker(overrides={"log.retention.hours": 48, "num.partitions": 2})
    a = admin(b)
    create_topic(b, "plain")
    create_topic(b, "pinned", retention_ms=5555)
    cfg = describe(a, BROKER, "1")
    e = cfg["log.retention.hours"]
    assert (e.value, src(e)) == ("48", ConfigSource.STATIC_BROKER_CONFIG)
    assert raw_describe(b, 4, "1", ["log.retention.hours"])["log.retention.hours"].synonyms == [
        ("log.retention.hours", "48", ConfigSource.STATIC_BROKER_CONFIG),
        ("log.retention.hours", "168", ConfigSource.DEFAULT_CONFIG)]
    e = cfg["num.partitions"]
    assert (e.value, src(e), e.is_read_only) == ("2", ConfigSource.STATIC_BROKER_CONFIG, True)
    assert not cfg["log.retention.ms"].is_read_only
    assert cfg["log.cleanup.policy"].value == "delete"

    # a dynamic per-broker log default
    incremental(a, BROKER, "1", [("log.retention.ms", AlterConfigOpType.SET, "3600000"),
                                 ("log.cleanup.policy", AlterConfigOpType.SET, "compact,delete")])
    cfg = describe(a, BROKER, "1")
    e = cfg["log.retention.ms"]
    assert (e.value, src(e)) == ("3600000", ConfigSource.DYNAMIC_BROKER_CONFIG)
    assert raw_describe(b, 4, "1", ["log.retention.ms"])["log.retention.ms"].synonyms[0] == \
        ("log.retention.ms", "3600000", ConfigSource.DYNAMIC_BROKER_CONFIG)
    assert (cfg["log.cleanup.policy"].value, src(cfg["log.cleanup.policy"])) == \
        ("compact,delete", ConfigSource.DYNAMIC_BROKER_CONFIG)
    # ... flows into the topics' effective values, below their own overrides
    t = describe(a, TOPIC, "plain")
    assert (t["retention.ms"].value, src(t["retention.ms"])) == \
        ("3600000", ConfigSource.DYNAMIC_BROKER_CONFIG)
    assert (t["cleanup.policy"].value, src(t["cleanup.policy"])) == \
        ("compact,delete", ConfigSource.DYNAMIC_BROKER_CONFIG)
    t = describe(a, TOPIC, "pinned")
    assert (t["retention.ms"].value, src(t["retention.ms"])) == \
        ("5555", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    # ... and is live: a keyless record to the now compacted "plain" topic is refused
    d = Deliveries()
    p = producer(b)
    p.produce("plain", value=b"keyless", partition=0, on_delivery=d)
    flush(p)
    assert d.reports[0][0] is not None and d.reports[0][0].code() == KafkaError.INVALID_RECORD

    # read-only broker settings -> INVALID_REQUEST; bad values -> INVALID_CONFIG
    with pytest.raises(KafkaException) as ei:
        incremental(a, BROKER, "1", [("num.partitions", AlterConfigOpType.SET, "5")])
    assert kafka_error(ei).code() == KafkaError.INVALID_REQUEST, ei.value
    with pytest.raises(KafkaException) as ei:
        incremental(a, BROKER, "1", [("log.retention.ms", AlterConfigOpType.SET, "soon")])
    assert kafka_error(ei).code() == KafkaError.INVALID_CONFIG, ei.value
    assert describe(a, BROKER, "1")["num.partitions"].value == "2"
    # legacy AlterConfigs replaces the broker's whole dynamic set too
    legacy_alter(a, BROKER, "1", {"log.retention.bytes": "5000000",
                                  "log.retention.ms": "3600000"})
    cfg = describe(a, BROKER, "1")
    assert (cfg["log.retention.bytes"].value, src(cfg["log.retention.bytes"])) == \
        ("5000000", ConfigSource.DYNAMIC_BROKER_CONFIG)
    assert (cfg["log.cleanup.policy"].value, src(cfg["log.cleanup.policy"])) == \
        ("delete", ConfigSource.DEFAULT_CONFIG)
    with pytest.raises(KafkaException) as ei:
        legacy_alter(a, BROKER, "1", {"broker.id": "7"})
    assert kafka_error(ei).code() == KafkaError.INVALID_REQUEST, ei.value

    # the cluster-wide default ("" resource) through kafka-python raw requests
    ka = kadmin(b)
    try:
        resp = raw(ka, IncrementalAlterConfigsRequest(
            resources=[(4, "", [("log.retention.ms", 0, "7200000")])], validate_only=False))
        assert [r.error_code for r in resp.responses] == [0], resp
        # the per-broker value still wins ...
        assert describe(a, TOPIC, "plain")["retention.ms"].value == "3600000"
        # ... until it is deleted
        incremental(a, BROKER, "1", [("log.retention.ms", AlterConfigOpType.DELETE, None)])
        t = describe(a, TOPIC, "plain")
        assert (t["retention.ms"].value, src(t["retention.ms"])) == \
            ("7200000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
        e = describe(a, BROKER, "1")["log.retention.ms"]
        assert (e.value, src(e)) == ("7200000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
        # another broker id -> error
        resp = raw(ka, DescribeConfigsRequest(resources=[(4, "2", None)], include_synonyms=False))
        assert resp.results[0].error_code == Errors.InvalidRequestError.errno, resp
        # a read-only key on the cluster default is refused too
        resp = raw(ka, IncrementalAlterConfigsRequest(
            resources=[(4, "", [("num.partitions", 0, "3")])], validate_only=False))
        assert [r.error_code for r in resp.responses] == [Errors.InvalidRequestError.errno], resp
    finally:
        ka.close()


def test_describe_cluster_default_broker_resource(broker):
    b = broker()
    a = admin(b)
    incremental(a, BROKER, "1", [("log.retention.ms", AlterConfigOpType.SET, "3600000")])
    ka = kadmin(b)
    try:
        resp = raw(ka, IncrementalAlterConfigsRequest(
            resources=[(4, "", [("log.retention.ms", 0, "7200000")])], validate_only=False))
        assert [r.error_code for r in resp.responses] == [0], resp
        # Kafka (ConfigHelper.describeConfigs): the "" resource lists the dynamic defaults only.
        resp = raw(ka, DescribeConfigsRequest(resources=[(4, "", None)], include_synonyms=True))
        (result,) = resp.results
        assert result.error_code == 0, result
        assert [(c.name, c.value, c.config_source) for c in result.configs] == \
            [("log.retention.ms", "7200000", 3)]  # DYNAMIC_DEFAULT_BROKER_CONFIG
    finally:
        ka.close()


@pytest.mark.parametrize("how", ["graceful", "kill9"])
def test_configs_persist_across_restart(broker, how):
    b = broker(overrides={"log.retention.hours": 48})
    a = admin(b)
    create_topic(b, "kept", segment_bytes=8192)
    incremental(a, TOPIC, "kept", [("retention.ms", AlterConfigOpType.SET, "424242"),
                                   ("cleanup.policy", AlterConfigOpType.APPEND, "compact")])
    incremental(a, BROKER, "1", [("log.retention.bytes", AlterConfigOpType.SET, "123456789")])

    def snapshot():
        t = describe(admin(b), TOPIC, "kept")
        br = describe(admin(b), BROKER, "1")
        return (
            {n: (e.value, src(e)) for n, e in t.items()},
            (br["log.retention.bytes"].value, src(br["log.retention.bytes"])),
            (br["log.retention.hours"].value, src(br["log.retention.hours"])),
        )

    before = snapshot()
    assert before[0]["retention.ms"] == ("424242", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert before[0]["cleanup.policy"] == ("delete,compact", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert before[0]["segment.bytes"] == ("8192", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert before[0]["retention.bytes"] == ("123456789", ConfigSource.DYNAMIC_BROKER_CONFIG)
    assert before[1] == ("123456789", ConfigSource.DYNAMIC_BROKER_CONFIG)
    if how == "kill9":
        b.kill9()
    else:
        b.stop()
    b.restart()
    assert snapshot() == before
    # still effective: compact,delete refuses keyless records
    d = Deliveries()
    p = producer(b)
    p.produce("kept", value=b"keyless", partition=0, on_delivery=d)
    flush(p)
    assert d.reports[0][0] is not None and d.reports[0][0].code() == KafkaError.INVALID_RECORD


def test_lowering_retention_live_deletes_old_data(broker):
    b = broker(overrides=FAST)
    topic = "live"
    create_topic(b, topic, segment_bytes=1024)
    p = producer(b, **{"linger.ms": 0})
    d = Deliveries()
    old_ts = now_ms() - 2 * HOUR_MS
    produce_each(p, topic, [(b"o", b"x" * 300, old_ts)] * 12, d)
    produce_each(p, topic, [(b"n", b"y" * 900, None)] * 2, d)
    # Default retention (7 days): nothing goes, even after a few maintenance rounds.
    assert watermarks(b, topic) == (0, 14)
    a = admin(b)
    incremental(a, TOPIC, topic, [("retention.ms", AlterConfigOpType.SET, str(HOUR_MS))])
    wait_until(lambda: watermarks(b, topic)[0] == 12, 20, "retention after lowering retention.ms")
    assert [o for o, _, _ in read_all(b, topic)] == [12, 13]

    # The same through a dynamic broker default, on another topic without an override.
    create_topic(b, "live2", segment_bytes=1024)
    produce_each(p, "live2", [(b"o", b"x" * 300, old_ts)] * 6, d)
    produce_each(p, "live2", [(b"n", b"y" * 900, None)], d)
    assert watermarks(b, "live2") == (0, 7)
    incremental(a, BROKER, "1", [("log.retention.ms", AlterConfigOpType.SET, str(HOUR_MS))])
    wait_until(lambda: watermarks(b, "live2")[0] == 6, 20, "retention after a broker default")


# --------------------------------------------------------------------------- __consumer_offsets


def parse_offset_commit(key, value):
    """(group, topic, partition) and the committed offset of an OffsetCommit record, or None
    for other record kinds (group metadata)."""
    (version,) = struct.unpack_from(">h", key, 0)
    if version not in (0, 1):
        return None
    pos = 2
    out = []
    for _ in range(2):
        (n,) = struct.unpack_from(">h", key, pos)
        out.append(key[pos + 2:pos + 2 + n].decode())
        pos += 2 + n
    (partition,) = struct.unpack_from(">i", key, pos)
    offset = None if value is None else struct.unpack_from(">q", value, 2)[0]
    return (out[0], out[1], partition), offset


def test_consumer_offsets_topic_is_compacted(broker):
    b = broker(overrides={**FAST, "offsets.topic.segment.bytes": 2048,
                          "offsets.topic.num.partitions": 1})
    create_topic(b, "tracked")
    assert produce_n(b, "tracked", 5) == list(range(5))
    group = "compacted-group"
    key = (group, "tracked", 0)

    def commit_range(first, last, group=group):
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                      "enable.auto.commit": False})
        try:
            for i in range(first, last + 1):
                c.commit(offsets=[TopicPartition("tracked", 0, i)], asynchronous=False)
        finally:
            c.close()

    def ours():
        """[(log offset, committed offset)] of our group's commit records, read directly from
        the assigned `__consumer_offsets` partition."""
        out = []
        for o, k, v in read_from_low(b, "__consumer_offsets"):
            parsed = parse_offset_commit(k, v)
            if parsed and parsed[0] == key:
                out.append((o, parsed[1]))
        return out

    n = 300
    commit_range(1, n)
    end1 = watermarks(b, "__consumer_offsets")[1]
    assert end1 >= n
    recs = wait_until(lambda: (r := ours()) and len(r) < n // 4 and r, 30,
                      "__consumer_offsets compaction to drop old commits")
    assert recs[-1][1] == n, recs[-3:]
    assert [c for _, c in recs] == sorted(c for _, c in recs)  # only the newest survive
    segs = segment_files(b, "__consumer_offsets")
    assert len(segs) >= 2, segs
    size = sum(s for _, s in segs)
    assert size < n * 100 / 2, f"__consumer_offsets-0 holds {size} bytes in {segs}"

    # A second round: the earlier cleaned (now tiny) segments get merged, so the number of
    # segment files stays bounded instead of growing with every rolled segment.
    def below_end1():
        return len([s for s in segment_files(b, "__consumer_offsets") if s[0] < end1])

    commit_range(n + 1, n + 150)
    # Cleaned groups are merged up to segment.bytes (Kafka's groupSegmentsBySize): the round-1
    # segments end up in at most two (the last round-1 one was the big active segment), however
    # many passes ran while round 1 was being committed.
    # The cleaner only runs while something is dirty. Whether the last round-1 segments are
    # cleaned by a pass that runs before all of round 2 is, or by the final one (which leaves
    # them cleaned but separate, with nothing dirty left to start another pass), depends on how
    # passes and commits interleave; so another group keeps committing, a segment's worth at a
    # time, until a pass has merged them. Our group's records are unaffected.
    filler = [0]

    def merged():
        if below_end1() <= 2:
            return True
        commit_range(filler[0] + 1, filler[0] + 20, group="filler-group")
        filler[0] += 20
        return False

    wait_until(merged, 30, "cleaned __consumer_offsets segments to merge", interval=0.3)
    wait_until(lambda: (r := ours()) and len(r) < n // 4 and r[-1][1] == n + 150, 30,
               "second compaction of __consumer_offsets")

    b.restart()
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        (tp,) = c.committed([TopicPartition("tracked", 0)], timeout=15)
        assert tp.offset == n + 150, tp
    finally:
        c.close()
    # the compacted log reads back the same after the restart
    assert ours()[-1][1] == n + 150
