"""Where every built-in rule example comes from (rules/README.md, "Examples").

A rule example is log text copied from a real log. This suite checks that claim instead of
trusting it, so a hand-written or paraphrased example cannot slip back in:

- an example without a source note must be real lines from the local real logs: every line of
  it is a whole line of one REAL corpus file or field excerpt, in the same order (lines between
  may be left out);
- a note naming a local file (`# real: tests/data/...`, `# format-exact, from tests/data/...`)
  is checked the same way against that file;
- `# real: <url>` names a public thread the text was copied from (not reachable here; the URL
  is what a reviewer checks);
- an example no real line could be found for says so (`# format-exact, from ...` or
  `# not verbatim: ...`) and is listed in `NOT_REAL` below, so adding one is a visible decision.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
DATA = ROOT / "tests" / "data"
# Captured from running servers or pasted by users (tests/data/corpus/README.md: REAL; field/README.md).
REAL_DIRS = (DATA / "corpus" / "vllm" / "real-0.32.0-cpu", DATA / "corpus" / "llamacpp" / "real-b0c1e57-cpu",
             DATA / "corpus" / "nginx" / "real-1.22.1", DATA / "corpus" / "shell", DATA / "field")

# (rule id, "examples" | "counter_examples", index in that list): examples no real line was found for.
# Each says why in its comment. Shrink this list when a real line turns up; never grow it silently.
NOT_REAL: dict[tuple[str, str, int], str] = {
    ("lmdeploy-out-of-tokens", "examples", 1): "LMDeploy answers 400 without logging; no paste of the wording",
    ("zero-image-request", "examples", 0): "only the guide's format logs generated tokens (GUIDE-STYLE corpus)",
    ("zero-image-request", "counter_examples", 0): "GUIDE-STYLE corpus",
    ("zero-image-request", "counter_examples", 1): "GUIDE-STYLE corpus (the guide's own example request)",
    ("upstream-closed", "examples", 2): "GUIDE-STYLE corpus (the guide's proxy_server.py)",
    ("lmdeploy-turbomind-kv-oom", "examples", 0): "SYNTHESIZED corpus line (TurboMind format string)",
    ("lmdeploy-pytorch-oom", "examples", 1): "raise statement in LMDeploy's PyTorch engine ('kv cache' wording); no paste found",
    ("kv-cache-preemption", "examples", 1): "V1 'Preemptions: N' field; vLLM 0.32 never prints it; no paste found",
    ("engine-stalled", "examples", 0): "timeline in vLLM 0.32's line formats; no real log has the stall",
    ("engine-stalled", "counter_examples", 0): "timeline in vLLM 0.32's line formats",
}

# (rule id, kind, index): real lines whose public source has no thread URL to name; the note says where they are.
REAL_UNLINKED: dict[tuple[str, str, int], str] = {
    ("cuda-oom-load", "examples", 0): "a user's public deployment notes (a Markdown file on GitHub), RTX 5090",
    ("cuda-oom", "counter_examples", 1): "the same notes",
}

_NOTE = re.compile(r"#\s*(real|format-exact|not verbatim)\b|\b(not verbatim)\b", re.I)
_FILE = re.compile(r"tests/data/[^\s:,()']+(?::[\d,-]+)?")
_URL = re.compile(r"https?://\S+")
_HEADER = re.compile(r"^\[\[rule\.(examples|counter_examples)\]\]\s*$")


@dataclass
class Provenance:
    file: str
    rule: str
    kind: str
    index: int
    text: str
    notes: list[str]

    @property
    def where(self) -> str:
        return f"{self.file}: rule {self.rule} {self.kind}[{self.index}]"

    def note(self) -> tuple[str, str | None, str | None] | None:
        """(kind, local file, URL) of the provenance note: kind is `real`, `format-exact` or
        `not verbatim`; the file is the first `tests/data/...` path named, the URL the first one."""
        block = " ".join(self.notes)
        m = _NOTE.search(block)
        if not m:
            return None
        kind = (m.group(1) or m.group(2)).lower()
        f = _FILE.search(block)
        u = _URL.search(block)
        return (kind, f.group(0).rstrip(".,;:)") if f else None,
                u.group(0).rstrip(".,;:)") if u else None)


def _scan(path: Path) -> list[Provenance]:
    """Pair each example of a rule file with the comment lines that belong to it: those directly
    above its `[[rule.examples]]` header and those between the header and its `text`."""
    raw = path.read_text(encoding="utf-8")
    data = tomllib.loads(raw)
    lines = raw.split("\n")
    tables: list[tuple[str, list[str]]] = []  # (kind, comments), in file order
    rule_of: list[int] = []
    n_rule = -1
    pending: list[str] = []
    for line in lines:
        s = line.strip()
        if s == "[[rule]]":
            n_rule += 1
            pending = []
            continue
        m = _HEADER.match(s)
        if m:
            tables.append((m.group(1), list(pending)))
            rule_of.append(n_rule)
            pending = []
            continue
        if s.startswith("#"):
            pending.append(s)
            continue
        if s.startswith("text") and tables and rule_of[-1] == n_rule:
            tables[-1][1].extend(pending)
        pending = []
    assert not any(re.match(r"^\s*(counter_)?examples\s*=", line) for line in lines), (
        f"{path.name}: write examples as [[rule.examples]] tables, so each can carry its source note")
    out: list[Provenance] = []
    rules = data.get("rule", [])
    counters: dict[tuple[int, str], int] = {}
    for (kind, notes), r in zip(tables, rule_of):
        i = counters.get((r, kind), 0)
        counters[(r, kind)] = i + 1
        ex = rules[r][kind][i]
        text = ex if isinstance(ex, str) else ex["text"]
        out.append(Provenance(path.name, rules[r]["id"], kind, i, text, notes))
    assert len(out) == sum(len(r.get(k, [])) for r in rules for k in ("examples", "counter_examples")), (
        f"{path.name}: could not pair every example with its table")
    return out


def _all() -> list[Provenance]:
    out: list[Provenance] = []
    for p in sorted(RULES.glob("*.toml")):
        out.extend(_scan(p))
    return out


def _lines(path: Path) -> list[str]:
    # split on \n only: a lone \r (a progress bar redrawing its line) is part of the line, as grep -n counts
    return [ln.removesuffix("\r") for ln in path.read_bytes().decode("utf-8", errors="replace").split("\n")]


_REAL_FILES: dict[Path, list[str]] = {}


def _real_files() -> dict[Path, list[str]]:
    if not _REAL_FILES:
        for d in REAL_DIRS:
            for p in sorted(d.rglob("*")):
                if p.is_file() and p.suffix not in (".md", ".toml"):  # .md files describe and quote; the rest is captured
                    _REAL_FILES[p] = _lines(p)
    return _REAL_FILES


def lines_in_order(text: str, file_lines: list[str]) -> bool:
    """Every line of `text` is a whole line of the file, in the file's order."""
    want = text.split("\n")
    i = 0
    for ln in file_lines:
        if i < len(want) and ln == want[i]:
            i += 1
    return i == len(want)


def _found_in_real(text: str) -> Path | None:
    for p, fl in _real_files().items():
        if lines_in_order(text, fl):
            return p
    return None


EXAMPLES = _all()


def test_every_rule_file_example_is_paired_with_its_notes():
    assert len(EXAMPLES) > 150
    assert len({(e.rule, e.kind, e.index) for e in EXAMPLES}) == len(EXAMPLES)


@pytest.mark.parametrize("ex", EXAMPLES, ids=lambda e: f"{e.rule}-{e.kind}-{e.index}")
def test_example_is_real_or_says_where_it_comes_from(ex: Provenance):
    note = ex.note()
    key = (ex.rule, ex.kind, ex.index)
    if key in NOT_REAL:
        assert note and note[0] in ("format-exact", "not verbatim"), (
            f"{ex.where} is listed as not real but its comment does not say so (# format-exact / # not verbatim)")
        if note[1]:
            _assert_in_named_file(ex, note[1])
        return
    if note and note[0] in ("format-exact", "not verbatim"):
        pytest.fail(f"{ex.where} is marked {note[0]!r}: replace it with a real line, or list it in NOT_REAL "
                    f"with the reason no real line exists")
    if note and note[0] == "real" and note[1]:
        named = (ROOT / note[1].split(":")[0]).resolve()
        assert any(named.is_relative_to(d.resolve()) for d in REAL_DIRS), (
            f"{ex.where} calls {note[1]} real, but it is not a REAL corpus file or field excerpt (see REAL_DIRS)")
        _assert_in_named_file(ex, note[1])
        return
    if note and note[0] == "real" and note[2]:
        return  # a public thread: the URL is the provenance a reviewer checks
    if note and note[0] == "real" and key in REAL_UNLINKED:
        return
    assert _found_in_real(ex.text) is not None, (
        f"{ex.where} is not verbatim from a real log: its lines are not whole lines of any REAL corpus file "
        f"or field excerpt (tests/data/), and it names no public source (# real: <url>):\n{ex.text[:300]}")


def _assert_in_named_file(ex: Provenance, ref: str) -> None:
    path = ROOT / ref.split(":")[0]
    assert path.is_file(), f"{ex.where} names {ref}, which does not exist"
    assert lines_in_order(ex.text, _lines(path)), (
        f"{ex.where} says it comes from {ref}, but its lines are not lines of that file (in order):\n{ex.text[:300]}")


def test_not_real_list_has_no_stale_entries():
    keys = {(e.rule, e.kind, e.index) for e in EXAMPLES}
    stale = sorted((set(NOT_REAL) | set(REAL_UNLINKED)) - keys)
    assert not stale, f"NOT_REAL / REAL_UNLINKED name examples that no longer exist: {stale}"


def test_the_check_rejects_an_edited_line_and_accepts_a_real_one():
    """The verbatim check itself: a real line passes, the same line with one character changed does not."""
    path = REAL_DIRS[0] / "text.log"
    real = next(ln for ln in _lines(path) if "Received request" in ln)
    assert _found_in_real(real) is not None
    assert _found_in_real(real.replace("Received", "Recieved")) is None
    fl = _lines(path)
    unique = [ln for ln in fl if ln and fl.count(ln) == 1]
    first, last = unique[0], unique[-1]
    assert lines_in_order(f"{first}\n{last}", fl)
    assert not lines_in_order(f"{last}\n{first}", fl)
