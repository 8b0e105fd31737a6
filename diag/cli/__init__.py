"""The `diag` command line: `build_parser` and `main`; each command group lives in its own module
(`scan`, `doctor`, `daemon`, `web`, `status`, `rules`, and `diag.alerts.cli`) and adds its
subcommands with `add_parsers`, each bound to the function that runs it."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from diag import __version__
from diag.cli import daemon, doctor, rules, scan, status, web
from diag.cli.state import add_state_options
from diag.cli.usage import UsageError


class _Version(argparse.Action):
    """`diag --version`: also says whether the compiled trace encoder, the compiled log classifier
    and the compiled pipeline modules (diag.compiled) are in use (imported only here)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from diag.compiled import status
        from diag.ingest.fastpath import IMPLEMENTATION
        from diag.report.tracejson import IMPLEMENTATION as TRACE_JSON

        print(f"diag {__version__} (trace encoder: {TRACE_JSON}; log classifier: {IMPLEMENTATION}; pipeline modules: {status()})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from diag.alerts.cli import add_parsers as add_alert_parsers

    p = argparse.ArgumentParser(prog="diag", description="Diagnostics for self-hosted LLM inference servers (vLLM, LMDeploy, llama.cpp).")
    p.add_argument("--version", action=_Version, nargs=0, help="show the version and whether the compiled classifier, trace encoder and pipeline modules are in use, and exit")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    scan.add_parsers(sub)
    doctor.add_parsers(sub)
    daemon.add_parsers(sub)
    web.add_parsers(sub)
    status.add_parsers(sub)
    add_alert_parsers(sub, add_state_options)
    rules.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"diag: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
