"""Shared helpers: the recorded corpus (copied from ../shared/corpus) and a scan helper."""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import sys
from collections import Counter
from dataclasses import dataclass
from importlib import import_module, metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _editable_install() -> bool:
    """Whether `diag` is installed in editable mode (`pip install -e`), from its direct_url.json."""
    # `pip install .` leaves a diag.egg-info in the checkout, and the checkout is on sys.path under
    # `python -m pytest`: that build leftover is not an installation, so it is never the one asked.
    dists = [d for d in metadata.distributions(name="diag") if Path(str(d.locate_file(""))).resolve() != ROOT]
    if not dists:
        pytest.exit("diag is not installed in this environment: run `pip install '.[test]'` first", returncode=4)
    info = json.loads(dists[0].read_text("direct_url.json") or "{}")
    return bool(info.get("dir_info", {}).get("editable"))


# The suite tests the INSTALLED package (CI: `pip install '.[test]'`, not -e). `python -m pytest`
# from the checkout would put the checkout first on sys.path, and every `python -m diag`
# subprocess would do the same from its working directory; then the checkout's diag/ silently
# shadows what was installed and a missing subpackage goes unnoticed. So, unless the install is
# editable (then the checkout *is* the installed copy), drop the checkout from sys.path here and
# set PYTHONSAFEPATH for child interpreters, and check where diag really comes from.
EDITABLE = _editable_install()
if not EDITABLE:
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    os.environ["PYTHONSAFEPATH"] = "1"

import diag  # noqa: E402

if not EDITABLE and Path(diag.__file__).resolve().is_relative_to(ROOT / "diag"):
    pytest.exit(f"diag was imported from the checkout ({diag.__file__}), not from the installed package", returncode=4)

if EDITABLE and not os.environ.get("DIAG_NO_EXT"):
    # An editable checkout with its modules compiled in place (setup.py build_ext --inplace) runs the
    # compiled copies (diag.compiled): a source edited since would go untested, silently.
    import importlib.machinery
    import importlib.util

    from diag import compiled as _compiled

    for _name in _compiled.MODULES + _compiled.TWINS:
        _spec = importlib.util.find_spec(_name)
        _origin = Path(_spec.origin) if _spec and _spec.origin else None
        if _origin and _origin.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            _leaf = _name.rpartition(".")[2]
            for _src in (_origin.parent / (_leaf + (".pyx" if _name in _compiled.TWINS else ".py")),
                         _origin.parent / (_leaf + ".pxd")):  # its C layout (a .pxd beside the module)
                if _src.exists() and _src.stat().st_mtime > _origin.stat().st_mtime:
                    pytest.exit(f"{_src} changed after it was compiled: rebuild (python setup.py build_ext --inplace) "
                                "or run with DIAG_NO_EXT=1", returncode=4)

from diag.analysis.rules import ruleset as rules  # noqa: E402
from diag.pipeline import Pipeline
from diag.report.document import to_json

CORPUS = Path(__file__).parent / "data" / "corpus"
VLLM = CORPUS / "vllm" / "real-0.32.0-cpu"
LLAMA = CORPUS / "llamacpp" / "real-b0c1e57-cpu"

try:  # the typed twin of diag.ingest.fastpath.classify, where the install could compile it
    COMPILED_CLASSIFIER = import_module("diag.ingest.fastpath._classify_c")
except ImportError:
    COMPILED_CLASSIFIER = None
needs_compiled = pytest.mark.skipif(COMPILED_CLASSIFIER is None, reason="the compiled classifier is not built here (no C "
                                    "compiler or Cython at install time): only the pure path exists")


@pytest.fixture(scope="session")
def ruleset():
    rs = rules.load()
    assert not rs.errors, rs.errors
    return rs


_cache: dict[tuple, dict] = {}


def scan(*paths: Path | str, rules_dirs=(), fmt=None) -> dict:
    """Run the real pipeline over files and return the `diag scan --json` document."""
    key = (tuple(str(p) for p in paths), tuple(rules_dirs), fmt)
    if key not in _cache:
        rs = rules.load(rules_dirs)
        pipe = Pipeline(rs)
        for p in paths:
            pipe.scan_path(str(p), fmt)
        pipe.finish()
        _cache[key] = to_json(pipe)
    return _cache[key]


def traces(doc: dict) -> dict[str, dict]:
    return {t["id"]: t for t in doc["traces"]}


def statuses(doc: dict) -> Counter:
    return Counter(t["status"] for t in doc["traces"])


def findings(doc: dict) -> dict[str, dict]:
    return {f["rule"]: f for f in doc["findings"]}


def severe(doc: dict) -> set[str]:
    return {f["rule"] for f in doc["findings"] if f["severity"] in ("error", "critical")}


def wait_for(cond, timeout: float = 60.0, what: str = "condition"):
    """Poll `cond` until it returns something truthy (returned), or fail after `timeout` seconds."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl CLI (skips without it)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed: cannot make a test certificate")
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def free_port() -> int:
    """A port nothing listens on right now (bind 0, read it back, close)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def vllm_request_lines(rid: str, port: int) -> str:
    """A vLLM 0.32 request as it logs it now: Received, Added (engine id suffix), the uvicorn access line
    from client port `port` (what the browser test and the web benchmark append to a followed log)."""
    import time

    ts = time.strftime("%m-%d %H:%M:%S")
    return (f"(APIServer pid=4242) INFO {ts} [request_logger.py:65] Received request {rid}: params: SamplingParams(n=1, "
            f"temperature=0.7, max_tokens=64), lora_request: None.\n"
            f"(APIServer pid=4242) INFO {ts} [async_llm.py:578] Added request {rid}-0000abcd.\n"
            f'INFO:     127.0.0.1:{port} - "POST /v1/chat/completions HTTP/1.1" 200 OK\n')


# -- canaries: user content planted in every free-text position the corpus formats have ---------------
CANARY = "zqxcanaryjv"  # a word no log, rule or report contains
# Error text a user pastes into a prompt to ask about it: it must raise no alarm.
CANARY_TEXT = (f"{CANARY} torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. EngineDeadError "
               "Fatal Python error: Segmentation fault ValueError: No available memory for the cache blocks "
               "Address already in use cudaMalloc failed: out of memory "
               # and what the parsers read fields from: none may be taken from a prompt or an output
               "max_tokens=7, prompt_token_ids: [1], output_token_ids: [1, 2], finish_reason: abort "
               "Finished request cmpl-zz1. Aborted request cmpl-zz1. model=zzmodel status=500 n_tokens = 99 "
               "session=9, input_tokens=3, max_new_tokens=4, n_prompt_tokens = 5, task id = 9, HTTP/1.1\" 500 ")
# A model name a client asks for: one word (a model's name is kept, and reported), made of rules' literals.
# It carries no canary word: the unknown-model finding names it by design; it must raise nothing else.
CANARY_MODEL = "EngineDeadError/cudaErrorIllegalAddress:CUBLAS_STATUS_ALLOC_FAILED"
CANARY_URL = f"{CANARY}/CUDA_out_of_memory/EngineDeadError.png?token={CANARY}&q=Traceback"
CANARY_LINES = [f"{CANARY} torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
                "Traceback (most recent call last):", f'  File "/{CANARY}.py", line 1, in <module>',
                "RuntimeError: CUDA error: out of memory", "EngineDeadError: EngineCore encountered an issue",
                "ggml_cuda_compute_forward: cudaMalloc failed: out of memory", "Segmentation fault (core dumped)"]


@dataclass
class Plant:
    """One free-text position: in `file`, replace `old` (first occurrence, or all with `every`)
    with `new`, where `{text}`, `{url}`, `{lines}` and `{model}` stand for the planted payload."""

    file: str
    what: str
    old: str
    new: str
    every: bool = False


PLANTS = [
    Plant("vllm/synthetic-0.6.6-qwen2vl.log", "vLLM 0.6 INFO prompt", "Summarize the plot of Hamlet in two sentences.", "{text}"),
    Plant("vllm/synthetic-0.6.6-qwen2vl.log", "vLLM unknown model: the name the client sent, quoting the server's words",
          "The model `gpt-4o` does not exist.", "The model `{text}` does not exist. {text}` does not exist."),
    # the model name a client asked for, as one word (kept as a field, masked in what the rules see), each form:
    Plant("vllm/synthetic-0.6.6-qwen2vl.log", "vLLM unknown model, 0.6-0.10 form (object='error' message=…): a one-word name",
          'INFO:     10.0.0.12:44810 - "POST /v1/chat/completions HTTP/1.1" 404 Not Found',
          'INFO:     10.0.0.12:44810 - "POST /v1/chat/completions HTTP/1.1" 404 Not Found\n'
          "ERROR 01-24 09:03:02 serving_chat.py:114] Error with model object='error' message='The model `{model}` does not exist.' "
          "type='NotFoundError' param=None code=404"),
    Plant("vllm/synthetic-0.11.0-qwen3vl.log", "vLLM unknown model, 0.10.1+ form (error=ErrorInfo(…)): a one-word name",
          "The model `gpt-4o` does not exist.", "The model `{model}` does not exist."),
    Plant("vllm/real-0.32.0-cpu/text.log", "vLLM unknown model, 0.14.1+ form (Valid aliases, param='model'): a one-word name",
          "The model `nope` does not exist.", "The model `{model}` does not exist."),
    Plant("vllm/real-0.32.0-cpu/text.log", "vLLM 'failed (bad request): …': a validation error quoting the request",
          "Added request chatcmpl-914cc2ebd5c0a1d5-8137f100.",
          "Added request chatcmpl-914cc2ebd5c0a1d5-8137f100.\n(APIServer pid=14990) INFO 11-22 18:27:49 [async_llm.py:789] "
          "Request chatcmpl-914cc2ebd5c0a1d5 failed (bad request): Invalid stop string {text}."),
    Plant("vllm/real-0.32.0-cpu/kv-pressure-then-worker-sigkill.log",
          "a client's X-Request-Id with spaces (Received, Added, failed (engine dead), the crash's scheduler dump)",
          "chatcmpl-99512c3bf5fb2800", "chatcmpl-{text}", every=True),
    Plant("vllm/real-0.32.0-cpu/text-logoutputs.log", "a client's X-Request-Id with spaces (Generated response)",
          "chatcmpl-8246087abb019d88", "chatcmpl-{text}", every=True),
    Plant("vllm/real-0.32.0-cpu/text-debug.log", "a client's X-Request-Id with spaces (details, JSON body)",
          "99ae9d0bb3f50234", "{text}", every=True),
    Plant("vllm/synthetic-0.6.6-qwen2vl.log", "a request id with a raw newline (0.6.4+ takes the body's request_id): "
          "vLLM repeats the prefix, the rest of the message on the next line",
          "Received request chatcmpl-d17eccd03159c1ce50e2af4617ab7c0e:",
          "Received request chatcmpl-d17eccd03159c1ce50e2af4617ab7c0e\r\nINFO 01-24 09:01:31 logger.py:37] {text}:"),
    Plant("vllm/real-0.32.0-cpu/text-debug.log", "a pretty-printed JSON body (DEBUG): its lines as continuation lines",
          "Request a84a8af259ac1638 JSON body: {{",
          "Request a84a8af259ac1638 JSON body: {{\r\n(APIServer pid=18217) DEBUG 11-22 18:33:09 "
          "[entrypoints/.../utils/request_logger.py:74]   \"stop\": [\"{text}\"],\r\n(APIServer pid=18217) DEBUG 11-22 18:33:09 "
          "[entrypoints/.../utils/request_logger.py:74]   "),
    Plant("vllm/synthetic-0.11.0-qwen3vl.log", "vLLM 0.11 INFO prompt", "Summarize the plot of Hamlet in two sentences.", "{text}"),
    Plant("vllm/synthetic-0.11.0-qwen3vl.log", "vLLM stop strings (SamplingParams)", "stop=[]", "stop=['{text}']", every=True),
    Plant("vllm/real-0.32.0-cpu/text-debug.log", "vLLM 0.32 DEBUG prompt", "user\\nhello world<|im_end|>", "user\\n{text}<|im_end|>", every=True),
    Plant("vllm/real-0.32.0-cpu/text-debug.log", "vLLM 0.32 DEBUG JSON body without a prompt key (rerank, score)",
          '{{"messages":[{{"content":"hello world","role":"user"}}],"model":"tiny","max_tokens":8}}',
          '{{"model":"tiny","max_tokens":8,"query":"{text}","documents":["{text}"]}}'),
    Plant("vllm/real-0.32.0-cpu/text-debug.log", "vLLM 0.32 output", "output: 'odusoiduzaite fizaojacu tus'", "output: '{text}'"),
    Plant("vllm/real-0.32.0-cpu/text-logoutputs.log", "vLLM --enable-log-outputs", "output: 'odusoiduzaite", "output: '{text}"),
    Plant("seed-style/vllm.log", "guide-style generated token", "for request 'req-abc123': '配'", "for request 'req-abc123': '{text}'"),
    Plant("llamacpp/real-b0c1e57-cpu/mmproj-verbose.log", "llama-server -v prompt lines", "add_text: <|im_start|>user\nWhat is in this image?\n",
          "add_text: <|im_start|>user\n{lines}\n"),
    Plant("llamacpp/real-b0c1e57-cpu/mmproj-verbose.log", "llama-server -v JSON prompt", "What is in this image?", "{text}", every=True),
    Plant("llamacpp/real-b0c1e57-cpu/verbose.log", "llama-server -v JSON prompt", "Hello there", "{text}", every=True),
    Plant("llamacpp/real-b0c1e57-cpu/verbose.log", "llama-server error echoing input",
          "0.00.283.957 E srv    send_error: task id = 10, error: request (2705 tokens) exceeds",
          "0.00.283.950 E srv    operator(): got exception: {{\"error\":{{\"code\":400,\"message\":\"Failed to parse input: "
          "{{'type': 'value_error', 'input': '{text}'}}\",\"type\":\"invalid_request_error\"}}}}\n"
          "0.00.283.957 E srv    send_error: task id = 10, error: request (2705 tokens) exceeds"),
    Plant("llamacpp/real-b0c1e57-cpu/text.log", "llama-server JSON parse error quoting the body (nlohmann's last read)",
          "last read: '{{no'", "last read: '{{no {text}'"),
    Plant("llamacpp/real-b0c1e57-cpu/verbose.log", "llama-server -v streamed chunk: reasoning and tool-call deltas",
          '"delta":{{"content":" What"}}', '"delta":{{"reasoning_content":"{text}","tool_calls":[{{"function":{{"arguments":"{text}"}}}}]}}'),
    Plant("llamacpp/synthetic-older-build.log", "llama-server access line: the path as cpp-httplib decoded it (spaces)",
          "srv  log_server_r: request: GET /health 127.0.0.1 503", "srv  log_server_r: request: GET /health {text} 127.0.0.1 503"),
    Plant("lmdeploy/synthetic-0.16.log", "LMDeploy log_prompt and log_response (other-servers.md §LMDeploy)",
          '2026-08-22 10:15:04,303 - lmdeploy - INFO - async_engine.py:779 - session 0 finished, reason "stop"',
          "2026-08-22 10:15:04,302 - lmdeploy - REQUEST - logger.py:41 - session=Session(id=0, step=0), prompt='{text}'\n"
          "2026-08-22 10:15:04,302 - lmdeploy - REQUEST - logger.py:52 - session=0, response='{text}'\n"
          '2026-08-22 10:15:04,303 - lmdeploy - INFO - async_engine.py:779 - session 0 finished, reason "stop"'),
    Plant("lmdeploy/synthetic-0.16.log", "LMDeploy prompt and stop words",
          "2026-08-22 10:15:02,114 - lmdeploy - INFO - async_engine.py:582 - session=0, input_tokens=38, max_new_tokens=32730, prep=True",
          "2026-08-22 10:15:02,114 - lmdeploy - INFO - async_engine.py:582 - session=0, input_tokens=38, max_new_tokens=32730, prep=True\n"
          "2026-08-22 10:15:02,114 - lmdeploy - INFO - async_engine.py:600 - session=0, adapter_name=None, input_tokens=38, "
          "gen_config=GenerationConfig(stop_words=['{text}']), prompt='{text}'"),
    Plant("vllm/real-0.32.0-cpu/cold-start-vl.log", "vLLM image fetch URL", "http://127.0.0.1:9/nothing.png", "http://127.0.0.1:9/{url}", every=True),
    Plant("vllm/real-0.32.0-cpu/text.log", "vLLM stop strings and bad words (before max_tokens= in SamplingParams)",
          "stop=[], stop_token_ids=[], bad_words=[]", "stop=['{text}'], stop_token_ids=[], bad_words=['{text}']", every=True),
    Plant("vllm/synthetic-0.6.6-qwen2vl.log", "vLLM 0.6 stop strings", "stop=[]", "stop=['{text}']", every=True),
    Plant("vllm/real-0.32.0-cpu/text.log", "uvicorn access query string", '"POST /v1/chat/completions HTTP/1.1" 200',
          '"POST /v1/chat/completions?{url} HTTP/1.1" 200'),
    Plant("vllm/real-0.32.0-cpu/text.log", "vLLM validation error echoing input",
          '"POST /v1/chat/completions?{url} HTTP/1.1" 200',
          '"POST /v1/chat/completions?{url} HTTP/1.1" 200\n(APIServer pid=11381) ERROR 11-22 18:23:13 [serving_chat.py:250] '
          "Error in preprocessing prompt inputs: 1 validation error for ChatCompletionRequest: Value error [type=value_error, "
          "input_value={{'messages': [{{'role': 'user', 'content': '{text}'}}]}}, input_type=dict]"),
    Plant("nginx/access-combined.log", "nginx request line with spaces (nginx takes them), referer, user agent",
          '"GET /health HTTP/1.1" 502 157 "-" "python-requests/2.32.3"', '"GET /health {ntext} HTTP/1.1" 502 157 "{ntext}" "{ntext}"'),
    Plant("nginx/access-combined.log", "nginx: any text as the request line (answered 400)",
          '"POST /v1/chat/completions HTTP/1.1" 400 171 "-" "OpenAI/Python 1.99.1"',
          '"POST /v1/chat/completions HTTP/1.1" 400 171 "-" "OpenAI/Python 1.99.1"\n'
          '127.0.0.1 - - [22/Aug/2026:10:16:12 +0000] "{ntext}" 400 157 "-" "-"'),
    Plant("nginx/access-combined.log", "nginx access query string", " HTTP/1.1\" ", "?{url} HTTP/1.1\" ", every=True),
    Plant("nginx/error.log", "nginx error context: request line, host and referrer as the client sent them (not escaped)",
          'request: "POST /v1/chat/completions HTTP/1.1", upstream: "http://127.0.0.1:8080/v1/chat/completions", host: "localhost:8000"',
          'request: "POST /v1/chat/completions {text} HTTP/1.1", upstream: "http://127.0.0.1:8080/v1/chat/completions", '
          'host: "{text}", referrer: "{text}"'),
    Plant("nginx/error.log", "nginx error: a file path nginx quotes, from the client's URI (decoded)",
          '2026/08/22 10:14:55 [error] 29#29: *1 connect() failed',
          '2026/08/22 10:14:55 [error] 29#29: *1 open() "/usr/share/nginx/html/{text}" failed (2: No such file or directory), '
          'client: 127.0.0.1, server: localhost, request: "GET /x HTTP/1.1", host: "localhost:8000"\n'
          '2026/08/22 10:14:55 [error] 29#29: *1 connect() failed'),
    Plant("nginx/error.log", "nginx error request and upstream URL", 'request: "GET /health HTTP/1.1", upstream: "http://127.0.0.1:8080/health"',
          'request: "GET /health?{url} HTTP/1.1", upstream: "http://127.0.0.1:8080/{url}"'),
    Plant("seed-style/proxy.log", "proxy access query string", '"POST /v1/chat/completions HTTP/1.1"', '"POST /v1/chat/completions?{url} HTTP/1.1"', every=True),
    Plant("seed-style/proxy.log", "http.server: any text as the request line, echoed in its error message",
          '10.8.0.23 - - [24/Jan/2025 00:13:38] "GET /chat.html HTTP/1.1" 200 -',
          '10.8.0.23 - - [24/Jan/2025 00:13:38] "GET /chat.html HTTP/1.1" 200 -\n'
          "10.8.0.23 - - [24/Jan/2025 00:13:38] code 400, message Bad request version ('{text}')\n"
          '10.8.0.23 - - [24/Jan/2025 00:13:38] "{text}" 400 -'),
    Plant("seed-style/proxy.log", "proxy's own log of the request target, a quote in its query",
          "INFO:root:Received GET request to /chat.html", 'INFO:root:Received GET request to /chat.html?a="{qtext}'),
    Plant("vllm/real-0.32.0-cpu/text.log", "uvicorn access: the client X-Forwarded-For names behind a proxy (any text)",
          'INFO:     127.0.0.1:32918 - "GET /health HTTP/1.1" 200 OK', 'INFO:     {text}:0 - "GET /health HTTP/1.1" 200 OK'),
    Plant("vllm/real-0.32.0-cpu/text.log", "uvicorn access: a quote in the query string",
          '"GET /version HTTP/1.1" 200 OK', '"GET /version?a="{qtext} HTTP/1.1" 200 OK'),
    Plant("seed-style/proxy.log", "proxy forwarding URL", "Forwarding to http://localhost:3001/v1/chat/completions",
          "Forwarding to http://localhost:3001/img/{url}"),
    # a server's own error message quoting what the model wrote or the client sent (tests/test_user_text_in_server_messages.py)
    Plant("llamacpp/real-b0c1e57-cpu/verbose.log", "llama-server chat parser's error quoting the model's output; "
          "a JSON parse error quoting a tool call's arguments (a line without prefix)",
          "0.00.283.957 E srv    send_error: task id = 10, error: request (2705 tokens) exceeds",
          '0.00.283.951 E srv    operator(): got exception: {{"error":{{"code":500,"message":"Failed to parse input at pos 12: '
          '{jtext}","type":"server_error"}}}}\nFailed to parse arguments: [json.exception.parse_error.101] parse error at line 1, '
          "column 6: syntax error while parsing object separator - invalid literal; last read: '{text}'; expected ':'\n"
          "0.00.283.957 E srv    send_error: task id = 10, error: request (2705 tokens) exceeds"),
    Plant("lmdeploy/synthetic-0.16.log", "LMDeploy's tool-call parser failing on the model's output (raw, several lines)",
          "2026-08-22 10:15:13,905 - lmdeploy - INFO - turbomind.py:813 - [async_stream_infer] session 1 done",
          "2026-08-22 10:15:13,905 - lmdeploy - ERROR - api_server.py:561 - Failed to parse <tool_call>\n{lines}\n</tool_call>. "
          "Exception: Expecting value: line 1 column 1 (char 0).\n"
          "2026-08-22 10:15:13,905 - lmdeploy - INFO - turbomind.py:813 - [async_stream_infer] session 1 done"),
    Plant("vllm/real-0.32.0-cpu/text-debug.log", "vLLM's ignored request fields (the client's keys); a tool parser's DEBUG output",
          "(APIServer pid=18217) DEBUG 11-22 18:32:36 [logging_utils/log_time.py:26] Registry inspect model class",
          "(APIServer pid=18217) WARNING 11-22 18:32:36 [protocol.py:117] The following fields were present in the request "
          "but ignored: {{'{text}', 'max_pixels'}}\n"
          "(APIServer pid=18217) DEBUG 11-22 18:32:36 [tool_parsers/hermes_tool_parser.py:190] delta_text: {lines}\n"
          "(APIServer pid=18217) DEBUG 11-22 18:32:36 [logging_utils/log_time.py:26] Registry inspect model class"),
]


@dataclass
class CanaryCorpus:
    """Planted copies of corpus files and the same files with a harmless payload instead."""

    word: str
    planted: list[Path]
    clean: list[Path]
    plants: list[Plant]


def plant_canaries(dest: Path, plants: list[Plant] = PLANTS, word: str = CANARY) -> CanaryCorpus:
    """Write each planted file and its unplanted twin under `dest` (extend `PLANTS` for new formats)."""
    by_file: dict[str, list[Plant]] = {}
    for p in plants:
        by_file.setdefault(p.file, []).append(p)
    planted, clean = [], []
    for rel, ps in by_file.items():
        base = (CORPUS / rel).read_text(encoding="utf-8")
        for variant, text, url, lines, model in (("planted", CANARY_TEXT.replace(CANARY, word), CANARY_URL.replace(CANARY, word),
                                                  "\n".join(CANARY_LINES).replace(CANARY, word), CANARY_MODEL),
                                                 ("clean", "please describe the picture", "picture.png?size=2",
                                                  "please describe\nthe picture", "Qwen/Qwen2-VL-7B-Instruct")):
            body = base
            for p in ps:
                # {ntext}: the text as nginx's access log escapes it (`"` and `\\` as \xXX)
                # {qtext}: as a request target carries it (spaces encoded, quotes as they are)
                ntext, qtext = text.replace("\\", "\\x5C").replace('"', "\\x22"), text.replace(" ", "%20")
                jtext = json.dumps(text)[1:-1]  # {jtext}: inside a JSON string, as a server's JSON dump writes it
                subs = {"text": text, "url": url, "lines": lines, "ntext": ntext, "qtext": qtext, "model": model, "jtext": jtext}
                old = p.old.format(**subs) if "{" in p.old else p.old  # may follow an earlier plant
                assert old in body, f"{rel}: the anchor for {p.what!r} is gone"
                new = p.new.format(**subs)
                body = body.replace(old, new) if p.every else body.replace(old, new, 1)
            out = dest / variant / rel.replace("/", "__")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(body, encoding="utf-8")
            (planted if variant == "planted" else clean).append(out)
    return CanaryCorpus(word, planted, clean, plants)


@pytest.fixture
def canary_corpus(tmp_path) -> CanaryCorpus:
    return plant_canaries(tmp_path / "canary")


class Receiver:
    """A real HTTP receiver on loopback that records every request (for the alert sinks).

    `status` is what it answers (set 503 to play a receiver that is down); `answer` the JSON body.
    """

    def __init__(self, status: int = 200, answer: bytes = b'{"code":0,"errcode":0}', tls: tuple[Path, Path] | None = None):
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        self.status = status
        self.answer = answer
        self.cond = threading.Condition()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers: the alerts benchmark times it

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                t = time.perf_counter()
                with rec.cond:
                    status = rec.status
                    if status < 300:
                        rec.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                                             "time": time.time(), "perf": t})
                    rec.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(rec.answer)))
                self.end_headers()
                self.wfile.write(rec.answer)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if tls is not None:  # (certificate, key): serve HTTPS
            import ssl

            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def json(self) -> list:
        import json

        with self.cond:
            return [json.loads(r["body"]) for r in self.requests]

    def wait(self, n: int, timeout: float = 30.0) -> list:
        """The first n JSON bodies, waiting for them to arrive."""
        import time

        deadline = time.time() + timeout
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f"receiver got {len(self.requests)} request(s), expected {n}")
                self.cond.wait(left)
        return self.json()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


ALL_LOGS = sorted(str(p) for p in CORPUS.rglob("*.log"))


def corpus_user_text() -> set[str]:
    """Every prompt/output the corpus logs, split into its user-written parts."""
    found: set[str] = set()
    rx = re.compile(r"(?:prompt|output): ('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
    for p in ALL_LOGS:
        for line in open(p, encoding="utf-8", errors="replace"):
            for m in rx.finditer(line):
                try:
                    s = ast.literal_eval(m.group(1))
                except (ValueError, SyntaxError):
                    continue
                for part in re.split(r"<\|[^|]*\|>|\n", s):
                    part = part.strip()
                    if len(part) >= 8 and part not in ("system", "user", "assistant"):
                        found.add(part)
    return found


def dashboard_answers(get) -> list[str]:
    """Every page, API answer and /metrics the dashboard serves for the store behind `get` (a callable
    url → response, from a TestClient or httpx against a running daemon): the lists, each trace's page
    and JSON, each rule's findings. Each must answer 200."""
    from urllib.parse import quote

    urls = ["/", "/requests?limit=500", "/findings", "/alerts", "/api/traces?limit=500", "/api/findings", "/api/alerts", "/api/status", "/metrics"]
    ids = [t["id"] for t in get("/api/traces?limit=500").json()["traces"]]
    rules_seen = [g["rule"] for g in get("/api/findings").json()["findings"]]
    urls += [f"/trace/{quote(i, safe='')}" for i in ids] + [f"/api/traces/{quote(i, safe='')}" for i in ids]
    urls += [f"/findings?rule={quote(r, safe='')}" for r in rules_seen] + [f"/api/findings?rule={quote(r, safe='')}" for r in rules_seen]
    out = []
    for u in urls:
        r = get(u)
        assert r.status_code == 200, u
        out.append(r.text)
    return out


def logrotate_bin() -> str:
    """The real logrotate (Debian's package installs it in /usr/sbin, not always on a user's PATH); the test skips without it."""
    import shutil

    import pytest

    found = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin:/sbin")
    if not found:
        pytest.skip("logrotate is not installed (Debian package logrotate; .ci/run installs it)")
    return found


@pytest.fixture(autouse=True)
def _no_system_logrotate_config(monkeypatch):
    """A daemon built in a test reads no logrotate configuration of this machine's (/etc) for olddir:
    the tests that need one give it as `Config(logrotate_config=[...])`."""
    from diag.daemon import config

    monkeypatch.setattr(config, "LOGROTATE_CONFIG", ())


# -- requests written to a followed log, and each counted once ---------------------------------------
REQUEST_OOM = ("(APIServer pid=4242) ERROR 01-24 10:03:33 [serving_chat.py:1012] Error in chat completion stream generator: "
               "CUDA out of memory. Tried to allocate {n}.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 7.04 GiB is free.\n")


def write_requests(path: Path, *numbers: int) -> None:
    """Append request `n` (chatcmpl-<n as 16 hex digits>) with an OOM line of its own for each number."""
    with open(path, "a") as fh:
        fh.write("".join(vllm_request_lines(f"chatcmpl-{i:016x}", 40000 + i) + REQUEST_OOM.format(n=i) for i in numbers))


def counted_requests(db_path) -> tuple[dict[str, int], list[int]]:
    """(requests and OOM findings counted by the store's cumulative counters over every run, which
    retention never prunes; the numbers of the requests stored): a line lost or read twice shows."""
    import sqlite3
    from contextlib import closing

    from diag.store import counters
    from diag.store.db import Store

    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        requests = sum(v for _, v in counters.read(db, "requests"))
        ooms = sum(v for lab, v in counters.read(db, "findings") if lab["rule"] == "cuda-oom")
    with closing(Store(db_path, readonly=True)) as s:
        ids = sorted(int(t.split("-")[1][:16], 16) for t in s.trace_ids())
    return {"requests": requests, "ooms": ooms}, ids


def assert_each_once(db_path, numbers, pruned: bool = False) -> None:
    """Each request counted once (and stored, unless retention `pruned` the traces)."""
    totals, ids = counted_requests(db_path)
    if not pruned:
        assert ids == sorted(numbers)  # none lost
    assert totals == {"requests": len(numbers), "ooms": len(numbers)}  # none read twice
