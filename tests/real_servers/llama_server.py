"""A real llama.cpp `llama-server` for integration tests (commit 0c1e57098, CPU only, a tiny
random-weight GGUF model and vision projector).

Provisioned by `.ci/run` (or by hand) with ../shared/tools/real-llamacpp/build.sh and
make_tiny_gguf.py into a cache directory outside the checkout; `DIAG_LLAMA_ENV` points at it
(it holds `bin/llama-server` and `models/tiny.gguf`, `models/tiny-mmproj.gguf`). Without it the
tests that need a server are skipped with that reason. The server starts in well under a second.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from conftest import free_port  # noqa: E402

ENV_VAR = "DIAG_LLAMA_ENV"


def provisioned() -> tuple[Path, Path] | str:
    """(the llama-server binary, the models directory), or why the real-server tests skip."""
    root = os.environ.get(ENV_VAR)
    if not root:
        return (f"{ENV_VAR} is not set: real llama-server tests need a built llama-server and the tiny GGUF models "
                "(.ci/run provisions them with ../shared/tools/real-llamacpp)")
    binary, models = Path(root) / "bin" / "llama-server", Path(root) / "models"
    if not os.access(binary, os.X_OK) or not (models / "tiny.gguf").exists() or not (models / "tiny-mmproj.gguf").exists():
        return (f"{ENV_VAR}={root} has no bin/llama-server and models/tiny.gguf, tiny-mmproj.gguf "
                f"(../shared/tools/real-llamacpp/build.sh {root}; make_tiny_gguf.py {root}/models)")
    return binary, models


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited ({self.proc.returncode}) during startup; log tail:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:  # refused, or 503 while the model loads
                pass
            time.sleep(0.05)
        raise TimeoutError(f"llama-server not ready after {timeout} s; log tail:\n{self.log_text()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=30)


def start(binary: Path, log: Path, *args: str) -> Server:
    """llama-server with `args` (e.g. -m MODEL), on a free port, its stderr (the log) to `log`."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(binary), *args, "--host", "127.0.0.1", "--port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    return Server(proc, port, log)
