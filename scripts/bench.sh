#!/usr/bin/env bash
# Every benchmark in one command, each figure beside the baseline a user would pick instead,
# measured in the same run: eval orchestration vs Python (asyncio + openai), the reward service
# vs its own /healthz floor, embedded decode vs llama-cpp-python, validate vs scipy, synthesis
# at the paper's scale, and one GRPO step. Prints one table and writes it, with machine, date,
# commit, command and each benchmark's raw output, to bench/RESULTS.md.
#
#   ./scripts/bench.sh            # full sizes (about 30 minutes on 2 cores, more the first time:
#                                 # it builds llama-cpp-python into target/bench-venv)
#   ./scripts/bench.sh --quick    # small sizes, only checks that every benchmark runs; prints
#                                 # the table, leaves bench/RESULTS.md alone
#
# Not part of the test suite: timings need an otherwise idle machine.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
warn() { printf '\033[1;33mwarning: %s\033[0m\n' "$*" >&2; }
mode=full
if [ "${1:-}" = "--quick" ]; then mode=quick; fi
command="scripts/bench.sh${1:+ $1}"

ensure_apt_packages
ensure_model
if [ ! -x /usr/bin/time ]; then
  log "installing the Debian package time (peak memory figures)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq time >/dev/null
fi

# The Python side: one venv under target/ with the baselines' packages.
venv=target/bench-venv
PY="$venv/bin/python"
if [ ! -x "$PY" ]; then
  log "creating $venv (the Python baselines)"
  python3 -m venv "$venv"
fi
if ! "$PY" -c "import scipy, openai" 2>/dev/null; then
  log "installing the reference packages into $venv"
  "$PY" -m pip install -q -r tools/fixtures/requirements.txt "openai>=1.50,<3" "httpx>=0.27"
fi
if [ "$mode" = full ] && ! "$PY" -c "import llama_cpp" 2>/dev/null; then
  log "building llama-cpp-python into $venv (several minutes, once)"
  "$PY" -m pip install -q "llama-cpp-python>=0.3,<0.4" \
    || warn "llama-cpp-python did not install: the decode baseline is skipped"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log "building the benchmarks (release)"
cargo build --release -q -p therapygym-cli -p therapygym-testkit --examples --bins

bench() { # NAME COMMAND...: runs one benchmark, its output to $work/NAME.txt
  local name="$1"; shift
  log "benchmark: $name"
  if ! "$@" >"$work/$name.txt" 2>&1; then
    warn "$name failed (its output is in the table's notes)"
  fi
  tail -3 "$work/$name.txt"
}

if [ "$mode" = quick ]; then
  bench orchestration bench/orchestration/run.sh --quick "$PY"
  bench serve bench/serve/run.sh 2 16
  bench inference bench/inference/run.sh "$PY" 1
  bench validate bench/validate/run.sh "$PY" 1000
  bench synth env TARGET=500 bench/synth/run.sh
  bench train env MICRO_BATCHES=4 bench/train/run.sh
else
  bench orchestration bench/orchestration/run.sh "$PY"
  bench serve bench/serve/run.sh 10 32
  bench inference bench/inference/run.sh "$PY" 3
  bench validate bench/validate/run.sh "$PY" 10000
  bench synth bench/synth/run.sh
  bench train bench/train/run.sh
fi
python3 bench/results.py "$work" "$mode" "$command"
