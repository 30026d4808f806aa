#!/usr/bin/env bash
# Fetch throughput against the loopback bound: consume 64 KiB records from the page cache, with
# a loopback TCP probe in the same run, so the two are compared on the same machine and hour.
#
# Usage: BINS="before=/path/to/old/sluice after=/path/to/new/sluice" bench/fetch.sh
# Environment:
#   BINS              space-separated label=path release builds of `sluice`
#                     (`cargo build --release -p sluice-cli`), measured in the same rounds in
#                     this order; the last one fills the topic and is the bench client for
#                     every run, so only the broker differs.
#   GB                data to fill and read back per run (default 4; it must fit in RAM).
#   ROUNDS            rounds of probe + consume per build, interleaved (default 3).
#   CONSUMERS         consumer threads (default 4, as consume-1k in bench/run.sh).
#   SLUICE_BENCH_DIR  where the data dir goes (default $TMPDIR or /tmp).
#
# The topic (4 partitions, 64 KiB records, acks=1) is written once by a relaxed broker; each
# run starts a fresh broker on that data dir and reads the whole topic from offset 0 with the
# consume settings of bench/run.sh's consume-1k (fetch.max.bytes 100 MiB,
# max.partition.fetch.bytes 16 MiB). The first round warms the page cache for all later ones.
# Prints a markdown report on stdout.
set -euo pipefail

: "${BINS:?set BINS to label=path of the sluice builds to measure}"
read -r -a BUILDS <<<"$BINS"
CLIENT=${BUILDS[-1]#*=}
GB=${GB:-4}
ROUNDS=${ROUNDS:-3}
CONSUMERS=${CONSUMERS:-4}
BASE=${SLUICE_BENCH_DIR:-${TMPDIR:-/tmp}}
WORK=$(mktemp -d "$BASE/sluice-fetch.XXXXXX")
BROKER_PID=""
cleanup() {
    if [[ -n $BROKER_PID ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -KILL "$BROKER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_broker() { # bin
    PORT=$(free_port)
    "$1" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --durability relaxed \
        >>"$WORK/broker.log" 2>&1 &
    BROKER_PID=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.01; done
}

stop_broker() {
    kill -TERM "$BROKER_PID"
    wait "$BROKER_PID" || true
    BROKER_PID=""
}

# The same probe as bench/run.sh: one python sender (sendall 1 MiB), one receiver thread, 3 s.
probe() {
    python3 - <<'PY'
import socket, threading, time
chunk = bytes(1 << 20)
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
got = [0]
def recv():
    c, _ = srv.accept()
    buf = bytearray(1 << 20)
    while True:
        k = c.recv_into(buf)
        if not k:
            break
        got[0] += k
th = threading.Thread(target=recv); th.start()
s = socket.create_connection(srv.getsockname())
t0 = time.perf_counter()
while time.perf_counter() - t0 < 3.0:
    s.sendall(chunk)
s.close(); th.join()
print(round(got[0] / (time.perf_counter() - t0) / 1e6))
PY
}

MESSAGES=$(python3 -c "print(int($GB * 1e9 / 65536))")
echo "== fill: $MESSAGES x 64 KiB" >&2
start_broker "$CLIENT"
"$CLIENT" bench produce -b "127.0.0.1:$PORT" --topic f64k --partitions 4 --record-size 65536 \
    --messages "$MESSAGES" --acks 1 --json | tail -1 >"$WORK/fill.json"
stop_broker

for round in $(seq "$ROUNDS"); do
    mbs=$(probe)
    echo "== round $round: loopback probe $mbs MB/s" >&2
    echo "$round probe $mbs" >>"$WORK/results"
    for build in "${BUILDS[@]}"; do
        which=${build%%=*}
        start_broker "${build#*=}"
        "$CLIENT" bench consume -b "127.0.0.1:$PORT" --topic f64k --consumers "$CONSUMERS" \
            -X fetch.max.bytes=104857600 -X max.partition.fetch.bytes=16777216 --json |
            tail -1 >"$WORK/consume.json"
        stop_broker
        mbs=$(python3 -c "import json; print(round(json.load(open('$WORK/consume.json'))['mb_per_sec']))")
        echo "== round $round: consume $which $mbs MB/s" >&2
        echo "$round $which $mbs" >>"$WORK/results"
    done
done

python3 - "$WORK/results" "${BUILDS[@]%%=*}" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
builds = sys.argv[2:]
cols = ["probe"] + builds
print("| round | loopback probe MB/s | " + " | ".join(f"consume {b} MB/s" for b in builds)
      + " | " + " | ".join(f"{b} / probe" for b in builds) + " |")
print("|---|" + "---:|" * (1 + 2 * len(builds)))
med = lambda xs: sorted(xs)[len(xs) // 2]
for r in sorted({int(r[0]) for r in rows}):
    v = {k: int(m) for (n, k, m) in rows if int(n) == r}
    ratios = [f"{v[b] / v['probe']:.2f}" for b in builds]
    print(f"| {r} | {v['probe']:,} | " + " | ".join(f"{v[b]:,}" for b in builds)
          + " | " + " | ".join(ratios) + " |")
runs = {k: [int(m) for (_, b, m) in rows if b == k] for k in cols}
ratios = {b: med([int(m) / int(p) for (n, k, m) in rows if k == b
                  for (n2, k2, p) in rows if k2 == "probe" and n2 == n]) for b in builds}
print(f"| median | {med(runs['probe']):,} | " + " | ".join(f"{med(runs[b]):,}" for b in builds)
      + " | " + " | ".join(f"{ratios[b]:.2f}" for b in builds) + " |")
PY
