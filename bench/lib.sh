# Shared by the cluster bench scripts (source it after `cd` to the repository root):
# the binary, a work directory removed at exit, child processes stopped at exit, port waits.
#
#   SLUICE            the binary (default: a release build of this tree, built first)
#   SLUICE_BENCH_DIR  where the work directory goes (default: $TMPDIR or /tmp)
#
# Call `bench_setup NAME` first; start children with `... & PIDS+=($!)`.

bench_setup() { # name
    local base=${SLUICE_BENCH_DIR:-${TMPDIR:-/tmp}}
    if [[ -z ${SLUICE:-} ]]; then
        echo "== building release" >&2
        cargo build --release -p sluice-cli >&2
        SLUICE=${CARGO_TARGET_DIR:-$PWD/target}/release/sluice
    fi
    WORK=$(mktemp -d "$base/sluice-$1.XXXXXX")
    PIDS=()
    trap 'stop_all; rm -rf "$WORK"' EXIT
}

# SIGTERM every child started so far and wait for each.
stop_all() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# Waits (60 s at most) until something accepts connections on 127.0.0.1:PORT.
wait_port() { # port
    local deadline=$((SECONDS + 60))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        if ((SECONDS > deadline)); then echo "nothing listens on $1" >&2; exit 1; fi
        sleep 0.05
    done
}
