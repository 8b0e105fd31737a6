"""Run a command with the notification JSON on stdin; a non-zero exit or a timeout is retried."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from diag.alerts.sinks import DeliveryError, Sink


class ExecSink(Sink):
    def send(self, docs: list[dict[str, Any]]) -> None:
        for doc in docs:
            data = json.dumps({**doc, "receiver": self.name}, ensure_ascii=False).encode()
            try:
                r = subprocess.run(self.cfg.command, input=data, capture_output=True, timeout=self.cfg.timeout, check=False)
            except subprocess.TimeoutExpired:
                raise DeliveryError(f"{self.cfg.command[0]} took longer than {self.cfg.timeout:g} s") from None
            except OSError as exc:
                raise DeliveryError(f"{self.cfg.command[0]}: {exc.strerror or exc}") from None
            if r.returncode != 0:
                tail = r.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
                raise DeliveryError(f"{self.cfg.command[0]} exited {r.returncode}: {tail[0][:200]}")
