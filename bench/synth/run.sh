#!/usr/bin/env bash
# TreeSynth at the paper's scale: 13,093 profiles (Patient-Ψ-CM-Augmented) from the scripted
# model, with the release binary. Reports wall time, peak memory (RSS, /usr/bin/time -v) and
# profiles per second. The scripted model answers in microseconds, so this measures the
# orchestration: prompts, structured-output checks, validation, deduplication, state files.
#
#   bench/synth/run.sh                    # defaults below
#   TARGET=2000 MODEL=scripted:slow:5 CONCURRENCY=32 bench/synth/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET=${TARGET:-13093}
MODEL=${MODEL:-scripted:echo}
CONCURRENCY=${CONCURRENCY:-8}
WORK=${WORK:-$(mktemp -d)}
OUT="$WORK/synth-bench"

if [ ! -x /usr/bin/time ]; then
  echo "bench/synth: /usr/bin/time is missing (apt-get install time)" >&2
  exit 2
fi
cargo build --release -p therapygym-cli >&2
BIN=target/release/therapygym

rm -rf "$OUT"
/usr/bin/time -v -o "$WORK/time.txt" \
  "$BIN" synth --model "$MODEL" --target "$TARGET" --concurrency "$CONCURRENCY" --json --out "$OUT" \
  > "$WORK/summary.json" 2> "$WORK/stderr.txt"

python3 - "$WORK" <<'PY'
import json, re, sys, os
work = sys.argv[1]
t = open(os.path.join(work, "time.txt")).read()
s = json.load(open(os.path.join(work, "summary.json")))
def field(name):
    m = re.search(rf"{re.escape(name)}: (.+)", t)
    return m.group(1).strip() if m else ""
wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
parts = [float(p) for p in wall.split(":")]
secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
rss_mib = int(field("Maximum resident set size (kbytes)")) / 1024
cpu = field("Percent of CPU this job got")
print(f"profiles        {s['profiles']} (train {s['train']}, holdout {s['holdout']}), stop: {s['stop_reason']}")
print(f"candidates      {s['candidates']} (rejected {s['rejected']}, duplicates {s['duplicates']})")
print(f"tree            {s['tree']['nodes']} nodes ({s['tree']['expanded']} expanded, {s['tree']['leaves']} leaves), depth {s['tree']['depth_reached']}")
print(f"model calls     {s['this_attempt']['model_calls']}")
print(f"wall time       {secs:.1f} s (process), {s['this_attempt']['wall_s']:.1f} s (generation, before the outputs)")
print(f"peak RSS        {rss_mib:.0f} MiB")
print(f"CPU             {cpu}")
print(f"profiles/s      {s['profiles'] / secs:.0f}")
print(f"run directory   {s['run_dir']}")
PY
