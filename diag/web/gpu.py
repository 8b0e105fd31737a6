"""GPU facts for the overview's panel and /metrics: `diag.gpu`'s reading, shared for a few seconds.

No driver → `available: False` and the reason, never an exception: a dashboard on a CPU-only box or
in a container without --gpus is normal.
"""

from __future__ import annotations

from typing import Any

from diag.gpu import read_gpus


class GpuCache:
    """NVML is initialised per reading; the overview and each scrape share one reading for `ttl` s."""

    def __init__(self, nvml: Any = None, ttl: float = 5.0):
        self.nvml, self.ttl = nvml, ttl
        self._at, self._value = -1e9, None

    def get(self) -> dict[str, Any]:
        import time

        now = time.monotonic()
        if self._value is None or now - self._at > self.ttl:
            self._value, self._at = read_gpus(self.nvml), now
        return self._value
