"""The dashboard in a real browser: Debian's chromium + chromium-driver driven by Selenium, against a real
`diag daemon` following a log this test appends to. One daemon, one browser session."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import free_port, vllm_request_lines

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)")

HOSTILE = 'chatcmpl-"><svg/onload=alert(1)>'
BROWSER_TZ = "Pacific/Chatham"  # UTC+12:45 or +13:45: no server's zone by accident
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1300,900"]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for f in FLAGS + [f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"]:
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the browser in another time zone than the server: pages show the server's local time either way
    drv = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER, env={**os.environ, "TZ": BROWSER_TZ}))
    drv.implicitly_wait(0)
    yield drv
    drv.quit()


def test_dashboard_live_requests_trace_page_and_hostile_id_in_chromium(tmp_path, browser):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    log = tmp_path / "vllm.log"
    log.write_text(vllm_request_lines("chatcmpl-aaaa000000000001", 30001) + vllm_request_lines("chatcmpl-aaaa000000000002", 30002))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    err = open(tmp_path / "daemon.err", "w")
    d = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--state-dir", str(tmp_path / "state"), "--log", str(log),
                          "--from-beginning", "--web", f"127.0.0.1:{port}"], stderr=err, stdout=subprocess.DEVNULL)
    try:
        wait_http(base + "/api/status")
        wait = WebDriverWait(browser, 20, poll_frequency=0.1)

        browser.get(base + "/")
        assert browser.title == "Overview · diag"
        assert browser.find_element(By.CSS_SELECTOR, "nav a.on").text == "Overview"
        assert str(log) in browser.find_element(By.TAG_NAME, "main").text  # the followed file, its lag and errors
        over = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "[data-chart=traffic] .u-over"))
        ActionChains(browser).move_to_element(over).perform()  # the legend shows the minute under the cursor
        legend = browser.find_element(By.CSS_SELECTOR, "[data-chart=traffic] .u-legend .u-series .u-value").text
        shown = datetime.strptime(legend, "%Y-%m-%d %H:%M:%S")  # the pages' one form, on the server's clock
        assert abs(shown - datetime.now()) < timedelta(minutes=62), legend  # within the chart's last hour

        browser.get(base + "/requests")
        wait.until(lambda b: "live" in b.find_element(By.ID, "live-state").text)  # the event stream is open
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#requests tbody a.rid")) == 2)
        browser.execute_script("window.diagNoReload = 42;")
        with open(log, "a") as f:
            f.write(vllm_request_lines("chatcmpl-bbbb000000000003", 30003))
            f.write(vllm_request_lines(HOSTILE, 30004))
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#requests tbody a.rid")) == 4)
        assert browser.execute_script("return window.diagNoReload;") == 42  # the rows came without a reload
        ids = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#requests tbody a.rid")]
        assert ids[:2] == [HOSTILE, "chatcmpl-bbbb000000000003"]  # newest first, the hostile id as plain text
        assert browser.execute_script("return document.querySelectorAll('main svg').length;") == 0

        def times() -> dict[str, str]:
            rows = browser.find_elements(By.CSS_SELECTOR, "#requests tbody tr")
            return {r.find_element(By.CSS_SELECTOR, "a.rid").text: r.find_element(By.CSS_SELECTOR, "td.time").text for r in rows}

        live = times()
        assert browser.execute_script("return Intl.DateTimeFormat().resolvedOptions().timeZone;") == BROWSER_TZ
        browser.refresh()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#requests tbody a.rid")) == 4)
        assert times() == live  # live rows show the time as the server renders it, in one form
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", t) for t in live.values()), live

        browser.find_element(By.LINK_TEXT, "chatcmpl-bbbb000000000003").click()
        wait.until(lambda b: b.current_url.endswith("/trace/chatcmpl-bbbb000000000003"))
        assert browser.find_element(By.CSS_SELECTOR, ".rid-title .rid").text == "chatcmpl-bbbb000000000003"
        timeline = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "table.timeline tr")][1:]
        assert [t.split()[1] for t in timeline] == ["request.received", "request.added", "http.access"]
        assert timeline[0].startswith("+0.000")

        browser.get(base + "/trace/" + quote(HOSTILE, safe=""))  # a deep link to the hostile id
        assert browser.find_element(By.CSS_SELECTOR, ".rid-title .rid").text == HOSTILE
        assert browser.find_element(By.CSS_SELECTOR, ".rid-title .badge").text == "ok"
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 - onload=alert(1) never ran
        assert browser.execute_script("return document.querySelectorAll('svg').length;") == 0

        browser.get(base + "/requests?q=" + quote("chatcmpl-bbbb"))  # a unique prefix jumps to the trace
        wait.until(lambda b: b.current_url.endswith("/trace/chatcmpl-bbbb000000000003"))
        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe  # no CSP violation, no script error, no missing asset
    finally:
        d.terminate()
        d.wait(timeout=30)
        err.close()
    assert d.returncode == 0, (tmp_path / "daemon.err").read_text()
    assert f"web: dashboard on {base}/" in (tmp_path / "daemon.err").read_text()
