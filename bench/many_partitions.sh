#!/usr/bin/env bash
# A 3-node cluster carrying many partitions: acks=all produce spread over all of them, then the
# brokers' idle cost (CPU and memory growth) with every partition followed. Prints each run
# and the medians (docs/benchmarks.md, "Many partitions").
#
# Usage: bench/many_partitions.sh
# Environment:
#   RUNS        runs (default 3)
#   PARTITIONS  partitions of the topic, RF=3 (default 1000)
#   MESSAGES    records to produce, 200 B each, random keys (default 200000)
#   IDLE        seconds of idle measurement after the produce (default 120)
#   DURABILITY  fsync (the default) or relaxed
#   SLUICE      the binary (default: a release build of this tree, built first)
#   SLUICE_BENCH_DIR  where the data dirs go (default: $TMPDIR or /tmp)
#
# The cluster also holds the 50 partitions of __consumer_offsets.
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
PARTITIONS=${PARTITIONS:-1000}
MESSAGES=${MESSAGES:-200000}
IDLE=${IDLE:-120}
DURABILITY=${DURABILITY:-fsync}
source bench/lib.sh
bench_setup many-partitions

# Summed over the brokers: CPU ticks, and RSS in KiB.
ticks() { for p in "${PIDS[@]}"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s}'; }
rss_kib() { for p in "${PIDS[@]}"; do awk '/VmRSS/ {print $2}' "/proc/$p/status"; done | awk '{s += $1} END {print s}'; }
hz=$(getconf CLK_TCK)

results=()
for run in $(seq 1 "$RUNS"); do
    base=$(python3 -c 'import random; print(random.randrange(20000, 30000, 1000))')
    voters="1@127.0.0.1:$((base + 1)),2@127.0.0.1:$((base + 101)),3@127.0.0.1:$((base + 201))"
    for i in 1 2 3; do
        port=$((base + 100 * (i - 1)))
        "$SLUICE" serve --node-id "$i" --listen "127.0.0.1:$port" \
            --controller-listen "127.0.0.1:$((port + 1))" --voters "$voters" \
            --data-dir "$WORK/run-$run/node-$i" --durability "$DURABILITY" \
            >"$WORK/run-$run-node-$i.log" 2>&1 &
        PIDS+=($!)
    done
    for i in 0 1 2; do wait_port $((base + 100 * i)); done
    bootstrap="127.0.0.1:$base,127.0.0.1:$((base + 100)),127.0.0.1:$((base + 200))"
    # Every broker registered before the topic asks for three replicas (a create that timed
    # out on the client may still have been made).
    until "$SLUICE" topic create -b "$bootstrap" many -p "$PARTITIONS" -r 3 >/dev/null 2>&1 ||
        "$SLUICE" topic describe -b "$bootstrap" many >/dev/null 2>&1; do
        sleep 0.5
    done
    "$SLUICE" bench produce -b "$bootstrap" --topic many --acks all --messages "$MESSAGES" \
        --record-size 200 --key-distribution random --keys 100000 --json >"$WORK/produce-$run.json"
    sleep 5 # the last fetches settle
    rss0=$(rss_kib)
    t0=$(ticks)
    sleep "$IDLE"
    t1=$(ticks)
    rss1=$(rss_kib)
    line=$(python3 - "$WORK/produce-$run.json" "$t0" "$t1" "$hz" "$IDLE" "$rss0" "$rss1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t0, t1, hz, idle, rss0, rss1 = (float(x) for x in sys.argv[2:])
cpu = (t1 - t0) / hz / idle * 100 / 3  # percent of one core, per broker
growth = (rss1 - rss0) / 1024 / 3 / (idle / 60)  # MiB per minute, per broker
print(f"{r['msgs_per_sec']:.0f} {r['latency_ms']['p50']:.0f} {r['latency_ms']['p99']:.0f} "
      f"{cpu:.1f} {rss1 / 1024 / 3:.1f} {growth:.2f}")
PY
)
    results+=("$line")
    read -r mps p50 p99 cpu rss growth <<<"$line"
    echo "run $run: $mps msg/s (p50 $p50 ms, p99 $p99 ms); idle: $cpu% of a core per broker," \
        "RSS $rss MiB per broker, growing $growth MiB/min" >&2
    stop_all
    rm -rf "$WORK/run-$run"
done

printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [[float(x) for x in line.split()] for line in sys.stdin if line.strip()]
m = [statistics.median(col) for col in zip(*rows)]
print(f"median of {len(rows)} runs: {m[0]:.0f} msg/s acks=all over '"$PARTITIONS"' partitions ('"$DURABILITY"') "
      f"(p50 {m[1]:.0f} ms, p99 {m[2]:.0f} ms); idle {m[3]:.1f}% of a core per broker, "
      f"RSS {m[4]:.1f} MiB per broker, growing {m[5]:.2f} MiB/min")
'
