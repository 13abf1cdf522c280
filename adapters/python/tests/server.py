"""Starts a real ``therapygym serve`` for the adapter tests and stops it afterwards.

The binary is ``$THERAPYGYM_BIN``, else ``target/debug/therapygym`` under the repository root
(``./scripts/test.sh`` builds it first). When the default binary is missing it is built with
``cargo build --locked -p therapygym-cli``; when that is impossible the tests fail, saying how to
build it.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_HINT = (
    "build it with `cargo build --locked -p therapygym-cli` in the repository root "
    f"({REPO_ROOT}), or point THERAPYGYM_BIN at a therapygym binary"
)


_BUILD_LOCK = threading.Lock()


def binary() -> Path:
    env = os.environ.get("THERAPYGYM_BIN")
    path = Path(env) if env else REPO_ROOT / "target" / "debug" / "therapygym"
    with _BUILD_LOCK:
        if not path.is_file() and not env and shutil.which("cargo"):
            print(
                f"\n{path} is missing; running `cargo build --locked -p therapygym-cli` (minutes)...",
                file=sys.stderr,
                flush=True,
            )
            subprocess.run(
                ["cargo", "build", "--locked", "-p", "therapygym-cli"], cwd=str(REPO_ROOT), check=False
            )
    if not path.is_file():
        raise RuntimeError(f"the therapygym binary is missing at {path}: {BUILD_HINT}")
    return path


class Service:
    """``therapygym serve --addr 127.0.0.1:0 --patient P --judge J --out <tmp>`` plus ``extra``."""

    def __init__(
        self,
        *extra: str,
        patient: str = "scripted:echo",
        judge: str = "scripted:echo",
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.extra = list(extra)
        self.patient = patient
        self.judge = judge
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.tmp = ""
        self._stderr = None
        self._lines: queue.Queue = queue.Queue()

    def start(self) -> "Service":
        exe = binary()
        self.tmp = tempfile.mkdtemp(prefix="tg-adapter-test-")
        self._stderr = open(os.path.join(self.tmp, "stderr.log"), "w+b")
        cmd = [
            str(exe),
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--patient",
            self.patient,
            "--judge",
            self.judge,
            "--out",
            os.path.join(self.tmp, "run"),
            *self.extra,
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._stderr, cwd=str(REPO_ROOT)
        )
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise RuntimeError(f"`{' '.join(cmd)}` printed no `listening on` line: {self.stderr()}")
            try:
                line = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"`{' '.join(cmd)}` exited with {self.proc.returncode}: {self.stderr()}"
                    ) from None
                continue
            if line is None:
                continue
            if line.startswith("listening on "):
                self.url = line[len("listening on ") :].strip()
                return self

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode("utf-8", errors="replace").rstrip("\n"))
        self._lines.put(None)

    def stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = ""

    def __enter__(self) -> "Service":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
