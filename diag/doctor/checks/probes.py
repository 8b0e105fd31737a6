"""Checks that talk HTTP to the server (and the proxy in front of it)."""

from __future__ import annotations

import difflib
import json
import time
from typing import Any

from diag.doctor import FAIL, OK, SKIP, WARN, Context, Result

PROBE_TEXT = "Reply with one word: OK."


def unreachable(ctx: Context, cid: str, need_model: bool = False) -> Result | None:
    """A skip result when an earlier check showed this one cannot run."""
    if ctx.reachable is False:
        return Result(cid, SKIP, f"skipped: nothing answers at {ctx.url}")
    if ctx.healthy is False:
        return Result(cid, SKIP, "skipped: the server is not healthy (see the server check)")
    if need_model and not ctx.served_model:
        return Result(cid, SKIP, "skipped: no served model known (see the models check)")
    return None


def _err(exc: Exception) -> str:
    name = type(exc).__name__
    return {"ConnectError": "connection refused", "ConnectTimeout": "connection timed out",
            "ReadTimeout": "no answer before the timeout", "RemoteProtocolError": "the connection was closed without a response"
            }.get(name, f"{name}: {exc}")


# -- server ------------------------------------------------------------------------------------
def check_server(ctx: Context) -> Result:
    import httpx

    c = ctx.http()
    t0 = time.perf_counter()
    try:
        r = c.get(ctx.url + "/health")
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        ctx.reachable = False
        return Result("server", FAIL, f"nothing listens at {ctx.url} ({_err(exc)})",
                      remedy="Start the inference server, or point --url at the host:port it listens on "
                             "(vLLM's default port is 8000, llama-server's 8080, LMDeploy's 23333). "
                             "`ss -ltnp` shows what listens where.")
    except httpx.ReadTimeout:
        ctx.reachable, ctx.healthy = True, False
        return Result("server", FAIL, f"{ctx.url} accepts connections but /health did not answer within {ctx.timeout:g} s",
                      ["vLLM binds its port early and answers only once the engine has started; "
                       "a server still loading the model looks exactly like this."],
                      remedy="If the server is starting, wait for 'Application startup complete' in its log and run "
                             "diag doctor again; if it has been like this for minutes, the API server is hung: restart it.")
    except httpx.HTTPError as exc:
        ctx.reachable = False
        return Result("server", FAIL, f"{ctx.url}/health failed: {_err(exc)}",
                      remedy="Check the URL scheme (http vs https) and that the port belongs to the inference server.")
    elapsed = (time.perf_counter() - t0) * 1000
    ctx.reachable = True
    details = [f"GET /health -> {r.status_code} in {elapsed:.0f} ms"]
    _identify(ctx, details)
    body = r.text[:300]
    if r.status_code == 200:
        ctx.healthy = True
        kind = ctx.server_kind or "unknown"
        if kind == "unknown":
            return Result("server", WARN, f"{ctx.url} answers /health but does not look like an inference server",
                          details, remedy="Check --url: another service may hold this port (a proxy, a web server). "
                                          "`diag doctor --check processes` shows the process that listens.")
        ver = f" {ctx.version}" if ctx.version else ""
        slow = elapsed > 1000
        return Result("server", WARN if slow else OK, f"{kind}{ver} healthy at {ctx.url} ({elapsed:.0f} ms)", details,
                      remedy="/health took over a second: the API server is overloaded or starved of CPU." if slow else None)
    if r.status_code == 503 and "Loading model" in body:
        ctx.healthy = False
        return Result("server", WARN, "llama-server is still loading the model (503)", details,
                      remedy="Wait until its log says 'model loaded'; large models on slow disks take minutes.")
    if r.status_code in (500, 503) and ctx.server_kind in ("vllm", None, "unknown"):
        ctx.healthy = False
        return Result("server", FAIL, f"/health answered {r.status_code}: the engine is dead while the API server still runs",
                      details, remedy="The engine process died (CUDA OOM, a killed worker, NCCL): see `diag doctor --check logs` "
                                      "for the cause, then restart the server (systemd: Restart=on-failure). vLLM exits by "
                                      "itself shortly after its engine dies.")
    if r.status_code == 404:
        ctx.healthy = False
        return Result("server", FAIL, f"{ctx.url} has no /health endpoint: this is not an inference server", details,
                      remedy="Something else listens on this port (see --check processes). Point --url at vLLM, "
                             "llama-server or LMDeploy, or move the other service.")
    ctx.healthy = False
    return Result("server", FAIL, f"/health answered {r.status_code}", details + [f"body: {body[:120]!r}"],
                  remedy="Look at the server's log around now (`diag doctor --check logs --log PATH`).")


def _identify(ctx: Context, details: list[str]) -> None:
    """Which server is this? vLLM has /version, llama.cpp /props, LMDeploy says so in /v1/models."""
    c = ctx.http()
    try:
        r = c.get(ctx.url + "/version")
        if r.status_code == 200 and r.headers.get("content-type", "").startswith("application/json"):
            v = r.json().get("version")
            if isinstance(v, str):
                ctx.server_kind, ctx.version = "vllm", v
                details.append(f"GET /version -> {v}")
                return
    except Exception:  # noqa: BLE001 - identification is best effort
        pass
    try:
        r = c.get(ctx.url + "/props")
        if r.status_code == 200 and "build_info" in r.text:
            ctx.server_kind, ctx.version = "llamacpp", str(r.json().get("build_info"))
            details.append(f"GET /props -> llama.cpp {ctx.version}")
            return
    except Exception:  # noqa: BLE001
        pass
    try:
        r = c.get(ctx.url + "/v1/models")
        if r.status_code == 200:
            owners = {m.get("owned_by") for m in r.json().get("data", [])}
            ctx.server_kind = "lmdeploy" if "lmdeploy" in owners else ("vllm" if "vllm" in owners else
                                                                       "llamacpp" if "llamacpp" in owners else "openai-compatible")
            return
    except Exception:  # noqa: BLE001
        pass
    ctx.server_kind = "unknown"


# -- models ------------------------------------------------------------------------------------
def check_models(ctx: Context) -> Result:
    skip = unreachable(ctx, "models")
    if skip:
        return skip
    r = ctx.http().get(ctx.url + "/v1/models")
    if r.status_code != 200:
        return Result("models", FAIL, f"GET /v1/models answered {r.status_code}",
                      remedy="The OpenAI-compatible API is not served here (or needs an API key: check --api-key).")
    data = r.json().get("data", [])
    ctx.served = [m.get("id") for m in data if isinstance(m.get("id"), str)]
    ctx.model_roots = {m.get("id"): m.get("root") for m in data if m.get("root")}
    lens = [m.get("max_model_len") for m in data if isinstance(m.get("max_model_len"), int)]
    if lens:
        ctx.max_model_len = lens[0]
    if not ctx.model and ctx.logs:
        from diag.doctor.checks.host import scan_logs

        scan_logs(ctx)  # the names clients asked for recently
    details = [f"served: {', '.join(ctx.served) or '(none)'}"] + [f"{k}: root {v}" for k, v in ctx.model_roots.items() if v != k]
    wanted = ctx.model or (ctx.log_models[0] if ctx.log_models else None)
    if not ctx.served:
        return Result("models", FAIL, "the server lists no models", details, remedy="Check the server's startup log.")
    if wanted is None or wanted in ctx.served:
        what = f"`{wanted}` is served" if wanted else f"serves {', '.join(f'`{m}`' for m in ctx.served)}"
        return Result("models", OK, what + (f" (max_model_len {ctx.max_model_len})" if ctx.max_model_len else ""), details)
    source = "--model" if ctx.model else "recent requests in the logs"
    if ctx.server_kind is None:  # (run without the server check: --check models)
        _identify(ctx, details)
    if ctx.server_kind == "llamacpp":
        answered = _answers_name(ctx, wanted, details)
        if answered:
            return Result("models", OK, f"`{wanted}` is answered: llama-server serves its one model, "
                                        f"{', '.join(f'`{m}`' for m in ctx.served)}, whatever name a request sends", details,
                          remedy=None)
    near = _near_miss(wanted, ctx.served, ctx.model_roots)
    summary = f"clients ask for `{wanted}`, the server serves {', '.join(f'`{m}`' for m in ctx.served)}"
    if near and ctx.model_roots.get(near) and ctx.model_roots[near] != near:
        summary = f"clients ask for `{wanted}`, the server serves `{ctx.model_roots[near]}`"
    served = near or ctx.served[0]
    if ctx.server_kind == "llamacpp":
        start = f"Start llama-server with --alias {wanted} (a comma-separated list: --alias {wanted},{served})"
    elif ctx.server_kind == "lmdeploy":
        start = f"Start LMDeploy with --model-name {wanted}"
    else:
        start = (f"Start the server with --served-model-name {wanted} (vLLM accepts several names, e.g. "
                 f"--served-model-name {wanted} {served})")
    remedy = f"{start}, or make clients send \"model\": \"{served}\"."
    return Result("models", FAIL, summary + f" (asked for by {source})", details, remedy=remedy)


def _answers_name(ctx: Context, name: str, details: list[str]) -> bool:
    """Does the server answer a request for a model it does not list? llama-server with one model
    answers any name (the OpenAI "model" field is not checked; only its router mode routes by it),
    so a name missing from /v1/models is not a failure there. Asked of llama-server only: vLLM
    and LMDeploy refuse an unknown name, and their refusal would land in the log a daemon follows
    as a finding (`unknown-model`) that the doctor itself caused."""
    import httpx

    try:
        r = ctx.http().post(ctx.url + "/v1/chat/completions", json=chat_body(ctx, PROBE_TEXT, 1, model=name))
    except httpx.HTTPError as exc:
        details.append(f"a request for `{name}`: {_err(exc)}")
        return False
    details.append(f"a request for `{name}` (not listed): HTTP {r.status_code}"
                   + ("" if r.status_code == 200 else f": {error_message(r)}"))
    return r.status_code == 200


def _norm(s: str) -> str:
    return s.rstrip("/").rsplit("/", 1)[-1].lower().replace("_", "-")


def _near_miss(wanted: str, served: list[str], roots: dict[str, str]) -> str | None:
    w = _norm(wanted)
    best, score = None, 0.0
    for m in served:
        for cand in (m, roots.get(m) or m):
            s = difflib.SequenceMatcher(None, w, _norm(cand)).ratio()
            if w in _norm(cand) or _norm(cand) in w:
                s = max(s, 0.9)
            if s > score:
                best, score = m, s
    return best if score >= 0.5 else None


# -- generation --------------------------------------------------------------------------------
def chat_body(ctx: Context, content: Any, max_tokens: int = 8, stream: bool = False, model: str | None = None) -> dict:
    """A chat completion request for the served model (or `model`, a name to ask for)."""
    body: dict[str, Any] = {"model": model or ctx.served_model, "messages": [{"role": "user", "content": content}],
                            "max_tokens": max_tokens, "temperature": 0}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def check_generation(ctx: Context) -> Result:
    skip = unreachable(ctx, "generation", need_model=True)
    if skip:
        return skip
    c = ctx.http()
    details: list[str] = []
    t0 = time.perf_counter()
    r = c.post(ctx.url + "/v1/chat/completions", json=chat_body(ctx, PROBE_TEXT, 8))
    total = time.perf_counter() - t0
    if r.status_code != 200:
        return Result("generation", FAIL, f"a short chat completion failed with HTTP {r.status_code}: {error_message(r)}",
                      remedy="See the server log for this request (`diag doctor --check logs`); a 400 here usually means a "
                             "chat template problem, a 500 an engine problem.")
    j = r.json()
    usage = j.get("usage") or {}
    choice = (j.get("choices") or [{}])[0]
    details.append(f"non-streaming: 200 in {total * 1000:.0f} ms, finish_reason {choice.get('finish_reason')}, "
                   f"usage prompt {usage.get('prompt_tokens')} / completion {usage.get('completion_tokens')}")
    # streaming, parsed to [DONE]
    t0 = time.perf_counter()
    ttft = None
    chunks = 0
    done = False
    s_usage: dict = {}
    finish = None
    with c.stream("POST", ctx.url + "/v1/chat/completions", json=chat_body(ctx, PROBE_TEXT, 16, stream=True)) as sr:
        if sr.status_code != 200:
            sr.read()
            return Result("generation", FAIL, f"streaming completion failed with HTTP {sr.status_code}", details,
                          remedy="Non-streaming works but streaming does not: check a proxy in between (buffering, "
                                 "proxy_buffering off for SSE) or the server log.")
        for line in sr.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                ev = json.loads(data)
            except ValueError:
                continue
            for ch in ev.get("choices") or []:
                if (ch.get("delta") or {}).get("content"):
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
                finish = ch.get("finish_reason") or finish
            if ev.get("usage"):
                s_usage = ev["usage"]
    st = time.perf_counter() - t0
    toks = s_usage.get("completion_tokens") or chunks
    tps = toks / (st - (ttft or 0)) if st > (ttft or 0) and toks else 0.0
    details.append(f"streaming: TTFT {ttft * 1000 if ttft else 0:.0f} ms, {toks} tokens, {tps:.1f} tokens/s, finish_reason {finish}, "
                   f"[DONE] {'received' if done else 'MISSING'}")
    if not done:
        return Result("generation", FAIL, "the stream ended without `data: [DONE]`", details,
                      remedy="Something cut the SSE stream: a proxy timeout or buffering (nginx: proxy_buffering off; "
                             "proxy_read_timeout), or the engine failed mid-stream (see the logs check).")
    return Result("generation", OK, f"chat completion {total * 1000:.0f} ms; stream TTFT {ttft * 1000 if ttft else 0:.0f} ms, "
                                    f"{tps:.1f} tokens/s", details)


def error_message(r) -> str:
    try:
        j = r.json()
    except ValueError:
        return r.text[:160]
    e = j.get("error", j) if isinstance(j, dict) else {}
    msg = e.get("message") if isinstance(e, dict) else None
    return (msg or str(j))[:200]


# -- proxy -------------------------------------------------------------------------------------
def check_proxy(ctx: Context) -> Result:
    import httpx

    if not ctx.proxy_url:
        return Result("proxy", SKIP, "no proxy configured (--proxy-url)")
    c = ctx.http()
    base = ctx.proxy_url.rstrip("/")
    details = []
    problems: list[tuple[str, str]] = []
    try:
        page = c.get(base + "/chat.html")
        if page.status_code == 404:
            page = c.get(base + "/")
    except httpx.HTTPError as exc:
        return Result("proxy", FAIL, f"the proxy at {base} does not answer ({_err(exc)})",
                      remedy="Start the proxy (python proxy_server.py) or fix --proxy-url.")
    details.append(f"page: HTTP {page.status_code}, {len(page.content)} bytes, {page.headers.get('content-type', '?')}")
    if page.status_code != 200 or "html" not in page.headers.get("content-type", "") and "<html" not in page.text[:500].lower():
        problems.append(("the chat page is not served", "Serve chat.html from the proxy's directory (it serves files "
                                                         "relative to where it was started)."))
    pre = c.request("OPTIONS", base + "/v1/chat/completions",
                    headers={"Origin": "http://intranet.example", "Access-Control-Request-Method": "POST",
                             "Access-Control-Request-Headers": "content-type"})
    acao = pre.headers.get("access-control-allow-origin")
    details.append(f"CORS preflight: HTTP {pre.status_code}, Access-Control-Allow-Origin {acao!r}")
    if pre.status_code >= 400 or not acao:
        problems.append(("CORS preflight is not answered", "If the page is opened from another origin, the proxy must answer "
                                                           "OPTIONS with Access-Control-Allow-Origin/-Methods/-Headers."))
    if ctx.served_model:
        r = c.post(base + "/v1/chat/completions", json=chat_body(ctx, PROBE_TEXT, 4))
        details.append(f"completion through the proxy: HTTP {r.status_code}")
        if r.status_code in (502, 503, 504):
            problems.append((f"the proxy answers {r.status_code}: its upstream is unreachable or too slow",
                             "Check the proxy's upstream address (e.g. http://localhost:3001) against where the server "
                             "listens, and its timeout."))
        elif r.status_code != 200:
            problems.append((f"a completion through the proxy failed with HTTP {r.status_code}",
                             "Compare with the direct request (generation check): the proxy changes the request."))
    elif ctx.reachable is False:
        r = c.post(base + "/v1/chat/completions", json={"model": ctx.model or "x", "messages": [{"role": "user", "content": PROBE_TEXT}], "max_tokens": 1})
        details.append(f"completion through the proxy: HTTP {r.status_code}")
        problems.append((f"the upstream is dead: the proxy answers {r.status_code}" if r.status_code >= 500 else
                         "the upstream server is down", "Start the inference server; the proxy itself is fine."))
    if problems:
        return Result("proxy", FAIL, "; ".join(p for p, _ in problems), details, remedy=" ".join(r for _, r in problems))
    return Result("proxy", OK, f"page, CORS and a completion through {base} work", details)
