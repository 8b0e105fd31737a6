"""`diag rules list|test|lint`: the rules in effect, their examples run, their files checked."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Sequence

from diag.cli.usage import UsageError, console

if TYPE_CHECKING:
    from diag.analysis.rules.ruleset import RuleSet


def add_parsers(sub: Any) -> None:
    r = sub.add_parser("rules", help="list, test and lint rule files")
    rsub = r.add_subparsers(dest="rules_cmd", metavar="ACTION")
    rl = rsub.add_parser("list", help="list the rules in effect")
    rl.add_argument("--json", action="store_true")
    rt = rsub.add_parser("test", help="run every rule's examples (non-zero exit on a failure)")
    rt.add_argument("files", nargs="*", metavar="FILE", help="rule files or directories (default: built-in + --rules)")
    rn = rsub.add_parser("lint", help="check rule files for mistakes and slow patterns")
    rn.add_argument("files", nargs="*", metavar="FILE")
    for x in (rl, rt, rn):
        x.add_argument("--rules", action="append", metavar="DIR", help="extra rule directory")
    r.set_defaults(func=cmd_rules, rules_cmd=None)


def load_rules(dirs: Sequence[str] | None) -> RuleSet:
    """The built-in rules and those in `dirs`; a broken file is reported on stderr and the rest load."""
    from diag.analysis.rules import ruleset as rules

    rs = rules.load(dirs or [])
    for e in rs.errors:
        print(f"diag: rule error: {e}", file=sys.stderr)
    return rs


def cmd_rules(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from diag.analysis.rules import ruleset as rules
    from diag.fsname import display

    out = console()
    if args.rules_cmd == "list":
        rs = load_rules(args.rules)
        if args.json:
            json.dump([r.meta() for r in rs.rules], sys.stdout, indent=1)
            sys.stdout.write("\n")
            return 0
        t = Table(show_edge=False, header_style="bold")
        for c in ("id", "severity", "category", "scope", "title"):
            t.add_column(c)
        for r in sorted(rs.rules, key=lambda r: (r.category, r.id)):
            t.add_row(r.id, r.severity, r.category, r.scope, escape(r.title))
        out.print(t)
        out.print(escape(f"{len(rs.rules)} rules from {display(rules.builtin_dir())}" + (f" and {', '.join(map(display, args.rules))}" if args.rules else "")))
        return 0 if not rs.errors else 1
    if args.rules_cmd == "test":
        from diag.analysis.rules.examples import test_ruleset

        if args.files:
            rs = rules.load(args.files, builtin=False)
        else:
            rs = rules.load(args.rules or [])
        for e in rs.errors:
            out.print(f"[red]ERROR[/] {escape(e)}")
        results = test_ruleset(rs)
        failed = [r for r in results if not r.ok]
        for r in failed:
            kind = "positive" if r.positive else "negative"
            first = r.example.text.strip().splitlines()[0][:160] if r.example.text.strip() else ""
            out.print(f"[red]FAIL[/] {r.rule.id} ({r.rule.file}:{r.rule.line}) {kind} example: {escape(r.message)}\n     {escape(first)}")
        n_rules = len(rs.rules)
        out.print(f"{len(results) - len(failed)} passed, {len(failed)} failed ({n_rules} rules, {len(results)} examples)")
        return 1 if failed or rs.errors else 0
    if args.rules_cmd == "lint":
        from diag.analysis.rules.lint import lint

        rs = rules.load(args.files or args.rules or [], builtin=not args.files)
        problems = list(rs.errors) + lint(rs)
        for p in problems:
            out.print(f"[red]{escape(p)}[/]")
        out.print(f"{len(rs.rules)} rules checked, {len(problems)} problem(s)")
        return 1 if problems else 0
    raise UsageError("rules: choose list, test or lint")
