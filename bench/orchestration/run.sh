#!/usr/bin/env bash
# Orchestration benchmark: `therapygym eval` (release) against a local chat-completions mock
# with a fixed per-call latency (crates/therapygym-testkit/examples/mock_chat.rs), every role an
# `openai:` endpoint, beside the same sessions by the Python reference (reference.py: asyncio +
# the openai SDK) against the same mock, in the same run. Per configuration LATENCY:CONC:SESSIONS
# it prints one line per side:
#
#   ORCH impl=rust latency_ms=20 concurrency=256 sessions=2000 calls=22000 seconds=… ideal_s=… of_ideal=… peak_rss_mb=…
#
# The latency-bound ideal is ceil(SESSIONS / CONC) waves × (calls per session) × latency: no
# scheduler can finish sooner when each session's calls are sequential.
#
#   bench/orchestration/run.sh [--quick] [PYTHON]     # PYTHON needs `openai` (scripts/bench.sh installs it)
#   CONFIGS="20:256:2000 500:1024:2000" bench/orchestration/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
PY="${1:-target/bench-venv/bin/python}"
TURNS=5
if [ "$quick" = 1 ]; then
  CONFIGS="${CONFIGS:-20:64:200}"
else
  CONFIGS="${CONFIGS:-20:256:2000 20:1024:2000 500:256:2000 500:1024:2000}"
fi
if [ ! -x /usr/bin/time ]; then
  echo "bench/orchestration: /usr/bin/time is missing (apt-get install time)" >&2
  exit 2
fi
cargo build --release -q -p therapygym-cli
cargo build --release -q -p therapygym-testkit --example mock_chat
BIN=target/release/therapygym
MOCK=target/release/examples/mock_chat
work="$(mktemp -d)"
mock_pid=""
trap '[ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null; rm -rf "$work"' EXIT

start_mock() { # LATENCY_MS: starts a fresh mock, sets $url
  [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null && wait "$mock_pid" 2>/dev/null || true
  "$MOCK" "$1" >"$work/mock.out" 2>&1 &
  mock_pid=$!
  url=""
  for _ in $(seq 1 100); do
    url="$(sed -n 's/^listening on //p' "$work/mock.out")"
    [ -n "$url" ] && break
    sleep 0.05
  done
  [ -n "$url" ] || { cat "$work/mock.out" >&2; echo "the mock did not start" >&2; exit 1; }
}
requests() { curl -s "${url%/v1}/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'; }

line() { # IMPL LATENCY CONC SESSIONS SECONDS CALLS RSS_KB
  python3 - "$@" <<'PY'
import math, sys
impl, lat, conc, n, secs, calls, rss = sys.argv[1:8]
lat, conc, n, secs, calls, rss = int(lat), int(conc), int(n), float(secs), int(calls), int(rss)
per = calls / n
ideal = math.ceil(n / conc) * per * lat / 1000
print(f"ORCH impl={impl} latency_ms={lat} concurrency={conc} sessions={n} calls={calls} "
      f"seconds={secs:.3f} ideal_s={ideal:.3f} of_ideal={ideal / secs:.3f} peak_rss_mb={rss / 1024:.0f}")
PY
}

profiles=20
for cfg in $CONFIGS; do
  IFS=: read -r lat conc n <<<"$cfg"
  per_profile=$(( (n + profiles - 1) / profiles ))
  n=$(( per_profile * profiles ))
  start_mock "$lat"
  spec="openai:mock@$url"
  rm -rf "$work/run"
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$BIN" eval --therapist "$spec" --patient "$spec" \
    --judge "$spec" --limit "$profiles" --sessions-per-profile "$per_profile" --turns "$TURNS" \
    --concurrency "$conc" --json --out "$work/run" >"$work/summary.json" 2>"$work/eval.err" \
    || { tail -5 "$work/eval.err" >&2; echo "bench/orchestration: eval failed" >&2; exit 1; }
  read -r secs rss <"$work/time.txt"
  line rust "$lat" "$conc" "$n" "$secs" "$(requests)" "$rss"
  if "$PY" -c "import openai" 2>/dev/null; then
    start_mock "$lat"
    out="$("$PY" bench/orchestration/reference.py "$url" "$n" "$TURNS" "$conc" "$work/py.jsonl")"
    secs="$(sed -n 's/^PY_SECONDS=//p' <<<"$out")"
    rss="$(sed -n 's/^PY_PEAK_RSS_KB=//p' <<<"$out")"
    line python "$lat" "$conc" "$n" "$secs" "$(requests)" "$rss"
  else
    echo "SKIPPED=the openai package is not installed in $PY"
  fi
done
