#!/usr/bin/env bash
# One GRPO update of the trainer on the embedded SmolLM2-135M (G = 4 × 256 therapist tokens),
# twice: micro-batch 1 (the baseline, least memory) and micro-batch 4 (the whole group in one
# pass), in the same run. Prints forward / backward / AdamW times, π_old scoring, decode speed
# and peak RSS for each (crates/therapygym-grpo/examples/step_bench.rs).
#
#   bench/train/run.sh                    # needs the embedded model (scripts/setup-model.sh)
#   MICRO_BATCHES=4 bench/train/run.sh    # one setting only
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p therapygym-grpo --example step_bench
for micro in ${MICRO_BATCHES:-1 4}; do
  echo "== micro-batch $micro"
  cargo run --release -q -p therapygym-grpo --example step_bench -- "$micro"
done
