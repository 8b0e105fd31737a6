"""Internal errors: a bug of ours met by one log line must cost that line, not the daemon.

Each analysis stage (parse, traces, facts, rules) runs under a guard per event. An unexpected
exception is counted per stage, remembered with the last log location (`path:line`) and the
code location that raised, and logged once per stage (and rule) — never with the exception's
message, which may quote the log line (user content). The pipeline then moves on, so the read
offset still advances and the same line cannot crash a restarted daemon again.
"""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("diag")

STAGES = ("parse", "traces", "facts", "rules")


@dataclass
class StageErrors:
    count: int = 0
    last_location: str = ""  # path:line of the log line that met the error
    last_error: str = ""  # exception type and where in diag it was raised, never its message
    rules: dict[str, int] = field(default_factory=dict)  # rules stage: per rule id

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"count": self.count, "last_location": self.last_location, "last_error": self.last_error}
        if self.rules:
            d["rules"] = dict(self.rules)
        return d


class InternalErrors:
    """Counts and the last location of internal errors, per stage."""

    def __init__(self) -> None:
        self.stages: dict[str, StageErrors] = {}
        self._logged: set[tuple[str, str]] = set()

    def record(self, stage: str, path: str, line: int, exc: BaseException, rule: str | None = None) -> None:
        s = self.stages.setdefault(stage, StageErrors())
        s.count += 1
        s.last_location = f"{path}:{line}"
        s.last_error = describe(exc)
        if rule is not None:
            s.rules[rule] = s.rules.get(rule, 0) + 1
        key = (stage, rule or "")
        if key not in self._logged:
            self._logged.add(key)
            what = f"stage {stage}" + (f", rule {rule}" if rule else "")
            log.error("internal error in %s at %s: %s; the line is skipped by this stage and diag carries on "
                      "(further errors here are only counted: diag status)", what, s.last_location, s.last_error)

    @property
    def total(self) -> int:
        return sum(s.count for s in self.stages.values())

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {k: v.to_dict() for k, v in sorted(self.stages.items())}

    def restore(self, doc: Any) -> None:
        """Carry the counts of a previous daemon run on (they are cumulative in `diag status`)."""
        if not isinstance(doc, dict):
            return
        for stage, d in doc.items():
            if isinstance(d, dict) and isinstance(d.get("count"), int):
                self.stages[stage] = StageErrors(d["count"], str(d.get("last_location", "")), str(d.get("last_error", "")),
                                                 {k: v for k, v in (d.get("rules") or {}).items() if isinstance(v, int)})


def describe(exc: BaseException) -> str:
    """`ValueError at diag/analysis/facts.py:87`: the type and diag's innermost frame, no message."""
    where = ""
    for fr in reversed(traceback.extract_tb(exc.__traceback__)):
        # "/…/site-packages/diag/x.py", or "diag/x.py" as a compiled module (diag.compiled) names its frames
        parts = ("/" + fr.filename.replace(os.sep, "/")).rsplit("/diag/", 1)
        if len(parts) == 2:
            where = f" at diag/{parts[1]}:{fr.lineno}"
            break
    return f"{type(exc).__name__}{where}"
