"""Shared helpers: the recorded corpus (copied from ../shared/corpus) and a scan helper."""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _editable_install() -> bool:
    """Whether `diag` is installed in editable mode (`pip install -e`), from its direct_url.json."""
    try:
        dist = metadata.distribution("diag")
    except metadata.PackageNotFoundError:
        pytest.exit("diag is not installed in this environment: run `pip install '.[test]'` first", returncode=4)
    info = json.loads(dist.read_text("direct_url.json") or "{}")
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

from diag import rules  # noqa: E402
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
