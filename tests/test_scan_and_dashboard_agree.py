"""`diag scan` and the dashboard over the same requests say the same thing about them: the latency
p50/p95 of the scan's summary are the overview page's (one percentile, `diag.report.percentile`).
Real logs from the corpus, one `diag scan --json --store` each, the page rendered by the real app."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from conftest import CORPUS, LLAMA, VLLM
from diag.web.app import create_app

# a few requests each (where the two definitions of a percentile part ways), all within the last hour
LOGS = [LLAMA / "text.log", LLAMA / "plain-no-prefix-stderr.log", LLAMA / "jsonl-stdout.log", VLLM / "text-logoutputs.log",
        CORPUS / "lmdeploy" / "synthetic-0.16.log", CORPUS / "seed-style" / "vllm.log"]


@pytest.mark.parametrize("log", LOGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_scan_and_the_dashboard_give_the_same_latency_percentiles(log, tmp_path):
    r = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", "--store", str(tmp_path), str(log)], capture_output=True, text=True)
    summary = json.loads(r.stdout)["summary"]
    with TestClient(create_app(tmp_path / "diag.sqlite3")) as client:
        page = client.get("/").text
    m = re.search(r"<p>(\d+) requests.*?latency of completed requests p50 <b>([\d.]+)</b> s, p95 <b>([\d.]+)</b> s", page, re.S)
    assert m, page
    assert int(m[1]) == summary["count"]  # the same requests: the dashboard's last hour of data holds them all
    lat = summary["latency_s"]
    assert lat["known"] >= 2
    assert (float(m[2]), float(m[3])) == (round(lat["p50"], 3), round(lat["p95"], 3))
