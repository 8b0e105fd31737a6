"""A log writer for the daemon tests: vLLM 0.32-format request lines at a steady rate, with rotations.

python daemon_writer.py LOG N_REQUESTS LINES_PER_SECOND PLAN [GATE]
PLAN: comma-separated `request_index=rename|copytruncate` (logrotate's two ways), e.g. 5000=rename,9000=copytruncate
GATE: a file the test writes a number into; rotation k waits until that number is >= k.
Each request writes Received, Added and a uvicorn access line; ids are chatcmpl-<index as 16 hex>.
"""

import os
import shutil
import sys
import time

log, n, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
plan = dict(x.split("=") for x in sys.argv[4].split(",") if x) if len(sys.argv) > 4 else {}
plan = {int(k): v for k, v in plan.items()}
gate = sys.argv[5] if len(sys.argv) > 5 else None


def allowed() -> int:
    try:
        with open(gate, encoding="ascii") as g:
            return int(g.read() or 0)
    except (OSError, ValueError):
        return 0


f = open(log, "a", encoding="utf-8")
rotations = 0
start = time.time()
written = 0
for i in range(n):
    action = plan.get(i)
    if action:
        f.flush()
        rotations += 1
        while gate and allowed() < rotations:
            time.sleep(0.01)
        if action == "rename":
            os.rename(log, f"{log}.{rotations}")
            f.close()
            f = open(log, "a", encoding="utf-8")
        elif action == "copytruncate":
            shutil.copyfile(log, f"{log}.{rotations}")
            os.truncate(log, 0)  # the writer keeps its O_APPEND handle: next writes start at 0
    ts = time.strftime("%m-%d %H:%M:%S")
    rid = f"chatcmpl-{i:016x}"
    f.write(f"(APIServer pid=4242) INFO {ts} [request_logger.py:65] Received request {rid}: params: SamplingParams(n=1, "
            f"temperature=0.7, max_tokens={16 + i % 100}), lora_request: None.\n"
            f"(APIServer pid=4242) INFO {ts} [async_llm.py:578] Added request {rid}-{i % 0xffffffff:08x}.\n"
            f'INFO:     127.0.0.1:{20000 + i % 40000} - "POST /v1/chat/completions HTTP/1.1" 200 OK\n')
    written += 3
    if written % 150 == 0:
        f.flush()
        ahead = written / rate - (time.time() - start)
        if ahead > 0:
            time.sleep(ahead)
f.close()
print(f"{written} lines in {time.time() - start:.2f} s ({written / (time.time() - start):.0f} lines/s), {rotations} rotations")
