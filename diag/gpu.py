"""One reading of the GPUs through NVML (nvidia-ml-py, imported as pynvml), for every consumer.

The doctor's gpu check judges it, the dashboard's panel shows it, `/metrics` exports it: all three
must say the same thing about the same card, so there is one reader. The NVML module is a
parameter: tests hand in a fake one (no GPU exists on the CI machine; such tests are named
`…_fake_nvml`), production imports pynvml. No binding or no driver is an answer, never an
exception (a CPU-only box or a container without `--gpus` is normal), and a field a card does not
support (ECC on consumer cards, retired pages) is None.
"""

from __future__ import annotations

from typing import Any


def read_gpus(nvml: Any = None) -> dict[str, Any]:
    """`{"available", "reason", "problem", "driver", "gpus": [{index, name, memory_used_bytes,
    memory_total_bytes, utilization_ratio, temperature_celsius, ecc_uncorrected, retired_pages,
    processes: [{pid, memory_bytes}]}]}`; `problem` is "binding", "driver" or "error" when not available."""
    try:
        if nvml is None:
            import pynvml as nvml  # noqa: PLW0127 - NVIDIA's official binding, imported as pynvml
    except ImportError as exc:
        return {"available": False, "problem": "binding", "reason": f"NVML binding not installed ({exc})", "gpus": []}
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - LibraryNotFound, DriverNotLoaded, NoPermission
        return {"available": False, "problem": "driver", "reason": f"no NVIDIA driver ({exc})", "gpus": []}
    try:
        out: dict[str, Any] = {"available": True, "problem": None, "reason": "",
                               "driver": _s(_try(nvml.nvmlSystemGetDriverVersion) or "?"), "gpus": []}
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = _try(lambda: nvml.nvmlDeviceGetMemoryInfo(h))
            util = _try(lambda: nvml.nvmlDeviceGetUtilizationRates(h))
            procs = _try(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(h)) or []
            ecc = _try(lambda: nvml.nvmlDeviceGetTotalEccErrors(h, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC))
            retired = _try(lambda: nvml.nvmlDeviceGetRetiredPages(h, nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR))
            out["gpus"].append({
                "index": i, "name": _s(_try(lambda: nvml.nvmlDeviceGetName(h)) or "?"),
                "memory_used_bytes": getattr(mem, "used", None), "memory_total_bytes": getattr(mem, "total", None),
                "utilization_ratio": util.gpu / 100.0 if util is not None else None,
                # nvmlDeviceGetTemperature is deprecated; the V form is what current drivers keep
                "temperature_celsius": _try(lambda: nvml.nvmlDeviceGetTemperatureV(h, nvml.NVML_TEMPERATURE_GPU)),
                "ecc_uncorrected": ecc if isinstance(ecc, int) else None,
                "retired_pages": len(retired) if isinstance(retired, (list, tuple)) else None,
                "processes": [{"pid": p.pid, "memory_bytes": getattr(p, "usedGpuMemory", None)} for p in procs],
            })
        return out
    except Exception as exc:  # noqa: BLE001
        return {"available": False, "problem": "error", "reason": f"NVML error ({exc})", "gpus": []}
    finally:
        _try(nvml.nvmlShutdown)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _try(fn: Any) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - NVML answers "not supported" per device and field
        return None
