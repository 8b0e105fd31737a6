"""`diag scan --json` beside lnav, `grep -cE` and a naive every-rule-on-every-line loop.

Run:  python tests/bench/bench_scan.py [--lines N] [--repeat K] [--only diag|all]

Generates, deterministically (fixed seeds), three logs in a temporary directory:

* a vLLM 0.32-style log with request logging on (default 1,000,000 lines): Received / Added /
  uvicorn access / stats lines as vLLM 0.32.0 writes them (copied from
  tests/data/corpus/vllm/real-0.32.0-cpu), an abort now and then, a 404 for a wrong model name,
  and a few engine OOM tracebacks (the real 0.32 `No available memory for the cache blocks` one);
* a vLLM 0.6-style log whose Received lines carry rendered prompts with image placeholders;
* half of the 0.32 log as a Kubernetes node keeps it (containerd's CRI format, each line behind a
  time, its stream and tag: what a post-mortem of a pod has), diag only.

For each it runs, pinned to one core (`taskset -c 0` when available), with PYTHONUNBUFFERED=1
(as many Docker images set it):

* `diag scan --json` (compiled classifier when built, then `DIAG_NO_EXT=1`: pure Python),
* lnav indexing the file with the vLLM format kept beside this script (`lnav/vllm_log.json`),
  forced to read every line by an SQL count over the format's table,
* `grep -cE` of the rules' literals (what a shell user would do),
* a naive Python loop trying every rule regex on every line (measured on a sample, scaled),

and prints lines/s, MB/s, peak RSS and the ratios. Each tool runs `--repeat` times; the best
run and the spread (worst/best) are printed, because other work shares this machine.
Targets (issue #11): diag (compiled) ≥ 1.3× lnav (≈ 1 M lines/s) on the 0.32 log and ≥ 0.5 M
lines/s on the 0.6 log; pure Python ≥ 0.5 M lines/s; peak RSS ≤ 200 MB.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LNAV_DIR = HERE / "lnav"

# Real vLLM 0.32.0 lines (tests/data/corpus/vllm/real-0.32.0-cpu/text-logoutputs.log, oom-kv-no-blocks.log).
_RECEIVED = ("(APIServer pid=16263) INFO {ts} [request_logger.py:65] Received request {rid}: params: SamplingParams(n=1, "
             "presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0, temperature={temp}, watermarking=None, "
             "top_p=1.0, top_k=0, min_p=0.0, seed=None, stop=[], stop_token_ids=[], bad_words=[], thinking_token_budget=None, "
             "include_stop_str_in_output=False, ignore_eos=False, max_tokens={max_tokens}, min_tokens=0, logprobs=None, "
             "prompt_logprobs=None, skip_special_tokens=True, spaces_between_special_tokens=True, truncate_prompt_tokens=None, "
             "structured_outputs=None, extra_args=None), lora_request: None.\n")
_ADDED = "(APIServer pid=16263) INFO {ts} [async_llm.py:578] Added request {rid}-{sfx:08x}.\n"
_ACCESS = 'INFO:     {client} - "POST /v1/chat/completions HTTP/1.1" {status}\n'
_STATS = ("(APIServer pid=16263) INFO {ts} [loggers.py:259] Engine 000: Avg prompt throughput: {pt:.1f} tokens/s, "
          "Avg generation throughput: {gt:.1f} tokens/s, Running: {run} reqs, Waiting: 0 reqs, GPU KV cache usage: {kv:.1f}%, "
          "Prefix cache hit rate: 12.5%, MM cache hit rate: 50.0%\n")
_HEALTH = 'INFO:     127.0.0.1:48268 - "GET /health HTTP/1.1" 200 OK\n'
_ABORT = ("(APIServer pid=16263) INFO {ts} [async_llm.py:922] Aborted request(s) {rid}-{sfx:08x}.\n"
          "(APIServer pid=16263) INFO {ts} [async_llm.py:783] Request {rid} aborted.\n")
_WRONG_MODEL = ("(APIServer pid=16263) ERROR {ts} [serving.py:274] Error with model error=ErrorInfo(message='The model "
                "`qwen3-vl` does not exist. Valid aliases: Qwen3-VL-8B.', type='NotFoundError', param='model', code=404)\n"
                'INFO:     10.0.0.9:41000 - "POST /v1/chat/completions HTTP/1.1" 404 Not Found\n')
_OOM_FRAMES = [
    ("vllm/v1/engine/core.py", 1482, "run_engine_core", "engine_core = EngineCoreProc(*args, engine_index=dp_rank, **kwargs)"),
    ("vllm/tracing/otel.py", 175, "sync_wrapper", "return func(*args, **kwargs)"),
    ("vllm/v1/engine/core.py", 1194, "__init__", "super().__init__("),
    ("vllm/v1/engine/core.py", 157, "__init__", "kv_cache_config = self._initialize_kv_caches(vllm_config)"),
    ("vllm/v1/core/kv_cache_utils.py", 2642, "get_kv_cache_configs", "_check_enough_kv_cache_memory("),
    ("vllm/v1/core/kv_cache_utils.py", 1010, "_check_enough_kv_cache_memory", "raise ValueError("),
]


def _oom(ts: str) -> str:
    p = f"(EngineCore pid=9740) ERROR {ts} [core.py:1510] "
    out = [f"{p}EngineCore failed to start.\n", f"{p}Traceback (most recent call last):\n"]
    for f, ln, fn, code in _OOM_FRAMES:
        out.append(f'{p}  File "/opt/vllm/venv/lib/python3.11/site-packages/{f}", line {ln}, in {fn}\n')
        out.append(f"{p}    {code}\n")
    out.append(f"{p}ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
               "initializing the engine (this flag also controls the memory used by the KV cache).\n")
    out.append(f"(EngineCore pid=9740) ERROR {ts} [multiproc_executor.py:315] Worker proc VllmWorker-0 died unexpectedly "
               "(exit code: 0), shutting down executor.\n")
    return "".join(out)


def gen_v032(path: Path, n_lines: int, seed: int = 1) -> int:
    """The 1M-line 0.32 log. Returns the number of lines written (n_lines, or a few more)."""
    rnd = random.Random(seed)
    lines = 0
    t = 18 * 3600 + 27 * 60
    oom_every = max(1, n_lines // 4)  # a few OOM tracebacks (a restart loop)
    next_oom = oom_every // 2
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = f.write
        w("(APIServer pid=16263) INFO 11-22 18:27:00 [api_utils.py:347]  ▄▄ ▄█ █     █     █ ▀▄▀ █  version 0.32.0\r\n")
        w("(APIServer pid=16263) INFO 11-22 18:27:00 [api_utils.py:347]   █▄█▀ █     █     █     █  model   /models/Qwen3-VL-8B\n")
        w("(APIServer pid=16263) INFO 11-22 18:27:48 [api_server.py:1880] Starting vLLM server on http://0.0.0.0:3001\n")
        lines += 3
        i = 0
        while lines < n_lines:
            t += rnd.random() * 0.02
            ts = f"11-22 {int(t // 3600) % 24:02d}:{int(t // 60) % 60:02d}:{int(t) % 60:02d}"
            rid = f"chatcmpl-{rnd.getrandbits(64):016x}"
            w(_RECEIVED.format(ts=ts, rid=rid, temp=rnd.choice(("0.0", "0.7", "1.0")), max_tokens=rnd.randint(16, 2048)))
            w(_ADDED.format(ts=ts, rid=rid, sfx=rnd.getrandbits(32)))
            lines += 2
            if i % 97 == 0:
                w(_ABORT.format(ts=ts, rid=rid, sfx=rnd.getrandbits(32)))
                lines += 2
            else:
                w(_ACCESS.format(client=f"10.0.{i % 7}.{i % 250}:{30000 + i % 30000}", status="200 OK"))
                lines += 1
            if i % 50 == 0:
                w(_STATS.format(ts=ts, pt=rnd.random() * 2000, gt=rnd.random() * 500, run=rnd.randint(0, 16), kv=rnd.random() * 90))
                w(_HEALTH)
                lines += 2
            if i % 5000 == 2500:
                w(_WRONG_MODEL.format(ts=ts))
                lines += 2
            if lines >= next_oom:
                block = _oom(ts)
                w(block)
                lines += block.count("\n")
                next_oom += oom_every
            i += 1
    return lines


def gen_v06(path: Path, n_lines: int, seed: int = 2) -> int:
    rnd = random.Random(seed)
    lines = 0
    questions = ["What is in this picture?", "Describe the chart.", "Read the invoice total.", "Compare the two photos."]
    with open(path, "w", encoding="utf-8") as f:
        i = 0
        while lines < n_lines:
            ts = f"01-24 09:{(i // 60) % 60:02d}:{i % 60:02d}"
            rid = f"chatcmpl-{rnd.getrandbits(128):032x}"
            k = rnd.choice((0, 1, 1, 2))
            img = "<|vision_start|><|image_pad|><|vision_end|>" * k
            prompt = (f"<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n{img}"
                      f"{rnd.choice(questions)}<|im_end|>\\n<|im_start|>assistant\\n")
            f.write(f"INFO {ts} logger.py:37] Received request {rid}: prompt: '{prompt}', params: SamplingParams(n=1, "
                    "best_of=1, presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.05, temperature=0.7, top_p=0.8, "
                    "top_k=-1, min_p=0.0, seed=None, stop=[], stop_token_ids=[], bad_words=[], include_stop_str_in_output=False, "
                    "ignore_eos=False, max_tokens=512, min_tokens=0, logprobs=None, prompt_logprobs=None, skip_special_tokens=True, "
                    "spaces_between_special_tokens=True, truncate_prompt_tokens=None, guided_decoding=None), prompt_token_ids: "
                    "None, lora_request: None, prompt_adapter_request: None.\n")
            f.write(f"INFO {ts} engine.py:267] Added request {rid}.\n")
            f.write(f'INFO:     10.0.0.5:{40000 + i % 20000} - "POST /v1/chat/completions HTTP/1.1" 200 OK\n')
            lines += 3
            if i % 40 == 0:
                f.write(f"INFO {ts} metrics.py:467] Avg prompt throughput: 402.6 tokens/s, Avg generation throughput: 38.1 tokens/s, "
                        "Running: 2 reqs, Swapped: 0 reqs, Pending: 0 reqs, GPU KV cache usage: 0.4%, CPU KV cache usage: 0.0%.\n")
                lines += 1
            i += 1
    return lines


# -- runners ---------------------------------------------------------------------------------
def _pin() -> list[str]:
    return ["taskset", "-c", "0"] if shutil.which("taskset") else []


OUT = Path(tempfile.gettempdir()) / "diag-bench-stdout"


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """(wall s, CPU s, peak RSS bytes) of one child process, from wait4's rusage.

    Output goes to a real file: GNU grep stops at the first match when its output is /dev/null,
    and diag's JSON document should cost what writing it costs."""
    t0 = time.perf_counter()
    with open(OUT, "wb") as out:
        p = subprocess.Popen(_pin() + cmd, stdout=out, stderr=subprocess.PIPE, env=env)
        _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if p.returncode not in (0, 1):
        raise RuntimeError(f"{cmd[:3]} exited {p.returncode}: {err[-500:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss * 1024


def diag_cmd() -> list[str]:
    exe = shutil.which("diag", path=str(Path(sys.executable).parent)) or shutil.which("diag")
    return [exe] if exe else [sys.executable, "-m", "diag"]


def active_path(env: dict[str, str]) -> str:
    out = subprocess.run(diag_cmd() + ["--version"], capture_output=True, text=True, env=env).stdout.strip()
    return out


def lnav_cmd(path: Path) -> list[str] | None:
    exe = shutil.which("lnav")
    if exe is None:
        return None
    # -N: no default session/config noise; -I: our format directory; -n: headless.
    return [exe, "-N", "-I", str(LNAV_DIR), "-n", "-c", ";SELECT count(*) FROM vllm_log", str(path)]


def grep_pattern() -> str:
    from diag.analysis.rules import ruleset as rules

    rs = rules.load()
    needles = sorted({n for r in rs.rules for n in (r.needles or ())}
                     | {"Received request", "Added request", "Aborted request", "HTTP/1.1\""})
    return "|".join(re.escape(n).replace("\\ ", " ") for n in needles)


def naive_seconds(path: Path, sample: int = 50_000) -> tuple[float, int]:
    """CPU seconds for every rule pattern on every line of the first `sample` lines."""
    from diag.analysis.rules import ruleset as rules

    pats = [p for r in rules.load().rules for p in r.patterns]
    hits = 0
    t0 = time.process_time()
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            if i >= sample:
                break
            for p in pats:
                if p.search(line):
                    hits += 1
    return time.process_time() - t0, len(pats)


_BREAKDOWN = r"""
import sys, time
from diag.analysis.rules import ruleset as rules
from diag.ingest.fastpath import FastSource, IMPLEMENTATION, split_classify
from diag.report.jsonstream import TraceSpool
from diag.parsing.source import SourceParser
from diag.pipeline import Pipeline
from diag.ingest.reader import LineSplitter, read_chunks
path = sys.argv[1]
rs = rules.load()
def cpu(fn):
    t = time.process_time(); n = fn(); return n, time.process_time() - t
def classify_only():
    n = 0
    with open(path, "rb") as f:
        carry = b""
        for data in read_chunks(f):
            data = carry + data
            last = data.rfind(b"\n")
            n += len(split_classify(data[:last], 1 << 20))
            carry = data[last + 1:]
    return n
class ParseOnly(Pipeline):
    # Parse only: the events go nowhere (a plain request's lines still go straight to the trace
    # assembler: that is their parse, TraceAssembler.apply_*). A subclass: a built Pipeline is a
    # C type, whose methods cannot be replaced on an instance.
    def event(self, ev):
        pass
def events_only():
    sink = ParseOnly(rs, keep_traces=False)  # as scan: a pipeline keeping a million traces pays the GC for them
    src = FastSource(sink, SourceParser(path), LineSplitter())
    with open(path, "rb") as f:
        src.read(f)
    return src.lines
def pipeline(json):
    spool = TraceSpool() if json else None
    p = Pipeline(rs, keep_traces=False, trace_sink=spool.add if spool is not None else None)
    p.scan_path(path); p.finish()
    return p.stats.lines
print(IMPLEMENTATION)
for name, fn in (("read + classify lines", classify_only), ("+ events, plain requests", events_only),
                 ("+ traces, facts, rules", lambda: pipeline(False)), ("+ traces to JSON", lambda: pipeline(True))):
    n, dt = cpu(fn)
    print(f"  {name:<24}: {n / dt:12,.0f} lines/s  ({dt / n * 1e6:5.2f} us/line cumulative)")
"""


# A lower bound for any design in CPython that keeps the document's shape: the same chunks and
# classifier, then only what the 0.32 log's requests need (a Trace per request, its timeline, the
# access line attached when it is the only one waiting, `to_dict`, orjson) and nothing else: no
# rules, facts, user-content checks, id epochs, multi-line records, summary or output file.
_FLOOR = r"""
import re, sys, time
import orjson
from diag.analysis.trace import Trace
from diag.ingest.fastpath import IMPLEMENTATION, split_classify
from diag.ingest.reader import read_chunks
from diag.parsing.clock import Clock
path = sys.argv[1]
RX = re.compile(r"Received request (\S+): ")
MT = re.compile(r"max_tokens=(\d+)")
def run():
    n = 0
    live, waiting, stamps, clock, out = {}, [], {}, Clock(), 0
    with open(path, "rb") as f:
        carry = b""
        for data in read_chunks(f):
            data = carry + data
            last = data.rfind(b"\n")
            carry = data[last + 1:]
            for rec in split_classify(data[:last], 1 << 20):
                n += 1
                if rec.__class__ is bytes:
                    continue
                k = rec[0]
                if k == 3:
                    if len(waiting) == 1:
                        t = waiting.pop()
                        t.http_status, t.client, t.status = rec[5], rec[2], "ok"
                        t.http = {"method": rec[3], "path": rec[4], "status": rec[5], "path_file": path, "line": n, "client": rec[2]}
                        t.timeline.append({"kind": "http.access", "time": t.added_at, "line": n})
                        del live[t.id]
                        out += len(orjson.dumps(t.to_dict()))
                    else:
                        waiting.clear()
                    continue
                st = rec[4]
                ts = stamps.get(st)
                if ts is None:
                    ts = stamps[st] = clock.yearless(int(st[0:2]), int(st[3:5]), int(st[6:8]), int(st[9:11]), int(st[12:14]))
                if k == 1:
                    m = RX.match(rec[6])
                    mt = MT.search(rec[6], m.end())
                    t = live[m.group(1)] = Trace(m.group(1), "vllm", path, received_at=ts, first_line=n,
                                                 max_tokens=int(mt.group(1)) if mt else None)
                    t.timeline.append({"kind": "request.received", "time": ts, "line": n})
                    waiting.append(t)
                else:
                    rid = rec[6][14:-1]
                    t = live.get(rid) or live.get(rid[:-9])
                    if t is not None:
                        t.added_at = ts
                        t.timeline.append({"kind": "request.added", "time": ts, "line": n})
    return n
t = time.process_time(); n = run(); dt = time.process_time() - t
print(f"  CPython floor ({IMPLEMENTATION} classifier): {n / dt:12,.0f} lines/s  ({dt / n * 1e6:5.2f} us/line)")
"""


def floor(path: Path, env: dict[str, str]) -> None:
    r = subprocess.run(_pin() + [sys.executable, "-c", _FLOOR, str(path)], capture_output=True, text=True, env=env)
    print(r.stdout.rstrip())
    if r.returncode:
        print(f"  (the floor stopped: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode})")


def breakdown(path: Path, env: dict[str, str]) -> None:
    """Where the time goes, stage by stage (CPU time in one process, cumulative)."""
    r = subprocess.run(_pin() + [sys.executable, "-c", _BREAKDOWN, str(path)], capture_output=True, text=True, env=env)
    print(r.stdout.rstrip())
    if r.returncode:
        print(f"  (the breakdown stopped: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode})")


def best_of(k: int, fn) -> tuple[tuple[float, float, int], float]:
    runs = [fn() for _ in range(k)]
    best = min(runs, key=lambda r: r[0])
    return best, max(r[0] for r in runs) / best[0]


def gen_v032_cri(path: Path, n: int) -> None:
    """The 0.32 log as a Kubernetes node keeps it (/var/log/pods/…/0.log, containerd's CRI format):
    each line behind its record's time, stream and tag, as containerd writes them."""
    plain = path.with_suffix(".plain")
    gen_v032(plain, n)
    rnd = random.Random(32)
    with open(plain, "rb") as f, open(path, "wb") as out:
        for i, line in enumerate(f):
            out.write(b"2026-11-22T%02d:%02d:%02d.%09dZ stdout F " % (18 + i // 3_600_000 % 6, i // 60_000 % 60, i // 1000 % 60,
                                                                       rnd.randrange(10**9)) + line)
    plain.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="lines of the 0.32 log (the 0.6 log gets half)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; the best is reported with the spread")
    ap.add_argument("--only", choices=("diag", "all"), default="all", help="diag: skip lnav, grep and the naive loop")
    ap.add_argument("--keep", metavar="DIR", help="generate the logs into DIR and keep them (reused when present)")
    ap.add_argument("--breakdown", action="store_true", help="also print the cost of each stage (classify, parse, analyse, JSON)")
    args = ap.parse_args()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="diag-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    base_env.pop("DIAG_NO_EXT", None)
    pure_env = {**base_env, "DIAG_NO_EXT": "1"}
    print(f"diag: {active_path(base_env)}   |   with DIAG_NO_EXT=1: {active_path(pure_env)}")
    print(f"one core: {'taskset -c 0' if _pin() else 'NOT pinned (no taskset)'}; best of {args.repeat}, spread = worst/best wall time")
    try:
        for name, gen, n in (("vLLM 0.32-style, request logging", gen_v032, args.lines),
                             ("vLLM 0.6-style, prompts logged", gen_v06, args.lines // 2),
                             ("the 0.32 log as a Kubernetes node keeps it (CRI)", gen_v032_cri, args.lines // 2)):
            path = tmp / f"{gen.__name__}-{n}.log"
            if not path.exists():
                tmp_path = path.with_suffix(".part")
                gen(tmp_path, n)
                tmp_path.rename(path)
            with open(path, "rb") as fh:
                n_lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
            mb = path.stat().st_size / 1e6
            print(f"\n== {name}: {n_lines:,} lines, {mb:.1f} MB ==")
            rows: dict[str, float] = {}

            def show(label: str, res: tuple[float, float, int], spread: float, note: str = "") -> None:
                wall, cpu, rss = res
                rows[label] = wall
                print(f"{label:<16}: {n_lines / wall:12,.0f} lines/s {mb / wall:7.1f} MB/s  wall {wall:6.2f} s  CPU {cpu:6.2f} s  "
                      f"peak RSS {rss / 2**20:6.0f} MB  spread {spread:.2f}{note}")

            for label, env in (("diag (default)", base_env), ("diag (pure)", pure_env)):
                res, spread = best_of(args.repeat, lambda env=env: run_measured(diag_cmd() + ["scan", "--json", str(path)], env))
                show(label, res, spread)
            if args.only == "all" and gen is not gen_v032_cri:  # (lnav's vLLM format and grep read the server's lines)
                lc = lnav_cmd(path)
                if lc is None:
                    print("lnav            : not installed (apt-get install lnav)")
                else:
                    res, spread = best_of(args.repeat, lambda: run_measured(lc, {**os.environ, "HOME": str(tmp)}))
                    show("lnav", res, spread, "  (index + SQL count)")
                pat = grep_pattern()
                res, spread = best_of(args.repeat, lambda: run_measured(["grep", "-cE", pat, str(path)], {**os.environ, "LC_ALL": "C"}))
                show("grep -cE", res, spread)
                sec, npat = naive_seconds(path)
                scaled = sec * n_lines / min(n_lines, 50_000)
                rows["naive loop"] = scaled
                print(f"{'naive loop':<16}: {n_lines / scaled:12,.0f} lines/s {mb / scaled:7.1f} MB/s  ({npat} patterns on every line; "
                      f"CPU on 50,000 lines, scaled)")
            if args.breakdown and gen is not gen_v032_cri:
                for env in (base_env, pure_env):
                    print("where the time goes, diag", end=" ")
                    breakdown(path, env)
                if gen is gen_v032:
                    print("lower bound of a CPython design (classify + a Trace per request + its JSON, nothing else):")
                    for env in (base_env, pure_env):
                        floor(path, env)
            d = rows["diag (default)"]
            ratios = "  ".join(f"vs {k}: {v / d:.2f}x" for k, v in rows.items() if k != "diag (default)")
            print(f"ratios (speed of diag (default) relative to each): {ratios}")
    finally:
        OUT.unlink(missing_ok=True)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
