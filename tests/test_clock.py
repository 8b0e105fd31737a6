"""Local times are computed once per minute where that gives the same answer as per second.

`Clock.yearless` (vLLM's stamps) takes a second of the minute it saw last from that minute too, and
so does the compiled trace encoder (`diag.report._tracejson_c`) for the times it writes.

`iso` and `Clock.local` take a second's local time from its minute's (a server logging a request a
second asks for a new second on nearly every line) when the minute has one UTC offset of whole
minutes. These tests hold both to the per-second library answer in zones where that is not so:
clock changes (spring forward, fall back, Lord Howe's half-hour one), offsets of half hours, and
Monrovia's local mean time (-0:44:30 until 1972), each in a subprocess with its own TZ.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/St_Johns",
         "Africa/Monrovia"]

_CHECK = r"""
import sys, time
from datetime import datetime
from diag.analysis.trace import Trace
from diag.parsing.clock import Clock, iso
from diag.report.tracejson import pure_trace_json, trace_json

# seconds around each clock change of the zone in these years, and around 1972-01-07 (Monrovia)
starts = []
for year in (1971, 1972, 2024, 2026):
    t = time.mktime((year, 1, 1, 0, 0, 0, 0, 0, -1))
    end = time.mktime((year + 1, 1, 1, 0, 0, 0, 0, 0, -1))
    prev = time.localtime(t).tm_gmtoff
    while t < end:
        off = time.localtime(t).tm_gmtoff
        if off != prev:
            starts.append(int(t) - 7200)
        prev = off
        t += 900
starts.append(int(datetime(1972, 1, 7).timestamp()) - 7200)
starts.append(1764000000)
starts.append(int(datetime(2025, 12, 31, 22, 0).timestamp()))  # a year's end: yearless rolls over
bad = []
for s in starts:
    fast, slow = Clock(s), Clock(s)  # yearless as a log asks it, and with no minute remembered (mktime each time)
    for sec in range(s, s + 4 * 3600, 7):  # every 7th second: all seconds of a minute over 7 minutes
        want = datetime.fromtimestamp(sec).astimezone().isoformat(timespec="seconds")
        if iso(sec) != want:
            bad.append(("iso", sec, iso(sec), want))
        if iso(sec + 0.25) != datetime.fromtimestamp(sec + 0.25).astimezone().isoformat(timespec="milliseconds"):
            bad.append(("iso fraction", sec))
        t = Trace("a", "vllm", "x.log", received_at=float(sec), added_at=sec + 0.25)  # the trace encoder's own time table
        if trace_json(t) != pure_trace_json(t):
            bad.append(("trace_json", sec))
        lt = time.localtime(sec)
        fields = (lt.tm_year, lt.tm_mon, lt.tm_mday, lt.tm_hour, lt.tm_min, lt.tm_sec)
        clock = CLOCK
        got = clock.local(*fields)
        want_ts = time.mktime(fields + (0, 0, -1))
        if got != want_ts:
            bad.append(("local", fields, got, want_ts))
        slow._minute = None
        a, b = fast.yearless(*fields[1:]), slow.yearless(*fields[1:])
        if a != b or fast.year != slow.year:
            bad.append(("yearless", fields, a, b))
print(len(starts), len(bad))
for b in bad[:5]:
    print(b)
"""


@pytest.mark.parametrize("zone", ZONES)
def test_local_times_per_minute_equal_the_libraries_per_second(zone):
    if zone != "UTC" and not Path("/usr/share/zoneinfo", zone).exists():
        pytest.skip(f"no time zone data for {zone} (/usr/share/zoneinfo; Debian package tzdata)")
    env = dict(os.environ, TZ=zone)
    script = _CHECK.replace("CLOCK", "SHARED").replace("import sys, time", "import sys, time\nfrom diag.parsing.clock import Clock\nSHARED = Clock(0)")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    n, bad = out.stdout.split("\n", 1)[0].split()
    assert int(n) >= 2 and int(bad) == 0, out.stdout


def test_yearless_rolls_over_into_a_minute_a_full_date_line_asked_for():
    """A file mixing a full-date format with vLLM's yearless stamps: after 12-31 23:00, a yearless
    01-01 is next year's, also when a full-date line just asked `local` for that very minute of this
    year (the minute `yearless` would otherwise take its seconds from)."""
    import time

    from diag.parsing.clock import Clock

    clock = Clock(time.mktime((2025, 12, 31, 12, 0, 0, 0, 0, -1)))
    assert clock.yearless(12, 31, 23, 0, 0) == time.mktime((2025, 12, 31, 23, 0, 0, 0, 0, -1))
    assert clock.local(2025, 1, 1, 0, 0, 0) == time.mktime((2025, 1, 1, 0, 0, 0, 0, 0, -1))
    assert clock.yearless(1, 1, 0, 0, 5) == time.mktime((2026, 1, 1, 0, 0, 5, 0, 0, -1))
    assert clock.year == 2026
