"""Package discovery (everything else is in pyproject.toml).

Every package under `diag/` is found automatically, so a new subpackage (alerts, web, metrics…)
ships without anyone remembering a list; the built-in rules live in the top-level `rules/`
directory (where users and reviewers look for them) and are installed as `diag.rules_builtin`.
"""

import os
import runpy
import sys

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """The compiled code (the classifier, the listed modules) is an optimisation, never a
    requirement (markupsafe's pattern): without a C compiler, headers or Cython the build says why
    (shown by `pip install -v`) and installs the pure package."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:  # some thirty modules: compile them on every core
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means: go without it
            _skip(exc)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            _skip(exc)


def _skip(exc: Exception) -> None:
    print(f"diag: compiled code not built ({exc.__class__.__name__}: {exc}); the pure-Python package will be used",
          file=sys.stderr)


def _ext_modules() -> list:
    """The typed twins (diag/ingest/fastpath/_classify_c.pyx, the twin of classify.py, and
    diag/report/_tracejson_c.pyx, the twin of diag.report.tracejson's trace encoder) and the
    pipeline's hot modules compiled unchanged; diag/compiled.py lists both. DIAG_NO_EXT=1 at build
    time skips them."""
    if os.environ.get("DIAG_NO_EXT"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError as exc:
        _skip(exc)
        return []
    try:
        listed = runpy.run_path("diag/compiled.py")
        typed = cythonize(listed["twin_sources"](), language_level=3, quiet=True, compiler_directives={"binding": False})
        # The same source as the pure package, so the same behaviour: type annotations stay hints
        # (annotation_typing off), functions stay introspectable Python functions (binding), and
        # a field read through None, where a .pxd types the variable, raises AttributeError as in
        # Python instead of crashing the process (nonecheck).
        unchanged = cythonize(listed["sources"](), language_level=3, quiet=True,
                              nthreads=os.cpu_count() or 1,
                              compiler_directives={"binding": True, "annotation_typing": False, "nonecheck": True})
        if sys.platform != "win32":
            for ext in unchanged:  # no debug information: it would triple the installed size (26 MB)
                ext.extra_compile_args.append("-g0")
        return typed + unchanged
    except Exception as exc:  # noqa: BLE001
        _skip(exc)
        return []


setup(
    packages=[*find_packages(include=["diag", "diag.*"]), "diag.rules_builtin"],
    package_dir={"diag.rules_builtin": "rules"},
    ext_modules=_ext_modules(),
    cmdclass={"build_ext": OptionalBuildExt},
)
