"""How long `diag doctor` takes to say "nothing listens" (the figure test_doctor.py used to assert).

Run:  python tests/bench/bench_doctor.py [--runs N]
Prints the wall time of the whole command (interpreter start-up included) and the time its checks
report, over N runs against a port nothing listens on. Target (issue #2): the checks under 3 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import free_port  # noqa: E402 - the tests' helper


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    walls, checks = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "diag", "doctor", "--url", f"http://127.0.0.1:{free_port()}", "--json"],
                           capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        checks.append(sum(c["duration_ms"] for c in json.loads(r.stdout)["checks"]) / 1000)
    print(f"doctor, nothing listening, {args.runs} runs: wall {min(walls):.2f}–{max(walls):.2f} s, "
          f"checks {min(checks):.2f}–{max(checks):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
