#!/usr/bin/env bash
# Scaling out, the issue-15 figures in docs/benchmarks.md: how long `sluice cluster rebalance`
# takes to give a fourth broker its share of a loaded three-node cluster, and the end-to-end
# latency clients see meanwhile, without and then with a throttle.
#
# Usage: bench/rebalance.sh
# Environment:
#   LOAD_SECS  seconds of unbounded acks=all produce that fill the 12-partition topic (default 10)
#   RATE       e2e records/s (1 KiB each) while the partitions move (default 5000, ~5 MB/s)
#   E2E_SECS   length of each e2e measurement (default 30)
#   THROTTLE   bytes/s for the throttled run (default 20000000)
#   SLUICE     the binary (default: a release build of this tree, built first)
#   SLUICE_BENCH_DIR  where the data dirs go (default: $TMPDIR or /tmp); a run writes a few GB
#
# Each mode (unthrottled, throttled) runs on a fresh cluster: `sluice dev cluster --nodes 3`,
# a load topic with 12 partitions at RF=3 filled for LOAD_SECS, an e2e topic with 4 partitions;
# then a fourth node joins (--roles broker), an e2e run measures the idle baseline, and a second
# e2e run starts together with the rebalance. Durability is fsync (the default).
set -euo pipefail

cd "$(dirname "$0")/.."
LOAD_SECS=${LOAD_SECS:-10}
RATE=${RATE:-5000}
E2E_SECS=${E2E_SECS:-30}
THROTTLE=${THROTTLE:-20000000}
source bench/lib.sh
bench_setup rebalance
field() { # file python-expression-on-j
    python3 -c "import json,sys; j=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); print($2)" "$1"
}

run() { # mode: none|throttle
    local mode=$1 dir="$WORK/$1"
    local base
    base=$(python3 -c 'import random; print(random.randrange(20000, 40000, 1000))')
    local voters="1@127.0.0.1:$((base + 1)),2@127.0.0.1:$((base + 101)),3@127.0.0.1:$((base + 201))"
    local bootstrap="127.0.0.1:$base,127.0.0.1:$((base + 100)),127.0.0.1:$((base + 200))"
    "$SLUICE" dev cluster --nodes 3 --base-port "$base" --data-dir "$dir" >"$WORK/$mode-cluster.log" 2>&1 &
    PIDS+=($!)
    for i in 0 1 2; do wait_port $((base + 100 * i)); done
    "$SLUICE" bench produce -b "$bootstrap" --topic load --partitions 12 --acks all \
        --duration "$LOAD_SECS" --json >"$WORK/$mode-load.json"
    "$SLUICE" topic create e2e -p 4 -b "$bootstrap" >/dev/null
    "$SLUICE" serve --node-id 4 --roles broker --listen "127.0.0.1:$((base + 300))" \
        --controller-listen "127.0.0.1:$((base + 301))" --voters "$voters" \
        --data-dir "$dir/node-4" >"$WORK/$mode-node4.log" 2>&1 &
    PIDS+=($!)
    wait_port $((base + 300))
    sleep 5
    bootstrap="$bootstrap,127.0.0.1:$((base + 300))"
    "$SLUICE" bench e2e -b "$bootstrap" --topic e2e --partitions 4 --acks all --rate "$RATE" \
        --duration "$E2E_SECS" --json >"$WORK/$mode-idle.json"
    "$SLUICE" bench e2e -b "$bootstrap" --topic e2e --partitions 4 --acks all --rate "$RATE" \
        --duration "$E2E_SECS" --json >"$WORK/$mode-moving.json" &
    local e2e=$!
    sleep 2
    local throttle=()
    [[ $mode == throttle ]] && throttle=(--throttle "$THROTTLE")
    "$SLUICE" cluster rebalance -b "$bootstrap" "${throttle[@]}" --json \
        >"$WORK/$mode-rebalance.json" 2>"$WORK/$mode-plan.json"
    wait "$e2e"
    local loaded seconds bytes idle moving failed
    loaded=$(field "$WORK/$mode-load.json" '"%.0f MB" % (j["bytes"] / 1e6)')
    seconds=$(field "$WORK/$mode-rebalance.json" '"%.1f" % j["seconds"]')
    bytes=$(field "$WORK/$mode-rebalance.json" '"%.0f" % (j["bytes"] / 1e6)')
    idle=$(field "$WORK/$mode-idle.json" '"%.1f / %.1f / %.1f" % (j["latency_ms"]["p50"], j["latency_ms"]["p99"], j["latency_ms"]["max"])')
    moving=$(field "$WORK/$mode-moving.json" '"%.1f / %.1f / %.1f" % (j["latency_ms"]["p50"], j["latency_ms"]["p99"], j["latency_ms"]["max"])')
    failed=$(field "$WORK/$mode-moving.json" '"%d failed, %d missing" % (j["failed"], j["missing"])')
    local label=none
    [[ $mode == throttle ]] && label="$((THROTTLE / 1000000)) MB/s"
    echo "| $label | $loaded | $bytes MB | $seconds s | $idle | $moving | $failed |"
    stop_all
    rm -rf "$dir"
}

echo "| throttle | loaded | copied | rebalance | e2e idle p50 / p99 / max ms | e2e during the move p50 / p99 / max ms | e2e errors |"
echo "|---|---|---|---|---|---|---|"
run none
run throttle
