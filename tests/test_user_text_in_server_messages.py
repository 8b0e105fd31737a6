"""A client's text inside a server's own message: the message's words are the server's, what it quotes is not.

Servers, proxies and clients log error messages that quote what a request carried or what the
model wrote: llama.cpp's chat parser quotes the model's output it could not parse, LMDeploy's
tool-call parser likewise, vLLM names the request fields it ignored, uvicorn (h11) the method a
client sent. Users paste error logs into prompts, so a model's output often repeats error text:
each position below carries the canary text (or one word a rule looks for), and must raise no
finding the same line with a harmless payload does not raise, nor leave the canary anywhere in
diag's output.
"""

from __future__ import annotations

import json

import pytest

from conftest import CANARY, CANARY_LINES, CANARY_TEXT, scan, severe

from diag.parsing.source import parse_text

WORD = f"{CANARY}EngineDeadError"  # one word: a method, a JSON key; engine-dead's literal inside it


def _json(s: str) -> str:
    """`s` inside a JSON string, as a server's JSON dump writes it."""
    return json.dumps(s)[1:-1]


# (what, the log text with {} where the client's text goes, how the client's text is written there, format)
POSITIONS = [
    # llama.cpp's chat parser (PEG, 2026) throws on output it cannot place; the HTTP layer logs the error body
    # (real: ggml-org/llama.cpp#20761, `got exception: {"error":{"code":500,"message":"Failed to parse input at pos 12: </tool_call>",…}}`)
    ("llama-server: chat parser's error quoting the model's output (got exception)",
     '0.00.283.950 E srv    operator(): got exception: {{"error":{{"code":500,"message":"Failed to parse input at pos 12: '
     '<tool_call>{}</tool_call>","type":"server_error"}}}}', _json, None),
    ("llama-server without timestamps: the same",
     'srv    operator(): got exception: {{"error":{{"code":500,"message":"Failed to parse input at pos 0: {}","type":"server_error"}}}}',
     _json, None),
    # common/chat.cpp: `throw std::runtime_error("Failed to parse messages: " + …)` around errors that dump the
    # client's message (`Missing 'role' in message: ` + message.dump(), `Invalid 'content' type: … got ` + content.dump())
    ("llama-server: the request's message it could not read, dumped in its error body",
     'srv    operator(): got exception: {{"error":{{"code":500,"message":"Failed to parse messages: Missing \'role\' in '
     'message: {}","type":"server_error"}}}}', lambda t: _json(json.dumps({"content": t})), None),
    ("llama-server: the request's tools it could not read (`Failed to parse tools: …; tools = ` + tools.dump(2))",
     'srv    operator(): got exception: {{"error":{{"code":500,"message":"Failed to parse tools: Missing tool function: '
     '{}","type":"server_error"}}}}', lambda t: _json(json.dumps([{"type": "function", "description": t}], indent=2)), None),
    ("a proxy logging the upstream's error body: the same message",
     'ERROR:root:Upstream error body: {{"error":{{"code":500,"message":"Failed to parse input at pos 12: {}",'
     '"type":"server_error"}}}}', _json, "proxy"),
    ("the OpenAI client's exception, as a gateway or client logs it: the same message",
     "openai.InternalServerError: Error code: 500 - {{'error': {{'code': 500, 'message': 'Failed to parse input at pos 12: {}', "
     "'type': 'server_error'}}}}", str, None),
    # the streamed form: the SDK raises the message itself (real: agentscope-ai/QwenPaw#3560, `APIError: Failed to parse input`)
    ("the OpenAI client's stream error: the message unquoted",
     "openai.APIError: Failed to parse input at pos 13: {}", str, None),
    # nlohmann::json's parse error quotes the text up to where it failed (real: continuedev/continue#7491,
    # llama-server printing `Failed to parse arguments: … last read: '"{"fi'; expected ':'` on a line of its own)
    ("llama-server: a tool call's arguments the model wrote, quoted by a JSON parse error (a line without prefix)",
     "Failed to parse arguments: [json.exception.parse_error.101] parse error at line 1, column 6: syntax error while "
     "parsing object separator - invalid literal; last read: '\"{{\"{}'; expected ':'", str, None),
    ("llama-server: the same quote starting with what diag's own masks start with («)",
     "Failed to parse arguments: [json.exception.parse_error.101] parse error at line 1, column 6: syntax error while "
     "parsing value - invalid literal; last read: '{}'; expected ':'", lambda t: "\u00ab" + t, None),
    ("llama-server: a request body's JSON parse error (its HTTP layer) quoting a mask's look-alike",
     "0.00.283.957 E srv    operator(): got exception: [json.exception.parse_error.101] parse error at line 1, column 6: "
     "syntax error while parsing value - invalid literal; last read: '{}'", lambda t: "\u00abx:\u00b2-chars\u00bb " + t, None),
    ("llama-server: the same quote starting with a data URI",
     "Failed to parse arguments: [json.exception.parse_error.101] parse error at line 1, column 6: syntax error while "
     "parsing value - invalid literal; last read: '{}'", lambda t: "data:image/png;base64,iVBORw0KGgo=, " + t, None),
    # llama-server -v, builds of 2025 (server.cpp update_chat_msg): SRV_DBG("Parsing chat message: %s\n", generated_text)
    ("llama-server -v: the model's output as it grows, raw",
     "0.01.815.313 D srv  update_chat_: Parsing chat message: {}\n0.01.815.320 D srv  update_slots: all slots are idle",
     "lines", None),
    # params_from_json_cmpl: SRV_DBG("Grammar: %s\n", grammar), SRV_DBG("JSON schema: %s\n", schema.dump(2)),
    # SRV_DBG("Converted grammar: %s\n", grammar): the client's grammar or schema, over several lines
    ("llama-server -v: the request's grammar",
     'srv  params_from_: Grammar: root ::= "{}"\nspace ::= " "?\nsrv  params_from_: Grammar lazy: false', _json, None),
    ("llama-server -v: the request's JSON schema and the grammar made of it",
     'srv  params_from_: JSON schema: {{\n  "description": "{0}"\n}}\nsrv  params_from_: Converted grammar: root ::= '
     '"{0}"\nsrv  update_slots: all slots are idle', _json, None),
    # LMDeploy api_server.py (0.7+; chat_completions/serving.py from 2026): logger.error(f'Failed to parse {text}. Exception: {e}.')
    ("LMDeploy: the model's output its tool-call parser could not read",
     "2026-08-22 10:15:04,302 - lmdeploy - ERROR - api_server.py:561 - Failed to parse {}. Exception: Expecting value: "
     "line 1 column 1 (char 0).", str, None),
    ("LMDeploy: the same output over several lines (it is logged raw)",
     "2026-08-22 10:15:04,302 - lmdeploy - ERROR - api_server.py:561 - Failed to parse <tool_call>\n{}\n</tool_call>. "
     "Exception: Expecting value: line 1 column 1 (char 0).\n"
     "2026-08-22 10:15:04,303 - lmdeploy - INFO - async_engine.py:779 - session 0 finished, reason \"stop\", "
     "input_tokens 38, output_tokens 12", "lines", None),
    # vLLM protocol.py: logger.warning("The following fields were present in the request but ignored: %s", data.keys() - field_names)
    # (real: vllm-project/vllm#40329, `… but ignored: {'max_pixels', 'min_pixels', …}`): the keys are the client's
    ("vLLM: the request's fields it ignored (the client's JSON keys)",
     "(APIServer pid=1) WARNING 04-20 00:16:49 [protocol.py:117] The following fields were present in the request but "
     "ignored: {{{}, 'max_pixels'}}", repr, None),
    ("vLLM: a field it ignored, one word",
     "(APIServer pid=1) WARNING 04-20 00:16:49 [protocol.py:117] The following fields were present in the request but "
     "ignored: {{'{}'}}", "word", None),
    # vLLM 0.32 DEBUG: the request body as the client sent it; a JSON string body is logged without quotes
    ("vLLM DEBUG: a request's JSON body that is a string starting with «",
     "(APIServer pid=7) DEBUG 11-22 18:27:49 [serving.py:301] Request chatcmpl-1 JSON body: {}", lambda t: "\u00ab" + t, None),
    # vLLM's tool parsers log the streamed output at DEBUG (`logger.debug("delta_text: %s", delta_text)`, hermes and others)
    ("vLLM DEBUG: a tool parser's streamed output",
     "(APIServer pid=7) DEBUG 11-22 18:27:49 [hermes_tool_parser.py:190] delta_text: {}", str, None),
    ("vLLM DEBUG: a tool parser's streamed output over several lines",
     "(APIServer pid=7) DEBUG 11-22 18:27:49 [tool_parsers/hermes_tool_parser.py:190] delta_text: {}\n"
     "(APIServer pid=7) DEBUG 11-22 18:27:49 [tool_parsers/hermes_tool_parser.py:191] delta_token_ids: [151657]", "lines", None),
    # vLLM chat_utils.py: logger.warning("Skipping multimodal part '%s' (type: '%s') with empty / unparsable content.", part, part_type)
    ("vLLM: a content part it skipped (a misspelt key holds the client's text)",
     "(APIServer pid=7) WARNING 11-22 18:27:49 [chat_utils.py:1316] Skipping multimodal part '{{'type': 'image_url', "
     "'value': {}}}' (type: 'image_url') with empty / unparsable content.", repr, None),
    # LMDeploy's tool parsers (tool_parser/llama3_parser.py): logger.debug('got arguments diff: %s', argument_diff)
    ("LMDeploy DEBUG: a tool parser's view of the model's output",
     "2026-08-22 10:15:04,302 - lmdeploy - DEBUG - llama3_parser.py:131 - got arguments diff: {}", str, None),
    # uvicorn's h11 takes any token as a method (LMDeploy installs plain uvicorn) and the access line logs it
    ("uvicorn access line: the method the client sent",
     'INFO:     127.0.0.1:5555 - "{} /v1/models HTTP/1.1" 405 Method Not Allowed', "word", None),
    # LMDeploy names the model with !r: a name with a quote in it comes out in double quotes
    ("LMDeploy's 404 for a model name with a quote in it, as a client logs it",
     "openai.NotFoundError: Error code: 404 - {{'error': {{'message': 'The model \"{}\\'\" does not exist.', "
     "'type': 'invalid_request_error', 'code': 404}}}}", "word", None),
]


def _plant(template: str, how, payload: str) -> str:
    if how == "lines":
        return template.format("\n".join(CANARY_LINES) if payload else "please describe\nthe picture")
    if how == "word":
        return template.format(WORD if payload else "top_k")
    return template.format(how(CANARY_TEXT if payload else "please describe the picture"))


@pytest.mark.parametrize("what, template, how, fmt", POSITIONS, ids=[p[0] for p in POSITIONS])
def test_a_clients_text_in_a_servers_message_raises_nothing_and_is_kept_nowhere(what, template, how, fmt, tmp_path):
    planted, clean = tmp_path / "planted.log", tmp_path / "clean.log"
    planted.write_text(_plant(template, how, True) + "\n")
    clean.write_text(_plant(template, how, False) + "\n")
    evs = parse_text(_plant(template, how, True), fmt=fmt)
    for ev in evs:
        assert CANARY not in ev.text and "EngineDead" not in ev.text and "CUDA" not in ev.text, ev.text
    doc, clean_doc = scan(planted, fmt=fmt), scan(clean, fmt=fmt)
    assert severe(doc) <= severe(clean_doc), severe(doc) - severe(clean_doc)
    assert {f["rule"] for f in doc["findings"]} <= {f["rule"] for f in clean_doc["findings"]}
    assert CANARY not in json.dumps(doc)


def test_the_servers_words_around_the_clients_text_are_kept():
    """What is masked is the quoted text only: the server's words (and where its parser stopped) stay."""
    (ev,) = parse_text('srv    operator(): got exception: {"error":{"code":500,"message":"Failed to parse input at pos 12: '
                       f'{_json(CANARY_TEXT)}","type":"server_error"}}}}')
    assert ev.fields["http_status"] == 500
    assert 'got exception: {"error":{"code":500,"message":"Failed to parse input at pos 12: «output:' in ev.text
    assert ev.text.endswith('-chars»","type":"server_error"}}')
    (ev,) = parse_text("(APIServer pid=1) WARNING 04-20 00:16:49 [protocol.py:117] The following fields were present "
                       "in the request but ignored: {'max_pixels', 'fps'}")
    assert ev.text.endswith("The following fields were present in the request but ignored: «fields:21-chars»")
    (ev,) = parse_text("(APIServer pid=7) DEBUG 11-22 18:27:49 [hermes_tool_parser.py:190] delta_text: CUDA out of memory")
    assert ev.text == "delta_text: «output:18-chars»"
    (ev,) = parse_text(f'INFO:     127.0.0.1:5555 - "{WORD} /v1/models HTTP/1.1" 405 Method Not Allowed')
    assert (ev.kind, ev.fields["method"], ev.fields["path"], ev.fields["status"]) == ("http.access", "-", "/v1/models", 405)


def test_lines_after_an_lmdeploy_parse_failure_are_read_again_once_the_output_ends():
    """The output's own lines are the model's; the next line with LMDeploy's prefix is the server's again."""
    evs = parse_text("2026-08-22 10:15:04,302 - lmdeploy - ERROR - api_server.py:561 - Failed to parse <tool_call>\n"
                     f"{CANARY_TEXT}\n</tool_call>. Exception: Expecting value: line 1 column 1 (char 0).\n"
                     '2026-08-22 10:15:04,303 - lmdeploy - INFO - async_engine.py:779 - session 0 finished, reason "stop", '
                     "input_tokens 38, output_tokens 12")
    assert [e.fields.get("request_id") for e in evs] == [None, "session-0"]
    assert evs[0].text.startswith("Failed to parse «output:") and evs[0].level == "ERROR"
    assert evs[1].fields["output_tokens"] == 12
