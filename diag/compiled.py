"""Which of diag's own modules are also built as C extensions, and how to run without them.

The pipeline's hot modules (reading, parsing, traces, rules, the report; the daemon's follow and
commit turn) are plain Python. When `pip install .` finds a C compiler, setup.py also compiles
them with Cython, *unchanged* — the pattern black and mypy ship with mypyc: the same source, no
second implementation to keep in step. Where a `.pxd` file sits beside a module (the trace, the
trace assembler, its layers and its access index, the id scopes, the pipeline, the source parser,
its record assembly, its context and its clock, the fast path, the summary and spool, the vLLM
Received measurement), Cython also lays its classes out as C types: their fields become struct
members and the methods the hot path calls become C calls, still from the one `.py` source, which
the pure package runs as it is. A class may derive from one laid out in another module's `.pxd`
(the trace assembler from its layers, the source parser from its record assembly): its methods
are called as C calls all the same. A .pxd declares only layout and argument types; behaviour
stays in the `.py`. Together about a third of the pure package's CPU per line
(tests/bench/bench_scan.py prints both).

Python imports an extension module before a source file of the same name, so a built package
uses them without a switch. `DIAG_NO_EXT=1` puts a finder in front that loads these modules'
`.py` source instead (and `diag.ingest.fastpath` picks its pure classifier): that is how the suite
checks that the pure package behaves the same (tests/test_compiled.py, and `.ci/run`'s second
pass).

This module imports nothing of diag's: setup.py reads `MODULES` from it before diag is installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from typing import Any

# Compiled unchanged when a compiler is there (the classifier's typed twin is built separately).
MODULES = (
    "diag.pipeline",
    "diag.compactjson",
    "diag.ingest.reader",
    "diag.ingest.fastpath.source",
    "diag.parsing.base",
    "diag.parsing.clock",
    "diag.parsing.events",
    "diag.parsing.frames",
    "diag.parsing.paste",
    "diag.parsing.quoted",
    "diag.parsing.records",
    "diag.parsing.redact",
    "diag.parsing.source",
    "diag.parsing.usercontent",
    "diag.parsing.wrappers",
    "diag.parsing.formats.llamacpp",
    "diag.parsing.formats.lmdeploy",
    "diag.parsing.formats.nginx",
    "diag.parsing.formats.proxy",
    "diag.parsing.formats.uvicorn",
    "diag.parsing.formats.vllm",
    "diag.analysis.access_index",
    "diag.analysis.access_lines",
    "diag.analysis.facts",
    "diag.analysis.findings",
    "diag.analysis.engine",
    "diag.analysis.guard",
    "diag.analysis.trace",
    "diag.analysis.traceids",
    "diag.analysis.traces",
    "diag.analysis.tracetable",
    "diag.analysis.rules.prefilter",
    "diag.analysis.rules.ruleset",
    "diag.report.document",
    "diag.report.jsonstream",
    "diag.report.percentile",
    # the daemon's turn: follow the files, commit to the store
    "diag.fsname",
    "diag.ingest.filereader",
    "diag.ingest.follow",
    "diag.ingest.watch",
    "diag.store.counters",
    "diag.store.db",
    "diag.daemon.service",
    "diag.daemon.commit",
)


# Typed twins: `.pyx` modules with a pure reference beside them (`typed_twin` picks one).
TWINS = ("diag.ingest.fastpath._classify_c", "diag.report._tracejson_c")


def sources() -> list[str]:
    """The modules' source paths, relative to the project root (for setup.py)."""
    return [m.replace(".", "/") + ".py" for m in MODULES]


def twin_sources() -> list[str]:
    """The typed twins' `.pyx` paths, relative to the project root (for setup.py)."""
    return [m.replace(".", "/") + ".pyx" for m in TWINS]


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the listed modules' `.py` files, so that a built extension beside them is not used."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001 - importlib's protocol
        if name not in _LISTED or not path:
            return None
        leaf = name.rpartition(".")[2] + ".py"
        for entry in path:
            src = os.path.join(entry, leaf)
            if os.path.isfile(src):
                return importlib.util.spec_from_file_location(name, src)
        return None


_LISTED = frozenset(MODULES)


def use_source() -> None:
    """From now on, import the listed modules from their source (DIAG_NO_EXT=1; idempotent)."""
    if not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def typed_twin(name: str, not_built: str) -> tuple[Any, str]:
    """A typed twin (a `.pyx` built beside its pure reference) and the words `diag --version`
    uses for it: (module, "compiled"), or (None, why the reference is used: DIAG_NO_EXT set, or
    `not_built`)."""
    if os.environ.get("DIAG_NO_EXT"):
        return None, "pure Python (DIAG_NO_EXT set)"
    try:
        return importlib.import_module(name), "compiled"
    except ImportError:
        return None, not_built


def status() -> str:
    """How many of the listed modules this process runs compiled (those imported so far are
    checked as they are; the rest by where import would find them)."""
    n = 0
    for name in MODULES:
        mod = sys.modules.get(name)
        if mod is not None:
            origin = getattr(mod, "__file__", "") or ""
        else:
            spec = importlib.util.find_spec(name)
            origin = (spec.origin or "") if spec else ""
        if origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            n += 1
    if n == len(MODULES):
        return "compiled"
    if n == 0:
        return "pure Python (DIAG_NO_EXT set)" if os.environ.get("DIAG_NO_EXT") else "pure Python (not built)"
    return f"{n} of {len(MODULES)} compiled"
