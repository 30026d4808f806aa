#!/usr/bin/env bash
# Metadata at scale: a local 3-node cluster (`sluice dev cluster`) creates TOPICS topics of
# PARTITIONS partitions each; measures how long until every node's Metadata shows all of them,
# each node's RSS, and how long a full-cluster restart takes until every node serves them again.
#
# Usage: bench/metadata-scale.sh            (builds a release binary first)
# Environment:
#   SLUICE_BIN        the sluice binary to measure (default: a fresh release build)
#   TOPICS            topics to create (default 100)
#   PARTITIONS        partitions per topic (default 100)
#   BASE_PORT         node i listens on BASE_PORT+100*(i-1), its controller on +1 (default 29092)
#   SLUICE_BENCH_DIR  where the data dirs go (default $TMPDIR or /tmp)
# Prints a markdown report on stdout; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

TOPICS=${TOPICS:-100}
PARTITIONS=${PARTITIONS:-100}
BASE_PORT=${BASE_PORT:-29092}
BASE=${SLUICE_BENCH_DIR:-${TMPDIR:-/tmp}}
if [ -z "${SLUICE_BIN:-}" ]; then
    cargo build --release -p sluice-cli >&2
    SLUICE_BIN="${CARGO_TARGET_DIR:-target}/release/sluice"
fi
WORK=$(mktemp -d "$BASE/sluice-metadata-scale.XXXXXX")
TOTAL=$((TOPICS * PARTITIONS))
PORTS=("$BASE_PORT" "$((BASE_PORT + 100))" "$((BASE_PORT + 200))")
BOOT="127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}"
CLUSTER_PID=""

stop_cluster() {
    if [ -n "$CLUSTER_PID" ] && kill -0 "$CLUSTER_PID" 2>/dev/null; then
        kill -INT "$CLUSTER_PID"
        wait "$CLUSTER_PID" || true
    fi
    CLUSTER_PID=""
}
trap 'stop_cluster; rm -rf "$WORK"' EXIT

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

start_cluster() {
    "$SLUICE_BIN" dev cluster --nodes 3 --base-port "$BASE_PORT" --data-dir "$WORK/cluster" \
        >"$WORK/dev-cluster.out" 2>&1 &
    CLUSTER_PID=$!
}

# Partitions a node's Metadata shows (0 while it is not serving).
partitions_on() {
    "$SLUICE_BIN" topic list -b "127.0.0.1:$1" --json 2>/dev/null |
        python3 -c 'import json,sys; print(sum(t["partitions"] for t in json.load(sys.stdin)["topics"]))' 2>/dev/null ||
        echo 0
}

wait_all_nodes() {
    local deadline=$((SECONDS + 1800))
    for p in "${PORTS[@]}"; do
        until [ "$(partitions_on "$p")" -ge "$TOTAL" ]; do
            [ $SECONDS -lt $deadline ] || { echo "timed out waiting for node on $p" >&2; exit 1; }
            sleep 0.5
        done
    done
}

rss_mib() {
    local out=""
    for pid in $(pgrep -P "$CLUSTER_PID" -f " serve "); do
        out+="$(( $(ps -o rss= -p "$pid") / 1024 )) "
    done
    echo "$out"
}

echo "starting the cluster in $WORK" >&2
start_cluster
for p in "${PORTS[@]}"; do
    until "$SLUICE_BIN" cluster info -b "127.0.0.1:$p" >/dev/null 2>&1; do sleep 0.2; done
done
rss_idle=$(rss_mib)

echo "creating $TOPICS topics x $PARTITIONS partitions" >&2
t0=$(now)
for i in $(seq 1 "$TOPICS"); do
    "$SLUICE_BIN" topic create -b "$BOOT" "scale-$i" --partitions "$PARTITIONS" >/dev/null
done
create_s=$(since "$t0")
wait_all_nodes
visible_s=$(since "$t0")
rss_loaded=$(rss_mib)
meta_bytes=$(du -sb "$WORK/cluster/node-1/__cluster_metadata" | cut -f1)

echo "restarting the whole cluster" >&2
stop_cluster
t1=$(now)
start_cluster
wait_all_nodes
restart_s=$(since "$t1")
rss_restarted=$(rss_mib)
stop_cluster

cat <<EOF
| what | value |
|---|---|
| partitions | $TOTAL ($TOPICS topics x $PARTITIONS, replication factor 1, spread over 3 nodes) |
| create (sequential CreateTopics, one per topic) | ${create_s} s |
| until every node's Metadata shows all of them | ${visible_s} s |
| RSS per node, idle before / after | ${rss_idle}/ ${rss_loaded}MiB |
| metadata on disk (node 1: Raft log + snapshot) | $((meta_bytes / 1024)) KiB |
| full-cluster restart until every node serves them all | ${restart_s} s |
| RSS per node after the restart | ${rss_restarted}MiB |
EOF
