"""Checks that look at the machine: processes and ports, the GPU through NVML, logs, disk, memory."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from diag.doctor import ERROR, FAIL, OK, SKIP, WARN, Context, Result
from diag.fsname import display
from diag.gpu import read_gpus

FLAGS = ("--max-model-len", "--gpu-memory-utilization", "--kv-cache-dtype", "--limit-mm-per-prompt", "--served-model-name",
         "--enable-log-requests", "--port", "--host", "--tensor-parallel-size", "--max-num-seqs", "--model", "-m", "--mmproj",
         "-c", "--ctx-size", "-ngl", "--n-gpu-layers", "--session-len", "--cache-max-entry-count")
GiB = 1024 ** 3


def _local(url: str) -> tuple[bool, int]:
    u = urlparse(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return (u.hostname or "") in ("127.0.0.1", "localhost", "::1", "0.0.0.0", ""), port


def parse_flags(cmdline: list[str]) -> dict[str, str]:
    """`--flag value`, `--flag=value` and bare switches; the positional model after `serve`."""
    out: dict[str, str] = {}
    for i, a in enumerate(cmdline):
        if a == "serve" and i + 1 < len(cmdline) and not cmdline[i + 1].startswith("-"):
            out.setdefault("model", cmdline[i + 1])
        if not a.startswith("-"):
            continue
        key, eq, val = a.partition("=")
        if key not in FLAGS or (key == "-m" and i > 0 and "python" in os.path.basename(cmdline[i - 1])):
            continue  # `python -m module` is not llama-server's `-m model`
        if eq:
            out[key] = val
        elif i + 1 < len(cmdline) and not cmdline[i + 1].startswith("--"):
            out[key] = cmdline[i + 1]
        else:
            out[key] = "true"
    return out


def _kind(cmd: str) -> str | None:
    low = cmd.lower()
    if "vllm" in low and (" serve" in low or "api_server" in low or "vllm_shim" in low):
        return "vllm"
    if "llama-server" in low or "llama_cpp.server" in low:
        return "llamacpp"
    if "lmdeploy" in low and "serve" in low:
        return "lmdeploy"
    return None


# -- processes ---------------------------------------------------------------------------------
def check_processes(ctx: Context) -> Result:
    import psutil

    local, port = _local(ctx.url)
    if not local:
        return Result("processes", SKIP, f"{ctx.url} is on another host; run diag doctor there to see its processes")
    listeners = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    if not listeners:
        starting = _starting_server(port)
        if starting is not None:
            sp, kind, age = starting
            return Result("processes", WARN, f"{kind} pid {sp} is starting: not listening on port {port} yet (up {age:.0f} s)",
                          [f"pid {sp}: {' '.join(psutil.Process(sp).cmdline())[:300]}"],
                          remedy="Wait until its log says 'Application startup complete' (vLLM) or 'model loaded' (llama.cpp); "
                                 "vLLM takes 40 s to several minutes. If it never gets there, its log says why.")
        return Result("processes", FAIL if ctx.reachable is not True else WARN, f"no process listens on port {port}",
                      remedy=f"Start the inference server on port {port}, or fix --url. A server that crashed at startup "
                             "says why in its log (`diag doctor --check logs --log PATH`).")
    pid = next((c.pid for c in listeners if c.pid), None)
    if pid is None:
        return Result("processes", WARN, f"port {port} is in use by a process diag may not inspect",
                      remedy="Run diag doctor as root or as the server's user to see its processes.")
    try:
        p = psutil.Process(pid)
        cmd = p.cmdline()
        name = p.name()
    except psutil.Error as exc:
        return Result("processes", WARN, f"the listener (pid {pid}) vanished or is not readable: {exc}")
    cmd_s = " ".join(shlex.quote(c) for c in cmd)[:400]
    details = [f"pid {pid} ({name}) listens on port {port}: {cmd_s}"]
    kind = _kind(" ".join(cmd))
    # A server started by a wrapper (bash, setsid) can be the child; look one level up too.
    if kind is None:
        try:
            parent = p.parent()
            if parent is not None and _kind(" ".join(parent.cmdline())):
                kind = _kind(" ".join(parent.cmdline()))
        except psutil.Error:
            pass
    if kind is None:
        return Result("processes", FAIL, f"port {port} is held by `{name}` (pid {pid}), which is not an inference server", details,
                      remedy="Stop that process or move the inference server to another --port; then point --url at it.")
    ctx.server_pid = pid
    ctx.flags = parse_flags(cmd)
    try:
        tree = [p] + p.children(recursive=True)
    except psutil.Error:
        tree = [p]
    ctx.server_pids = {q.pid for q in tree}
    rss = 0
    names = []
    for q in tree:
        try:
            rss += q.memory_info().rss
            title = " ".join(q.cmdline()) or q.name()
            names.append(f"{q.pid} {title[:60]}")
        except psutil.Error:
            continue
    details.append("process tree: " + "; ".join(names))
    details.append("flags: " + (", ".join(f"{k} {v}" for k, v in ctx.flags.items()) or "(defaults)"))
    details.append(f"RSS of the tree: {rss / GiB:.2f} GiB")
    status, problems, remedies = OK, [], []
    if kind == "vllm":
        engine = [n for n in names if "EngineCore" in n]
        if not engine:
            status = FAIL
            problems.append("the vLLM API server runs but its EngineCore process is gone")
            remedies.append("The engine died while the API server stayed up (vLLM #39863): requests hang or fail and "
                            "/health may still answer. Restart the server (stop its whole process group) and look at the log "
                            "for the engine's last error (often the kernel OOM killer: journalctl -k | grep -i kill).")
        if "--enable-log-requests" not in ctx.flags and ctx.version and ctx.version >= "0.10.1":
            problems.append("request logging is off (--enable-log-requests), so diag cannot trace requests")
            remedies.append("Add --enable-log-requests to the vLLM command line.")
            status = WARN if status == OK else status
    try:
        soft, _hard = p.rlimit(psutil.RLIMIT_NOFILE)
        details.append(f"open-file limit: {soft}")
        if 0 < soft < 4096:
            problems.append(f"open-file limit {soft} is low for a busy server")
            remedies.append("Raise it (systemd LimitNOFILE=65536, docker --ulimit nofile=65536).")
            status = WARN if status == OK else status
    except (psutil.Error, AttributeError):
        pass
    size = f"{rss / GiB:.1f} GiB" if rss >= GiB else f"{rss / 1024 ** 2:.0f} MiB"  # (a small model is not "0.0 GiB")
    summary = f"{kind} pid {pid} on port {port}, {len(tree)} processes, RSS {size}"
    if problems:
        summary = "; ".join(problems)
    return Result("processes", status, summary, details, remedy=" ".join(remedies) or None)


def _starting_server(port: int) -> tuple[int, str, float] | None:
    """An inference server process configured for `port` that does not listen yet."""
    import psutil

    defaults = {"vllm": 8000, "llamacpp": 8080, "lmdeploy": 23333}
    for p in psutil.process_iter(["pid", "cmdline", "create_time", "ppid"]):
        cmd = p.info.get("cmdline") or []
        kind = _kind(" ".join(cmd))
        if kind is None or "bash" in os.path.basename(cmd[0] if cmd else ""):
            continue
        want = parse_flags(cmd).get("--port")
        if (int(want) if want and want.isdigit() else defaults[kind]) == port:
            return p.info["pid"], kind, time.time() - (p.info.get("create_time") or time.time())
    return None


# -- GPU ---------------------------------------------------------------------------------------
def check_gpu(ctx: Context) -> Result:
    """Judge `diag.gpu`'s reading (the same one the dashboard and /metrics show): memory held by
    processes other than the server, a full card with no server, heat, uncorrected ECC errors."""
    import psutil

    g = read_gpus(ctx.nvml)
    if g["problem"] == "binding":
        return Result("gpu", SKIP, f"{g['reason']}; pip install nvidia-ml-py")
    if g["problem"] == "driver":
        return Result("gpu", SKIP, g["reason"],
                      ["NVML could not be initialised: no NVIDIA GPU, no driver, or the GPU is hidden from this "
                       "process (containers need --gpus; systemd units must not set PrivateDevices=)."])
    if not g["available"]:
        return Result("gpu", ERROR, g["reason"])
    details = [f"driver {g['driver']}, {len(g['gpus'])} GPU(s)"]
    problems: list[tuple[str, str, str]] = []  # (status, text, remedy)
    for d in g["gpus"]:
        i, used_b, total_b, temp = d["index"], d["memory_used_bytes"], d["memory_total_bytes"], d["temperature_celsius"]
        util = round(d["utilization_ratio"] * 100) if d["utilization_ratio"] is not None else None
        memory = f"{used_b / GiB:.1f}/{total_b / GiB:.1f} GiB" if used_b is not None and total_b else "?"
        details.append(f"GPU {i} {d['name']}: memory {memory}, utilisation {_fmt(util, '%')}, temperature {_fmt(temp, ' C')}")
        other = 0
        for proc in d["processes"]:
            used = proc["memory_bytes"] or 0
            try:
                cmd = " ".join(psutil.Process(proc["pid"]).cmdline())[:80] or "?"
            except psutil.Error:
                cmd = "(not visible from here)"
            mine = proc["pid"] in ctx.server_pids
            details.append(f"  pid {proc['pid']} {used / GiB:.2f} GiB{' (the inference server)' if mine else ''}: {cmd}")
            if ctx.server_pids and not mine:
                other += used
        if other > GiB:
            problems.append((WARN, f"GPU {i}: {other / GiB:.1f} GiB held by processes other than the inference server",
                             "Other processes reduce what vLLM can use (its startup fails or it runs out of KV cache): stop "
                             "them, or lower --gpu-memory-utilization to fit beside them."))
        if used_b is not None and total_b and used_b / total_b > 0.98 and not ctx.server_pids:
            problems.append((WARN, f"GPU {i} memory is {used_b / total_b:.0%} used",
                             "vLLM reserves --gpu-memory-utilization of the card on purpose; if no server should be "
                             "running, find the holder in the process list above."))
        if isinstance(temp, (int, float)) and temp >= 87:
            problems.append((WARN, f"GPU {i} runs at {temp} C", "Check cooling and airflow; the GPU will throttle."))
        ecc = d["ecc_uncorrected"]
        if ecc is not None:
            details.append(f"  uncorrected ECC errors since boot: {ecc}")
            if ecc > 0:
                problems.append((FAIL, f"GPU {i} has {ecc} uncorrected ECC errors",
                                 "Uncorrected memory errors corrupt results and crash processes: drain the GPU and reset "
                                 "it (nvidia-smi -r); if they return, the board needs service."))
        if d["retired_pages"] is not None:
            details.append(f"  pages retired for double-bit ECC: {d['retired_pages']}")
    if problems:
        worst = FAIL if any(s == FAIL for s, _, _ in problems) else WARN
        return Result("gpu", worst, "; ".join(t for _, t, _ in problems), details, remedy=" ".join(r for _, _, r in problems))
    return Result("gpu", OK, details[0], details)


def _fmt(v: Any, unit: str) -> str:
    return f"{v}{unit}" if isinstance(v, (int, float)) else "n/a"


# -- logs --------------------------------------------------------------------------------------
def scan_logs(ctx: Context) -> Any:
    """Run the recent part of each configured log through the pipeline (once per doctor run)."""
    if ctx._log_pipe is not None or not (ctx.logs or ctx.journals):
        return ctx._log_pipe
    from diag.analysis.rules import ruleset as rules
    from diag.pipeline import Pipeline

    since = time.time() - ctx.log_minutes * 60
    pipe = Pipeline(rules.load(ctx.rules_dirs), since=since)
    for path in ctx.logs:
        if os.path.isfile(path) and os.access(path, os.R_OK):
            pipe.scan_path(path, None, tail_bytes=16 << 20)
    for spec in ctx.journals:  # a server that logs to journald: the same window of its unit's journal
        error = _scan_journal(pipe, spec, since)
        if error:
            ctx.journal_errors[spec.name] = error
    pipe.finish()
    for f in pipe.findings.sorted():
        m = f.fields.get("model")
        if f.rule.id == "unknown-model" and m and m not in ctx.log_models:
            ctx.log_models.append(m)
    for facts in pipe.facts.by_source.values():
        ctx.log_facts.update({k: v for k, v in facts.items() if v is not None})
    ctx._log_pipe = pipe
    return pipe


def _scan_journal(pipe: Any, spec: Any, since: float) -> str | None:
    """The unit's journal since `since` through the pipeline, as one source named `journal:UNIT`
    (the daemon's name for it); its newest 50,000 entries at most, as a file's last 16 MiB."""
    from diag.ingest.journalexport import read_recent

    return read_recent(spec, since, 50_000, lambda f: pipe.scan_named(spec.name, f, spec.format))


def check_logs(ctx: Context) -> Result:
    from diag.doctor.checks import kernel

    klog = kernel.read()
    kfound = kernel.findings(klog, ctx.server_pids, ctx.rules_dirs)
    kdetail = (f"kernel log ({klog.source}, last hour): {len(kfound)} OOM-killer/Xid line(s) about the server"
               if klog.source else f"kernel log not read: {klog.skipped}")
    if not ctx.logs and not ctx.journals and not kfound:
        return Result("logs", SKIP, "no logs configured (--log PATH or --journal UNIT, repeatable)", [kdetail])
    details, problems = [kdetail], []
    for rid, text in kfound[:10]:
        details.append(f"kernel: {rid}: {text}")
    if kfound:
        problems.append((FAIL, f"the kernel log shows {', '.join(sorted({r for r, _ in kfound}))} in the last hour",
                         "The kernel killed or faulted the server's processes, which the server's own log cannot say "
                         "(it logs only that the engine exited). OOM killer: give the service more memory or lower its use "
                         "(--swap-space, --cpu-offload-gb, fewer --max-num-seqs). Xid: see `diag doctor --check gpu`; "
                         "Xid 79/74/48 point at the hardware."))
    now = time.time()
    for path in ctx.logs:
        name = display(path)  # diag.fsname: no control character or undecodable byte reaches the report
        if not os.path.exists(path):
            problems.append((FAIL, f"{name} does not exist", "Point --log at the file the server writes (its stdout/stderr "
                                                             "redirect, or journalctl -u UNIT -o cat > file)."))
            continue
        if not os.access(path, os.R_OK):
            problems.append((FAIL, f"{name} is not readable", "Run as a user that can read it (group adm/systemd-journal) "
                                                             "or adjust its permissions."))
            continue
        age = (now - os.path.getmtime(path)) / 60
        details.append(f"{name}: {os.path.getsize(path)} bytes, last written {age:.0f} min ago")
        if age > ctx.log_minutes:
            problems.append((WARN, f"{name} has not been written for {age:.0f} minutes",
                             "Is the server still logging to this file (log rotation, a restarted container)?"))
    pipe = scan_logs(ctx)
    for spec in ctx.journals:
        error = ctx.journal_errors.get(spec.name)
        if error:
            problems.append((FAIL, f"{spec.name}: {error}", "Run diag doctor as root or as a member of the systemd-journal "
                                                             "group, or give the server's log file with --log."))
            continue
        lines = next((r.lines for r in pipe.sources if r.path == spec.name), 0) if pipe is not None else 0
        details.append(f"{spec.name}: {lines} line(s) in the last {ctx.log_minutes:g} minutes")
        if not lines:
            problems.append((WARN, f"{spec.name} has no entries in the last {ctx.log_minutes:g} minutes",
                             f"Is the server running as {spec.unit} (systemctl status {spec.unit})? A unit logging to a "
                             "file rather than the journal is checked with --log."))
    bad = []
    if pipe is not None:
        facts = ctx.log_facts
        keys = ("version", "model", "max_model_len", "kv_cache_tokens", "max_concurrency", "concurrency_at_tokens")
        if any(k in facts for k in keys):
            details.append("startup facts: " + ", ".join(f"{k} {facts[k]}" for k in keys if k in facts))
        if "max_concurrency" in facts:
            details.append(f"the KV cache holds about {facts['max_concurrency']:g} requests of {facts.get('concurrency_at_tokens', '?')} "
                           "tokens at once; more wait in the queue")
        for f in pipe.findings.sorted():
            line = f"{f.rule.severity} {f.rule.id} x{f.count}: {f.summary}"
            details.append(line)
            if f.rule.severity in ("error", "critical"):
                bad.append(f)
        if bad:
            problems.append((FAIL, "; ".join(f"{f.rule.title} (x{f.count})" for f in bad[:4]),
                             " ".join(f"[{f.rule.id}] {f.rule.remedy}" for f in bad[:4])))
        elif any(f.rule.severity == "warning" for f in pipe.findings.sorted()):
            problems.append((WARN, "warnings in the recent log", "See the details (-v)."))
    if problems:
        worst = FAIL if any(s == FAIL for s, _, _ in problems) else WARN
        return Result("logs", worst, "; ".join(t for _, t, _ in problems), details, remedy=" ".join(r for _, _, r in problems))
    what = f"{len(ctx.logs)} log(s)" + (f" and {len(ctx.journals)} journal(s)" if ctx.journals else "")
    return Result("logs", OK, f"no errors in the last {ctx.log_minutes:g} minutes of {what}", details)


# -- host --------------------------------------------------------------------------------------
def check_host(ctx: Context) -> Result:
    import psutil

    from diag.daemon.config import default_state_dir

    details, problems = [], []
    vm = psutil.virtual_memory()
    details.append(f"memory: {vm.available / GiB:.1f} GiB available of {vm.total / GiB:.1f} GiB")
    if vm.available < 2 * GiB or vm.available / vm.total < 0.05:
        problems.append(f"only {vm.available / GiB:.1f} GiB of memory available")
    paths = {"state dir": ctx.state_dir or str(default_state_dir())}
    model_dir = ctx.flags.get("model") or ctx.flags.get("--model") or ctx.flags.get("-m")
    if not model_dir:
        model_dir = next((r for r in ctx.model_roots.values() if r and r.startswith("/")), None)
    if model_dir:
        paths["model dir"] = model_dir
    for label, p in paths.items():
        q = Path(p)
        while not q.exists() and q != q.parent:
            q = q.parent
        try:
            du = psutil.disk_usage(str(q))
        except OSError as exc:
            details.append(f"{label} {p}: {exc}")
            continue
        details.append(f"{label} {p}: {du.free / GiB:.1f} GiB free of {du.total / GiB:.1f} GiB")
        if du.free < 2 * GiB or du.percent > 97:
            problems.append(f"{label} {p} has only {du.free / GiB:.1f} GiB free")
    if problems:
        return Result("host", WARN, "; ".join(problems), details,
                      remedy="Free disk space (old logs, caches such as ~/.cache/vllm and ~/.cache/huggingface) or memory "
                             "(other processes): a full disk stops logging and state, low memory gets workers OOM-killed.")
    return Result("host", OK, details[0], details)

