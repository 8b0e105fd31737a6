"""diag doctor and diag scan against a real llama.cpp `llama-server` (CPU build, tiny random-weight GGUF).

Skipped unless DIAG_LLAMA_ENV points at a built server and the tiny models (tests/real_servers/llama_server.py
says how; .ci/run provisions them). Each server starts in well under a second, so each test that
needs a particular log starts its own; the two long-lived ones (text-only, and with a vision projector)
are shared.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "real_servers"))
import llama_server as real  # noqa: E402

from conftest import CANARY  # noqa: E402

ENV = real.provisioned()
if isinstance(ENV, str):
    pytest.skip(ENV, allow_module_level=True)
BINARY, MODELS = ENV
TEXT = ("-m", str(MODELS / "tiny.gguf"), "-c", "512", "--metrics", "--slots")
VISION = TEXT + ("--mmproj", str(MODELS / "tiny-mmproj.gguf"))
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP4z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==")


def doctor(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "diag", "doctor", "--json", *args], capture_output=True, text=True,
                       timeout=120, check=False)
    doc = json.loads(r.stdout)
    doc["rc"] = r.returncode
    doc["by_id"] = {c["id"]: c for c in doc["checks"]}
    return doc


def chat(url: str, content, model: str = "whatever", max_tokens: int = 4) -> tuple[int, dict]:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def scan_json(*paths: Path) -> tuple[dict, str]:
    r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", *map(str, paths)], capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout), r.stdout + r.stderr


def serving(tmp_path_factory, name: str, args: tuple[str, ...]):
    s = real.start(BINARY, tmp_path_factory.mktemp(name) / "llama-server.log", *args)
    try:
        s.wait_ready()
        yield s
    finally:
        assert s.stop() == 0  # SIGTERM: a clean exit


@pytest.fixture(scope="module")
def text_server(tmp_path_factory):
    yield from serving(tmp_path_factory, "llama-text", TEXT)


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory):
    yield from serving(tmp_path_factory, "llama-vision", VISION)


def test_doctor_on_a_text_only_llama_server(text_server):
    d = doctor("--url", text_server.url, "--log", str(text_server.log))
    statuses = {c["id"]: c["status"] for c in d["checks"]}
    assert statuses == {"server": "ok", "processes": "ok", "models": "ok", "generation": "ok", "vision": "skip",
                        "proxy": "skip", "gpu": "skip", "logs": "ok", "host": "ok"}, d["checks"]
    assert d["rc"] == 0 and d["verdict"] == "ok"
    assert re.search(r"^llamacpp b\d+-[0-9a-f]+ healthy", d["by_id"]["server"]["summary"])
    assert "text-only" in d["by_id"]["vision"]["summary"] and "--mmproj" in d["by_id"]["vision"]["remedy"]
    # a tiny model's memory in MiB, not "RSS 0.0 GiB"
    assert re.search(r"RSS \d+ MiB$", d["by_id"]["processes"]["summary"]), d["by_id"]["processes"]["summary"]
    assert "[DONE] received" in " ".join(d["by_id"]["generation"]["details"])


def test_doctor_sees_the_image_reach_a_llama_server_with_a_projector(vision_server):
    d = doctor("--url", vision_server.url, "--check", "server", "--check", "models", "--check", "vision")
    v = d["by_id"]["vision"]
    assert v["status"] == "ok", v
    added = int(re.search(r"\+(\d+) prompt tokens", v["summary"]).group(1))
    assert added > 0


def test_a_model_name_llama_server_does_not_list_is_not_a_failure_there(vision_server):
    # llama-server with one model answers whatever "model" a request names: a client asking for
    # `qwen3-vl-32b` is served, so the doctor must not report it as the wrong-name failure vLLM has.
    status, _ = chat(vision_server.url, "hi", model="qwen3-vl-32b")
    assert status == 200
    for args in (("--check", "server", "--check", "models"), ("--check", "models")):  # also without the server check first
        m = doctor("--url", vision_server.url, "--model", "qwen3-vl-32b", *args)["by_id"]["models"]
        assert m["status"] == "ok", m
        assert "`qwen3-vl-32b` is answered" in m["summary"] and "tiny.gguf" in m["summary"]
        assert any("HTTP 200" in x for x in m["details"])


def test_scan_of_a_real_llama_server_log(tmp_path):
    s = real.start(BINARY, tmp_path / "llama-server.log", *TEXT)
    try:
        s.wait_ready()
        system = "You are a careful assistant. " * 8 + CANARY
        for q in ("first question " + CANARY, "second question " + CANARY, "third " + CANARY):
            status, body = chat(s.url, [{"type": "text", "text": system + " " + q}])
            assert status == 200
        # an image sent to a server without a projector: a 500 and no task
        status, body = chat(s.url, [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
                                    {"type": "text", "text": "what is this " + CANARY}])
        assert status == 500 and "image input is not supported" in body["error"]["message"]
        usage = chat(s.url, [{"type": "text", "text": system + " again"}])[1]["usage"]
    finally:
        assert s.stop() == 0
    doc, out = scan_json(s.log)
    assert CANARY not in out and CANARY not in s.log_text()  # llama-server logs no prompt at this verbosity
    tr = doc["traces"]
    assert [t["status"] for t in tr] == ["ok"] * 4
    assert {t["server"] for t in tr} == {"llamacpp"} and len({t["id"] for t in tr}) == 4
    # the last request shared its long system prompt with the ones before: the server evaluated only
    # what its prompt cache missed, and the trace still holds the whole prompt the response reported
    assert tr[-1]["prompt_tokens"] == usage["prompt_tokens"] and tr[-1]["output_tokens"] == usage["completion_tokens"]
    assert [f["rule"] for f in doc["findings"]] == ["image-without-projector"]
    assert doc["facts"][str(s.log)]["model"] == str(MODELS / "tiny.gguf")


def test_doctor_names_the_startup_failure_of_a_missing_model(tmp_path):
    s = real.start(BINARY, tmp_path / "llama-server.log", "-m", str(tmp_path / "missing.gguf"))
    assert s.proc.wait(timeout=60) == 1
    d = doctor("--url", s.url, "--log", str(s.log), "--check", "server", "--check", "logs")
    assert d["by_id"]["server"]["status"] == "fail" and "nothing listens" in d["by_id"]["server"]["summary"]
    logs = d["by_id"]["logs"]
    assert logs["status"] == "fail" and "cannot open the GGUF file" in logs["summary"]
    assert "missing.gguf" in " ".join(logs["details"])
    assert d["rc"] == 2
