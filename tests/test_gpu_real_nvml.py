"""The GPU readings against a real NVIDIA driver, checked against `nvidia-smi` (an independent reader).

This machine and CI have no GPU, so these tests skip here with the reason; they run where a driver
is (an operator's server, or the GPU machine a development session borrows) and prove that the
doctor's gpu check, the dashboard's GPU panel and the `diag_gpu_*` gauges report what the driver
reports. The fake-NVML tests (`*_fake_nvml`) cover the judgement logic everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest


def _smi() -> list[dict[str, str]]:
    """One dict per GPU from nvidia-smi's CSV query; skip the module where there is no driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        pytest.skip("no nvidia-smi: no NVIDIA driver on this machine (the fake-NVML tests cover the logic)")
    fields = ["index", "name", "memory.total", "memory.used", "driver_version"]
    r = subprocess.run([exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                       capture_output=True, text=True, timeout=30, check=False)
    if r.returncode != 0 or not r.stdout.strip():
        pytest.skip(f"nvidia-smi found no usable GPU: {(r.stderr or r.stdout).strip()[:200]}")
    return [dict(zip(fields, (c.strip() for c in line.split(",")))) for line in r.stdout.strip().splitlines()]


@pytest.fixture(scope="module")
def smi() -> list[dict[str, str]]:
    gpus = _smi()
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"NVML cannot be initialised here: {exc}")
    return gpus


def test_dashboard_reading_matches_nvidia_smi_real_nvml(smi):
    from diag.web.gpu import read_gpus

    g = read_gpus()
    assert g["available"], g
    assert g["driver"] == smi[0]["driver_version"]
    assert [d["name"] for d in g["gpus"]] == [s["name"] for s in smi]
    for d, s in zip(g["gpus"], smi):
        assert d["memory_total_bytes"] == int(s["memory.total"]) * 2**20
        assert 0 <= d["memory_used_bytes"] <= d["memory_total_bytes"]


def test_doctor_gpu_check_real_nvml(smi):
    r = subprocess.run([sys.executable, "-m", "diag", "doctor", "--check", "gpu", "--json"],
                       capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "NO_COLOR": "1"})
    assert "Traceback" not in r.stderr, r.stderr
    (check,) = json.loads(r.stdout)["checks"]
    assert check["id"] == "gpu" and check["status"] in ("ok", "warn"), check
    text = "\n".join(check["details"])
    assert f"driver {smi[0]['driver_version']}, {len(smi)} GPU(s)" in text
    for s in smi:
        assert f"GPU {s['index']} {s['name']}: memory" in text
        assert f"/{int(s['memory.total']) / 1024:.1f} GiB" in text


def test_metrics_gpu_gauges_real_nvml(smi, tmp_path):
    from fastapi.testclient import TestClient

    from diag.store.db import Store
    from diag.web.app import create_app

    Store(tmp_path / "diag.sqlite3").close()
    with TestClient(create_app(tmp_path / "diag.sqlite3")) as c:
        metrics = c.get("/metrics").text
        overview = c.get("/").text
    for s in smi:
        line = f'diag_gpu_memory_total_bytes{{gpu="{s["index"]}",name="{s["name"]}"}} '
        (found,) = [m for m in metrics.splitlines() if m.startswith(line)]
        assert float(found.split()[-1]) == int(s["memory.total"]) * 2**20
        assert s["name"] in overview
    assert "no NVIDIA driver" not in overview
