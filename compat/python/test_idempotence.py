"""Idempotent producers (issue #4) with kafka-python 3.x, whose default producer is idempotent.

A fault-injecting TCP proxy sits between the client and the broker; the broker advertises the
proxy, so every client connection goes through it. The proxy parses the Kafka framing both ways,
remembers the correlation ids of Produce requests, and drops every 7th Produce response while
cutting the connection, so the client retries batches the broker already appended. The partition
must still hold every value exactly once, in order, also across a graceful restart and a kill -9
in the middle of the stream.

Plus the topic-config checks as kafka-python sees them: max.message.bytes, LogAppendTime,
message.timestamp.before/after.max.ms.
"""

import socket
import struct
import threading
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as Errors
from kafka.admin import NewTopic

from conftest import wait_until

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------------- proxy


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("eof")
        buf += chunk
    return bytes(buf)


def _read_frame(sock):
    size = _recv_exact(sock, 4)
    (n,) = struct.unpack(">i", size)
    if n < 0 or n > 256 * 1024 * 1024:
        raise ConnectionError(f"implausible frame size {n}")
    return size + _recv_exact(sock, n)


class FaultProxy:
    """Forwards Kafka connections to `upstream_port`; while `faulty`, every `drop_every`-th
    Produce response is dropped and its connection cut (both sides)."""

    def __init__(self, drop_every=7):
        self.drop_every = drop_every
        self.upstream_port = None
        self.faulty = False
        self.drop_all = False  # drop every Produce response (and cut its connection)
        self.lock = threading.Lock()
        self.produce_responses = 0
        self.dropped = 0
        self.accepted = 0
        self.refused = 0
        self.conns = set()
        self.closed = False
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def stats(self):
        return (f"proxy: {self.accepted} accepted, {self.refused} refused upstream, "
                f"{self.produce_responses} produce responses, {self.dropped} dropped")

    def _accept_loop(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._start_conn, args=(client,), daemon=True).start()

    def _start_conn(self, client):
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:
            with self.lock:
                self.refused += 1
            client.close()
            return
        upstream.settimeout(None)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = {"client": client, "upstream": upstream, "ids": set(), "lock": threading.Lock()}
        with self.lock:
            if self.closed:
                self._cut(conn)
                return
            self.conns.add(id(conn))
        threading.Thread(target=self._requests, args=(conn,), daemon=True).start()
        self._responses(conn)

    def _cut(self, conn):
        for s in (conn["client"], conn["upstream"]):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        with self.lock:
            self.conns.discard(id(conn))

    def _requests(self, conn):
        try:
            while True:
                frame = _read_frame(conn["client"])
                if len(frame) >= 12:
                    api_key, _version, correlation_id = struct.unpack(">hhi", frame[4:12])
                    if api_key == 0:
                        with conn["lock"]:
                            conn["ids"].add(correlation_id)
                conn["upstream"].sendall(frame)
        except OSError:
            pass
        self._cut(conn)

    def _responses(self, conn):
        try:
            while True:
                frame = _read_frame(conn["upstream"])
                if len(frame) >= 8:
                    (correlation_id,) = struct.unpack(">i", frame[4:8])
                    with conn["lock"]:
                        is_produce = correlation_id in conn["ids"]
                        conn["ids"].discard(correlation_id)
                    if is_produce:
                        with self.lock:
                            self.produce_responses += 1
                            drop = self.drop_all or (
                                self.faulty and self.produce_responses % self.drop_every == 0)
                            if drop:
                                self.dropped += 1
                        if drop:
                            break
                conn["client"].sendall(frame)
        except OSError:
            pass
        self._cut(conn)

    def close(self):
        self.closed = True
        try:
            self.listener.close()
        except OSError:
            pass


@pytest.fixture
def proxy():
    p = FaultProxy(drop_every=7)
    yield p
    p.close()


def broker_behind(broker, proxy, **kw):
    b = broker(advertised=proxy.bootstrap, **kw)
    proxy.upstream_port = b.port
    return b


# --------------------------------------------------------------------------- helpers


def admin(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)


def create_topic(bootstrap, topic, partitions=1, configs=None):
    a = admin(bootstrap)
    try:
        a.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs or {})],
                        timeout_ms=15000)
    finally:
        a.close()


PAD = b"." * 200


def value(i):
    # ~210 bytes: with the default 16 KB batch.size a stream of thousands of values takes dozens
    # of Produce requests, so every-7th-response faults happen many times.
    return b"v%08d-" % i + PAD


def consume_all(bootstrap, topic, partition, timeout=30.0):
    """Every record of `topic`/`partition` from 0 to the end offset, with CRC checks on."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", fetch_max_wait_ms=100, check_crcs=True)
    try:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        c.seek_to_beginning(tp)
        end = c.end_offsets([tp])[tp]
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < end:
            assert time.monotonic() < deadline, f"read {len(out)} of {end} records of {tp}"
            for recs in c.poll(timeout_ms=500).values():
                out.extend(recs)
        assert [r.offset for r in out] == list(range(end)), "offsets are dense from 0"
        return out
    finally:
        c.close()


class Tracker:
    """Counts completed sends by callback (the futures themselves are checked at the end)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.done = 0
        self.failed = []

    def track(self, i, fut):
        def ok(_md):
            with self.lock:
                self.done += 1

        def err(e):
            with self.lock:
                self.done += 1
                self.failed.append((i, repr(e)))

        fut.add_callback(ok)
        fut.add_errback(err)
        return fut


def run_stream(broker, proxy, partitions, n, disruption=None, **producer_kw):
    """Streams `n` values (value i to partition i % partitions) through the faulty proxy,
    optionally stopping ("graceful") or killing ("kill9") the broker halfway, then checks every
    delivery and the partitions' contents."""
    b = broker_behind(broker, proxy)
    topic = f"idem-{partitions}-{disruption or 'none'}"
    create_topic(proxy.bootstrap, topic, partitions)
    proxy.faulty = True

    p = KafkaProducer(bootstrap_servers=proxy.bootstrap, **producer_kw)
    assert p.config["enable_idempotence"], "kafka-python 3.x producers are idempotent by default"
    tracker = Tracker()
    futures = []
    chunk, window = 250, 1000
    started = time.monotonic()

    def send_range(lo, hi):
        for i in range(lo, hi):
            futures.append(tracker.track(i, p.send(topic, value(i), partition=i % partitions)))

    sent = 0
    while sent < n:
        if disruption and sent == n // 2:
            # Lose the response to at least one appended batch right before the outage, so the
            # client must retry it against the restarted broker, which must recognise it from its
            # snapshot (graceful) or from the log (kill -9).
            dropped_before = proxy.dropped
            proxy.drop_all = True
            hi = min(sent + 500, n)
            send_range(sent, hi)
            sent = hi
            wait_until(lambda: proxy.dropped > dropped_before, 30,
                       "a produce response lost right before the outage", interval=0.001)
            refused_before = proxy.refused
            if disruption == "graceful":
                b.stop()
            else:
                b.kill9()
            proxy.drop_all = False
            # Keep producing into the outage until the client demonstrably hit it.
            hi = min(sent + 500, n)
            send_range(sent, hi)
            sent = hi
            wait_until(lambda: proxy.refused > refused_before, 30,
                       "the producer to hit the broker outage", interval=0.01)
            print(f"outage ({disruption}): {tracker.done} of {sent} sent values acknowledged")
            b.start()
            continue
        hi = min(sent + chunk, n)
        send_range(sent, hi)
        sent = hi
        wait_until(lambda: tracker.done + window >= sent, 60, "the producer to keep up",
                   interval=0.005)
        assert not tracker.failed, f"failed sends: {tracker.failed[:5]}; {proxy.stats()}"
    p.flush(timeout=90)
    wait_until(lambda: tracker.done == n, 30, "every send to complete")
    elapsed = time.monotonic() - started
    assert not tracker.failed, f"failed sends: {tracker.failed[:5]}; {proxy.stats()}"
    p.close(timeout=10)

    nxt = [0] * partitions
    for i, f in enumerate(futures):
        md = f.get(timeout=1)
        part = i % partitions
        assert md.partition == part
        assert md.offset == nxt[part], f"message {i} ({value(i)}) reported offset {md.offset}"
        nxt[part] += 1

    assert proxy.dropped >= 3, f"too few produce responses dropped; {proxy.stats()}"
    print(f"{topic}: {n} values in {elapsed:.1f}s; {proxy.stats()}")

    proxy.faulty = False
    for part in range(partitions):
        got = [r.value for r in consume_all(proxy.bootstrap, topic, part)]
        expect = [value(i) for i in range(n) if i % partitions == part]
        if got != expect:
            seen, dups = set(), []
            for v in got:
                if v in seen:
                    dups.append(v)
                seen.add(v)
            missing = [v for v in expect if v not in seen]
            short = lambda vs: [v[:9] for v in vs[:10]]  # noqa: E731
            pytest.fail(f"{topic}-{part}: {len(got)} records, expected {len(expect)}; "
                        f"duplicates {short(dups)}; missing {short(missing)}; {proxy.stats()}")
    assert b.running()


# --------------------------------------------------------------------------- tests


def test_default_producer_through_faulty_proxy(broker, proxy):
    run_stream(broker, proxy, partitions=1, n=5000)


def test_default_producer_through_faulty_proxy_three_partitions(broker, proxy):
    run_stream(broker, proxy, partitions=3, n=9000)


@pytest.mark.parametrize("disruption", ["graceful", "kill9"])
def test_default_producer_across_broker_restart(broker, proxy, disruption):
    # Defaults, except a bounded reconnect backoff so the client notices the restart quickly.
    run_stream(broker, proxy, partitions=1, n=5000, disruption=disruption,
               reconnect_backoff_max_ms=500)


def test_proxy_duplicates_without_idempotence(broker, proxy):
    """Sanity check of the proxy: the same faults duplicate records when idempotence is off."""
    b = broker_behind(broker, proxy)
    topic = "not-idempotent"
    create_topic(proxy.bootstrap, topic)
    proxy.faulty = True
    p = KafkaProducer(bootstrap_servers=proxy.bootstrap, enable_idempotence=False, retries=10,
                      max_in_flight_requests_per_connection=5, acks="all")
    n = 2000
    futures = [p.send(topic, value(i), partition=0) for i in range(n)]
    p.flush(timeout=60)
    for f in futures:
        f.get(timeout=1)
    p.close(timeout=10)
    assert proxy.dropped > 0, proxy.stats()
    proxy.faulty = False
    got = [r.value for r in consume_all(proxy.bootstrap, topic, 0)]
    assert set(got) == {value(i) for i in range(n)}
    assert len(got) > n, f"expected duplicates without idempotence; {proxy.stats()}"
    assert b.running()


def test_message_too_large(broker):
    b = broker()
    create_topic(b.bootstrap, "small-msgs", configs={"max.message.bytes": "10000"})
    # Not idempotent: kafka-python 3.0 turns any non-retriable batch error of an idempotent
    # (non-transactional) producer into a fatal producer state, so later sends would fail too.
    p = KafkaProducer(bootstrap_servers=b.bootstrap, max_request_size=5_000_000,
                      enable_idempotence=False)
    with pytest.raises(Errors.MessageSizeTooLargeError):
        p.send("small-msgs", b"x" * 20_000, partition=0).get(timeout=15)
    md = p.send("small-msgs", b"y" * 5_000, partition=0).get(timeout=15)
    assert md.offset == 0
    md = p.send("small-msgs", b"z", partition=0).get(timeout=15)
    assert md.offset == 1
    p.close(timeout=10)


def test_log_append_time(broker):
    b = broker()
    create_topic(b.bootstrap, "lat", configs={"message.timestamp.type": "LogAppendTime"})
    old = 978_307_200_000  # 2001-01-01
    before = int(time.time() * 1000)
    p = KafkaProducer(bootstrap_servers=b.bootstrap, linger_ms=20)
    futures = [p.send("lat", b"lat-%d" % i, partition=0, timestamp_ms=old) for i in range(10)]
    mds = [f.get(timeout=15) for f in futures]
    p.close(timeout=10)
    after = int(time.time() * 1000)
    assert [m.offset for m in mds] == list(range(10))
    for m in mds:
        # The produce response's log_append_time_ms is the record's time.
        assert before - 1000 <= m.timestamp <= after + 1000, m
    recs = consume_all(b.bootstrap, "lat", 0)
    assert len(recs) == 10
    for r in recs:
        assert r.timestamp_type == 1, f"timestamp type of {r}"
        assert before - 1000 <= r.timestamp <= after + 1000, r


def test_timestamp_bounds(broker):
    b = broker()
    hour = 3_600_000
    create_topic(b.bootstrap, "past", configs={"message.timestamp.before.max.ms": str(hour)})
    create_topic(b.bootstrap, "future", configs={"message.timestamp.after.max.ms": str(hour)})
    # Not idempotent, for the same kafka-python reason as in test_message_too_large.
    p = KafkaProducer(bootstrap_servers=b.bootstrap, enable_idempotence=False)
    now = lambda: int(time.time() * 1000)  # noqa: E731
    with pytest.raises(Errors.InvalidTimestampError):
        p.send("past", b"2h ago", partition=0, timestamp_ms=now() - 2 * hour).get(timeout=15)
    assert p.send("past", b"now", partition=0, timestamp_ms=now()).get(timeout=15).offset == 0
    with pytest.raises(Errors.InvalidTimestampError):
        p.send("future", b"2h ahead", partition=0, timestamp_ms=now() + 2 * hour).get(timeout=15)
    assert p.send("future", b"now", partition=0, timestamp_ms=now()).get(timeout=15).offset == 0
    p.close(timeout=10)
