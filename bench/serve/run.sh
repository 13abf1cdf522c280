#!/usr/bin/env bash
# Service benchmark (not a test): throughput and latency percentiles of POST /v1/score and of
# episode steps, with the scripted (instant) patient and judge, so the figures are the service's
# own overhead plus loopback HTTP. Timings vary with machine load.
#
#   bench/serve/run.sh [SECONDS] [CONCURRENCY]            # service in-process, own runtime
#   bench/serve/run.sh --binary [SECONDS] [CONCURRENCY]   # against `target/release/therapygym serve`
#
# Both modes write finished episodes to a temporary run directory (the run store is part of
# the final step's cost).
set -euo pipefail
cd "$(dirname "$0")/../.."
binary=0
if [ "${1:-}" = "--binary" ]; then binary=1; shift; fi
SECONDS_PER_PHASE="${1:-10}"
CONCURRENCY="${2:-32}"
LOG="${TMPDIR:-/tmp}/therapygym-serve-bench.txt"

cargo build --release -q -p therapygym-server --example load
if [ "$binary" = 0 ]; then
  cargo run --release -q -p therapygym-server --example load -- \
    --seconds "$SECONDS_PER_PHASE" --concurrency "$CONCURRENCY" --store | tee "$LOG"
  exit 0
fi

cargo build --release -q -p therapygym-cli
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
target/release/therapygym serve --addr 127.0.0.1:0 --patient scripted:echo --judge scripted:echo \
  --out "$work/run" >"$work/stdout" 2>"$work/stderr" &
pid=$!
for _ in $(seq 1 100); do
  url="$(sed -n 's/^listening on //p' "$work/stdout")"
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "${url:-}" ] || { cat "$work/stderr"; echo "the service did not start" >&2; exit 1; }
cargo run --release -q -p therapygym-server --example load -- \
  --url "$url" --seconds "$SECONDS_PER_PHASE" --concurrency "$CONCURRENCY" | tee "$LOG"
