"""Where a client's text sits inside a line a parser reads fields from: each position on its own.

tests/test_user_content.py plants `CANARY_TEXT` into whole corpus files and compares the scans;
these tests take one line each, so that what a parser does with the client's part of it is plain:
it never becomes a field, never reaches the rules, and the server's own words around it still do.
"""

from __future__ import annotations

import json

import pytest

from conftest import CANARY, CANARY_TEXT

from diag.parsing import events as E
from diag.parsing.source import parse_text
from diag.parsing.usercontent import scrub

VLLM32 = "(APIServer pid=7) INFO 11-22 18:27:49 [request_logger.py:65] "


def _one(line: str, fmt: str | None = None):
    (ev,) = parse_text(line, fmt=fmt)
    return ev


@pytest.mark.parametrize("params", [
    f"stop=['max_tokens=7, prompt_token_ids: [1]'], bad_words=[], max_tokens=16",
    f'stop=["it\'s max_tokens=7"], bad_words=[\'max_tokens=8\'], max_tokens=16',
    "stop=['a\\\\', 'max_tokens=7'], max_tokens=16",  # an escaped backslash ends the first literal
])
def test_max_tokens_is_never_read_from_a_stop_string(params):
    """SamplingParams prints `stop=` and `bad_words=` before `max_tokens=`: the client's strings."""
    ev = _one(f"{VLLM32}Received request chatcmpl-1: params: SamplingParams(n=1, {params}, min_tokens=0), lora_request: None.")
    assert ev.kind == E.RECEIVED
    assert ev.fields["max_tokens"] == 16 and "prompt_tokens" not in ev.fields


def test_a_stop_string_that_never_closes_leaves_max_tokens_unknown():
    ev = _one(f"{VLLM32}Received request chatcmpl-1: params: SamplingParams(n=1, stop=['max_tokens=7, max_tokens=16")
    assert ev.kind == E.RECEIVED and "max_tokens" not in ev.fields


NGINX = "127.0.0.1 - - [22/Aug/2026:10:14:55 +0000] "


def test_nginx_keeps_the_method_path_and_protocol_of_a_request_line_and_nothing_else():
    plain = _one(f'{NGINX}"GET /health HTTP/1.1" 502 157 "-" "python-requests/2.32.3"')
    assert plain.text == '127.0.0.1 "GET /health HTTP/1.1" 502 157'  # nginx's own shape: as it was
    spaced = _one(f'{NGINX}"GET /health {CANARY_TEXT} HTTP/1.1" 502 157 "{CANARY}" "{CANARY}"'.replace('" 500', "'500"))
    assert CANARY not in spaced.text and "CUDA" not in spaced.text
    assert spaced.text.startswith('127.0.0.1 "GET /health «request:') and spaced.text.endswith(' HTTP/1.1" 502 157')
    assert (spaced.fields["method"], spaced.fields["path"], spaced.fields["status"]) == ("GET", "/health", 502)
    garbage = _one(f'{NGINX}"{CANARY} CUDA out of memory" 400 157 "-" "-"')
    assert CANARY not in garbage.text and garbage.fields["method"] == "-" and garbage.fields["status"] == 400


def test_llama_server_access_line_path_with_spaces_is_an_access_line_without_the_text():
    """cpp-httplib logs the path decoded: `%20` is a space there."""
    ev = _one(f"srv  log_server_r: request: GET /health {CANARY_TEXT} 127.0.0.1 404")
    assert ev.kind == E.ACCESS and ev.fields["status"] == 404 and ev.fields["client"] == "127.0.0.1"
    assert CANARY not in ev.text and "CUDA" not in ev.text and ev.text.endswith(" 127.0.0.1 404")
    assert _one("srv  log_server_r: request: GET /health 127.0.0.1 200").text == "srv  log_server_r: request: GET /health 127.0.0.1 200"


@pytest.mark.parametrize("line", [
    f'INFO:     1.2.3.4:5 - "GET /v1/models?a="{CANARY}EngineDeadError HTTP/1.1" 200 OK',
    f'INFO:root:Received GET request to /chat.html?a="{CANARY}EngineDeadError',
    f'2026/08/22 10:14:55 [error] 29#29: *1 x, client: 1.2.3.4, server: s, request: "GET /health?a="{CANARY} HTTP/1.1"',
])
def test_a_query_string_ends_at_whitespace_not_at_a_quote(line):
    assert CANARY not in scrub(line) and "EngineDead" not in scrub(line)


@pytest.mark.parametrize("msg, kept", [
    (f"Received request chatcmpl-{CANARY_TEXT}: params: SamplingParams(n=1, max_tokens=16), lora_request: None.", None),
    (f"Added request chatcmpl-{CANARY} CUDA out of memory-1234abcd.", None),
    (f"Finished request chatcmpl-{CANARY} CUDA out of memory.", None),
    (f"Generated response chatcmpl-{CANARY} CUDA out of memory: output: 'x', finish_reason: length", None),
    (f"Request {CANARY} CUDA out of memory details: prompt: 'x', prompt_token_ids: [1], prompt_embeds shape: None.", None),
    (f"Request {CANARY} CUDA out of memory JSON body: {{\"query\": \"x\"}}", None),
    (f"Request chatcmpl-{CANARY} CUDA out of memory failed (engine dead).", " failed (engine dead)."),
    (f"Request chatcmpl-{CANARY} CUDA out of memory aborted.", " aborted."),
])
def test_a_request_id_with_spaces_the_client_chose_never_reaches_the_rules(msg, kept):
    """vLLM takes X-Request-Id as it comes: an id the patterns cannot read leaves a placeholder,
    and the server's own words after it stay for the rules."""
    ev = _one(f"{VLLM32}{msg}")
    assert CANARY not in ev.text and "CUDA" not in ev.text, ev.text
    assert "request_id" not in ev.fields
    if kept:
        assert ev.text.endswith(kept)


@pytest.mark.parametrize("rid, masked", [
    ("chatcmpl-EngineDeadError", True),  # a client's X-Request-Id, one word a rule looks for
    ("chatcmpl-NCCL_error:CUBLAS_STATUS_ALLOC_FAILED", True),
    ("chatcmpl-99512c3bf5fb2800", False),  # the server's own ids are kept as they are (real: 0.10 engine-dead log)
    ("cmpl-0e1fae31b8e15198ecbc6e9083d7aaaa-0", False),
])
def test_a_one_word_request_id_the_client_chose_in_a_failed_line_is_no_rule_input(rid, masked, tmp_path):
    """Failed lines are rule input by default (`request.failed`), and their id may be the client's
    X-Request-Id: the id is a field, its text a placeholder, unless it has the server's id shape."""
    from conftest import scan, severe

    line = f"(APIServer pid=11381) INFO 11-22 18:23:19 [async_llm.py:789] Request {rid} failed (bad request)."
    ev = _one(line)
    assert ev.kind == E.FAILED and ev.fields["request_id"] == rid and ev.fields["reason"] == "bad request"
    assert (rid not in ev.text) == masked and ev.text.endswith(" failed (bad request).")
    log = tmp_path / "vllm.log"
    log.write_text(line + "\n")
    assert severe(scan(log)) == set()  # the id raises nothing (engine-dead, nccl-error, cuda-oom before)


def test_a_raw_newline_in_a_request_id_puts_the_rest_of_the_message_out_of_the_rules_reach():
    """0.6.4+ takes the body's `request_id`; vLLM repeats the line's prefix after a newline (and ends
    the line before with \\r): the next line is the rest of the same message, the client's."""
    evs = parse_text(f"INFO 01-24 09:01:31 logger.py:37] Received request chatcmpl-x\r\n"
                     f"INFO 01-24 09:01:31 logger.py:37] {CANARY_TEXT}: prompt: 'hi', params: SamplingParams(max_tokens=7), "
                     "prompt_token_ids: None, lora_request: None.\n"
                     "INFO 01-24 09:01:32 logger.py:37] Received request chatcmpl-y: prompt: 'hi', params: "
                     "SamplingParams(max_tokens=9), prompt_token_ids: None, lora_request: None.")
    assert all(CANARY not in e.text and "CUDA" not in e.text for e in evs)
    assert [(e.kind, e.fields.get("request_id"), e.fields.get("max_tokens")) for e in evs] == \
        [(E.LOG, None, None), (E.RECEIVED, "chatcmpl-y", 9)]


def test_an_unknown_model_keeps_a_models_name_and_masks_any_other_text():
    base = f"{VLLM32}Error with model error=ErrorInfo(message='The model `%s` does not exist. Valid aliases: tiny.', code=404)"
    assert _one(base % "Qwen/Qwen3-VL-8B-Instruct").fields["model_requested"] == "Qwen/Qwen3-VL-8B-Instruct"
    ev = _one(base % f"{CANARY}` does not exist. CUDA out of memory")
    assert CANARY not in ev.text and "CUDA" not in ev.text and "model_requested" not in ev.fields


@pytest.mark.parametrize("line", [
    # each form vLLM logs it in (real: tests/data/corpus 0.32 text.log, 0.11 and 0.6 synthetic, vllm#15018 for 0.8)
    "(APIServer pid=14990) ERROR 11-22 18:27:49 [serving.py:274] Error with model error=ErrorInfo(message='The model `%s` "
    "does not exist. Valid aliases: tiny.', type='NotFoundError', param='model', code=404)",
    "(APIServer pid=1) ERROR 01-24 10:02:40 [serving_chat.py:178] Error with model error=ErrorInfo(message='The model `%s` "
    "does not exist.', type='NotFoundError', param=None, code=404)",
    "ERROR 03-18 09:02:03 [serving_chat.py:133] Error with model object='error' message='The model `%s` does not exist.' "
    "type='NotFoundError' param=None code=404",
])
def test_a_one_word_model_name_is_no_rule_input_and_the_finding_still_names_it(line, tmp_path):
    """The name a client asks for is its text, even when it is one word a rule looks for: the rules
    see a placeholder, and `unknown-model` names the model from the parser's field (`from_event`)."""
    from conftest import findings, scan, severe

    name = "EngineDeadError/cudaErrorIllegalAddress:CUBLAS_STATUS_ALLOC_FAILED"  # three rules' literals, a valid name
    ev = _one(line % name)
    assert ev.fields["model_requested"] == name and "EngineDeadError" not in ev.text and "«model:" in ev.text
    log = tmp_path / "vllm.log"
    log.write_text(line % name + "\n")
    doc = scan(log)
    assert severe(doc) == {"unknown-model"}
    f = findings(doc)["unknown-model"]
    assert f["fields"]["model"] == name and f"`{name}`" in f["summary"] and "EngineDeadError" not in f["excerpt"]


@pytest.mark.parametrize("line, fmt", [
    # a proxy that logs the upstream's error body (the seed setup's proxy_server.py, Python logging)
    ('ERROR:root:Upstream error body: {"error":{"message":"The model `%s` does not exist.","type":"NotFoundError",'
     '"param":"model","code":404}}', "proxy"),
    # the OpenAI client's exception, as a client or gateway logs it (a line of a traceback)
    ("openai.NotFoundError: Error code: 404 - {'error': {'message': 'The model `%s` does not exist.', 'type': "
     "'NotFoundError', 'param': 'model', 'code': 404}}", None),
    # LMDeploy-style quotes
    ("2026-11-22 18:27:49,123 - lmdeploy - ERROR - The model '%s' does not exist.", None),
])
def test_a_model_name_passed_on_by_a_proxy_or_client_is_no_rule_input_either(line, fmt, tmp_path):
    """Not only vLLM logs the 404's text: any proxy, gateway or client that logs the error body does.
    The name is the client's text wherever it is logged: the rules see a placeholder, and
    `unknown-model` still names a model's name from the field the parser keeps."""
    from conftest import CANARY_MODEL, findings, scan, severe

    ev = parse_text(line % CANARY_MODEL, fmt=fmt)[0]
    assert "EngineDeadError" not in ev.text and "«model:" in ev.text and ev.fields["model_requested"] == CANARY_MODEL
    log = tmp_path / "proxy.log"
    log.write_text(line % CANARY_MODEL + "\n")
    doc = scan(log)
    assert severe(doc) == {"unknown-model"}
    assert findings(doc)["unknown-model"]["fields"]["model"] == CANARY_MODEL
    log.write_text(line % CANARY_TEXT + "\n")  # not a model's name: no field, nothing of it anywhere
    doc = scan(log)
    assert severe(doc) <= {"unknown-model"} and CANARY not in json.dumps(doc)


def test_a_prompt_quoting_a_404_is_read_the_same_on_the_fast_path_and_the_events_way(tmp_path):
    """scrub masks a model's name in any text, a prompt's too: the fast path's classifier must send
    such a line to the full parser (its marker list has `does not exist`), or the two ways would
    count the prompt's characters differently."""
    from diag.analysis.rules import ruleset as rules
    from diag.pipeline import Pipeline

    log = tmp_path / "vllm.log"
    log.write_text(f"{VLLM32}Received request chatcmpl-1: prompt: 'It says: The model `gpt-4o` does not exist.', "
                   "params: SamplingParams(n=1, max_tokens=16), lora_request: None.\n"
                   "(APIServer pid=7) INFO 11-22 18:27:49 [async_llm.py:578] Added request chatcmpl-1-0000abcd.\n")
    docs = []
    for fast in (True, False):
        pipe = Pipeline(rules.load(), fast=fast)
        pipe.scan_path(str(log))
        pipe.finish()
        docs.append([(t.id, t.prompt_chars, t.max_tokens) for t in pipe.traces])
    assert docs[0] == docs[1] and docs[0][0][2] == 16


def test_http_server_request_line_it_could_not_parse_is_masked():
    evs = parse_text(f"10.8.0.23 - - [24/Jan/2025 00:13:38] code 400, message Bad request version ('{CANARY} CUDA out of memory')\n"
                     f'10.8.0.23 - - [24/Jan/2025 00:13:38] "{CANARY} CUDA out of memory" 400 -')
    assert len(evs) == 2 and all(CANARY not in e.text and "CUDA" not in e.text for e in evs)
    assert evs[0].text.startswith("code 400, message Bad request version (") and evs[1].text.endswith('" 400 -')


def test_llama_server_json_parse_error_and_streamed_chunks_are_masked():
    err = _one('0.03.462.314 W srv    operator(): got exception: {"error":{"code":500,"message":"[json.exception.parse_error.101] '
               f"parse error at line 1, column 3: syntax error - invalid literal; last read: '{CANARY} CUDA out of memory'\"}}}}")
    assert CANARY not in err.text and err.fields["http_status"] == 500
    chunk = _one('0.00.274.130 D srv    operator(): http: streamed chunk: data: {"choices":[{"delta":'
                 f'{{"reasoning_content":"{CANARY} CUDA out of memory"}}}}]}}')
    assert CANARY not in chunk.text and "CUDA" not in chunk.text


def test_a_validation_error_that_quotes_the_request_is_masked_but_its_kind_kept():
    ev = _one(f"{VLLM32}Request chatcmpl-1 failed (bad request): Invalid stop string '{CANARY} CUDA out of memory'.")
    assert ev.kind == E.FAILED and ev.fields["reason"] == "bad request" and CANARY not in ev.text


def test_uvicorn_access_line_whose_client_is_any_text_is_still_an_access_line():
    """Behind a proxy uvicorn logs the client X-Forwarded-For names, as the client wrote it."""
    ev = _one(f'INFO:     {CANARY_TEXT}:0 - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error')
    assert ev.kind == E.ACCESS and (ev.fields["client"], ev.fields["status"]) == (None, 500)
    assert CANARY not in ev.text and "CUDA" not in ev.text and ev.text.endswith(' - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error')


def test_a_request_id_with_spaces_longer_than_the_spaced_pattern_bound_never_reaches_the_rules():
    """The spaced-id pattern is tried on messages under 4 kB only (it is quadratic); a client's
    X-Request-Id may be longer (a header of up to 16 kB): masked whole, not sent to the rules."""
    ev = _one(f"{VLLM32}Request chatcmpl-{CANARY} {CANARY_TEXT}{'x' * 4100} aborted.")
    assert CANARY not in ev.text and "CUDA" not in ev.text and "request_id" not in ev.fields


def test_a_nginx_quoted_path_that_spells_a_client_context_keeps_its_text_out():
    """The decoded path in `open() "…" failed` is the client's: a `, client: ` inside it is not
    where nginx's context starts, and what follows it is no client address."""
    ev = _one(f'2026/08/22 10:14:55 [error] 7#7: *1 open() "/srv/x, client: {CANARY} CUDA out of memory. '
              f'Tried to allocate 2.00 GiB, server: a" failed (2: No such file or directory), client: 10.0.0.1, '
              f'server: _, request: "GET /x HTTP/1.1", host: "h"', fmt="nginx")
    assert CANARY not in ev.text and "CUDA" not in ev.text, ev.text
    assert CANARY not in str(ev.fields.get("client"))
    real = _one('2026/08/22 10:14:55 [error] 7#7: *1 open() "/srv/x" failed (2: No such file or directory), '
                'client: 10.0.0.1, server: _, request: "GET /x HTTP/1.1", host: "h"', fmt="nginx")
    assert (real.fields["client"], real.fields["method"]) == ("10.0.0.1", "GET") and "10.0.0.1, server: _" in real.text


def test_many_stop_strings_on_a_megabyte_line_are_skipped_in_linear_time():
    """`max_tokens=` is looked for outside each quoted literal: with 200,000 stop strings before it
    (a 1 MB line, the default cap) a search afresh per literal took a minute of CPU for this
    one line; once through, it takes well under a second. The bound is 50 times that, far from both."""
    import time

    stops = ", ".join(["'a'"] * 200_000)
    line = f"{VLLM32}Received request chatcmpl-1: params: SamplingParams(n=1, stop=[{stops}], max_tokens=16), prompt_token_ids: [1, 2]"
    t = time.process_time()
    ev = _one(line)
    assert time.process_time() - t < 5.0
    assert ev.fields["max_tokens"] == 16 and ev.fields["prompt_tokens"] == 2


@pytest.mark.parametrize("client", ["::1:58413", "fdbd:dc03:c:643:2600::81:33816"])
def test_uvicorn_access_line_from_an_ipv6_client_keeps_the_client(client):
    """uvicorn writes an IPv6 client without brackets (a field log's `fdbd:dc03:…:33816`): it is
    the server's address text, counted as a client, not a client's text to mask."""
    ev = _one(f'INFO:     {client} - "POST /v1/chat/completions HTTP/1.1" 200 OK')
    assert ev.kind == E.ACCESS and ev.fields["client"] == client and ev.text.startswith(client)


def test_from_event_copies_one_value_never_a_list_of_clients_ids(tmp_path):
    """`from_event` takes a parser's value into a finding; a list (`Aborted request(s) a,b.`'s
    `request_ids`, clients' X-Request-Ids) is not one value to bound and clean: it is left out."""
    from diag.analysis.rules import ruleset as rules
    from diag.pipeline import Pipeline

    line = ("(APIServer pid=16263) INFO 11-22 18:28:58 [async_llm.py:922] Aborted request(s) "
            f"chatcmpl-bd32fde27c4a734b-a11e01b6,{CANARY}-CUDA-out-of-memory.")
    (tmp_path / "aborts.toml").write_text(f"""
[[rule]]
id = "aborts-seen"
title = "Requests aborted"
category = "other"
severity = "info"
kinds = ["request.aborted"]
match = 'Aborted request'
from_event = {{ ids = "request_ids", first = "request_id" }}
summary = "aborted"
remedy = "Nothing to do."
examples = ['''{line}''']
counter_examples = ['''(APIServer pid=16263) INFO 11-22 18:28:58 [async_llm.py:578] Added request chatcmpl-bd32fde27c4a734b-a11e01b6.''']
""")
    rs = rules.load([tmp_path])
    assert "aborts-seen" in {r.id for r in rs.rules}, rs.errors
    log = tmp_path / "vllm.log"
    log.write_text(line + "\n")
    pipe = Pipeline(rs)
    pipe.scan_path(str(log))
    pipe.finish()
    (f,) = [f for f in pipe.findings.sorted() if f.rule.id == "aborts-seen"]
    fields = f.to_dict()["fields"]
    assert "ids" not in fields and isinstance(fields["first"], str)
