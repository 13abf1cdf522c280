#!/usr/bin/env bash
# Setup-and-run: installs what is missing (Debian packages, the embedded model, a release build)
# and runs a small evaluation on the embedded model. Idempotent: finished steps are skipped.
#
#   ./scripts/setup.sh               # everything, then a small eval (2 profiles, 2 turns)
#   THERAPYGYM_SKIP_RUN=1 ./scripts/setup.sh   # set up only
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

ensure_apt_packages
ensure_model
log "building therapygym (release; the first build compiles llama.cpp and takes several minutes)"
cargo build --release --locked -p therapygym-cli
bin=target/release/therapygym
log "installed: $bin"
"$bin" models

if [ "${THERAPYGYM_SKIP_RUN:-0}" = "1" ]; then
  exit 0
fi
log "a small evaluation on the embedded model (SmolLM2-135M plays therapist, patient and judge)"
"$bin" eval --limit 2 --turns 2 --therapist-max-tokens 96 --patient-max-tokens 64 --judge-rationale-chars 120 --max-unscored-rate 1.0
