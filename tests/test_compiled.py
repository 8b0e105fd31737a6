"""The pipeline's hot modules compiled unchanged (diag.compiled): built ones are used, DIAG_NO_EXT=1
runs their source instead, and a compiled module's errors are still located in diag's source.

That both give the same `diag scan --json` is tests/test_fastpath.py's
test_scan_json_is_identical_with_and_without_the_compiled_classifier (it checks both parts); the
suite as a whole runs on whichever this install has, and `.ci/run` reruns the pipeline suites pure.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from diag import compiled
from diag.analysis.guard import describe

_PROBE = """
import json, sys
import diag.cli, diag.pipeline, diag.ingest.fastpath
from diag import compiled
print(json.dumps({"status": compiled.status(),
                  "files": {m: sys.modules[m].__file__ for m in compiled.MODULES if m in sys.modules}}))
"""


def _env(no_ext: bool) -> dict[str, str]:
    """This environment, with DIAG_NO_EXT set or not whatever the suite runs with."""
    env = {k: v for k, v in os.environ.items() if k != "DIAG_NO_EXT"}
    if no_ext:
        env["DIAG_NO_EXT"] = "1"
    return env


def _probe(no_ext: bool) -> dict:
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=_env(no_ext), timeout=60, check=True)
    return json.loads(r.stdout)


def _built() -> bool:
    """Whether this install has the compiled modules, also when DIAG_NO_EXT hides them from import."""
    pkg = Path(importlib.util.find_spec("diag.analysis").origin).parent
    return any((pkg / ("traces" + sfx)).exists() for sfx in importlib.machinery.EXTENSION_SUFFIXES)


def test_every_listed_module_is_a_source_file_of_the_package():
    root = Path(compiled.__file__).parent.parent
    for rel in compiled.sources():
        assert (root / rel).is_file(), rel
    assert len(set(compiled.MODULES)) == len(compiled.MODULES)
    checkout = Path(__file__).resolve().parent.parent  # the twins' .pyx: what setup.py compiles
    for rel in compiled.twin_sources():
        assert (checkout / rel).is_file(), rel


def test_no_ext_runs_every_listed_module_from_its_source():
    got = _probe(no_ext=True)
    assert got["status"] == "pure Python (DIAG_NO_EXT set)"
    assert len(got["files"]) > 20  # the probe's imports reach most of them
    assert all(f.endswith(".py") for f in got["files"].values()), got["files"]


@pytest.mark.skipif(not _built(), reason="the pipeline modules are not compiled here (no C compiler or Cython at "
                                         "install time): only the pure package exists")
def test_a_built_install_runs_every_listed_module_compiled():
    got = _probe(no_ext=False)
    assert got["status"] == "compiled"
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    assert got["files"] and all(f.endswith(suffixes) for f in got["files"].values()), got["files"]


_PXD_CLASS = re.compile(r"^cdef class (\w+)", re.M)


def _pxd_classes() -> list[tuple[str, str]]:
    """(module, class) for every class a .pxd beside a listed module lays out in C."""
    root = Path(compiled.__file__).parent.parent
    out = []
    for mod, rel in zip(compiled.MODULES, compiled.sources()):
        pxd = (root / rel).with_suffix(".pxd")
        if pxd.exists():
            out += [(mod, name) for name in _PXD_CLASS.findall(pxd.read_text())]
    return out


def test_the_hot_classes_have_a_c_layout_to_be_compiled_with():
    """The trace, its assembler and the fast path are laid out in .pxd files; that list is what the
    built check below holds against."""
    assert {"Trace", "TraceAssembler", "AwaitingIndex", "Pipeline", "FastSource", "PlainWay"} <= {c for _, c in _pxd_classes()}


@pytest.mark.skipif(not _built(), reason="the pipeline modules are not compiled here (no C compiler or Cython at "
                                         "install time): only the pure package exists")
def test_a_built_install_compiles_each_laid_out_class_to_a_c_type():
    """A .pxd that Cython did not see (not shipped to the build, misnamed) leaves its class a plain
    Python class, silently slower: each one must be a static C type, its fields the .pxd's."""
    code = ("import importlib, json, sys; from diag.analysis.trace import FIELDS, Trace; "
            "print(json.dumps([bool(getattr(importlib.import_module(m), c).__flags__ & (1 << 9)) for m, c in "
            f"{_pxd_classes()!r}] + [sorted(k for k, v in vars(Trace).items() if type(v).__name__ == 'getset_descriptor') "
            "== sorted(FIELDS)]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(False), timeout=60, check=True)
    *heap, fields_in_c = json.loads(r.stdout)
    assert not any(heap), [c for (_, c), h in zip(_pxd_classes(), heap) if h]  # Py_TPFLAGS_HEAPTYPE: a Python class
    assert fields_in_c


@pytest.mark.parametrize("no_ext", [False, True])
def test_a_none_where_a_trace_belongs_raises_as_in_python(no_ext):
    """A .pxd types the assembler's traces: a None reaching one (a bug) must raise AttributeError,
    which the pipeline's guard counts, as the pure package does, not crash the daemon."""
    code = ("from diag.analysis.traces import TraceAssembler\n"
            "for call in (lambda a: a.settle(None), lambda a: a.apply_added(None, None, 'x', 1, 0.0)):\n"
            "    try:\n        call(TraceAssembler())\n    except AttributeError:\n        print('raised')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(no_ext), timeout=60)
    assert (r.returncode, r.stdout.split()) == (0, ["raised", "raised"]), r.stderr[-2000:]


def test_an_error_in_a_compiled_frame_is_located_in_diags_source():
    """A compiled module names its frames by the path it was compiled from ("diag/pipeline.py"),
    an installed source module by its full path: both read `at diag/…:line` in `diag status`."""
    for filename in ("diag/pipeline.py", "/usr/lib/python3/site-packages/diag/pipeline.py"):
        ns: dict = {}
        exec(compile("def stage():\n    x = 1\n    raise ValueError('a line said SECRET')\n", filename, "exec"), ns)
        try:
            ns["stage"]()
        except ValueError as exc:
            assert describe(exc) == "ValueError at diag/pipeline.py:3"
