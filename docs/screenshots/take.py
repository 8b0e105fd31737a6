"""Regenerate the README's screenshots: a post-mortem store from the test corpus, served by `diag web`,
photographed by headless Debian chromium through Selenium.

Run:  python docs/screenshots/take.py   (needs chromium, chromium-driver and selenium)
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[1] / "tests" / "data" / "corpus"
FILES = ["vllm/synthetic-0.11.0-qwen3vl.log"]  # relative to CORPUS: short paths on the pages
TRACE = "chatcmpl-0e1fae31b8e15198ecbc6e9083d7aaaa"  # failed while the engine died: timeline, finding, engine stats


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="diag-shots-"))
    subprocess.run([sys.executable, "-m", "diag", "scan", "--store", str(tmp), *FILES], check=False, capture_output=True, cwd=CORPUS)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    web = subprocess.Popen([sys.executable, "-m", "diag", "web", "--state-dir", str(tmp), "--listen", f"127.0.0.1:{port}"],
                           stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/api/status")
            break
        except OSError:
            time.sleep(0.1)
    opts = Options()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--window-size=1280,1000",
              f"--user-data-dir={tmp / 'chromium'}"):
        opts.add_argument(a)
    drv = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    try:
        for name, path in (("overview", "/"), ("requests", "/requests"), ("trace", f"/trace/{TRACE}")):
            drv.get(base + path)
            time.sleep(0.8)
            drv.save_screenshot(str(HERE / f"{name}.png"))
    finally:
        drv.quit()
        web.terminate()
        web.wait(10)


if __name__ == "__main__":
    main()
