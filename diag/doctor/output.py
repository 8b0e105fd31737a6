"""Printing doctor results the way `flutter doctor` does: a line per check, fixes under failures."""

from __future__ import annotations

import json
import os
import sys
from typing import TextIO

from diag.doctor import Result, verdict
from diag.fsname import text

GLYPHS = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-", "error": "☠"}
ASCII = {"ok": "ok", "warn": "!!", "fail": "XX", "skip": "--", "error": "EE"}
COLORS = {"ok": "32", "warn": "33", "fail": "31", "skip": "90", "error": "35"}


def fancy(stream: TextIO) -> bool:
    return stream.isatty() and not os.environ.get("NO_COLOR") and (getattr(stream, "encoding", "") or "").lower().startswith("utf")


def render(results: list[Result], verbose: bool = False, stream: TextIO = sys.stdout) -> None:
    rich = fancy(stream)

    # Checks quote file names and other processes' command lines, which may hold bytes that are not
    # UTF-8 (lone surrogates in Python) or control characters: shown as \xHH (diag.fsname.text),
    # never an encoding error or an escape sequence the terminal acts on. Only our own colours are raw.
    w = stream.write

    w("Doctor summary (to see all details, run diag doctor -v):\n")
    for r in results:
        mark = GLYPHS[r.status] if rich else ASCII[r.status]
        box = f"[{mark}]"
        if rich:
            box = f"\x1b[{COLORS[r.status]}m{box}\x1b[0m"
        w(f"{box} {r.id}: {text(r.summary)}  ({r.duration_ms:.0f} ms)\n")
        if verbose:
            for d in r.details:
                w(f"    • {text(d)}\n" if rich else f"    - {text(d)}\n")
        if r.remedy and r.status in ("fail", "warn", "error"):
            w(f"    {'→' if rich else '->'} fix: {text(r.remedy)}\n")
    v = verdict(results)
    n_bad = sum(r.status in ("fail", "error") for r in results)
    n_warn = sum(r.status == "warn" for r in results)
    if v == "ok":
        w("\nNo issues found.\n")
    else:
        w(f"\n{'!' if v == 'warn' else 'X'} Doctor found {n_bad} failure(s) and {n_warn} warning(s).\n")


def to_json(results: list[Result]) -> str:
    checks = [{k: [text(x) for x in v] if isinstance(v, list) else text(v) if isinstance(v, str) else v
               for k, v in r.to_dict().items()} for r in results]  # text only, as `render` writes it
    return json.dumps({"checks": checks, "verdict": verdict(results)}, ensure_ascii=False, indent=1)
