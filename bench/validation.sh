#!/usr/bin/env bash
# What the log validator costs produce, and the latency tail of relaxed vs fsync durability.
#
# Usage: BEFORE=/path/to/old/sluice AFTER=/path/to/new/sluice bench/validation.sh
# Environment:
#   BEFORE, AFTER     two release builds of `sluice` (e.g. the commit before the validator and
#                     HEAD; build each with `cargo build --release -p sluice-cli`).
#   SCALE             multiplies every message count (default 1).
#   ROUNDS            runs per case and build, interleaved before/after (default 2; the best
#                     run of each counts, as noise on a shared 2-core machine only slows runs).
#   SLUICE_BENCH_DIR  where the data dirs go (default $TMPDIR or /tmp).
#   ONLY              space-separated case names to run (e.g. "100b-zstd 1k-zstd"); E2E=0
#                     skips the end-to-end runs.
#
# Produce runs use --durability relaxed, so the CPU cost of validation is not hidden behind the
# disk's fsync rate. Each case starts a fresh broker. Prints a markdown report on stdout.
set -euo pipefail

: "${BEFORE:?set BEFORE to the old sluice binary}"
: "${AFTER:?set AFTER to the new sluice binary}"
SCALE=${SCALE:-1}
ROUNDS=${ROUNDS:-2}
BASE=${SLUICE_BENCH_DIR:-${TMPDIR:-/tmp}}
WORK=$(mktemp -d "$BASE/sluice-validation.XXXXXX")
BROKER_PID=""
cleanup() {
    if [[ -n $BROKER_PID ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -KILL "$BROKER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

count() { python3 -c "print(max(1, int($1 * $SCALE)))"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_broker() { # bin durability dir
    PORT=$(free_port)
    "$1" serve --listen "127.0.0.1:$PORT" --data-dir "$3" --durability "$2" >>"$WORK/broker.log" 2>&1 &
    BROKER_PID=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.01; done
}

stop_broker() {
    kill -TERM "$BROKER_PID"
    wait "$BROKER_PID" || true
    BROKER_PID=""
}

run() { # label bin durability bench-args...
    local label=$1 bin=$2 durability=$3
    shift 3
    rm -rf "$WORK/data"
    start_broker "$bin" "$durability" "$WORK/data"
    # The client side is always the AFTER build's bench tool, so only the broker differs.
    "$AFTER" bench "$@" -b "127.0.0.1:$PORT" --json | tail -1 >>"$WORK/$label.jsonl"
    stop_broker
}

CASES=(
    "1k-none|produce --topic v --partitions 4 --record-size 1024 --messages $(count 1000000) --acks 1"
    "1k-lz4|produce --topic v --partitions 4 --record-size 1024 --messages $(count 1000000) --acks 1 -z lz4"
    "1k-zstd|produce --topic v --partitions 4 --record-size 1024 --messages $(count 1000000) --acks 1 -z zstd"
    "100b-none|produce --topic v --partitions 4 --record-size 100 --messages $(count 6000000) --acks 1 --linger-ms 10 --batch-size 1000000 --producers 2"
    "100b-lz4|produce --topic v --partitions 4 --record-size 100 --messages $(count 6000000) --acks 1 --linger-ms 10 --batch-size 1000000 --producers 2 -z lz4"
    "100b-zstd|produce --topic v --partitions 4 --record-size 100 --messages $(count 6000000) --acks 1 --linger-ms 10 --batch-size 1000000 --producers 2 -z zstd"
)

for case in "${CASES[@]}"; do
    name=${case%%|*}
    args=${case#*|}
    if [[ -n ${ONLY:-} && " $ONLY " != *" $name "* ]]; then
        continue
    fi
    for round in $(seq "$ROUNDS"); do
        for which in before after; do
            bin=$BEFORE
            [[ $which == after ]] && bin=$AFTER
            echo "== $name $which (round $round)" >&2
            # shellcheck disable=SC2086
            run "$name-$which" "$bin" relaxed $args
        done
    done
done

E2E_ARGS="e2e --topic e2e --partitions 4 --consumers 4 --record-size 1024 --rate 19531 --acks all --linger-ms 1 --duration $(python3 -c "print(max(3, int(20 * $SCALE)))")"
for which in before after; do
    [[ ${E2E:-1} == 0 ]] && break
    bin=$BEFORE
    [[ $which == after ]] && bin=$AFTER
    for durability in fsync relaxed; do
        echo "== e2e $durability $which" >&2
        # shellcheck disable=SC2086
        run "e2e-$durability-$which" "$bin" "$durability" $E2E_ARGS
    done
done

python3 - "$WORK" <<'PY'
import glob, json, os, sys
work = sys.argv[1]
def runs(label):
    path = os.path.join(work, label + ".jsonl")
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []
def best(label):
    rs = runs(label)
    return max(rs, key=lambda r: r["msgs_per_sec"]) if rs else None
print("| records | codec | before msg/s | after msg/s | after MB/s | change |")
print("|---|---|---:|---:|---:|---:|")
for size in ("1k", "100b"):
    for codec in ("none", "lz4", "zstd"):
        b, a = best(f"{size}-{codec}-before"), best(f"{size}-{codec}-after")
        if not (a and b):
            continue
        change = (a["msgs_per_sec"] / b["msgs_per_sec"] - 1) * 100
        print(f"| {'1 KiB' if size == '1k' else '100 B'} | {codec} | {b['msgs_per_sec']:,.0f} | "
              f"{a['msgs_per_sec']:,.0f} | {a['mb_per_sec']:.1f} | {change:+.1f}% |")
print()
print("| end-to-end at 20 MB/s | build | p50 ms | p99 ms | p99.9 ms | max ms |")
print("|---|---|---:|---:|---:|---:|")
for durability in ("fsync", "relaxed"):
    for which in ("before", "after"):
        rs = runs(f"e2e-{durability}-{which}")
        if not rs:
            continue
        l = rs[-1]["latency_ms"]
        print(f"| {durability} | {which} | {l.get('p50', 0):.2f} | {l.get('p99', 0):.2f} | "
              f"{l.get('p999', l.get('p99.9', 0)):.2f} | {l.get('max', 0):.2f} |")
PY
