"""`diag scan DIR` and compressed rotations: what a post-mortem gets handed.

An unpacked support bundle is a directory tree of logs, their rotations (gzip, and bzip2 or xz
where logrotate's compresscmd says so) and other files (a screenshot, a config, the tool's own
dot-files). These tests build such a tree from real corpus logs and check that scanning the
directory finds exactly what scanning its log files one by one finds, that binary and hidden
files are left out with one line, and that what Python cannot read (zstd) or what is cut short
says so in one line with exit status 2.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CORPUS

REAL = CORPUS / "vllm" / "real-0.32.0-cpu"
# a PNG's first bytes (the signature and the IHDR chunk of a 1x1 image): NULs, no decoder of ours takes it
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108020000009077") + b"\x00" * 64


def _scan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diag", "scan", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def _doc(r: subprocess.CompletedProcess) -> dict:
    d = json.loads(r.stdout)
    d["stats"].pop("seconds", None)
    return d


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """var/log/vllm/{vllm.log, vllm.log.1.gz, vllm.log.2.bz2, vllm.log.3.xz}, a proxy-less nginx dir,
    a screenshot, a hidden dir and file."""
    root = tmp_path / "bundle"
    logs = root / "var" / "log" / "vllm"
    logs.mkdir(parents=True)
    shutil.copy(REAL / "text.log", logs / "vllm.log")
    (logs / "vllm.log.1.gz").write_bytes(gzip.compress((REAL / "oom-kv-no-blocks.log").read_bytes()))
    (logs / "vllm.log.2.bz2").write_bytes(bz2.compress((REAL / "cold-start-text.log").read_bytes()))
    (logs / "vllm.log.3.xz").write_bytes(lzma.compress((REAL / "kv-pressure-then-worker-sigkill.log").read_bytes()))
    nginx = root / "var" / "log" / "nginx"
    nginx.mkdir()
    shutil.copy(CORPUS / "nginx" / "real-1.22.1" / "error.log", nginx / "error.log")
    (root / "screenshot.png").write_bytes(PNG)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("CUDA out of memory. Tried to allocate 2.00 GiB\n")  # would be a finding if read
    (logs / ".vllm.log.swp").write_text("CUDA out of memory. Tried to allocate 2.00 GiB\n")
    return root


def test_a_directory_is_its_log_files_in_path_order(bundle: Path):
    r = _scan("--json", str(bundle))
    assert r.returncode == 1, r.stderr  # the OOM rotation has critical findings
    whole = _doc(r)
    files = [f["path"] for f in whole["files"]]
    expect = [str(p) for p in sorted(p for p in bundle.rglob("*") if p.is_file() and ".git" not in p.parts
                                     and not p.name.startswith(".") and p.suffix != ".png")]
    assert files == expect
    # each compressed rotation read as the text it compresses
    by_path = {f["path"]: f for f in whole["files"]}
    assert by_path[str(bundle / "var/log/vllm/vllm.log.2.bz2")]["lines"] == (REAL / "cold-start-text.log").read_bytes().count(b"\n")
    assert by_path[str(bundle / "var/log/vllm/vllm.log.3.xz")]["format"] == "vllm"
    # the same document as the files named one by one
    one_by_one = _doc(_scan("--json", *expect))
    assert whole == one_by_one
    assert "cuda-oom" not in {f["rule"] for f in whole["findings"]}  # the hidden files were not read
    assert "kv-cache-no-blocks" in {f["rule"] for f in whole["findings"]}  # the .gz rotation was
    # the screenshot: one line, named
    assert r.stderr.count("binary file") == 1 and "screenshot.png" in r.stderr, r.stderr


def test_a_directory_without_logs_is_an_error(tmp_path: Path):
    (tmp_path / "only.png").write_bytes(PNG)
    r = _scan(str(tmp_path))
    assert r.returncode == 2
    assert "no log files in it" in r.stderr and "no log files to scan" in r.stderr


def test_a_link_loop_and_a_fifo_end(tmp_path: Path):
    shutil.copy(REAL / "text.log", tmp_path / "vllm.log")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)  # not followed
    os.mkfifo(tmp_path / "fifo")  # not a regular file: opening it would block
    (tmp_path / "again.log").symlink_to(tmp_path / "vllm.log")  # the same file: read once
    r = _scan("--json", str(tmp_path))
    assert r.returncode in (0, 1), r.stderr  # 1: text.log's own findings
    assert [f["path"] for f in _doc(r)["files"]] == [str(tmp_path / "again.log")]
    assert "the same file as" in r.stderr


def test_zstd_and_a_cut_archive_say_so(tmp_path: Path):
    z = tmp_path / "vllm.log.4.zst"
    z.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64))  # zstd's frame magic: what `zstd` writes first
    r = _scan(str(z))
    assert r.returncode == 2
    assert "zstd-compressed" in r.stderr and "zstd -dc" in r.stderr
    cut = tmp_path / "vllm.log.5.xz"
    cut.write_bytes(lzma.compress((REAL / "text.log").read_bytes())[:300])
    r = _scan(str(cut))
    assert r.returncode == 2 and "read failed" in r.stderr, r.stderr
    assert r.stderr.count("\n") <= 2  # one line (said once more by the report's note column is on stdout)


def test_a_bundle_in_a_directory_is_read_member_by_member(tmp_path: Path):
    """A zip's headers hold NULs, but it is no binary to leave out: its members are logs."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "collected.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.write(REAL / "oom-kv-no-blocks.log", "vllm/vllm.log")
    (tmp_path / "screenshot.png").write_bytes(PNG)
    r = _scan("--json", str(tmp_path))
    assert r.returncode == 1, r.stderr
    doc = _doc(r)
    assert [f["path"] for f in doc["files"]] == [f"{tmp_path / 'collected.zip'}:vllm/vllm.log"]
    assert "kv-cache-no-blocks" in {f["rule"] for f in doc["findings"]}
    assert "screenshot.png" in r.stderr


def test_a_log_with_runs_of_nuls_is_no_binary_file(tmp_path: Path):
    """A server started as `vllm serve … > vllm.log` (no O_APPEND) and rotated by logrotate's
    copytruncate goes on writing at its old offset: the file begins with a hole that reads as NULs.
    A crash leaves NULs at a log's end, and a restart appends after them. Named, such a file is read
    (the reader drops NULs); found in a directory it must be too, not left out as binary."""
    text = (REAL / "text.log").read_bytes()
    (tmp_path / "copytruncated.log").write_bytes(b"\x00" * 100_000 + text)  # the hole is longer than what is looked at
    (tmp_path / "short-hole.log").write_bytes(b"\x00" * 3000 + text)
    (tmp_path / "crashed.log").write_bytes(text[:2000] + b"\x00" * 1500 + text[2000:4000] + b"\x00" * 700)
    (tmp_path / "screenshot.png").write_bytes(PNG)
    (tmp_path / "core").write_bytes(b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x04\x00\x3e\x00" + b"\x00" * 4000)
    r = _scan("--json", str(tmp_path))
    assert r.returncode in (0, 1), r.stderr
    doc = _doc(r)
    names = sorted(("copytruncated.log", "short-hole.log", "crashed.log"))
    assert [f["path"] for f in doc["files"]] == [str(tmp_path / n) for n in names]
    assert all(f["format"] == "vllm" for f in doc["files"]), doc["files"]
    assert _doc(_scan("--json", *(str(tmp_path / n) for n in names))) == doc  # as when each is named
    assert "left out 2 binary file(s)" in r.stderr, r.stderr  # the screenshot and the core file still are


def _prefix_lines(cut: bytes, d) -> int:
    """How many whole lines the bytes of a cut archive decompress to (`d`: a decompressor)."""
    return d.decompress(cut).count(b"\n")


def test_a_cut_rotation_keeps_the_lines_before_the_cut(tmp_path: Path):
    """A rotation cut short (copied off while logrotate compressed it, a disk that filled) is read up to
    the cut and then says so, as a tar cut in a member keeps that member's lines: the lines before the
    break were decompressed, and must not be lost with the chunk the break fell in."""
    import tarfile
    import zlib

    text = (REAL / "text.log").read_bytes()
    gz = gzip.compress(text, mtime=0)
    xz = lzma.compress(text)
    (tmp_path / "vllm.log.1.gz").write_bytes(gz[: len(gz) * 2 // 3])
    (tmp_path / "vllm.log.2.xz").write_bytes(xz[: len(xz) * 2 // 3])
    big = gzip.compress(b"".join(p.read_bytes() for p in sorted(REAL.glob("*.log"))), mtime=0)
    assert len(zlib.decompressobj(31).decompress(big[: len(big) // 2])) > 1 << 17  # past what opening a member reads ahead
    cut_gz = big[: len(big) // 2]
    member = tmp_path / "member.log.gz"  # a whole tar holding a cut rotation
    member.write_bytes(cut_gz)
    with tarfile.open(tmp_path / "bundle.tar", "w") as tf:
        tf.add(member, "var/log/vllm.log.3.gz")
    member.unlink()
    r = _scan("--json", str(tmp_path))
    assert r.returncode == 2, r.stderr
    lines = {f["path"][len(str(tmp_path)) + 1:]: f["lines"] for f in _doc(r)["files"]}
    want_gz = _prefix_lines(gz[: len(gz) * 2 // 3], zlib.decompressobj(31))
    want_xz = _prefix_lines(xz[: len(xz) * 2 // 3], lzma.LZMADecompressor())
    assert 0 < want_gz < text.count(b"\n") and 0 < want_xz < text.count(b"\n")
    assert lines["vllm.log.1.gz"] == want_gz
    assert lines["vllm.log.2.xz"] == want_xz
    assert lines["bundle.tar:var/log/vllm.log.3.gz"] == _prefix_lines(cut_gz, zlib.decompressobj(31))
    assert r.stderr.count("read failed") == 3, r.stderr


def test_a_directory_given_twice_is_one_line(tmp_path: Path):
    """`diag scan logs/ logs` (a glob and a name, a link to it): read once, as a file given twice is,
    and said in one line, not one per file below it."""
    d = tmp_path / "logs"
    d.mkdir()
    for i in range(30):
        shutil.copy(REAL / "text.log", d / f"vllm-{i:02d}.log")
    (tmp_path / "link").symlink_to(d, target_is_directory=True)
    once = _scan("--json", str(d))
    r = _scan("--json", str(d), f"{d}/", str(tmp_path / "link"))
    assert _doc(r) == _doc(once)
    assert r.stderr.count("\n") == 2, r.stderr
    assert f"{d}/: the same directory as {d}; read once" in r.stderr
    assert f"{tmp_path / 'link'}: the same directory as {d}; read once" in r.stderr


def test_a_directory_below_that_cannot_be_listed_is_exit_status_2(tmp_path: Path):
    """What cannot be read is exit status 2 with a line saying why (README), a directory below the
    one given as much as a file: a scan that silently read less must not look like a clean one.
    (A path past PATH_MAX: root, who runs the suite, can list a directory of any mode.)"""
    shutil.copy(CORPUS / "seed-style" / "proxy.log", tmp_path / "proxy.log")
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(20):  # 20 × 250 characters: past the 4096 a path may have
            os.mkdir("d" * 250, dir_fd=fd)
            fd, old = os.open("d" * 250, os.O_RDONLY, dir_fd=fd), fd
            os.close(old)
        w = os.open("vllm.log", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        os.write(w, (REAL / "oom-kv-no-blocks.log").read_bytes())
        os.close(w)
    finally:
        os.close(fd)
    r = _scan("--json", str(tmp_path))
    assert "File name too long; not read" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.returncode == 2
    assert [f["path"] for f in _doc(r)["files"]] == [str(tmp_path / "proxy.log")]  # what could be read is reported


def test_a_zstd_tar_is_told_to_be_decompressed_to_a_file(tmp_path: Path):
    """`zstd -dc x | diag scan -` reads a zstd-compressed log, but a bundle on stdin is refused (its
    members are read from its path): for a .tar.zst the way that works is a file."""
    import tarfile

    z = tmp_path / "logs.tar.zst"
    zstd = shutil.which("zstd")
    if zstd is None:  # (what the real command writes first: its frame magic)
        z.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64))
    else:
        with tarfile.open(tmp_path / "packed.tar", "w") as t:
            t.add(REAL / "text.log", "vllm.log")
        subprocess.run([zstd, "-q", str(tmp_path / "packed.tar"), "-o", str(z)], check=True)
    r = _scan(str(z))
    assert r.returncode == 2
    assert f"zstd -d {z}, then scan the tar it writes" in r.stderr and "diag scan -" not in r.stderr, r.stderr
    if zstd is not None:  # what it says works
        subprocess.run([zstd, "-q", "-d", str(z)], check=True)
        r = _scan("--json", str(tmp_path / "logs.tar"))
        assert [f["path"] for f in _doc(r)["files"]] == [f"{tmp_path / 'logs.tar'}:vllm.log"], r.stderr


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress], ids=["gz", "bz2", "xz"])
def test_a_compressed_log_on_stdin_is_read_as_its_file_is(compress, tmp_path: Path):
    """`cat vllm.log.1.gz | diag scan -` (a rotation fetched with ssh, kubectl cp): read as the file
    it was, not as compressed bytes taken for log lines ('No findings')."""
    log = REAL / "oom-kv-no-blocks.log"
    piped = subprocess.run([sys.executable, "-m", "diag", "scan", "--json", "-"], input=compress(log.read_bytes()),
                           capture_output=True, timeout=120)
    named = _scan("--json", str(log))
    assert piped.returncode == named.returncode == 1, piped.stderr
    doc = json.loads(piped.stdout)
    doc["stats"].pop("seconds")
    assert json.dumps(doc, sort_keys=True) == json.dumps(_doc(named), sort_keys=True).replace(json.dumps(str(log)), '"-"')


# The seed setup's proxy (corpus README, seed-style): the lines of its source that write the log's.
PROXY_SERVER_PY = '''import logging
import requests
UPSTREAM = "http://localhost:3001"
def forward(handler, body):
    logging.info(f"Received POST request to {handler.path}")
    try:
        r = requests.post(UPSTREAM + handler.path, data=body, timeout=600)
    except requests.exceptions.ConnectionError as e:
        logging.error(f"Upstream not reachable: {e}")
        handler.send_error(503, "Upstream not reachable")
        return
    logging.info(f"Upstream response status: {r.status_code}")
'''


@pytest.mark.parametrize("packed", [False, True], ids=["directory", "tar"])
def test_code_and_configs_beside_a_log_are_no_logs(packed: bool, tmp_path: Path):
    """The proxy's directory holds proxy_server.py and chat.html beside proxy.log, a bundle the start
    script and nginx.conf: read as logs, the source's `logging.error("Upstream not reachable…")`
    doubled the proxy's finding. They are left out, in one line."""
    import tarfile

    app = tmp_path / "proxy"
    app.mkdir()
    shutil.copy(CORPUS / "seed-style" / "proxy.log", app / "proxy.log")
    (app / "proxy_server.py").write_text(PROXY_SERVER_PY)
    (app / "chat.html").write_text("<script>alert('Upstream not reachable: is vLLM running on :3001?')</script>\n")
    (app / "start.sh").write_text("nohup vllm serve Qwen/Qwen2-VL-7B-Instruct --port 3001 --max-model-len 8192 > vllm.log 2>&1 &\n")
    (app / "nginx.conf").write_text("location /v1/ { proxy_pass http://127.0.0.1:3001; }  # 502 Bad Gateway: connect() failed\n")
    target = app
    if packed:
        target = tmp_path / "proxy.tar"
        with tarfile.open(target, "w") as t:
            t.add(app, "proxy")
    r = _scan("--json", str(target))
    alone = _scan("--json", str(app / "proxy.log"))
    assert r.returncode == alone.returncode == 1, r.stderr
    want = _doc(alone)
    got = json.loads(json.dumps(_doc(r)).replace(f"{target}:proxy/", f"{app}/"))
    assert got == want
    assert r.stderr.count("\n") == 1 and f"{target}: left out 4 source or config file(s): " in r.stderr, r.stderr


def test_names_below_a_directory_are_printed_escaped(tmp_path: Path):
    """A directory's file names are whatever made them: control characters (a terminal's escapes),
    bytes that are no UTF-8. Every name printed (the report, the JSON, the left-out lines, an
    unreadable one) is its display form (diag.fsname), never the raw bytes."""
    top = os.fsencode(tmp_path / "bundle\x1b[2J")
    os.mkdir(top)
    log = (CORPUS / "seed-style" / "proxy.log").read_bytes()
    os.mkdir(top + b"/sub\x9b")
    for name in (b"ctl\x1b]0;owned\x07.log", b"bad\xff.log", b"sub\x9b/bidi\xe2\x80\xaegol.log"):
        Path(os.fsdecode(top + b"/" + name)).write_bytes(log)
    Path(os.fsdecode(top + b"/core\x1b[31m")).write_bytes(PNG)
    Path(os.fsdecode(top + b"/run\x07.sh")).write_text("echo\n")
    for json_out in (False, True):
        r = subprocess.run([sys.executable, "-m", "diag", "scan", *(["--json"] if json_out else []), os.fsdecode(top)],
                           capture_output=True, timeout=120)
        out = r.stdout + r.stderr
        assert r.returncode == 1, r.stderr
        for raw in (b"\x1b", b"\x07", b"\xff", b"\x9b", b"\xe2\x80\xae"):
            assert raw not in out, (raw, out)
        shown = f"{tmp_path}/bundle\\x1b[2J"
        err = r.stderr.decode()
        assert f"diag: {shown}: left out 1 binary file(s): {shown}/core\\x1b[31m\n" in err
        assert f"diag: {shown}: left out 1 source or config file(s): {shown}/run\\x07.sh\n" in err
    files = [f["path"] for f in json.loads(r.stdout)["files"]]
    assert files == [f"{shown}/bad\\xff.log", f"{shown}/ctl\\x1b]0;owned\\x07.log", f"{shown}/sub\\x9b/bidi\\xe2\\x80\\xaegol.log"]


def test_a_zstd_rotation_in_a_directory_says_how_to_read_it(tmp_path: Path):
    """logrotate with `compresscmd zstd`: the rotation is named in one line with the command that
    reads it, not left out as binary."""
    shutil.copy(REAL / "text.log", tmp_path / "vllm.log")
    (tmp_path / "vllm.log.1.zst").write_bytes(b"\x28\xb5\x2f\xfd\x00\x58" + os.urandom(64))
    r = _scan("--json", str(tmp_path))
    assert r.returncode == 2
    assert "vllm.log.1.zst: zstd-compressed" in r.stderr and "binary" not in r.stderr, r.stderr
    assert [f["path"] for f in _doc(r)["files"]][0] == str(tmp_path / "vllm.log")
