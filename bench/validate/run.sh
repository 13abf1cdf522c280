#!/usr/bin/env bash
# Validation benchmark: the whole `therapygym validate` report (therapygym-validate, release)
# vs scipy.stats.bootstrap computing the same intervals on the same ratings file, in one run.
# Data: 116 dialogues x 11 CTRS items + 4 safety labels, 1,270 single-expert item ratings
# (6 left empty), 24 dialogues double-rated, the judge on everything; B = 10,000 per interval.
#
#   bench/validate/run.sh [PYTHON] [RESAMPLES]   # PYTHON defaults to /tmp/fxenv/bin/python
#
# PYTHON needs tools/fixtures/requirements.txt. Not a test: timings vary with machine load.
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for the Python run only (as in bench/stats).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${1:-/tmp/fxenv/bin/python}"
B="${2:-10000}"
OUT="${TMPDIR:-/tmp}/therapygym-validate-bench"
mkdir -p "$OUT"

cargo build --release -q -p therapygym-validate --example validate_bench
echo "RESAMPLES=$B"
rust_log="$OUT/rust.txt"
cargo run --release -q -p therapygym-validate --example validate_bench -- "$OUT" "$B" | tee "$rust_log"
py_log="$OUT/scipy.txt"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" bench/validate/scipy_validate.py "$OUT" "$B" | tee "$py_log"

rust=$(sed -n 's/^RUST_SECONDS=//p' "$rust_log")
scipy=$(sed -n 's/^SCIPY_SECONDS=//p' "$py_log")
echo
python3 - "$rust" "$scipy" <<'PY'
import sys
rust, scipy = map(float, sys.argv[1:])
print(f"rust  (whole report, all intervals)   {rust:8.3f} s")
print(f"scipy (same intervals + point stats)  {scipy:8.3f} s   ratio scipy/rust = {scipy / rust:7.1f}x")
PY
