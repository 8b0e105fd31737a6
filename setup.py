"""Package discovery (everything else is in pyproject.toml).

Every package under `diag/` is found automatically, so a new subpackage (alerts, web, metrics…)
ships without anyone remembering a list; the built-in rules live in the top-level `rules/`
directory (where users and reviewers look for them) and are installed as `diag.rules_builtin`.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["diag", "diag.*"]), "diag.rules_builtin"],
    package_dir={"diag.rules_builtin": "rules"},
)
