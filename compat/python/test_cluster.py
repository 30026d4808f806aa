"""confluent-kafka against a three-node cluster started with `sluice dev cluster`.

The cluster is one command (three `sluice serve` children, combined broker + controller);
clients bootstrap from single nodes and must find every partition's leader on its own.
"""

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import SLUICE_BIN, wait_until

pytestmark = pytest.mark.timeout(120)


def _free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def base_port(nodes):
    """A base port P with P+100*i and P+100*i+1 free for every node i."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        seed = s.getsockname()[1]
    for p in range(seed % 20000 + 20000, 60000, 7):
        if all(_free(p + 100 * i) and _free(p + 100 * i + 1) for i in range(nodes)):
            return p
    raise AssertionError("no free port range")


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def dev_cluster(tmp_path):
    port = base_port(3)
    data = tmp_path / "cluster"
    out = open(tmp_path / "dev-cluster.out", "wb")
    proc = subprocess.Popen(
        [SLUICE_BIN, "dev", "cluster", "--nodes", "3", "--base-port", str(port),
         "--data-dir", str(data), "--override", "broker.session.timeout.ms=3000"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    ports = [port + 100 * i for i in range(3)]
    try:
        wait_until(lambda: proc.poll() is None and all(accepts(p) for p in ports), 60,
                   "the three nodes to accept clients")
        yield ports
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.close()
        text = (tmp_path / "dev-cluster.out").read_text(errors="replace")
        assert "bootstrap: " in text, text
        for i in range(1, 4):
            log = Path(data / f"node-{i}.log")
            if log.exists():
                print(f"--- node {i} log tail\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:]))


def test_three_nodes_serve_every_partition_to_clients_bootstrapped_anywhere(dev_cluster):
    n1, n2, n3 = (f"127.0.0.1:{p}" for p in dev_cluster)
    admin = AdminClient({"bootstrap.servers": n2})
    futures = admin.create_topics([NewTopic("py-spread", num_partitions=12, replication_factor=1)])
    futures["py-spread"].result(timeout=30)

    def leaders():
        md = AdminClient({"bootstrap.servers": n1}).list_topics(timeout=10)
        t = md.topics.get("py-spread")
        if t is None or t.error is not None or len(t.partitions) != 12:
            return None
        return {p.id: p.leader for p in t.partitions.values()}, sorted(md.brokers), md.controller_id

    by_partition, brokers, controller = wait_until(leaders, 30, "metadata from node 1")
    assert brokers == [1, 2, 3]
    assert controller in (1, 2, 3)
    assert sorted(set(by_partition.values())) == [1, 2, 3]
    for b in (1, 2, 3):
        assert list(by_partition.values()).count(b) == 4

    p = Producer({"bootstrap.servers": n3, "enable.idempotence": True, "acks": "all"})
    sent = {}
    for part in range(12):
        for i in range(5):
            v = f"{part}-{i}".encode()
            p.produce("py-spread", value=v, partition=part)
            sent.setdefault(part, []).append(v)
    assert p.flush(30) == 0

    c = Consumer({"bootstrap.servers": n1, "group.id": "py-cluster", "enable.auto.commit": False})
    c.assign([TopicPartition("py-spread", part, OFFSET_BEGINNING) for part in range(12)])
    got = {}

    def all_read():
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.setdefault(m.partition(), []).append(m.value())
        return sum(len(v) for v in got.values()) >= 60

    wait_until(all_read, 60, "every record back", interval=0)
    c.close()
    assert got == sent
