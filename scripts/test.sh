#!/usr/bin/env bash
# The whole test suite: formatting, lints, every Rust test (including the ones that load the
# embedded model, and the Python adapter suite, which tests/python_adapters.rs runs against the
# binary the tests built). Installs the model and packages first if missing.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

ensure_apt_packages
ensure_model
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
log "cargo test (workspace, with the embedded-model tests)"
cargo test --workspace --all-features --locked
log "all tests passed"
