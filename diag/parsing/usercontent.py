"""User content in logs: found by the parsers, replaced before anything else can read it.

Servers log what users send and receive in some modes: vLLM's prompt and output, LMDeploy's
prompt, llama-server's `-v` prompt dumps and JSON bodies, image URLs and query strings. None of
that is ours. A parser marks each such span by replacing it in the event's text with a
placeholder that says only what it was and how long (`«prompt: 1234 chars»`), and counts the
characters in `fields["user_chars"]`. Rules, facts, traces, excerpts and every sink downstream
see the placeholder, so a prompt that quotes `CUDA out of memory` can raise no alarm, and no
store or report can leak it, whatever a rule's pattern captures.

URLs keep `scheme://host:port` (which server was called is diagnostic); their path and query
are user content unless the path is one of the servers' own API endpoints. `data:` URIs (inline
images) are reduced to their media type.
"""

from __future__ import annotations

import re
from typing import Any

from diag.parsing.quoted import closing_quote

OPEN, CLOSE = "«", "»"
# API paths the servers themselves define: an endpoint is not user content, and rules need it
# (a proxy forwarding to /chat/completions without /v1). KServe serves vLLM's under /openai/v1/.
_API_PATH = re.compile(
    r"/(?:openai/v1/|v1/)?(?:chat/completions|completions?|embeddings|models|responses|messages|generate|health|metrics|"
    r"tokenize|detokenize|infill|props|slots|rerank|score|pooling|audio/\w+|v1|version|ping|chat\.html)?/?\Z"
)
_URL = re.compile(r"\b((?:https?|wss?|ftp|s3|gs|file)://)([^/\s?#\"'<>\\)\]]*)([^\s\"'<>\\)\]]*)", re.I)
_DATA_URI = re.compile(r"\bdata:([\w.+-]+/[\w.+-]+)?[;,][^\s\"'<>)\]]*", re.I)
# a request line's path with a query: "GET /v1/x?q=1 HTTP/1.1", request: "GET /a?b"
# (a query ends only at whitespace: a client can put quotes in it, and what follows one is its text too)
_QUERY = re.compile(r"(?<=[\s\"])(/[^\s?\"]*)\?(?!«)\S*")
# a request line: `GET /v1/models?x HTTP/1.1` (access logs, nginx's `request: "..."`)
REQUEST_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")
_REQUEST_LINE = re.compile(rf"\b({'|'.join(REQUEST_METHODS)}) (/[^\s\"')?]*(?:\?\S*)?)")
# a body (JSON or a Python repr) with a user-content key: masked from its outermost opening brace to
# the end of the line; a validation error's echo of the input (pydantic `input_value=...`) likewise
_BODY_KEY = re.compile(r"""["'](?:messages|prompt|content|input|text|image_url|generated|input_value|prompt_text)["']\s*:|\binput_value=""")


# The name in OpenAI's 404 `The model `NAME` does not exist.` is what a client sent: vLLM logs it,
# and so does every proxy, gateway or client that passes the error body on. A model's name is kept
# as a field (`model_asked`); the text never carries it, whatever it is (`EngineDeadError` is a
# one-word name and a rule's literal).
_MODEL_NAME = re.compile(r"[\w.:/@+-]{1,256}\Z")  # `Qwen/Qwen3-VL-8B-Instruct`, `qwen3:8b`, `gpt-4o`


def _model_span(text: str) -> tuple[int, int] | None:
    """Where NAME is in `The model `NAME` does not exist` (or 'NAME'): from after the first opening
    quote to the last `does not exist` after that quote (the server's words follow it; a name may quote them)."""
    a = text.find("The model ")
    while a >= 0:
        q = text[a + 10:a + 11]
        if q == "`" or q == "'" or q == '"':  # LMDeploy names it with !r: "…" when the name has a '
            b = text.rfind(q + " does not exist")
            if b > a + 11:
                return a + 11, b
        a = text.find("The model ", a + 10)
    return None


def model_asked(text: str) -> tuple[str | None, int] | None:
    """`The model `NAME` does not exist` in a log line (before `scrub` masks NAME): (NAME when it is
    a model's name, else None; its length), or None when the line says no such thing."""
    if "does not exist" not in text:
        return None
    span = _model_span(text)
    if span is None:
        return None
    name = text[span[0]:span[1]]
    return (name if _MODEL_NAME.match(name) else None), len(name)


# llama.cpp's chat code names what it could not parse, and quotes it to the end of its message: the
# model's output (`Failed to parse input at pos 12: <output>`, its PEG chat parser, 2026), the request's
# messages or tools (`Failed to parse messages: Missing 'role' in message: {"content":…}`, common/chat.cpp
# dumps them). It is logged in llama-server's error body, in a proxy's log of that body, in an OpenAI
# client's exception. nlohmann::json's parse error quotes the text it read up to the error:
# `last read: '<text>'` (a request body, a tool call's arguments).
_FAILED_TO_PARSE = "Failed to parse "
_QUOTING = (("input at pos ", "output"), ("messages: ", "messages"), ("tools: ", "tools"))
_LAST_READ = "last read: '"


def _quoted_end(text: str, start: int, q: str | None) -> int:
    """Where the string that `text[start:]` is inside ends: at the first `q` no backslash escapes
    (a JSON or a Python string), or the end of the text (unquoted, or never closed)."""
    j = -1 if q is None else closing_quote(text, start, q)
    return len(text) if j < 0 else j


def _parse_failed(text: str) -> str:
    """What each of llama.cpp's `Failed to parse input at pos N: …`, `… messages: …`, `… tools: …`
    quotes, masked to the end of the string it is in: of the JSON or Python string whose quote
    precedes the phrase, else of the line."""
    a = text.find(_FAILED_TO_PARSE)
    while a >= 0:
        i = a + len(_FAILED_TO_PARSE)
        for what, label in _QUOTING:
            if text.startswith(what, i):
                i += len(what)
                if label == "output":  # the position, then `: `
                    while text[i:i + 1].isdigit():
                        i += 1
                    if text.startswith(": ", i):
                        i += 2
                q = text[a - 1] if a > 0 and text[a - 1] in "\"'" else None
                if q == '"' and text[a - 2:a - 1] == "\\":
                    q = None  # JSON inside a JSON string: to the end of the line
                text = mask(text, i, _quoted_end(text, i, q), label)
                break
        a = text.find(_FAILED_TO_PARSE, i)
    return text


_PLACEHOLDER = re.compile(rf"{OPEN}[^{OPEN}{CLOSE}\s]+:([0-9]+)-chars{CLOSE}")  # what `placeholder` writes


def placeholder(what: str, n: int) -> str:
    """`«prompt:1234-chars»`: no spaces, so a pattern's `\\S+` around it still ends where it did."""
    return f"{OPEN}{what.replace(' ', '-')}:{n}-chars{CLOSE}"


def count(fields: dict[str, Any], n: int) -> None:
    fields["user_chars"] = fields.get("user_chars", 0) + n


def mask(text: str, start: int, end: int | None, what: str, fields: dict[str, Any] | None = None) -> str:
    """`text` with [start:end] replaced by a placeholder (to the end when `end` is None)."""
    end = len(text) if end is None else end
    n = end - start
    if n <= 0:
        return text
    if fields is not None:
        count(fields, n)
    return text[:start] + placeholder(what, n) + text[end:]


def _url_sub(m: re.Match) -> str:
    scheme, netloc, rest = m.group(1), m.group(2).rsplit("@", 1)[-1], m.group(3)
    if not rest:
        return scheme + netloc
    path = rest.split("?", 1)[0].split("#", 1)[0]
    if _API_PATH.match(path) and len(path) == len(rest):
        return scheme + netloc + path  # a server endpoint: kept
    if _API_PATH.match(path):
        return scheme + netloc + path + _query(rest[len(path):])
    return scheme + netloc + placeholder("url path", len(rest))


def _data_sub(m: re.Match) -> str:
    return f"data:{m.group(1) or ''}{placeholder('data', len(m.group(0)))}"


_KEPT: dict[str, bool] = {}  # request path -> is it a server endpoint, kept as it is (a bounded cache)


def kept_path(raw: str) -> bool:
    """Is `raw` a server endpoint with nothing to cut (no query, fragment or marker)? Asked for every
    access line, so the answer is remembered per distinct path."""
    try:  # subscript rather than .get: compiled, a method of a module global is looked up on each call
        return _KEPT[raw]
    except KeyError:
        pass
    if len(_KEPT) >= 1024:
        _KEPT.clear()
    kept = _KEPT[raw] = _API_PATH.match(raw) is not None
    return kept


def endpoint(raw: str) -> str:
    """A request path as diag keeps it: a server endpoint as is, anything else (a file name, an id
    in the path) as a placeholder; the query string never."""
    if kept_path(raw):
        return raw
    path = raw.split("?", 1)[0].split("#", 1)[0].split(OPEN, 1)[0]
    if _API_PATH.match(path):
        return path
    return placeholder("url-path", len(path))


def _request_sub(m: re.Match) -> str:
    raw = m.group(2)
    path = raw.split("?", 1)[0]
    kept = endpoint(path)
    rest = raw[len(path):]
    return f"{m.group(1)} {kept}" + _query(rest)


def _query(rest: str) -> str:
    """A query string (or fragment) as a placeholder that keeps its `?`/`#`, so a pattern that
    allows an optional query after a path (`(?:\\?\\S*)?`) still matches the line."""
    if not rest:
        return ""
    return rest[0] + placeholder("query", len(rest) - 1)


def _query_sub(m: re.Match) -> str:
    return m.group(1) + _query(m.group(0)[len(m.group(1)):])


def scrub(text: str) -> str:
    """URLs, data URIs, request-line query strings and requested model names in any log text, reduced (see module doc).

    Cheap for the common line: each regex runs only when its marker is present. A URL, a request
    line and a query path all need a slash, which one memchr finds or rules out (a vLLM request
    line with its sampling parameters has none); no substitution adds one. A model's name a client
    asked for goes first: whatever it holds (a URL, a query) becomes one placeholder."""
    if "does not exist" in text:
        span = _model_span(text)
        if span is not None:
            text = mask(text, span[0], span[1], "model")
    if _FAILED_TO_PARSE in text:
        text = _parse_failed(text)
    slash = "/" in text
    if slash and "://" in text:
        text = _URL.sub(_url_sub, text)
    if "data:" in text:
        text = _DATA_URI.sub(_data_sub, text)
    if slash and " /" in text:
        # A busy server's access line names one endpoint: the substitution would change nothing,
        # and finding that out costs one search, not a new string per line. (Every request line
        # contains " /", so one occurrence means at most one match.)
        m = _REQUEST_LINE.search(text)
        if m is not None and (not kept_path(m.group(2)) or text.count(" /") > 1):
            text = _REQUEST_LINE.sub(_request_sub, text)
    if slash and "?" in text and "/" in text:
        text = _QUERY.sub(_query_sub, text)
    if ("{" in text and ":" in text) or "input_value=" in text:
        m = _BODY_KEY.search(text)
        if m is not None:
            b = text.find("{", 0, m.start())
            start = b if b >= 0 else m.start()
            text = text[:start] + placeholder("body", len(text) - start)
    if _LAST_READ in text:
        # last, so that llama-server's own error line reads as it did when its parser masked this
        # (unless all that follows is one placeholder, a body's: masked already. The quoted text
        # may start with a placeholder that is not all of it, a data URI's, or with a « of its own)
        i = text.find(_LAST_READ) + len(_LAST_READ)
        if not masked_to_end(text, i):
            text = mask(text, i, None, "request")
    return text


def masked_to_end(text: str, at: int) -> bool:
    """Is all of `text[at:]` one placeholder (masked already)? Not merely does it start with «:
    the client's text may (a placeholder of its own, or a look-alike that hides what follows)."""
    return _PLACEHOLDER.fullmatch(text, at) is not None


def masked_chars(text: str, at: int) -> int | None:
    """The size a placeholder at `text[at:]` stands for (None: no placeholder there)."""
    m = _PLACEHOLDER.match(text, at)
    return None if m is None else int(m.group(1))


def clean(value: Any, limit: int = 120) -> Any:
    """A value a rule captured or a parser kept (a reason, a name): scrubbed, redacted, bounded.

    Numbers pass; strings lose URLs' paths, anything after a user-content marker, and are cut."""
    if not isinstance(value, str):
        return value
    from diag.parsing.redact import redact

    v = redact(scrub(value))
    if len(v) > limit:
        v = v[: limit - 1] + "…"
    return v
