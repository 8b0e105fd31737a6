"""llama.cpp's examples/server of late 2023 to early 2024: its own lines in plain text.

From its parallel-slots rewrite (October 2023) until its log rewrite, the server printed its slot
lines as plain text (LOG_TEE), between the JSON lines of its request log:

    slot 0 is processing [task id: 0]
    slot 0 : kv cache rm - [0, end)
    print_timings: prompt eval time =    1557.22 ms /   225 tokens (…)
    print_timings:        eval time =   12779.82 ms /   287 runs   (…)
    print_timings:       total time =   14337.04 ms
    slot 0 released (258 tokens in cache)

A release names the slot, not the task: it ends the task that slot was processing. The timings
name neither: update_slots prints a finished slot's timings in one pass over the slots and its
release at the start of the next, both in slot order, so the timing blocks are owed to the next
releases in the order they were printed (a slot that ends without timings, an error, can take the
next slot's; the server printed nothing that would tell them apart).
"""

from __future__ import annotations

import re

from diag.parsing import events as E
from diag.parsing.base import Ctx, Parsed, to_float, to_int
from diag.parsing.events import Event

NAME = "llamacpp"

_SLOT = re.compile(r"slot (\d+)(?: is processing \[task id: (\d+)\]| released \((\d+) tokens in cache\)| ?: | - )")
_OTHER = ("all slots are idle and system prompt is empty", "llama server listening at http")
_TIMING = "print_timings: "
_EVAL = re.compile(r"(prompt )?eval time = +([\d.]+) ms / +(\d+) (?:tokens|runs)")
_TOTAL = re.compile(r"total time = +([\d.]+) ms")
_MAX_SLOTS = 4096  # slots are few: a garbled number is no reason to grow
_MAX_BLOCKS = 64  # timing blocks printed and not yet released


def parse(body: str, ctx: Ctx) -> Parsed | None:
    """One unprefixed line; None: not one of these."""
    if body.startswith(_TIMING):
        ev = Event(ctx.path, 0, NAME, E.LOG, "INFO", None, body, ctx.proc, ctx.pid, "print_timings")
        _timing(body, ctx.state)
        return ev, None
    m = _SLOT.match(body)
    if m is None:
        if body.startswith(_OTHER):
            return Event(ctx.path, 0, NAME, E.LOG, "INFO", None, body, ctx.proc, ctx.pid), None
        return None
    ev = Event(ctx.path, 0, NAME, E.LOG, "INFO", None, body, "slot", ctx.pid)
    f = ev.fields
    slot = to_int(m.group(1))
    f["slot"] = slot
    st = ctx.state
    tasks = st.setdefault("plain_slot_task", {})
    task = to_int(m.group(2)) if m.group(2) else None
    if task is not None:
        if len(tasks) < _MAX_SLOTS:
            tasks[slot] = task
        ev.kind = E.STARTED
    elif m.group(3):
        task = tasks.pop(slot, None)
        done = st.get("plain_timings_done")
        timing = done.pop(0) if done else None
        if task is None:
            return ev, None  # its start was before this log began: no trace to end
        ev.kind = E.FINISHED
        f["released"] = True
        f["n_tokens"] = to_int(m.group(3))
        if timing:
            f.update(timing)
    if task is not None:
        f["task"] = task
        f["request_id"] = f"task-{task}"
    return ev, None


def _timing(body: str, st: dict) -> None:
    cur = st.setdefault("plain_timing", {})
    m = _EVAL.search(body)
    if m:
        prompt = m.group(1) is not None
        cur["prompt_ms" if prompt else "eval_ms"] = to_float(m.group(2))
        cur["prompt_tokens" if prompt else "output_tokens"] = to_int(m.group(3))
        return
    m = _TOTAL.search(body)
    if m:
        cur["total_ms"] = to_float(m.group(1))
        done = st.setdefault("plain_timings_done", [])
        if len(done) < _MAX_BLOCKS:
            done.append(dict(cur))
        cur.clear()
