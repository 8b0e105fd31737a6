"""The package as users install it: build the wheel, install it into a fresh venv, run every
subcommand from a directory outside the checkout.

`pip install -e` and running from the checkout hide packaging defects (a subpackage missing
from the wheel imported fine from the source tree), so this test never lets the checkout near
the installed copy: the wheel is built from a copy of the sources in a temporary directory (the
checkout gets no `build/` or `*.egg-info`), installed with its dependencies into a new venv,
and every command runs with a temporary working directory and home.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CORPUS, ROOT, free_port

SKIP_COPY = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "tests", "docs",
                                   ".pytest_cache", ".hypothesis")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin dir, outside working dir, env) with the freshly built wheel installed."""
    tmp = tmp_path_factory.mktemp("install")
    before = {p.name for p in ROOT.iterdir()}
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SKIP_COPY)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH", "DIAG_CONFIG", "VIRTUAL_ENV")}
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(src)],
             cwd=tmp, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next((tmp / "dist").glob("diag-*.whl"))
    assert {p.name for p in ROOT.iterdir()} == before, "building the wheel left files in the checkout"

    venv = tmp / "venv"
    r = _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp, env=env)
    assert r.returncode == 0, r.stderr
    bin_dir = venv / "bin"
    r = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], cwd=tmp, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

    work = tmp / "elsewhere"
    work.mkdir()
    env.update(HOME=str(tmp / "home"), XDG_STATE_HOME=str(tmp / "state"), NO_COLOR="1",
               PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    return bin_dir, work, env


def _diag(installed, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    bin_dir, work, env = installed
    r = _run([str(bin_dir / "diag"), *args], cwd=work, env=env, timeout=timeout)
    assert "Traceback" not in r.stderr, f"diag {' '.join(args)}:\n{r.stderr[-3000:]}"
    return r


def test_installed_copy_is_the_one_used(installed):
    bin_dir, work, env = installed
    r = _run([str(bin_dir / "python"), "-c", "import diag; print(diag.__file__)"], cwd=work, env=env)
    assert Path(r.stdout.strip()).is_relative_to(bin_dir.parent), r.stdout


def test_every_source_package_and_data_file_is_installed(installed):
    """Every package directory and every non-Python file under diag/ (templates, assets, config)
    is in the installed package, and the top-level rules/ ship as diag.rules_builtin."""
    bin_dir, work, env = installed
    r = _run([str(bin_dir / "python"), "-c", "import diag, os; print(os.path.dirname(diag.__file__))"], cwd=work, env=env)
    site = Path(r.stdout.strip())
    pkg = ROOT / "diag"
    wanted = set()
    for path in pkg.rglob("*"):
        rel = path.relative_to(pkg)
        if "__pycache__" in rel.parts or path.suffix in (".pyc", ".c"):
            continue  # bytecode; the C that Cython generates for diag/ingest/fastpath is a build intermediate
        if path.is_dir():
            if any(path.glob("*.py")):
                wanted.add(rel)
        else:
            wanted.add(rel)
    missing = sorted(str(p) for p in wanted if not (site / p).exists())
    assert not missing, f"not installed: {missing}"
    rules = {p.name for p in (ROOT / "rules").iterdir() if p.is_file()}
    assert rules and rules <= {p.name for p in (site / "rules_builtin").iterdir()}


def _subcommands(installed) -> list[list[str]]:
    """Every command path the installed CLI defines (`scan`, `rules test`, …), read from its parser."""
    bin_dir, work, env = installed
    code = (
        "import argparse, json\n"
        "from diag.cli import build_parser\n"
        "def walk(p, path):\n"
        "    out = []\n"
        "    for a in p._actions:\n"
        "        if isinstance(a, argparse._SubParsersAction):\n"
        "            for name, sp in a.choices.items():\n"
        "                out.append(path + [name]); out += walk(sp, path + [name])\n"
        "    return out\n"
        "print(json.dumps(walk(build_parser(), [])))\n"
    )
    r = _run([str(bin_dir / "python"), "-c", code], cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_every_subcommand_help(installed):
    commands = _subcommands(installed)
    assert {"scan", "doctor", "daemon", "status", "trace", "findings", "rules"} <= {c[0] for c in commands}
    for cmd in [[], *commands]:
        r = _diag(installed, *cmd, "--help")
        assert r.returncode == 0, (cmd, r.stderr)
        assert "usage: diag" in r.stdout


def test_doctor_list_checks(installed):
    r = _diag(installed, "doctor", "--list-checks")
    assert r.returncode == 0, r.stderr
    ids = {line.split()[0] for line in r.stdout.splitlines() if line.strip()}
    assert {"server", "models", "generation", "vision", "gpu", "logs"} <= ids


def test_doctor_against_a_closed_port(installed):
    r = _diag(installed, "doctor", "--url", f"http://127.0.0.1:{free_port()}", "--json", "--timeout", "2")
    assert r.returncode == 2, r.stderr
    doc = json.loads(r.stdout)
    assert doc["verdict"] and any(c["id"] == "server" and c["status"] == "fail" for c in doc["checks"])


def test_scan_json_on_a_corpus_file(installed):
    log = CORPUS / "vllm" / "synthetic-0.11.0-qwen3vl.log"
    r = _diag(installed, "scan", "--json", str(log))
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    assert doc["files"][0]["format"] == "vllm" and doc["traces"] and doc["findings"]


def test_rules_test(installed):
    r = _diag(installed, "rules", "test")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def test_daemon_check_config(installed):
    r = _diag(installed, "daemon", "--check-config")
    assert r.returncode == 0, r.stderr
