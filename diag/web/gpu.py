"""GPU facts for the overview's panel and /metrics, through NVML (nvidia-ml-py, imported as pynvml).

The same seam as the doctor's gpu check: the NVML module is a parameter, so tests hand in a fake
one (there is no GPU here) and production imports pynvml. No driver → `available: False` and the
reason, never an exception: a dashboard on a CPU-only box or in a container without --gpus is normal.
"""

from __future__ import annotations

from typing import Any


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _try(fn: Any) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - NVML answers "not supported" per device and field
        return None


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


def read_gpus(nvml: Any = None) -> dict[str, Any]:
    """`{"available": bool, "reason": str, "driver": str, "gpus": [{index, name, memory_used_bytes, ...}]}`."""
    try:
        if nvml is None:
            import pynvml as nvml  # noqa: PLW0127
    except ImportError as exc:
        return {"available": False, "reason": f"NVML binding not installed ({exc})", "gpus": []}
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - LibraryNotFound, DriverNotLoaded, NoPermission
        return {"available": False, "reason": f"no NVIDIA driver ({exc})", "gpus": []}
    try:
        out: dict[str, Any] = {"available": True, "reason": "", "driver": _s(_try(nvml.nvmlSystemGetDriverVersion) or "?"), "gpus": []}
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = _try(lambda: nvml.nvmlDeviceGetMemoryInfo(h))
            util = _try(lambda: nvml.nvmlDeviceGetUtilizationRates(h))
            procs = _try(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(h)) or []
            out["gpus"].append({
                "index": i, "name": _s(_try(lambda: nvml.nvmlDeviceGetName(h)) or "?"),
                "memory_used_bytes": getattr(mem, "used", None), "memory_total_bytes": getattr(mem, "total", None),
                "utilization_ratio": util.gpu / 100.0 if util is not None else None,
                "temperature_celsius": _try(lambda: nvml.nvmlDeviceGetTemperatureV(h, nvml.NVML_TEMPERATURE_GPU)),
                "processes": [{"pid": p.pid, "memory_bytes": getattr(p, "usedGpuMemory", None)} for p in procs],
            })
        return out
    except Exception as exc:  # noqa: BLE001
        return {"available": False, "reason": f"NVML error ({exc})", "gpus": []}
    finally:
        _try(nvml.nvmlShutdown)
