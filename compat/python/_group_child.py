"""Child process for test_groups.py: one confluent-kafka group member.

    python _group_child.py BOOTSTRAP TOPIC GROUP OUT [--instance-id ID] [--session-ms MS]

Subscribes to TOPIC in GROUP with manual commits. Every consumed record is appended to OUT
as `partition offset value` (flushed per line) *before* its offset is committed
(synchronously, per poll batch), so the union of all OUT files is an at-least-once record of
what the group consumed. Rebalance callbacks go to OUT.events as `assign 0,3`, `revoke 0,3`
(and `lost ...`), commit failures as `commit-error ...`. SIGTERM closes the consumer cleanly
(exit 0); SIGKILL is what the tests use to simulate a crash.
"""

import argparse
import signal
import sys

from confluent_kafka import Consumer, KafkaException, TopicPartition


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("group")
    ap.add_argument("out")
    ap.add_argument("--instance-id")
    ap.add_argument("--session-ms", type=int, default=6000)
    args = ap.parse_args()

    out = open(args.out, "a", buffering=1)
    events = open(args.out + ".events", "a", buffering=1)

    def event(line):
        events.write(line + "\n")
        events.flush()

    stopping = False

    def on_term(_sig, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": args.session_ms,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 100,
        "topic.metadata.refresh.interval.ms": 2000,
    }
    if args.instance_id:
        conf["group.instance.id"] = args.instance_id
    c = Consumer(conf)

    def parts(ps):
        return ",".join(str(p.partition) for p in sorted(ps, key=lambda p: p.partition))

    c.subscribe(
        [args.topic],
        on_assign=lambda _c, ps: event(f"assign {parts(ps)}"),
        on_revoke=lambda _c, ps: event(f"revoke {parts(ps)}"),
        on_lost=lambda _c, ps: event(f"lost {parts(ps)}"),
    )
    event("started")
    try:
        while not stopping:
            msgs = c.consume(num_messages=100, timeout=0.2)
            nexts = {}
            for m in msgs:
                if m.error():
                    event(f"consume-error {m.error()}")
                    continue
                out.write(f"{m.partition()} {m.offset()} {m.value().decode()}\n")
                nexts[m.partition()] = m.offset() + 1
            if not nexts:
                continue
            out.flush()
            try:
                c.commit(
                    offsets=[TopicPartition(args.topic, p, o) for p, o in sorted(nexts.items())],
                    asynchronous=False,
                )
            except KafkaException as e:
                event(f"commit-error {e}")
    finally:
        c.close()
        event("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
