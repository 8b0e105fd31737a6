"""diag doctor without an inference server: nothing listening, a foreign HTTP server on the port,
the NVML logic with a fake NVML (no GPU exists on this machine), output formats and exit codes."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from diag import doctor
from diag.doctor.checks import host
from diag.doctor.checks.vision import png

from conftest import free_port


def run_cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "diag", "doctor", *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_nothing_listening_is_a_fast_clear_failure():
    port = free_port()
    r = run_cli("--url", f"http://127.0.0.1:{port}", "--json")  # how fast: tests/bench/bench_doctor.py
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["verdict"] == "fail"
    checks = {c["id"]: c for c in doc["checks"]}
    assert checks["server"]["status"] == "fail" and "nothing listens" in checks["server"]["summary"]
    assert checks["generation"]["status"] == "skip"
    assert checks["processes"]["status"] == "fail"
    assert all(isinstance(c["duration_ms"], (int, float)) and c["duration_ms"] >= 0 for c in doc["checks"])


class _Plain(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@pytest.fixture
def plain_http_server(tmp_path):
    (tmp_path / "index.html").write_text("<html>intranet</html>")
    port = free_port()
    handler = lambda *a, **k: _Plain(*a, directory=str(tmp_path), **k)  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield port
    srv.shutdown()


def test_a_port_held_by_a_plain_http_server(plain_http_server):
    r = run_cli("--url", f"http://127.0.0.1:{plain_http_server}", "--json", "--check", "server", "--check", "models",
                "--check", "processes")
    checks = {c["id"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["server"]["status"] == "fail" and "not an inference server" in checks["server"]["summary"]
    assert checks["models"]["status"] == "skip"
    assert checks["processes"]["status"] == "fail"
    assert "not an inference server" in checks["processes"]["summary"]
    assert r.returncode == 2


def test_list_checks_and_subset_and_unknown_check():
    r = run_cli("--list-checks")
    assert r.returncode == 0 and [ln.split()[0] for ln in r.stdout.splitlines()] == list(doctor.registry())
    r = run_cli("--check", "host", "--json")
    doc = json.loads(r.stdout)
    assert [c["id"] for c in doc["checks"]] == ["host"] and r.returncode in (0, 1)
    assert run_cli("--check", "nope").returncode == 2


def test_ascii_output_without_a_terminal_and_no_color():
    r = subprocess.run([sys.executable, "-m", "diag", "doctor", "--url", f"http://127.0.0.1:{free_port()}", "--check", "server"],
                       capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, check=False)
    assert "[XX] server:" in r.stdout and "-> fix:" in r.stdout and "\x1b[" not in r.stdout
    assert "Doctor found 1 failure(s)" in r.stdout


def test_a_check_that_raises_is_reported_as_error_and_others_run(monkeypatch):
    def boom(ctx):
        raise RuntimeError("kaboom")

    reg = doctor.registry()
    reg["host"] = ("x", boom)
    monkeypatch.setattr(doctor, "registry", lambda: reg)
    results = doctor.run(doctor.Context(url=f"http://127.0.0.1:{free_port()}"), ["server", "host"])
    assert [r.status for r in results] == ["fail", "error"]
    assert "kaboom" in results[1].summary and doctor.exit_code(results) == 2


def test_png_probe_is_a_valid_image():
    data = png(64, 48)
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and b"IHDR" in data and b"IEND" in data


def test_flag_parsing():
    cmd = ["python", "-m", "vllm.entrypoints.cli.main", "serve", "/nas/models/Qwen3-VL-32B-Instruct", "--max-model-len", "8192",
           "--gpu-memory-utilization=0.85", "--limit-mm-per-prompt", '{"image": 4}', "--enable-log-requests"]
    f = host.parse_flags(cmd)
    assert f == {"model": "/nas/models/Qwen3-VL-32B-Instruct", "--max-model-len": "8192", "--gpu-memory-utilization": "0.85",
                 "--limit-mm-per-prompt": '{"image": 4}', "--enable-log-requests": "true"}


# -- NVML: a fake object injected through Context.nvml (no GPU exists on this machine) --------------
class FakeNVMLError(Exception):
    pass


def fake_nvml(*, fail_init=None, ecc=0, procs=(), used=60, total=80, temp=64):
    GiB = 1024 ** 3
    calls = []

    def rec(name, value):
        def f(*a):
            calls.append(name)
            if isinstance(value, Exception):
                raise value
            return value(*a) if callable(value) else value
        return f

    nv = SimpleNamespace(
        NVML_TEMPERATURE_GPU=0, NVML_MEMORY_ERROR_TYPE_UNCORRECTED=1, NVML_VOLATILE_ECC=0,
        NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR=1,
        nvmlInit=rec("init", fail_init or None), nvmlShutdown=rec("shutdown", None),
        nvmlSystemGetDriverVersion=rec("driver", b"580.82.07"), nvmlDeviceGetCount=rec("count", 1),
        nvmlDeviceGetHandleByIndex=rec("handle", "h0"), nvmlDeviceGetName=rec("name", "NVIDIA H100 80GB HBM3"),
        nvmlDeviceGetMemoryInfo=rec("mem", SimpleNamespace(used=used * GiB, total=total * GiB, free=(total - used) * GiB)),
        nvmlDeviceGetUtilizationRates=rec("util", SimpleNamespace(gpu=97, memory=40)),
        nvmlDeviceGetTemperatureV=rec("tempV", temp),
        nvmlDeviceGetTemperature=rec("temp_deprecated", AssertionError("deprecated call used")),
        nvmlDeviceGetComputeRunningProcesses=rec("procs", [SimpleNamespace(pid=p, usedGpuMemory=g * GiB) for p, g in procs]),
        nvmlDeviceGetTotalEccErrors=rec("ecc", ecc),
        nvmlDeviceGetRetiredPages=rec("retired", FakeNVMLError("Not Supported")),
    )
    nv.calls = calls
    return nv


def test_gpu_ok_fake_nvml():
    nv = fake_nvml(procs=[(os.getpid(), 58)])
    ctx = doctor.Context(nvml=nv, server_pids={os.getpid()})
    r = host.check_gpu(ctx)
    assert r.status == "ok", r
    text = "\n".join(r.details)
    assert "driver 580.82.07" in text and "60.0/80.0 GiB" in text and "temperature 64 C" in text
    assert "(the inference server)" in text and "uncorrected ECC errors since boot: 0" in text
    assert "tempV" in nv.calls and "temp_deprecated" not in nv.calls and nv.calls[-1] == "shutdown"


def test_gpu_memory_held_by_other_processes_fake_nvml():
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        nv = fake_nvml(procs=[(os.getpid(), 40), (other.pid, 18)])
        r = host.check_gpu(doctor.Context(nvml=nv, server_pids={os.getpid()}))
        assert r.status == "warn" and "18.0 GiB held by processes other than the inference server" in r.summary
        assert "time.sleep(30)" in "\n".join(r.details)  # mapped to its command line
        assert "--gpu-memory-utilization" in r.remedy
    finally:
        other.kill()


def test_gpu_uncorrected_ecc_fails_fake_nvml():
    r = host.check_gpu(doctor.Context(nvml=fake_nvml(ecc=3)))
    assert r.status == "fail" and "3 uncorrected ECC errors" in r.summary


def test_gpu_without_driver_is_skip_not_crash_fake_nvml():
    r = host.check_gpu(doctor.Context(nvml=fake_nvml(fail_init=FakeNVMLError("NVML Shared Library Not Found"))))
    assert r.status == "skip" and "NVML Shared Library Not Found" in r.summary


def _nvml_usable() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:  # noqa: BLE001 - any failure means no usable NVML here
        return False


def test_gpu_real_nvml_absent_here_is_skip():
    if _nvml_usable():
        pytest.skip("a usable NVIDIA driver is present: this test is about a machine without one")
    r = host.check_gpu(doctor.Context())
    assert r.status == "skip" and (r.summary.startswith("no NVIDIA driver (") or "NVML binding not installed" in r.summary)


def test_logs_check_on_recorded_logs(tmp_path):
    from conftest import VLLM

    log = tmp_path / "vllm.log"
    log.write_bytes((VLLM / "kv-pressure-then-worker-sigkill.log").read_bytes())
    os.utime(log, (time.time(), time.time()))
    ctx = doctor.Context(logs=[str(log), str(tmp_path / "missing.log")], log_minutes=10 ** 7)
    r = host.check_logs(ctx)
    assert r.status == "fail"
    assert "missing.log does not exist" in r.summary and "killed" in r.summary
    assert any("startup facts" in d for d in r.details)


def test_config_supplies_url_model_and_logs(tmp_path):
    from conftest import VLLM

    log = tmp_path / "vllm.log"
    log.write_bytes((VLLM / "text.log").read_bytes())
    port = free_port()
    cfg = tmp_path / "diag.toml"
    cfg.write_text(f'[doctor]\nurl = "http://127.0.0.1:{port}"\nmodel = "tiny"\n[[log]]\npath = "{tmp_path}/*.log"\n')
    r = run_cli("--config", str(cfg), "--json", "--check", "server", "--check", "logs", "--log-minutes", "100000000")
    checks = {c["id"]: c for c in json.loads(r.stdout)["checks"]}
    assert f"127.0.0.1:{port}" in checks["server"]["summary"]
    assert any(str(log) in d for d in checks["logs"]["details"])
    assert "unknown-model" in " ".join(checks["logs"]["details"])
