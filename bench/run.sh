#!/usr/bin/env bash
# Runs the standard Sluice benchmarks on this machine and writes docs/benchmarks.md.
#
# Usage: bench/run.sh
# Environment:
#   SLUICE_BENCH_DIR  where the data dirs go (default: $TMPDIR or /tmp); it must be on the disk
#                     you want to measure: the fdatasync probe writes there too.
#   SCALE             multiplies every message count (default 1; 0.2 for a quick look).
#   STARTUP_GB        size of the data dir for the start-up test (default 10; 0 skips it).
#   OUT               the report (default docs/benchmarks.md).
#
# What it does, in order: build release; record the machine; measure the physical bounds (disk
# write+fdatasync rate and loopback TCP rate, both with small python3 programs); start a broker
# with --durability fsync and run produce acks=all + e2e at 20 MB/s; restart with relaxed
# durability and run produce 1 KiB, produce 100 B batched, consume from page cache, e2e again; fill the data
# dir to STARTUP_GB and time clean and kill -9 restarts. Each run's JSON goes to
# $WORK/results/*.json and bench/render.py turns them into the report.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SCALE=${SCALE:-1}
STARTUP_GB=${STARTUP_GB:-10}
OUT=${OUT:-$ROOT/docs/benchmarks.md}
BASE=${SLUICE_BENCH_DIR:-${TMPDIR:-/tmp}}

echo "== building release" >&2
cargo build --release -p sluice-cli >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice

WORK=$(mktemp -d "$BASE/sluice-bench.XXXXXX")
RES=$WORK/results
mkdir -p "$RES"
BROKER_PID=""
cleanup() {
    if [[ -n $BROKER_PID ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

count() { python3 -c "print(max(1, int($1 * $SCALE)))"; }
now_ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Writes the start-up time (ms from spawn to the port accepting) to $RES/$2.startup_ms.
start_broker() { # mode data_dir label
    local mode=$1 dir=$2 label=$3 t0
    t0=$(now_ms)
    "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$dir" --durability "$mode" \
        >>"$WORK/broker-$label.log" 2>&1 &
    BROKER_PID=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            echo "broker exited during start-up:" >&2; tail -20 "$WORK/broker-$label.log" >&2; exit 1
        fi
        sleep 0.005
    done
    echo $(($(now_ms) - t0)) >"$RES/$label.startup_ms"
}

stop_broker() {
    kill -TERM "$BROKER_PID"
    wait "$BROKER_PID" || true
    BROKER_PID=""
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$BROKER_PID/status"; }

bench() { # label args...
    local label=$1; shift
    echo "== $label: sluice bench $*" >&2
    "$BIN" bench "$@" -b "127.0.0.1:$PORT" --json | tail -1 >"$RES/$label.json"
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('   %.0f msg/s  %.1f MB/s  p99 %.2f ms' % (r['msgs_per_sec'], r['mb_per_sec'], r['latency_ms']['p99']))" "$RES/$label.json" >&2
}

echo "== machine and physical bounds" >&2
PROBE_MIB=$(python3 -c "print(max(64, int(1953 * $SCALE)))")
python3 - "$WORK" "$RES/machine.json" "$PROBE_MIB" <<'PY'
import json, os, platform, socket, subprocess, sys, threading, time
work, out = sys.argv[1], sys.argv[2]

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""

m = {}
m["cpu"] = sh("lscpu | sed -n 's/^Model name:[ \\t]*//p' | head -1") or platform.processor()
m["logical_cpus"] = os.cpu_count()
m["physical_cores"] = len(set(l for l in sh("lscpu -p=core,socket | grep -v '^#'").splitlines())) or None
with open("/proc/meminfo") as f:
    m["ram_gib"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
m["kernel"] = platform.release()
m["fs"] = sh(f"df -T {work} | tail -1 | awk '{{print $1\" (\"$2\")\"}}'")
dev = sh(f"df {work} | tail -1 | awk '{{print $1}}'")
m["disk_rotational"] = sh(f"lsblk -ndo ROTA {dev} 2>/dev/null")
m["disk_model"] = sh(f"lsblk -ndo MODEL $(lsblk -ndo PKNAME {dev} 2>/dev/null || echo {dev}) 2>/dev/null")
m["free_gb"] = round(os.statvfs(work).f_bavail * os.statvfs(work).f_frsize / 1e9, 1)

# Disk: write(1 MiB) + fdatasync on the bench filesystem, as much data as the fsync produce
# run writes (2,000,000 x 1 KiB at SCALE=1): on a virtual disk the host's cache absorbs a small
# probe far faster than it absorbs gigabytes, so only the same volume compares like with like.
path = os.path.join(work, "fdatasync.probe")
chunk = os.urandom(1 << 20)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
n = int(sys.argv[3])
t0 = time.perf_counter()
for _ in range(n):
    os.write(fd, chunk)
    os.fdatasync(fd)
dt = time.perf_counter() - t0
os.close(fd)
m["disk_fdatasync_1mib_mb_s"] = round(n * (1 << 20) / dt / 1e6, 1)
# Small blocks: write(4 KiB) + fdatasync for 2 s: the sync round-trip rate.
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
small = chunk[:4096]
ops, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < 2.0:
    os.write(fd, small)
    os.fdatasync(fd)
    ops += 1
m["disk_fdatasync_4kib_ops_s"] = round(ops / (time.perf_counter() - t0))
os.close(fd)
os.unlink(path)

# Loopback TCP: one python sender, one receiver thread, 1 MiB sends for 3 s.
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
m["loopback_tcp_mb_s"] = round(got[0] / (time.perf_counter() - t0) / 1e6)
json.dump(m, open(out, "w"), indent=1)
print(json.dumps(m), file=sys.stderr)
PY

PORT=$(free_port)

# --- fsync (the default durability) -------------------------------------------------------------
start_broker fsync "$WORK/data-fsync" fsync-fresh
sleep 1 # let the idle broker settle before reading its RSS
rss_kb >"$RES/idle_rss_kb"
bench produce-1k-fsync produce --topic p1k-fsync --partitions 4 --record-size 1024 \
    --messages "$(count 2000000)" --acks all
bench e2e-20mbs e2e --topic e2e --partitions 4 --consumers 4 --record-size 1024 \
    --rate 19531 --duration "$(python3 -c "print(max(3, 30 * $SCALE))")" --acks all --linger-ms 1
stop_broker

# --- relaxed ------------------------------------------------------------------------------------
start_broker relaxed "$WORK/data-relaxed" relaxed-fresh
bench produce-1k-relaxed produce --topic p1k --partitions 4 --record-size 1024 \
    --messages "$(count 3000000)" --acks all
bench produce-100b produce --topic p100 --partitions 4 --record-size 100 \
    --messages "$(count 20000000)" --acks 1 --linger-ms 10 --batch-size 1000000 --producers 2
bench consume-1k consume --topic p1k --consumers 4 \
    -X fetch.max.bytes=104857600 -X max.partition.fetch.bytes=16777216
bench e2e-20mbs-relaxed e2e --topic e2e --partitions 4 --consumers 4 --record-size 1024 \
    --rate 19531 --duration "$(python3 -c "print(max(3, 20 * $SCALE))")" --acks all --linger-ms 1
rss_kb >"$RES/after_rss_kb"

# --- start-up on a big data dir -----------------------------------------------------------------
free_gb=$(python3 -c "import os; s=os.statvfs('$WORK'); print(int(s.f_bavail*s.f_frsize/1e9))")
if [[ $STARTUP_GB == 0 ]]; then
    echo "skipped: STARTUP_GB=0" >"$RES/startup_skipped"
elif ((free_gb < 30)); then
    echo "skipped: only ${free_gb} GB free on the bench filesystem (needs 30)" >"$RES/startup_skipped"
else
    have=$(du -sb "$WORK/data-relaxed" | cut -f1)
    want=$(python3 -c "print(int($STARTUP_GB * 1e9))")
    if ((want > have)); then
        n=$(((want - have) / 65536 + 1))
        bench fill produce --topic fill --partitions 8 --record-size 65536 --messages "$n" \
            --acks 1 --producers 2
    fi
    stop_broker
    du -sb "$WORK/data-relaxed" | cut -f1 >"$RES/startup_bytes"
    sync
    start_broker relaxed "$WORK/data-relaxed" startup-clean
    kill -KILL "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=""
    start_broker relaxed "$WORK/data-relaxed" startup-kill9
fi
stop_broker || true

python3 "$ROOT/bench/render.py" "$RES" "$SCALE" >"$WORK/report.md"
# Sections from other scripts (bench/validation.sh) follow this marker; keep them.
if [[ -f $OUT ]]; then
    sed -n '/^<!-- kept by bench\/run.sh -->/,$p' "$OUT" >>"$WORK/report.md"
fi
mv "$WORK/report.md" "$OUT"
echo "== wrote $OUT" >&2
