#!/usr/bin/env bash
# Bootstrap benchmark: therapygym-stats (Rust) vs scipy.stats.bootstrap on the same 1,270
# judge/consensus pairs, Spearman, paired percentile bootstrap, 10,000 resamples.
#
#   bench/stats/run.sh [PYTHON]     # PYTHON defaults to /tmp/fxenv/bin/python
#
# PYTHON needs numpy + scipy (see tools/fixtures/requirements.txt). Not a test: timings vary
# with machine load. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for the Python run only,
# since they slow a current numpy on this workplace's machines.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${1:-/tmp/fxenv/bin/python}"
OUT="${TMPDIR:-/tmp}/therapygym-stats-bench"
mkdir -p "$OUT"

cargo build --release -q -p therapygym-stats --example bootstrap_bench
rust_log="$OUT/rust.txt"
cargo run --release -q -p therapygym-stats --example bootstrap_bench -- "$OUT/data.json" 10000 | tee "$rust_log"
py_log="$OUT/scipy.txt"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" bench/stats/scipy_bootstrap.py "$OUT/data.json" | tee "$py_log"

rust=$(sed -n 's/^RUST_SECONDS=//p' "$rust_log")
scipy=$(sed -n 's/^SCIPY_SECONDS=//p' "$py_log")
scipy_vec=$(sed -n 's/^SCIPY_VECTORIZED_SECONDS=//p' "$py_log")
echo
python3 - "$rust" "$scipy" "$scipy_vec" <<'PY'
import sys
rust, scipy, vec = map(float, sys.argv[1:])
print(f"rust (fast path)              {rust:8.4f} s")
print(f"scipy (spearmanr per sample)  {scipy:8.4f} s   ratio scipy/rust = {scipy / rust:7.1f}x")
print(f"scipy (vectorized statistic)  {vec:8.4f} s   ratio scipy/rust = {vec / rust:7.1f}x")
PY
