"""Throughput of the scan pipeline beside `grep -cE` and a naive every-rule-on-every-line loop.

Run:  python tests/bench/bench_scan.py [--requests N]

Generates two realistic logs in a temporary directory: a vLLM 0.32-style log with request
logging on (Received / Added / uvicorn access lines, stats lines every few seconds, an
occasional abort and error), and a vLLM 0.6-style log whose Received lines carry rendered
prompts with image placeholders. For each it reports lines/s and MB/s of:

* `diag scan` (the real pipeline: parse, traces, facts, rules; single process, one core),
* `grep -cE` of the rule patterns' literal parts (what a shell user would do),
* a naive Python loop that tries every rule regex on every line,

and the ratios between them. Target (issue #2): ≥ 1 000 000 lines/s on the 0.32-style log.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from diag import rules  # noqa: E402
from diag.pipeline import Pipeline  # noqa: E402


def gen_v032(path: Path, n: int, seed: int = 1) -> int:
    rnd = random.Random(seed)
    lines = 0
    t = 18 * 3600
    with open(path, "w", encoding="utf-8") as f:
        f.write("(APIServer pid=14990) INFO 11-22 18:00:00 [api_utils.py:347]  ▄▄ ▄█ █     █     █ ▀▄▀ █  version 0.32.0\r\n")
        f.write("(APIServer pid=14990) INFO 11-22 18:00:00 [api_utils.py:347]   █▄█▀ █     █     █     █  model   /models/Qwen3-VL-8B\n")
        lines += 2
        for i in range(n):
            t += rnd.random() * 0.01
            hh, mm, ss = int(t // 3600) % 24, int(t // 60) % 60, int(t) % 60
            ts = f"11-22 {hh:02d}:{mm:02d}:{ss:02d}"
            rid = f"chatcmpl-{rnd.getrandbits(64):016x}"
            f.write(f"(APIServer pid=14990) INFO {ts} [request_logger.py:65] Received request {rid}: params: SamplingParams(n=1, "
                    "presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0, temperature=0.7, top_p=0.8, top_k=20, "
                    f"min_p=0.0, seed=None, stop=[], stop_token_ids=[], max_tokens={rnd.randint(16, 2048)}, min_tokens=0, "
                    "logprobs=None, skip_special_tokens=True), lora_request: None.\n")
            f.write(f"(APIServer pid=14990) INFO {ts} [async_llm.py:578] Added request {rid}-{rnd.getrandbits(32):08x}.\n")
            lines += 2
            if i % 97 == 0:
                f.write(f"(APIServer pid=14990) INFO {ts} [async_llm.py:922] Aborted request(s) {rid}-00000000.\n")
                f.write(f"(APIServer pid=14990) INFO {ts} [async_llm.py:783] Request {rid} aborted.\n")
                lines += 2
            else:
                f.write(f'INFO:     10.0.0.{i % 250}:{30000 + i % 30000} - "POST /v1/chat/completions HTTP/1.1" 200 OK\n')
                lines += 1
            if i % 50 == 0:
                f.write(f"(APIServer pid=14990) INFO {ts} [loggers.py:335] Engine 000: Avg prompt throughput: 1234.5 tokens/s, "
                        "Avg generation throughput: 345.6 tokens/s, Running: 12 reqs, Waiting: 0 reqs, GPU KV cache usage: 41.0%, "
                        "Prefix cache hit rate: 12.5%, MM cache hit rate: 50.0%\n")
                f.write('INFO:     127.0.0.1:40000 - "GET /health HTTP/1.1" 200 OK\n')
                lines += 2
            if i % 5000 == 2500:
                f.write(f"(APIServer pid=14990) ERROR {ts} [serving.py:274] Error with model error=ErrorInfo(message='The model "
                        "`qwen3-vl` does not exist. Valid aliases: Qwen3-VL-8B.', type='NotFoundError', param='model', code=404)\n")
                f.write('INFO:     10.0.0.9:41000 - "POST /v1/chat/completions HTTP/1.1" 404 Not Found\n')
                lines += 2
    return lines


def gen_v06(path: Path, n: int, seed: int = 2) -> int:
    rnd = random.Random(seed)
    lines = 0
    questions = ["What is in this picture?", "Describe the chart.", "Read the invoice total.", "Compare the two photos."]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
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
    return lines


def bench_diag(path: Path, rs) -> tuple[float, int]:
    pipe = Pipeline(rs, keep_traces=False)
    t0 = time.process_time()
    pipe.scan_path(str(path))
    pipe.finish()
    return time.process_time() - t0, pipe.stats.lines


def bench_grep(path: Path, rs) -> float | None:
    if shutil.which("grep") is None:
        return None
    needles = sorted({n for r in rs.rules for n in r.needles} | {"Received request", "Added request", "Aborted request", "HTTP/1.1\""})
    pattern = "|".join(re.escape(n).replace("\\ ", " ") for n in needles)
    t0 = time.perf_counter()
    subprocess.run(["grep", "-cE", pattern, str(path)], capture_output=True, check=False, env={**os.environ, "LC_ALL": "C"})
    return time.perf_counter() - t0


def bench_naive(path: Path, rs) -> tuple[float, int]:
    pats = [p for r in rs.rules for p in r.patterns]
    hits = 0
    t0 = time.process_time()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            for p in pats:
                if p.search(line):
                    hits += 1
    return time.process_time() - t0, hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200_000)
    args = ap.parse_args()
    rs = rules.load()
    tmp = Path(tempfile.mkdtemp(prefix="diag-bench-"))
    try:
        for name, gen in (("vLLM 0.32-style, request logging", gen_v032), ("vLLM 0.6-style, prompts logged", gen_v06)):
            path = tmp / "bench.log"
            n_lines = gen(path, args.requests)
            mb = path.stat().st_size / 1e6
            d_s, d_lines = bench_diag(path, rs)
            assert d_lines == n_lines, (d_lines, n_lines)
            g_s = bench_grep(path, rs)
            sample = tmp / "sample.log"
            with open(path, encoding="utf-8") as src, open(sample, "w", encoding="utf-8") as dst:
                for i, line in enumerate(src):
                    if i >= 50_000:
                        break
                    dst.write(line)
            k = min(n_lines, 50_000)
            n_s, _ = bench_naive(sample, rs)
            n_s_scaled = n_s * n_lines / k
            print(f"\n== {name}: {n_lines:,} lines, {mb:.1f} MB ==")
            print(f"diag scan  : {n_lines / d_s:12,.0f} lines/s  {mb / d_s:7.1f} MB/s  (CPU time {d_s:.2f} s, one core)")
            if g_s:
                print(f"grep -cE   : {n_lines / g_s:12,.0f} lines/s  {mb / g_s:7.1f} MB/s  (wall {g_s:.2f} s)   diag/grep = {g_s / d_s:.3f}")
            print(f"naive loop : {n_lines / n_s_scaled:12,.0f} lines/s  {mb / n_s_scaled:7.1f} MB/s  ({len([p for r in rs.rules for p in r.patterns])} "
                  f"patterns on every line; measured on {k:,} lines)   diag/naive = {n_s_scaled / d_s:.1f}x")
            print(f"target 1,000,000 lines/s: {'met' if n_lines / d_s >= 1e6 else 'NOT met'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
