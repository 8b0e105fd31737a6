"""The facts corpus/README.md lists for every vLLM log, asserted through the real pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import CANARY, CANARY_TEXT, CORPUS, VLLM, findings, scan, severe, statuses, traces

TEXT_IDS = {
    "chatcmpl-914cc2ebd5c0a1d5", "chatcmpl-962870694042a02a", "cmpl-a1b1ba4c5911d906-0", "chatcmpl-aaaeeea55876c992",
    "chatcmpl-886400f5a5e67693", "chatcmpl-b03950d2a117c7e7", "chatcmpl-9ae3f7091be22451", "chatcmpl-889f3af5b40d3f0c",
    "chatcmpl-b18069ca51ea7834", "chatcmpl-92253a833b7a275c", "chatcmpl-ac7f4fb4667e4f31", "chatcmpl-96d6bb2746b1095f",
}


def test_text_log_requests_and_outcomes():
    doc = scan(VLLM / "text.log")
    tr = traces(doc)
    assert set(tr) == TEXT_IDS  # internal "-<8hex>" ids mapped back to the Received id
    assert sum(i.startswith("chatcmpl-") for i in tr) == 11
    aborted = {i for i, t in tr.items() if t["status"] == "aborted"}
    assert aborted == {"chatcmpl-9ae3f7091be22451", "chatcmpl-889f3af5b40d3f0c"}
    ok = [t for t in tr.values() if t["status"] == "ok"]
    assert len(ok) == 10 and all(t["http_status"] == 200 for t in ok)
    assert tr["chatcmpl-914cc2ebd5c0a1d5"]["max_tokens"] == 16
    # every trace has exactly one Received and one Added line in its timeline
    for t in tr.values():
        kinds = [e["kind"] for e in t["timeline"]]
        assert kinds.count("request.received") == 1 and kinds.count("request.added") == 1


def test_text_log_access_counts_and_only_the_wrong_model_is_an_error():
    doc = scan(VLLM / "text.log")
    assert doc["summary"]["http_status"] == {"200": 20, "400": 6, "404": 2}
    assert severe(doc) == {"unknown-model"}
    f = findings(doc)["unknown-model"]
    assert f["count"] == 1 and f["fields"]["model"] == "nope" and f["fields"]["served"] == "tiny"
    assert "--served-model-name" in f["remedy"]
    assert f["locations"][0]["line"] == 123


def test_text_log_startup_facts():
    facts = scan(VLLM / "text.log")["facts"][str(VLLM / "text.log")]
    assert facts["version"] == "0.32.0"
    assert facts["model"] == "/srv/models/tiny/text"
    assert facts["served_model_name"] == "tiny"
    assert facts["max_model_len"] == 512
    assert facts["kv_cache_tokens"] > 0 and facts["max_concurrency"] > 1
    assert facts["listen"] == "http://127.0.0.1:51273"
    assert facts["starts"] == 1 and facts["shutdowns"] >= 1


def test_logoutputs_one_abort_and_generated_responses():
    tr = traces(scan(VLLM / "text-logoutputs.log"))
    assert len(tr) == 12
    assert {i for i, t in tr.items() if t["status"] == "aborted"} == {"chatcmpl-bd32fde27c4a734b"}
    assert tr["chatcmpl-ba98c2a0b2c93df1"]["status"] == "ok"


def test_debug_log_shutdown_engine_dead_trap_stays_quiet():
    doc = scan(VLLM / "text-debug.log")
    tr = traces(doc)
    assert set(tr) == {"chatcmpl-99ae9d0bb3f50234", "chatcmpl-a84a8af259ac1638", "chatcmpl-989ca4898bbc87e2"}
    assert tr["chatcmpl-989ca4898bbc87e2"]["status"] == "aborted"
    assert "engine-dead" not in findings(doc)
    assert severe(doc) == {"unknown-model"}
    # the DEBUG details line gives the prompt size without keeping the prompt
    assert tr["chatcmpl-99ae9d0bb3f50234"]["prompt_chars"] > 0


@pytest.mark.parametrize("name", ["vl.log", "cold-start-vl.log", "sigterm-during-startup.log"])
def test_healthy_logs_have_no_error_findings(name):
    assert severe(scan(VLLM / name)) == set()


def test_vl_log():
    doc = scan(VLLM / "vl.log")
    assert set(traces(doc)) == {"chatcmpl-b447b30e6fe1948d", "chatcmpl-bc89403e1666ede6", "chatcmpl-b493edcc90877833",
                                "chatcmpl-a176c2325eb71ca4", "chatcmpl-bd14af4f09f1b966"}
    assert statuses(doc)["aborted"] == 0
    assert doc["summary"]["http_status"] == {"200": 11, "400": 3, "500": 1}
    assert findings(doc)["image-fetch-failed"]["fields"]["host"] == "127.0.0.1"


def test_cold_starts():
    text = scan(VLLM / "cold-start-text.log")
    assert len(text["traces"]) == 13
    assert {i for i, t in traces(text).items() if t["status"] == "aborted"} == {"chatcmpl-962f4e45cbb1b230", "chatcmpl-b73b763871b76b01"}
    assert findings(text)["unknown-model"]["count"] == 1
    vl = scan(VLLM / "cold-start-vl.log")
    assert [t["id"] for t in vl["traces"]] == ["chatcmpl-b2fafdd22509230d", "chatcmpl-8ab692097f451620", "chatcmpl-b765403d22e75667",
                                                "chatcmpl-86139b76b2703227", "chatcmpl-9e20cdc87ce970ad"]


def test_kv_pressure_then_worker_killed():
    doc = scan(VLLM / "kv-pressure-then-worker-sigkill.log")
    tr = traces(doc)
    assert len(tr) == 7
    assert statuses(doc) == {"ok": 6, "failed": 1}
    dead = tr["chatcmpl-99512c3bf5fb2800"]
    assert dead["status"] == "failed" and dead["reason"] == "engine dead" and dead["http_status"] == 500
    f = findings(doc)
    assert f["worker-killed"]["count"] == 1 and f["worker-killed"]["fields"]["code"] == "-9"
    assert "engine-dead" in f and "kv-cache-full" in f
    assert "request-failed-engine-dead" in dead["findings"]


@pytest.mark.parametrize("name, rule, field, value", [
    ("oom-kvspace64-refused.log", "kv-cache-exceeds-available-memory", "requested", "64.0"),
    ("oom-kv-smaller-than-max-len.log", "kv-cache-smaller-than-max-len", "estimated", "128"),
    ("oom-kv-no-blocks.log", "kv-cache-no-blocks", None, None),
    ("oom-ulimit-alloc-failure.log", "cpu-allocator-failure", "bytes", "8589934592"),
    ("badenv-kvcache-space-empty.log", "env-var-invalid", None, None),
])
def test_startup_failures_are_classified(name, rule, field, value):
    doc = scan(VLLM / name)
    f = findings(doc)
    assert rule in f and "engine-failed-to-start" in f
    assert f[rule]["severity"] in ("critical", "error")
    if field:
        assert f[rule]["fields"][field] == value
    assert doc["traces"] == []
    assert "cuda-oom" not in f  # a CPU build: no CUDA text to misread


def test_illegal_instruction():
    doc = scan(VLLM / "illegal-instruction-platform-misdetected.log")
    assert findings(doc)["fatal-python-error"]["fields"]["what"] == "Illegal instruction"


V066 = CORPUS / "vllm" / "synthetic-0.6.6-qwen2vl.log"
V0110 = CORPUS / "vllm" / "synthetic-0.11.0-qwen3vl.log"


def test_v066_images_counted_from_logged_prompts():
    doc = scan(V066)
    tr = traces(doc)
    assert len(tr) == 11
    expect = {"chatcmpl-bd24a87336f074fb94f43dc1688d522a": 0, "chatcmpl-d17eccd03159c1ce50e2af4617ab7c0e": 1,
              "cmpl-978f3ad4331a89663e8fce7de6bef184-0": 0, "chatcmpl-support-ticket-4711": 2,
              "chatcmpl-4d6a133a2026621f13a5f96618effced": 1, "chatcmpl-bc283b85831cc6b14b255dd0fdb184b1": 1,
              "chatcmpl-1901aaca83a3029b4277ae5de007d8bf": 2, "chatcmpl-0e1fae31b8e15198ecbc6e9083d7aaaa": 0,
              "chatcmpl-14ac8bf609413d2ec68ca35428d92a04": 1, "chatcmpl-abc0c92e4c98f9eddd78051ffc0a9762": 0,
              "chatcmpl-806708fd33ec224bebb5021ea17c753f": 2}
    assert {i: t["images"] for i, t in tr.items()} == expect
    assert tr["chatcmpl-4d6a133a2026621f13a5f96618effced"]["status"] == "aborted"
    assert tr["chatcmpl-806708fd33ec224bebb5021ea17c753f"]["http_status"] == 500
    assert doc["summary"]["http_status"] == {"200": 13, "400": 2, "404": 1, "500": 1}
    f = findings(doc)
    assert f["cuda-oom"]["fields"]["size"] == "9.37 GiB"
    assert {"engine-dead", "unknown-model", "too-many-images", "context-length-exceeded", "kv-cache-preemption"} <= set(f)
    assert f["too-many-images"]["fields"]["limit"] == "2"
    assert f["context-length-exceeded"]["fields"]["max"] == "32768"
    assert doc["facts"][str(V066)]["version"] == "0.6.6.post1"


def test_v0110_ansi_prefixes_images_aborts_and_engine_death():
    doc = scan(V0110)
    tr = traces(doc)
    expect = {"chatcmpl-bd24a87336f074fb94f43dc1688d522a": 0, "chatcmpl-d17eccd03159c1ce50e2af4617ab7c0e": 1,
              "cmpl-978f3ad4331a89663e8fce7de6bef184-0": None, "chatcmpl-support-ticket-4711": 2,
              "chatcmpl-4d6a133a2026621f13a5f96618effced": 1, "chatcmpl-bc283b85831cc6b14b255dd0fdb184b1": 1,
              "chatcmpl-1901aaca83a3029b4277ae5de007d8bf": 2, "chatcmpl-0e1fae31b8e15198ecbc6e9083d7aaaa": 0,
              "chatcmpl-14ac8bf609413d2ec68ca35428d92a04": 2}
    assert {i: t["images"] for i, t in tr.items()} == expect  # `prompt: None`: unknown, not zero
    assert tr["chatcmpl-4d6a133a2026621f13a5f96618effced"]["status"] == "aborted"
    for rid in ("chatcmpl-0e1fae31b8e15198ecbc6e9083d7aaaa", "chatcmpl-14ac8bf609413d2ec68ca35428d92a04"):
        assert tr[rid]["status"] == "failed" and tr[rid]["reason"] == "engine dead"
    assert doc["summary"]["http_status"] == {"200": 8, "400": 2, "404": 1, "500": 1, "503": 1}
    assert {"cuda-oom", "engine-dead", "request-failed-engine-dead"} <= set(findings(doc))
    assert doc["facts"][str(V0110)]["version"] == "0.11.0"


SEED = CORPUS / "seed-style"


def test_guide_style_vllm_log():
    doc = scan(SEED / "vllm.log")
    tr = traces(doc)
    # the engine restarted at line 89: requests after it belong to the second run (epoch 2)
    ids = ["req-abc123", "req-d4e5f6", "req-g7h8i9", "req-j1k2l3", "req-m4n5o6", "req-p7q8r9", "req-s1t2u3#2", "req-v4w5x6#2"]
    assert [t["id"] for t in doc["traces"]] == ids
    assert [tr[i]["images"] for i in ids] == [1, 0, 0, 0, 2, 1, 0, 1]
    assert statuses(doc) == {"ok": 7, "failed": 1}
    assert tr["req-abc123"]["prompt_tokens"] == 127 and tr["req-abc123"]["output_tokens"] == 62
    assert tr["req-abc123"]["latency_s"] == 1.98
    f = findings(doc)
    assert f["zero-image-request"]["request_ids"] == ["req-g7h8i9"]
    assert f["slow-request"]["request_ids"] == ["req-j1k2l3"]
    assert f["cuda-oom"]["count"] == 1 and f["cuda-oom"]["request_ids"] == ["req-p7q8r9"]
    assert "cuda-oom" in tr["req-p7q8r9"]["findings"]
    assert doc["facts"][str(SEED / "vllm.log")]["starts"] == 2


def test_guide_style_proxy_log():
    doc = scan(SEED / "proxy.log")
    assert doc["files"][0]["format"] == "proxy"
    assert doc["summary"]["http_status"] == {"200": 9, "404": 1, "503": 1}
    # the one 503 (corpus README §7): the engine died mid-request and closed the connection; the proxy
    # wraps that as "Upstream not reachable", and echoes the message on its 503 line: one finding, of one line
    f = findings(doc)
    assert "upstream-refused" not in f and f["upstream-closed"]["count"] == 1
    assert doc["summary"]["top_clients"][0]["client"] == "10.8.0.23"
    # "Proxy server listening on port 8000, forwarding /v1/* to http://localhost:3001" (it read listen=port)
    facts = doc["facts"][str(SEED / "proxy.log")]
    assert (facts["listen"], facts["upstream"]) == (":8000", "http://localhost:3001")


def test_kserve_trace_logger_lines_are_vllm_requests(tmp_path):
    """vLLM behind KServe (real log, kserve#4470): KServe's logging config writes vLLM's request logger
    through its `kserve.trace` logger without vLLM's prefix, and uvicorn's access line with the pid after
    the client. The request is traced from it, and the prompt is the user's: error text pasted into it
    raises nothing (it reached the rules whole: CRITICAL cuda-oom and engine-dead)."""
    real = CORPUS.parent / "field" / "healthy" / "kserve-vllm-image-request-trace.log"
    doc = scan(real)
    t = traces(doc)["chatcmpl-017ee87d69ed40e9b67198e5c5e0ee7d"]
    assert (t["max_tokens"], t["prompt_chars"]) == (4082, 71)
    assert t["received_at"].startswith("2025-05-14T17:45:10.901")
    assert doc["summary"]["http_status"] == {"200": 1} and doc["summary"]["top_clients"] == [{"client": "127.0.0.1", "requests": 1}]
    planted = tmp_path / real.name
    planted.write_text(real.read_text().replace("What’s in this image?", CANARY_TEXT.replace("'", "")))
    doc = scan(planted)
    assert doc["findings"] == [] and CANARY not in json.dumps(doc)
    assert len(doc["traces"]) == 1


def test_v02_received_line_prompt_token_ids_with_spaces(tmp_path):
    """vLLM 0.2 logged `prompt token ids: […]` (real log, vllm#2177): the prompt's size in tokens is read
    there too, and never from the prompt, which may quote the same words."""
    real = CORPUS.parent / "field" / "healthy" / "vllm-02-received-prompt-token-ids-spaced.log"
    t = traces(scan(real))["cmpl-45f72b62419d4d7f8338cd486c33a6c6"]
    assert (t["prompt_tokens"], t["max_tokens"]) == (35, 128)
    planted = tmp_path / real.name
    planted.write_text(real.read_text().replace("ping###", "prompt token ids: [1, 2] " + CANARY_TEXT.replace("'", "") + "###"))
    doc = scan(planted)
    assert doc["findings"] == [] and CANARY not in json.dumps(doc)
    assert traces(doc)["cmpl-45f72b62419d4d7f8338cd486c33a6c6"]["prompt_tokens"] == 35


def test_vllm_loggers_under_another_programs_config(tmp_path):
    """vLLM inside Xinference (real log, xinference#3787) writes its loggers as `DATE TIME - vllm.… - LEVEL -
    message`: the request and the stats are read. A request logger's line in that layout is masked like
    vLLM's own (canary planted in the prompt of such a line)."""
    real = CORPUS.parent / "field" / "healthy" / "xinference-vllm-named-loggers-added-stats.log"
    doc = scan(real)
    assert doc["files"][0]["format"] == "vllm"
    t = traces(doc)["47d63068-5bdd-11f0-9abd-2692dff640b2"]
    assert t["received_at"].startswith("2025-07-08T17:23:59")
    planted = tmp_path / real.name
    planted.write_text(real.read_text().replace(
        "Added request 47d63068-5bdd-11f0-9abd-2692dff640b2.",
        "Received request 47d63068-5bdd-11f0-9abd-2692dff640b2: prompt: '" + CANARY_TEXT.replace("'", "")
        + "', params: SamplingParams(n=1, max_tokens=256), prompt_token_ids: [1, 2, 3], lora_request: None."))
    doc = scan(planted)
    assert doc["findings"] == [] and CANARY not in json.dumps(doc)
    t = traces(doc)["47d63068-5bdd-11f0-9abd-2692dff640b2"]
    assert (t["max_tokens"], t["prompt_tokens"]) == (256, 3)


KSERVE = CORPUS.parent / "field" / "healthy" / "kserve-vllm-image-request-trace.log"  # real: kserve/kserve#4470


def test_kserve_openai_routes_answer_their_requests(tmp_path):
    """vLLM behind KServe serves the OpenAI routes under /openai/v1/: the access line (KServe's format,
    its pid after the client) is the answer to the request it follows, as /v1/chat/completions is."""
    doc = scan(KSERVE)
    (t,) = doc["traces"]
    assert (t["id"], t["endpoint"], t["status"], t["http_status"]) == ("chatcmpl-017ee87d69ed40e9b67198e5c5e0ee7d", "chat", "ok", 200)
    assert (t["http"]["path"], t["http"]["client"]) == ("/openai/v1/chat/completions", "127.0.0.1:42226")
    # the same lines as vLLM's own logging writes them (uvicorn's default access format: the fast path's lines)
    plain = KSERVE.read_text().replace("2025-05-14 17:45:10.901 uvicorn.access INFO:     127.0.0.1:42226 1647689 - ",
                                       'INFO:     127.0.0.1:42226 - ')
    assert plain.count('INFO:     127.0.0.1:42226 - "POST /openai/v1/chat/completions HTTP/1.1" 200 OK') == 1
    p = tmp_path / "uvicorn-default.log"
    p.write_text(plain)
    (t,) = scan(p)["traces"]
    assert (t["status"], t["http"]["path"], t["http"]["client"]) == ("ok", "/openai/v1/chat/completions", "127.0.0.1:42226")
    # /openai/v1/completions answers a completions request (`cmpl-<id>-<n>`), and only that family
    text = KSERVE.read_text().replace("chatcmpl-017ee87d69ed40e9b67198e5c5e0ee7d", "cmpl-017ee87d69ed40e9b67198e5c5e0ee7d-0")
    for route, status in (("/openai/v1/completions", 200), ("/openai/v1/chat/completions", None)):
        p = tmp_path / f"{route.replace('/', '_')}.log"
        p.write_text(text.replace("/openai/v1/chat/completions", route))
        doc = scan(p)
        (t,) = doc["traces"]
        assert (t["endpoint"], t["http_status"]) == ("completions", status), route
        assert doc["summary"]["http_status"] == {"200": 1}


def test_the_latency_summary_is_of_completed_requests_only():
    # text.log: ten completed requests (vLLM 0.32 logs no finish time at INFO) and two aborted at once;
    # their wait-until-abort made "p50 0.00 s (2 known)" of a summary that knew no completed request's latency
    doc = scan(VLLM / "text.log")
    assert doc["summary"]["by_status"] == {"aborted": 2, "ok": 10}
    assert {t["latency_s"] is not None for t in doc["traces"] if t["status"] == "aborted"} == {True}
    assert doc["summary"]["latency_s"] == {"p50": None, "p95": None, "max": None, "known": 0}
    out = subprocess.run([sys.executable, "-m", "diag", "scan", str(VLLM / "text.log")], capture_output=True, text=True).stdout
    assert "latency: unknown" in out and "p50" not in out
    # text-logoutputs.log: completed requests with finish times, and an aborted one
    doc = scan(VLLM / "text-logoutputs.log")
    ok = [t["latency_s"] for t in doc["traces"] if t["status"] == "ok" and t["latency_s"] is not None]
    assert len(ok) >= 2 and doc["summary"]["by_status"]["aborted"] >= 1
    lat = doc["summary"]["latency_s"]
    assert (lat["known"], lat["max"]) == (len(ok), max(ok))
    out = subprocess.run([sys.executable, "-m", "diag", "scan", str(VLLM / "text-logoutputs.log")], capture_output=True, text=True).stdout
    assert f"({len(ok)} of {doc['summary']['by_status']['ok']} with a finish time)" in " ".join(out.split())


@pytest.mark.parametrize("name, cause, effect", [
    ("kv-pressure-then-worker-sigkill.log", "worker-killed", "engine-dead"),  # both CRITICAL, both at 18:23:19
    ("oom-kvspace64-refused.log", "kv-cache-exceeds-available-memory", "engine-failed-to-start"),  # both at 18:19:59
])
def test_a_cause_comes_before_what_it_caused_when_logged_in_the_same_second(name, cause, effect):
    # the effects' remedies send the reader to the error logged before them: the report lists that one first
    doc = scan(VLLM / name)
    order = [f["rule"] for f in doc["findings"]]
    assert order.index(cause) < order.index(effect)
    out = subprocess.run([sys.executable, "-m", "diag", "scan", str(VLLM / name)], capture_output=True, text=True).stdout
    assert out.index(f"({cause},") < out.index(f"({effect},")


def test_a_400_whose_reason_was_logged_is_that_reasons_finding_only():
    # too many images and a context too long: vLLM 0.6.6 and 0.11 log why, then answer 400; the reason is a
    # finding of its own, and bad-request-on-api-route ("the server may not log why") would say it again
    for log in (V066, V0110):
        f = findings(scan(log))
        assert {"too-many-images", "context-length-exceeded"} <= set(f) and "bad-request-on-api-route" not in f
    # vLLM 0.32 logs no reason for its 400s (a prompt over --max-model-len): the 400 is all there is
    assert findings(scan(VLLM / "cold-start-text.log"))["bad-request-on-api-route"]["count"] == 6  # its six 400s


def test_synthetic_logs_name_the_served_model_and_no_unlogged_count():
    # vLLM before 0.9 names no alias in "The model `gpt-4o` does not exist.": the served name is the one the
    # start gave (`served_model_name=` in the engine config, the non-default args); "At most N image(s)"
    # says the limit, not how many images the request carried (corpus README: 3, from the client), so the
    # summary leaves the count out instead of printing "?"
    for name, served, limit in (("synthetic-0.6.6-qwen2vl.log", "Qwen/Qwen2-VL-7B-Instruct", 2),
                                ("synthetic-0.11.0-qwen3vl.log", "Qwen/Qwen3-VL-8B-Instruct", 4)):
        doc = scan(CORPUS / "vllm" / name)
        assert doc["facts"][str(CORPUS / "vllm" / name)]["served_model_name"] == served
        f = findings(doc)
        assert f["unknown-model"]["fields"]["served_name"] == served
        assert f["unknown-model"]["summary"] == f"Requests for model `gpt-4o` were rejected with 404; the server serves: {served}."
        assert f["too-many-images"]["summary"] == f"A request carried more than {limit} image(s) and was rejected with 400."
        assert not [x["summary"] for x in doc["findings"] if "?" in x["summary"]]
    # 0.32 names the aliases itself: they win over the start's first name
    f = findings(scan(VLLM / "text.log"))["unknown-model"]
    assert f["summary"] == "Requests for model `nope` were rejected with 404; the server serves: tiny."


def test_an_empty_environment_value_reads_empty():
    # badenv-kvcache-space-empty.log: VLLM_CPU_KVCACHE_SPACE="" -> `invalid literal for int() with base 10: ''`
    f = findings(scan(VLLM / "badenv-kvcache-space-empty.log"))["env-var-invalid"]
    assert f["fields"]["value"] == ""
    assert f["summary"] == "A setting read from the environment could not be parsed (value `''`)."


@pytest.mark.parametrize("name, lines", [("kv-pressure-then-worker-sigkill.log", 10), ("text.log", 28)])
def test_top_clients_count_the_access_lines_attached_by_count(name, lines):
    # concurrent requests answered with one status each get it by count, not their client (which line is
    # whose is not known); the clients still each sent a request: 4 of 10 and 24 of 28 were counted
    doc = scan(VLLM / name)
    text = (VLLM / name).read_text()
    assert text.count('- "POST ') + text.count('- "GET ') == lines
    assert doc["summary"]["top_clients"] == [{"client": "127.0.0.1", "requests": lines}]


def test_a_connection_broken_mid_request_is_upstream_closed_however_urllib3_words_it(tmp_path):
    # urllib3's 'Connection aborted.' wraps a connection that was up and broke: the server dropped the request
    # (RemoteDisconnected, the corpus's line) or reset it; the guide's proxy logs both as "Upstream not reachable"
    line = (SEED / "proxy.log").read_text().splitlines()[27]
    assert "RemoteDisconnected" in line
    reset = line.replace("RemoteDisconnected('Remote end closed connection without response')",
                         "ConnectionResetError(104, 'Connection reset by peer')")
    log = tmp_path / "proxy.log"
    log.write_text("\n".join([line, reset]) + "\n")
    f = findings(scan(log, fmt="proxy"))
    assert "upstream-refused" not in f and f["upstream-closed"]["count"] == 2


def test_an_image_hosts_name_is_cut_where_its_masked_path_begins(tmp_path):
    # vl.log's fetch failure with a URL of a host by name and no port: the scrubbed path («url-path:N-chars»)
    # follows the host directly, and the host's capture ran into it ("from docs.bank.example«url-path;")
    line = next(x for x in (VLLM / "vl.log").read_text().splitlines() if "HTTP fetch failed for http://127.0.0.1:9/nothing.png" in x)
    log = tmp_path / "vllm.log"
    log.write_text(line.replace("http://127.0.0.1:9/nothing.png", "https://docs.bank.example/kyc/a.jpg?X-Amz-Signature=x") + "\n")
    f = findings(scan(log, fmt="vllm"))
    assert f["image-fetch-failed"]["summary"].startswith("The server could not fetch an image from docs.bank.example; ")
