#!/usr/bin/env bash
# Embedded inference benchmark: decode tok/s of the local backend (`therapygym chat --json`,
# greedy) against llama-cpp-python on the same GGUF, threads, prompt and max tokens, each the
# best of RUNS runs in the same invocation. Both figures include the short prompt's prefill.
#
#   bench/inference/run.sh [PYTHON] [RUNS]   # PYTHON needs llama-cpp-python (scripts/bench.sh installs it)
#
# Without llama-cpp-python in PYTHON the baseline is skipped with a message (exit 0).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${1:-target/bench-venv/bin/python}"
RUNS="${2:-3}"
THREADS="${THERAPYGYM_LLAMA_THREADS:-2}"
MAX_TOKENS=256
PROMPT="Write a detailed, step-by-step guide to building a calming evening routine for someone with exam stress."
GGUF="${THERAPYGYM_HOME:-$HOME/.cache/therapygym}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$GGUF" ] || { echo "bench/inference: $GGUF is missing (scripts/setup-model.sh)" >&2; exit 2; }
cargo build --release -q -p therapygym-cli
best=""
for _ in $(seq 1 "$RUNS"); do
  out="$(THERAPYGYM_LLAMA_THREADS="$THREADS" target/release/therapygym chat --model embedded \
    --temperature 0 --max-tokens "$MAX_TOKENS" --json "$PROMPT")"
  best="$(python3 - "$out" "$best" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
secs = r["latency"] / 1000  # milliseconds
rate = r["completion_tokens"] / secs
prev = sys.argv[2]
if prev and float(prev.split()[2]) >= rate:
    print(prev)
else:
    print(f"{r['completion_tokens']} {secs:.4f} {rate:.2f}")
PY
)"
done
read -r tokens secs rate <<<"$best"
echo "RUST_TOKENS=$tokens"
echo "RUST_SECONDS=$secs"
echo "RUST_TOK_S=$rate"
if "$PY" -c "import llama_cpp" 2>/dev/null; then
  "$PY" bench/inference/llama_cpp_python.py "$GGUF" "$THREADS" "$MAX_TOKENS" "$RUNS" "$PROMPT"
else
  echo "SKIPPED=llama-cpp-python is not installed in $PY"
fi
