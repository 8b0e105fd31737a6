"""Shared helpers: the recorded corpus (copied from ../shared/corpus) and a scan helper."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import pytest

from diag import rules
from diag.pipeline import Pipeline
from diag.report import to_json

CORPUS = Path(__file__).parent / "data" / "corpus"
VLLM = CORPUS / "vllm" / "real-0.32.0-cpu"
LLAMA = CORPUS / "llamacpp" / "real-b0c1e57-cpu"


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


def free_port() -> int:
    """A port nothing listens on right now (bind 0, read it back, close)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
