#!/usr/bin/env bash
# acks=all produce on a 3-node cluster with replication factor 3 against a single node, the
# issue-13 ratio in docs/benchmarks.md. Runs are interleaved (single, cluster, single, ...) so
# drift on a shared machine hits both sides alike; prints each run and the medians.
#
# Usage: bench/replicated.sh
# Environment:
#   RUNS      runs per side (default 3)
#   DURATION  seconds per run (default 20)
#   SLUICE    the binary (default: a release build of this tree, built first)
#   SLUICE_BENCH_DIR  where the data dirs go (default: $TMPDIR or /tmp); a run writes up to
#                     about 10 GB there, removed after each run
#
# Both sides use --durability fsync (the default) and a 4-partition topic; on the cluster it has
# three replicas (the default on three brokers) and min.insync.replicas 2.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-20}
source bench/lib.sh
bench_setup replicated
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One produce run against $1; prints MB/s.
produce() { # bootstrap label
    "$SLUICE" bench produce -b "$1" --topic "bench-$2" --partitions 4 --acks all \
        --duration "$DURATION" --json >"$WORK/$2.json"
    python3 -c 'import json,sys; print("%.1f" % json.load(open(sys.argv[1]))["mb_per_sec"])' \
        "$WORK/$2.json"
}

single=()
cluster=()
for run in $(seq 1 "$RUNS"); do
    port=$(free_port)
    "$SLUICE" serve --listen "127.0.0.1:$port" --data-dir "$WORK/single-$run" \
        >"$WORK/single-$run.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
    single+=("$(produce "127.0.0.1:$port" "single-$run")")
    stop_all
    rm -rf "$WORK/single-$run" # gigabytes per run
    echo "run $run single node: ${single[-1]} MB/s" >&2

    base=$(python3 -c 'import random; print(random.randrange(20000, 40000, 1000))')
    "$SLUICE" dev cluster --nodes 3 --base-port "$base" --data-dir "$WORK/cluster-$run" \
        >"$WORK/cluster-$run.log" 2>&1 &
    PIDS+=($!)
    for i in 0 1 2; do wait_port $((base + 100 * i)); done
    bootstrap="127.0.0.1:$base,127.0.0.1:$((base + 100)),127.0.0.1:$((base + 200))"
    cluster+=("$(produce "$bootstrap" "cluster-$run")")
    stop_all
    rm -rf "$WORK/cluster-$run"
    echo "run $run 3 nodes, RF=3: ${cluster[-1]} MB/s" >&2
done

python3 - "${single[*]}" "${cluster[*]}" <<'PY'
import statistics, sys
single = [float(x) for x in sys.argv[1].split()]
cluster = [float(x) for x in sys.argv[2].split()]
s, c = statistics.median(single), statistics.median(cluster)
print(f"single node  MB/s: {single} median {s:.1f}")
print(f"3 nodes RF=3 MB/s: {cluster} median {c:.1f}")
print(f"ratio of medians: {100 * c / s:.0f}%")
PY
