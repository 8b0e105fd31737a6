"""Startup facts: what a server said about itself when it started.

Version, model, served name, max model length, KV-cache capacity and the maximum concurrency
it implies (the number that tells a user whether "4–6 concurrent requests" is all a card can
hold), weights memory, the listen address. Per source, last start wins, starts are counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from diag.parsing import events as E
from diag.parsing.events import Event
from diag.parsing.base import to_float, to_number


_args_list = re.compile(r"'served_model_name': \[([^\]]*)\]")
_served_list = re.compile(r"'((?:[^'\\]|\\.){0,512})'")


def _served(m: re.Match) -> Any:
    """The first name of `'served_model_name': ['a', 'b']`, without evaluating the list: a log
    line is not Python (a 200,000-character list made `literal_eval` run out of memory)."""
    s = m.group(1)[:4096]
    q = _served_list.search(s)
    return q.group(1) if q else None


def _port(m: re.Match) -> str:
    return ":" + m.group(1)  # a port on every address, as uvicorn's "0.0.0.0:8000" reads


# (trigger substring, pattern, {fact: group index or callable})
_FACTS: list[tuple[str, re.Pattern, dict[str, Any]]] = [
    ("server version", re.compile(r"vLLM (?:API )?server version (\S+?)(?:, serving model (\S+))?$"), {"version": 1, "model": 2}),
    ("  version ", re.compile(r"\s version (\S+)$"), {"version": 1}),
    ("  model ", re.compile(r"\s model\s+(\S+)$"), {"model": 1}),
    ("with config: ", re.compile(r"Initializing an? (?:V1 )?LLM engine \(v([^)]+)\) with config: model='([^']*)'"), {"version": 1, "model": 2}),
    ("Started engine with config", re.compile(r"Started engine with config: model='([^']*)'"), {"model": 1}),
    ("served_model_name=", re.compile(r"served_model_name=([^,\s]+)"), {"served_model_name": 1}),
    ("'served_model_name'", _args_list, {"served_model_name": _served}),
    ("max_seq_len=", re.compile(r"max_seq_len=(\d+)"), {"max_model_len": 1}),
    ("max model len", re.compile(r"Using max model len (\d+)"), {"max_model_len": 1}),
    ("gpu_memory_utilization", re.compile(r"gpu_memory_utilization['\"]?[=:] ?([\d.]+)"), {"gpu_memory_utilization": 1}),
    ("limit_mm_per_prompt", re.compile(r"limit_mm_per_prompt['\"]?[=:] ?(\{[^}]*\}|\S+?)[,)]"), {"limit_mm_per_prompt": 1}),
    ("KV cache size", re.compile(r"KV cache size: ([\d,]+) tokens"), {"kv_cache_tokens": 1}),
    ("Maximum concurrency", re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"),
     {"concurrency_at_tokens": 1, "max_concurrency": 2}),
    ("blocks: ", re.compile(r"# (?:GPU|cuda|\w+) blocks: (\d+)"), {"kv_cache_blocks": 1}),
    ("KV cache memory", re.compile(r"Available KV cache memory: ([\d.]+) GiB"), {"kv_cache_gib": 1}),
    ("Model loading took", re.compile(r"Model loading took ([\d.]+) GiB"), {"weights_gib": 1}),
    ("model weights took", re.compile(r"Loading model weights took ([\d.]+) GB"), {"weights_gib": 1}),
    ("init engine", re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) seconds"), {"init_seconds": 1}),
    ("server on ", re.compile(r"Starting vLLM (?:API )?server (?:\d+ )?on (\S+)"), {"listen": 1}),
    ("Uvicorn running on", re.compile(r"Uvicorn running on (\S+)"), {"listen": 1}),
    # the guide's proxy_server.py: "Proxy server listening on port 8000, forwarding /v1/* to http://localhost:3001"
    ("listening on port", re.compile(r"listening on port (\d+)(?:, forwarding \S+ to (\S+))?"), {"listen": _port, "upstream": 2}),
    ("listening on", re.compile(r"listening on (?!port )(\S+)"), {"listen": 1}),
    ("loading model '", re.compile(r"loading model '([^']*)'"), {"model": 1}),
    ("loaded multimodal model", re.compile(r"loaded multimodal model, '([^']*)'"), {"mmproj": 1}),
    ("n_ctx_slot = ", re.compile(r"n_slots = (\d+), n_ctx_slot = (\d+)"), {"slots": 1, "max_model_len": 2}),
    ("session_len=", re.compile(r"session_len=(\d+)"), {"max_model_len": 1}),
    ("matching vision model", re.compile(r"matching vision model: (\S+)"), {"vision_model": 1}),
]
_START = re.compile(r"vLLM (?:API )?server version|\u2588\s+version \S|Started engine with config|llama_server: initializing|^main: build|^build: \d")
_SHUTDOWN = ("[shutdown] API server: shutdown triggered", "Finished server process", "cleaning up before exit")


_INTS = frozenset({"max_model_len", "kv_cache_tokens", "kv_cache_blocks", "slots", "concurrency_at_tokens"})
_FLOATS = frozenset({"max_concurrency", "kv_cache_gib", "weights_gib", "init_seconds", "gpu_memory_utilization"})


FACT_KINDS = frozenset({E.LOG, E.RAW})  # the only events `FactCollector.feed` reads


@dataclass(frozen=True, slots=True)
class FactNews:
    """What a log record told about its server that later stages act on: the pipeline passes it
    to the trace assembler (a start begins a new id epoch; traces carry the served model name).
    Facts never call into other stages themselves: the analysis flows one way."""

    started: bool = False
    model: str | None = None


class FactCollector:
    def __init__(self) -> None:
        self.by_source: dict[str, dict[str, Any]] = {}

    def feed(self, ev: Event) -> FactNews | None:
        """Collect the facts `ev` tells; None when it told nothing (almost every record)."""
        if ev.kind not in FACT_KINDS or ev.level in ("ERROR", "CRITICAL"):
            return None
        started = False
        text = ev.text
        if len(text) > 20000:
            text = text[:20000]
        facts = None
        for trigger, rx, groups in _FACTS:
            if trigger not in text:
                continue
            m = rx.search(text)
            if m is None:
                continue
            if facts is None:
                facts = self.by_source.setdefault(ev.path, {"server": ev.fmt if ev.fmt != "uvicorn" else "vllm", "starts": 0})
            for name, g in groups.items():
                val = g(m) if callable(g) else m.group(g)
                if val is None:
                    continue
                if name in _INTS:
                    val = to_number(val)
                elif name in _FLOATS:
                    val = to_float(val)
                elif isinstance(val, str):
                    val = val[:200]  # names and addresses: bounded
                if val is None:
                    continue  # an unparsable number makes that fact unknown
                facts[name] = val
        if _START.search(text[:300]):
            facts = self.by_source.setdefault(ev.path, {"server": ev.fmt, "starts": 0})
            facts["starts"] += 1
            facts["last_start"] = ev.ts
            started = True
        if ev.text.startswith(_SHUTDOWN) or any(s in text for s in _SHUTDOWN):
            facts = self.by_source.setdefault(ev.path, {"server": ev.fmt, "starts": 0})
            facts["shutdowns"] = facts.get("shutdowns", 0) + 1
            facts["last_shutdown"] = ev.ts
        if facts is None:
            return None
        return FactNews(started, facts.get("served_model_name") or facts.get("model") or None)

    def forget(self, path: str) -> None:
        """A source that is gone for good: its facts are not needed any more (they were reported)."""
        self.by_source.pop(path, None)
