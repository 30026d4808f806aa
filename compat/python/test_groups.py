"""Consumer groups (classic protocol) against a real sluice broker, with Python clients.

Covers issue #3's proof: a confluent-kafka group that survives a SIGKILLed member with no
gaps; kafka-python's group flow and resume-after-commit (also across broker restarts);
the admin views of both clients; static membership; commit metadata round trips.

Every broker runs with `group.initial.rebalance.delay.ms=0` and
`group.min.session.timeout.ms=1000` so groups form at once and members may use short
session timeouts. Producers keep idempotence off (sluice has no InitProducerId yet).

Client notes: confluent-kafka 2.16 has no `delete_consumer_group_offsets`, so OffsetDelete
goes through kafka-python's `delete_group_offsets`; kafka-python 3.0 names its group admin
calls `list_groups` / `describe_groups` / `list_group_offsets` / `delete_groups`. The
confluent-kafka members run as `_group_child.py` subprocesses where a test kills or restarts
them.
"""

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import kafka.errors as KErrors
import pytest
from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupType,
    ConsumerGroupTopicPartitions,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KTP
from kafka.structs import OffsetAndMetadata

from conftest import wait_until

pytestmark = pytest.mark.timeout(90)

CHILD = str(Path(__file__).resolve().parent / "_group_child.py")

GROUP_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
}


# --------------------------------------------------------------------------- helpers


def admin(b):
    return AdminClient({"bootstrap.servers": b.bootstrap})


def kadmin(b):
    return KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=15000)


def create_topic(b, topic, partitions):
    a = admin(b)
    a.create_topics([NewTopic(topic, partitions, 1)])[topic].result(15)
    wait_until(
        lambda: (md := a.list_topics(timeout=10).topics.get(topic)) is not None
        and md.error is None
        and len(md.partitions) == partitions
        and all(p.leader == 1 for p in md.partitions.values()),
        15,
        f"topic {topic} with {partitions} led partitions in metadata",
    )


def produce(b, topic, values_by_partition):
    """Produce {partition: [value, ...]} (acks=all) and return {(partition, offset): value}."""
    p = Producer({
        "bootstrap.servers": b.bootstrap,
        "enable.idempotence": False,
        "linger.ms": 5,
        "message.timeout.ms": 20000,
    })
    acked = {}
    errors = []

    def report(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[(msg.partition(), msg.offset())] = msg.value().decode()

    for part, values in values_by_partition.items():
        for v in values:
            p.produce(topic, value=v.encode(), partition=part, on_delivery=report)
            p.poll(0)
    assert p.flush(30) == 0, "records still undelivered after 30s"
    assert not errors, errors
    return acked


def end_offsets(b, topic, partitions):
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "sluice-compat-watermarks"})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        c.close()


def committed_offsets(a, group):
    """{(topic, partition): (offset, metadata)} from AdminClient.list_consumer_group_offsets
    (librdkafka reports empty metadata as None; normalised to "")."""
    res = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(15)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, (tp, tp.error)
        out[(tp.topic, tp.partition)] = (tp.offset, tp.metadata or "")
    return out


def ck_sent(metadata):
    """What confluent-kafka puts on the wire for commit metadata `metadata`: its
    TopicPartition -> C conversion sets `metadata_size = strlen(metadata) + 1`, so the
    terminating NUL is committed too (librdkafka hands it back as a C string, hiding it;
    other clients see it)."""
    return metadata + "\x00"


def group_ids(a, states=None, types=None):
    kw = {"states": states} if states is not None else {}
    if types is not None:
        kw["types"] = types
    res = a.list_consumer_groups(request_timeout=15, **kw).result(15)
    assert not res.errors, res.errors
    return {g.group_id for g in res.valid}


def describe(a, group):
    return a.describe_consumer_groups([group], request_timeout=15)[group].result(15)


def assert_kafka_error(fut, code):
    with pytest.raises(KafkaException) as ei:
        fut.result(15)
    assert ei.value.args[0].code() == code, ei.value.args[0]


class Child:
    """A `_group_child.py` process (one confluent-kafka group member)."""

    def __init__(self, tmp_path, name, b, topic, group, instance_id=None, session_ms=6000):
        self.name = name
        self.out = tmp_path / f"{name}.out"
        self.events_path = Path(str(self.out) + ".events")
        self.log_path = tmp_path / f"{name}.log"
        argv = [sys.executable, CHILD, b.bootstrap, topic, group, str(self.out),
                "--session-ms", str(session_ms)]
        if instance_id:
            argv += ["--instance-id", instance_id]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=str(tmp_path))

    def _lines(self, path):
        try:
            return path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def check_alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"child {self.name} exited with {self.proc.returncode}\n"
                                 f"{self.describe()}")

    def events(self):
        return self._lines(self.events_path)

    def count(self, kind):
        return sum(1 for e in self.events() if e.split(" ", 1)[0] == kind)

    def assignment(self):
        """Current assignment per the rebalance callbacks (a set of partitions)."""
        current = set()
        for e in self.events():
            kind, _, rest = e.partition(" ")
            if kind == "assign":
                current = {int(p) for p in rest.split(",") if p}
            elif kind in ("revoke", "lost"):
                current = set()
        return current

    def records(self):
        """[(partition, offset, value)] in the order this child consumed them (complete
        lines only: a SIGKILL may leave a torn last line)."""
        text = self.out.read_text() if self.out.exists() else ""
        out = []
        for line in text.split("\n")[:-1]:
            p, o, v = line.split(" ", 2)
            out.append((int(p), int(o), v))
        return out

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout=20):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"child {self.name} ignored SIGTERM\n{self.describe()}")
        assert rc == 0, f"child {self.name} exited with {rc}\n{self.describe()}"

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def describe(self):
        try:
            log = self.log_path.read_text()[-3000:]
        except OSError:
            log = ""
        return f"--- {self.name} events ---\n" + "\n".join(self.events()[-30:]) + \
            f"\n--- {self.name} output ---\n{log}"


@pytest.fixture
def children(tmp_path):
    """Factory for Child processes; every one still running is SIGKILLed at teardown."""
    started = []

    def make(name, *args, **kwargs):
        c = Child(tmp_path, name, *args, **kwargs)
        started.append(c)
        return c

    yield make
    for c in started:
        c.cleanup()


def wait_children(children_, cond, timeout, what):
    def check():
        for c in children_:
            c.check_alive()
        return cond()
    try:
        return wait_until(check, timeout, what, interval=0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}\n" + "\n".join(c.describe() for c in children_)) from None


def stable_split(members, partitions):
    """True when every member holds a non-empty assignment, pairwise disjoint, covering
    `partitions`."""
    assignments = [m.assignment() for m in members]
    if not all(assignments):
        return False
    union = set().union(*assignments)
    return union == set(partitions) and sum(map(len, assignments)) == len(partitions)


# --------------------------------------------------------------------------- 1. failover


def test_confluent_group_survives_sigkilled_member(broker, children):
    b = broker(overrides=GROUP_OVERRIDES)
    topic, group, nparts, session_ms = "cg-failover", "cg-failover-group", 6, 4000
    create_topic(b, topic, nparts)

    members = [children(f"member{i}", b, topic, group, session_ms=session_ms) for i in range(3)]
    wait_children(members, lambda: stable_split(members, range(nparts)), 30,
                  "3 members to split 6 partitions")
    assert sorted(len(m.assignment()) for m in members) == [2, 2, 2]

    acked = produce(b, topic, {p: [f"a-{p}-{i}" for i in range(40)] for p in range(nparts)})

    def consumed():
        return {(p, o): v for m in members for (p, o, v) in m.records()}

    wait_children(members, lambda: set(acked) <= set(consumed()), 30, "first batch consumed")
    # the three members each consumed (only) their own partitions
    for m in members:
        assert {p for (p, _, _) in m.records()} == m.assignment()

    victim, survivors = members[0], members[1:]
    victim_parts = victim.assignment()
    victim.kill9()
    killed_at = time.monotonic()

    acked.update(produce(b, topic, {p: [f"b-{p}-{i}" for i in range(40)] for p in range(nparts)}))

    wait_children(survivors, lambda: stable_split(survivors, range(nparts)),
                  session_ms / 1000 + 15, "survivors to take over all 6 partitions")
    took = time.monotonic() - killed_at
    assert took < session_ms / 1000 + 8, f"takeover took {took:.1f}s"
    assert victim_parts <= set().union(*(s.assignment() for s in survivors))

    wait_children(survivors, lambda: set(acked) <= set(consumed()), 30, "every record consumed")
    seen = consumed()
    # at-least-once without gaps: every offset of every partition consumed, values intact
    ends = end_offsets(b, topic, nparts)
    assert ends == {p: 80 for p in range(nparts)}
    assert set(seen) == {(p, o) for p in range(nparts) for o in range(80)}
    assert all(seen[k] == v for k, v in acked.items())
    for s in survivors:  # a member's own stream is in offset order per partition
        for p in range(nparts):
            offs = [o for (q, o, _) in s.records() if q == p]
            assert offs == sorted(offs), (s.name, p)

    for s in survivors:
        s.terminate()
    a = admin(b)
    assert committed_offsets(a, group) == {(topic, p): (80, "") for p in range(nparts)}
    d = describe(a, group)
    assert d.state == ConsumerGroupState.EMPTY and d.members == []


# --------------------------------------------------------------------------- 2. kafka-python


def kconsumer(b, group, **kw):
    conf = dict(bootstrap_servers=b.bootstrap, group_id=group, enable_auto_commit=False,
                auto_offset_reset="earliest", fetch_max_wait_ms=100,
                session_timeout_ms=6000, heartbeat_interval_ms=500, request_timeout_ms=15000)
    conf.update(kw)
    return KafkaConsumer(**conf)


def kproduce(b, topic, values_by_partition):
    return produce(b, topic, values_by_partition)


def ksubscribe(c, topic):
    """Subscribe once the consumer's metadata knows `topic`. kafka-python 3.0.12 loses a
    rebalance when a leader that assigned without the topic's metadata rejoins on the
    metadata update while an earlier poll() left that join in flight: need_rejoin() turns
    false once the new assignment is computed, so the finished SyncGroup is never applied,
    heartbeats stay disabled and the member is evicted by session timeout (client bug, seen
    only with group.initial.rebalance.delay.ms=0)."""
    wait_until(lambda: c.partitions_for_topic(topic), 15, f"metadata for {topic}")
    c.subscribe([topic])


class KWorker(threading.Thread):
    """A kafka-python group member polling in its own thread until told to commit, then
    to close."""

    def __init__(self, b, group, topic, name):
        super().__init__(name=name, daemon=True)
        self.consumer = kconsumer(b, group, client_id=name)
        ksubscribe(self.consumer, topic)
        self.topic = topic
        self.records = []
        self.assignment = set()
        self.commit_offsets = None  # set by the test: {TopicPartition: OffsetAndMetadata}
        self.committed = threading.Event()
        self.close_req = threading.Event()
        self.error = None
        self._lock = threading.Lock()

    def run(self):
        try:
            while not self.close_req.is_set():
                batch = self.consumer.poll(timeout_ms=100)
                with self._lock:
                    for recs in batch.values():
                        self.records.extend(recs)
                    self.assignment = {tp.partition for tp in self.consumer.assignment()}
                if self.commit_offsets is not None and not self.committed.is_set():
                    try:
                        self.consumer.commit(self.commit_offsets)
                        self.committed.set()
                    except (KErrors.RebalanceInProgressError, KErrors.CommitFailedError):
                        # A rejoin kafka-python started on its own (it rejoins when its
                        # metadata snapshot moves) raced the commit; as the error says,
                        # poll() to finish the rebalance, then commit again.
                        pass
        except Exception as e:  # surfaced by the test
            self.error = e
        finally:
            self.consumer.close()

    def snapshot(self):
        with self._lock:
            return set(self.assignment), list(self.records)


def test_kafka_python_group_split_commit_resume(broker):
    b = broker(overrides=GROUP_OVERRIDES)
    topic, group, nparts = "kp-group", "kp-group-g", 4
    create_topic(b, topic, nparts)

    workers = [KWorker(b, group, topic, f"kp-member-{i}") for i in range(2)]
    for w in workers:
        w.start()
    try:
        def split():
            for w in workers:
                assert w.error is None, w.error
            a0, a1 = workers[0].snapshot()[0], workers[1].snapshot()[0]
            return a0 and a1 and not (a0 & a1) and a0 | a1 == set(range(nparts))

        wait_until(split, 30, "two kafka-python members to split 4 partitions")
        acked = kproduce(b, topic, {p: [f"v-{p}-{i}" for i in range(25)] for p in range(nparts)})

        def all_consumed():
            for w in workers:
                assert w.error is None, w.error
            return sum(len(w.snapshot()[1]) for w in workers) >= len(acked)

        wait_until(all_consumed, 30, "100 records consumed by the group")
        got = {}
        for w in workers:
            assignment, records = w.snapshot()
            assert records, f"{w.name} consumed nothing"
            assert {r.partition for r in records} == assignment
            for r in records:
                assert (r.partition, r.offset) not in got, "record consumed twice"
                got[(r.partition, r.offset)] = r.value.decode()
        assert got == acked

        # each member commits its own partitions, deliberately short of the end (p -> 25 - p)
        expected = {}
        for w in workers:
            offsets = {KTP(topic, p): OffsetAndMetadata(25 - p, f"kp-{p}", -1)
                       for p in w.snapshot()[0]}
            expected.update({p: 25 - p for p in w.snapshot()[0]})
            w.commit_offsets = offsets
        for w in workers:
            assert w.committed.wait(15), f"{w.name} did not commit"
            assert w.error is None, w.error
    finally:
        for w in workers:
            w.close_req.set()
        for w in workers:
            w.join(20)
    assert not any(w.is_alive() for w in workers)
    assert all(w.error is None for w in workers), [w.error for w in workers]

    ka = kadmin(b)
    try:
        offs = ka.list_group_offsets(group)[group]
        assert {tp.partition: (om.offset, om.metadata) for tp, om in offs.items()} == \
            {p: (25 - p, f"kp-{p}") for p in range(nparts)}
    finally:
        ka.close()

    # more records after the commits; a new member resumes exactly at the committed offsets
    acked.update(kproduce(b, topic, {p: [f"w-{p}"] for p in range(nparts)}))
    c = kconsumer(b, group)
    try:
        tps = [KTP(topic, p) for p in range(nparts)]
        assert {tp.partition: c.committed(tp) for tp in tps} == expected
        om = c.committed(tps[1], metadata=True)
        assert (om.offset, om.metadata) == (24, "kp-1")
        ksubscribe(c, topic)
        want = sum(26 - expected[p] for p in range(nparts))
        records = []
        deadline = time.monotonic() + 30
        while len(records) < want:
            assert time.monotonic() < deadline, f"resumed {len(records)}/{want} records"
            for recs in c.poll(timeout_ms=200).values():
                records.extend(recs)
        first = {}
        for r in records:
            first.setdefault(r.partition, r.offset)
        assert first == expected
        assert sorted((r.partition, r.offset) for r in records) == \
            [(p, o) for p in range(nparts) for o in range(expected[p], 26)]
        assert all(acked[(r.partition, r.offset)] == r.value.decode() for r in records)
    finally:
        c.close()


@pytest.mark.parametrize("how", ["stop", "kill9"])
def test_kafka_python_resume_after_broker_restart(broker, how):
    b = broker(overrides=GROUP_OVERRIDES)
    topic, group = f"kp-restart-{how}", f"kp-restart-{how}-g"
    create_topic(b, topic, 2)
    acked = kproduce(b, topic, {p: [f"v-{p}-{i}" for i in range(20)] for p in range(2)})
    tps = [KTP(topic, 0), KTP(topic, 1)]

    c = kconsumer(b, group)
    ksubscribe(c, topic)
    try:
        records = []
        deadline = time.monotonic() + 30
        while len(records) < 40:
            assert time.monotonic() < deadline, f"consumed {len(records)}/40"
            for recs in c.poll(timeout_ms=200).values():
                records.extend(recs)
        c.commit({tps[0]: OffsetAndMetadata(12, "twelve", -1),
                  tps[1]: OffsetAndMetadata(20, "", -1)})
        if how == "kill9":
            # crash with the member still in the group; it leaves only after the restart
            b.kill9()
            b.start()
    finally:
        c.close()
    if how == "stop":
        b.restart()

    acked.update(kproduce(b, topic, {1: ["after"]}))
    c = kconsumer(b, group)
    try:
        assert [c.committed(tp) for tp in tps] == [12, 20]
        om = c.committed(tps[0], metadata=True)
        assert (om.offset, om.metadata) == (12, "twelve")
        ksubscribe(c, topic)
        records = []
        deadline = time.monotonic() + 30
        while len(records) < 9:
            assert time.monotonic() < deadline, f"resumed {len(records)}/9 records"
            for recs in c.poll(timeout_ms=200).values():
                records.extend(recs)
        assert sorted((r.partition, r.offset) for r in records) == \
            [(0, o) for o in range(12, 20)] + [(1, 20)]
        first = {}
        for r in records:
            first.setdefault(r.partition, r.offset)
        assert first == {0: 12, 1: 20}
        assert all(acked[(r.partition, r.offset)] == r.value.decode() for r in records)
        c.commit()
    finally:
        c.close()
    ka = kadmin(b)
    try:
        offs = ka.list_group_offsets(group)[group]
        assert {tp.partition: om.offset for tp, om in offs.items()} == {0: 20, 1: 21}
    finally:
        ka.close()


# --------------------------------------------------------------------------- 3. admin views


def ccconsumer(b, group, **conf):
    base = {
        "bootstrap.servers": b.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 100,
    }
    base.update(conf)
    return Consumer(base)


def test_admin_views_of_groups(broker):
    b = broker(overrides=GROUP_OVERRIDES)
    topic, group, nparts = "adm-topic", "adm-group", 4
    create_topic(b, topic, nparts)
    acked = produce(b, topic, {p: [f"v-{p}-{i}" for i in range(10)] for p in range(nparts)})
    a, ka = admin(b), kadmin(b)
    cs = [ccconsumer(b, group, **{"client.id": f"adm-c{i}"}) for i in range(2)]
    try:
        for c in cs:
            c.subscribe([topic])
        got = {}

        def poll_all():
            for c in cs:
                m = c.poll(0.05)
                if m is not None:
                    assert m.error() is None, m.error()
                    got[(m.partition(), m.offset())] = m.value().decode()

        def split():
            poll_all()
            a0, a1 = ({tp.partition for tp in c.assignment()} for c in cs)
            return a0 and a1 and not (a0 & a1) and a0 | a1 == set(range(nparts))

        wait_until(split, 30, "two members to split 4 partitions", interval=0)
        wait_until(lambda: poll_all() or set(got) >= set(acked), 30, "all records consumed",
                   interval=0)
        assert got == acked
        for c in cs:
            c.commit(asynchronous=False)

        # ---- views of the running group
        d = describe(a, group)
        assert d.group_id == group
        assert d.state == ConsumerGroupState.STABLE
        assert not d.is_simple_consumer_group  # protocol type "consumer"
        assert d.partition_assignor in ("range", "roundrobin")
        assert len(d.members) == 2
        assert sorted(m.client_id for m in d.members) == ["adm-c0", "adm-c1"]
        member_parts = {m.client_id: {tp.partition for tp in m.assignment.topic_partitions}
                        for m in d.members}
        for i, c in enumerate(cs):
            assert member_parts[f"adm-c{i}"] == {tp.partition for tp in c.assignment()}
        assert all(tp.topic == topic for m in d.members for tp in m.assignment.topic_partitions)
        assert all(m.host for m in d.members)

        assert group in group_ids(a)
        assert group in group_ids(a, {ConsumerGroupState.STABLE})
        assert group not in group_ids(a, {ConsumerGroupState.EMPTY})
        assert group in group_ids(a, types={ConsumerGroupType.CLASSIC})
        assert group not in group_ids(a, types={ConsumerGroupType.CONSUMER})
        assert committed_offsets(a, group) == {(topic, p): (10, "") for p in range(nparts)}

        kd = ka.describe_groups([group])[group]
        assert kd["error"] is None
        assert (kd["group_state"], kd["protocol_type"]) == ("Stable", "consumer")
        assert kd["protocol_data"] == d.partition_assignor
        assert len(kd["members"]) == 2
        kparts = set()
        for m in kd["members"]:
            assert m["client_id"] in ("adm-c0", "adm-c1")
            assert m["member_metadata"]["topics"] == [topic]
            for t in m["member_assignment"]["assigned_partitions"]:
                assert t["topic"] == topic
                kparts.update(t["partitions"])
        assert kparts == set(range(nparts))
        klisted = {g["group_id"]: g for g in ka.list_groups()}
        assert (klisted[group]["protocol_type"], klisted[group]["group_state"]) == \
            ("consumer", "Stable")
        assert klisted[group]["group_type"] == "classic"
        assert group in {g["group_id"] for g in ka.list_groups(types_filter=["classic"])}
        assert group not in {g["group_id"] for g in ka.list_groups(types_filter=["consumer"])}

        # deleting an active group fails with NON_EMPTY_GROUP, through both clients
        assert_kafka_error(a.delete_consumer_groups([group], request_timeout=15)[group],
                           KafkaError.NON_EMPTY_GROUP)
        assert ka.delete_groups([group]) == {group: "NonEmptyGroupError"}
        # altering the offsets of an active group fails per partition (the admin's
        # generation -1 commit is not from a member): UNKNOWN_MEMBER_ID, nothing written
        res = a.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, 0, 1)])])[group].result(15)
        assert [(tp.partition, tp.error and tp.error.code()) for tp in res.topic_partitions] \
            == [(0, KafkaError.UNKNOWN_MEMBER_ID)]
        assert ka.alter_group_offsets(group, {KTP(topic, 0): OffsetAndMetadata(1, "", -1)}) \
            == {KTP(topic, 0): KErrors.UnknownMemberIdError}
        assert committed_offsets(a, group)[(topic, 0)] == (10, "")
        # OffsetDelete of a topic the running group subscribes to: GROUP_SUBSCRIBED_TO_TOPIC
        assert ka.delete_group_offsets(group, [KTP(topic, 2)]) == \
            {KTP(topic, 2): KErrors.GroupSubscribedToTopicError}
        assert committed_offsets(a, group)[(topic, 2)] == (10, "")
    finally:
        for c in cs:
            c.close()

    try:
        # ---- the group after its members left: Empty, offsets kept
        wait_until(lambda: describe(a, group).state == ConsumerGroupState.EMPTY, 15,
                   "group to become Empty")
        assert describe(a, group).members == []
        assert group in group_ids(a, {ConsumerGroupState.EMPTY})
        assert group not in group_ids(a, {ConsumerGroupState.STABLE})
        assert ka.describe_groups([group])[group]["group_state"] == "Empty"
        assert group in {g["group_id"] for g in ka.list_groups(states_filter=["Empty"])}
        assert group not in {g["group_id"] for g in ka.list_groups(states_filter=["Stable"])}

        # alter offsets (an OffsetCommit from the admin) round-trips, metadata included
        res = a.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, [
            TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 7, metadata="seven"),
        ])])[group].result(15)
        assert all(tp.error is None for tp in res.topic_partitions), res.topic_partitions
        assert committed_offsets(a, group) == {
            (topic, 0): (3, ""), (topic, 1): (7, "seven"), (topic, 2): (10, ""),
            (topic, 3): (10, ""),
        }
        koffs = ka.list_group_offsets(group)[group]
        assert {tp.partition: (om.offset, om.metadata) for tp, om in koffs.items()} == \
            {0: (3, ""), 1: (7, ck_sent("seven")), 2: (10, ""), 3: (10, "")}

        # OffsetDelete removes exactly one partition's offset
        assert ka.delete_group_offsets(group, [KTP(topic, 2)]) == \
            {KTP(topic, 2): KErrors.NoError}
        assert committed_offsets(a, group) == {
            (topic, 0): (3, ""), (topic, 1): (7, "seven"), (topic, 3): (10, ""),
        }
        c = ccconsumer(b, group)
        try:
            got = c.committed([TopicPartition(topic, p) for p in range(nparts)], timeout=15)
            assert [tp.offset for tp in got] == [3, 7, -1001, 10]
        finally:
            c.close()

        # delete the (empty) group: it disappears with its offsets
        assert a.delete_consumer_groups([group], request_timeout=15)[group].result(15) is None
        assert group not in group_ids(a)
        assert committed_offsets(a, group) == {}
        try:
            st = describe(a, group).state
            assert st == ConsumerGroupState.DEAD, st
        except KafkaException as e:
            assert e.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, e
        assert_kafka_error(a.delete_consumer_groups([group], request_timeout=15)[group],
                           KafkaError.GROUP_ID_NOT_FOUND)

        # kafka-python: a group that only has offsets (created by an admin commit) is
        # listed as Empty and deletable
        g2 = "adm-group-2"
        assert ka.alter_group_offsets(g2, {KTP(topic, 0): OffsetAndMetadata(5, "x", -1)}) == \
            {KTP(topic, 0): KErrors.NoError}
        assert {tp.partition: (om.offset, om.metadata)
                for tp, om in ka.list_group_offsets(g2)[g2].items()} == {0: (5, "x")}
        assert g2 in {g["group_id"] for g in ka.list_groups()}
        assert ka.describe_groups([g2])[g2]["group_state"] == "Empty"
        assert ka.delete_groups([g2]) == {g2: "OK"}
        assert ka.delete_groups([g2]) == {g2: "GroupIdNotFoundError"}
        assert g2 not in {g["group_id"] for g in ka.list_groups()}
        assert ka.list_group_offsets(g2)[g2] == {}
    finally:
        ka.close()


# --------------------------------------------------------------------------- 4. static members


def test_static_member_restart_causes_no_rebalance(broker, children):
    b = broker(overrides=GROUP_OVERRIDES)
    topic, group, nparts, session_ms = "static-topic", "static-group", 4, 6000
    create_topic(b, topic, nparts)

    s0 = children("static0", b, topic, group, instance_id="inst-0", session_ms=session_ms)
    s1 = children("static1", b, topic, group, instance_id="inst-1", session_ms=session_ms)
    wait_children([s0, s1], lambda: stable_split([s0, s1], range(nparts)), 30,
                  "two static members to split 4 partitions")
    before = {s.name: (s.count("assign"), s.count("revoke")) for s in (s0, s1)}
    parts1 = s1.assignment()

    s1.kill9()
    killed_at = time.monotonic()
    s1b = children("static1-again", b, topic, group, instance_id="inst-1",
                   session_ms=session_ms)
    wait_children([s0, s1b], lambda: s1b.assignment(), session_ms / 1000,
                  "the restarted static member to get an assignment")
    assert time.monotonic() - killed_at < session_ms / 1000
    assert s1b.assignment() == parts1

    # records flow to both members after the restart
    acked = produce(b, topic, {p: [f"v-{p}-{i}" for i in range(5)] for p in range(nparts)})
    wait_children([s0, s1b], lambda: {(p, o) for s in (s0, s1b) for (p, o, _) in s.records()}
                  >= set(acked), 30, "records consumed by both static members")
    # ... and through the old member's session timeout nothing rebalances
    wait_children([s0, s1b],
                  lambda: time.monotonic() - killed_at > session_ms / 1000 + 1.5,
                  session_ms / 1000 + 5, "the old session timeout to pass")
    assert (s0.count("assign"), s0.count("revoke")) == before["static0"], s0.describe()
    assert s0.count("lost") == 0
    assert (s1b.count("assign"), s1b.count("revoke")) == (1, 0), s1b.describe()
    assert s1b.assignment() == parts1 and s0.assignment() == set(range(nparts)) - parts1
    assert {p for (p, _, _) in s1b.records()} == parts1
    assert {p for (p, _, _) in s0.records()} == set(range(nparts)) - parts1

    d = describe(admin(b), group)
    assert d.state == ConsumerGroupState.STABLE
    assert sorted(m.group_instance_id for m in d.members) == ["inst-0", "inst-1"]


# --------------------------------------------------------------------------- 5. metadata


def test_commit_metadata_round_trip(broker):
    b = broker(overrides=GROUP_OVERRIDES)
    topic, group = "meta-topic", "meta-group"
    create_topic(b, topic, 2)
    c = ccconsumer(b, group)
    try:
        c.subscribe([topic])
        wait_until(lambda: c.poll(0.1) is None and len(c.assignment()) == 2, 30,
                   "the member to be assigned both partitions", interval=0)
        c.commit(offsets=[TopicPartition(topic, 0, 5, metadata="hello"),
                          TopicPartition(topic, 1, 2)], asynchronous=False)
        got = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=15)
        assert [(tp.partition, tp.offset, tp.metadata) for tp in got] == \
            [(0, 5, "hello"), (1, 2, None)]
    finally:
        c.close()

    c = ccconsumer(b, group)
    try:
        got = c.committed([TopicPartition(topic, 0)], timeout=15)
        assert (got[0].offset, got[0].metadata) == (5, "hello")
    finally:
        c.close()
    assert committed_offsets(admin(b), group)[(topic, 0)] == (5, "hello")
    ka = kadmin(b)
    try:
        om = ka.list_group_offsets(group)[group][KTP(topic, 0)]
        assert (om.offset, om.metadata) == (5, ck_sent("hello"))
    finally:
        ka.close()


def test_empty_group_offsets_expire_after_retention(broker):
    """offsets.retention.minutes: once a group is empty and its newest commit is older than the
    retention, its offsets are deleted (and the group with them)."""
    b = broker(overrides={"offsets.retention.minutes": "1",
                          "offsets.retention.check.interval.ms": "500"})
    create_topic(b, "expiring", 1)
    a = admin(b)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "short-lived",
                  "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("expiring", 0, 3)], asynchronous=False)
    c.close()
    committed_at = time.monotonic()
    assert committed_offsets(a, "short-lived") == {("expiring", 0): (3, "")}
    # Gone within a few check intervals after the minute, and not before it.
    wait_until(lambda: committed_offsets(a, "short-lived") == {}, 90,
               "the empty group's offsets to expire")
    assert time.monotonic() - committed_at >= 55
    assert "short-lived" not in group_ids(a)


def test_internal_topic_is_marked_and_protected(broker):
    """__consumer_offsets shows as internal in Metadata and clients cannot delete it."""
    b = broker()
    create_topic(b, "for-groups", 1)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "makes-offsets-topic",
                  "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("for-groups", 0, 1)], asynchronous=False)
    c.close()
    ka = kadmin(b)
    try:
        described = {t.get("topic", t.get("name")): t for t in ka.describe_topics(["__consumer_offsets", "for-groups"])}
        assert described["__consumer_offsets"]["is_internal"] is True
        assert len(described["__consumer_offsets"]["partitions"]) == 50
        assert described["for-groups"]["is_internal"] is False
    finally:
        ka.close()
    a = admin(b)
    fut = a.delete_topics(["__consumer_offsets"])["__consumer_offsets"]
    with pytest.raises(KafkaException):
        fut.result(15)
    assert "__consumer_offsets" in a.list_topics(timeout=10).topics
    # Committed offsets are still there.
    assert committed_offsets(a, "makes-offsets-topic") == {("for-groups", 0): (1, "")}
