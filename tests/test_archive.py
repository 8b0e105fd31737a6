"""`diag scan` of a support bundle (`diag.ingest.archive`): a tar (plain, gzip, bzip2, xz) or a zip, as
Python's tarfile/zipfile and the real `tar`/`zip` commands pack it, is read member by member, each
member a source `<archive>:<member>` with the same findings and traces as the unpacked files.

The members are real logs from the corpus (vLLM 0.32, a rotated one gzipped, the seed proxy, nginx),
one saved as UTF-16 and one in a container runtime's CRI format, so every decoder a file goes
through is met inside an archive too.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import CORPUS, VLLM, scan

MTIME = 1717243200  # 2024-06-01 12:00 UTC (an even second: a zip keeps two-second times)


def _members() -> dict[str, bytes]:
    """name in the bundle → bytes, in the order they are packed."""
    proxy = (CORPUS / "seed-style" / "proxy.log").read_text()
    cri = "".join(f"2024-06-01T10:00:{i % 60:02d}.000000000Z stdout F {line}\n"
                  for i, line in enumerate((VLLM / "oom-kv-smaller-than-max-len.log").read_text().splitlines()))
    return {
        "logs/var/log/vllm/vllm.log": (VLLM / "text.log").read_bytes(),
        "logs/var/log/vllm/vllm.log.1.gz": gzip.compress((VLLM / "oom-kv-no-blocks.log").read_bytes(), mtime=0),
        "logs/var/log/vllm/kv.log": (VLLM / "kv-pressure-then-worker-sigkill.log").read_bytes(),
        "logs/opt/proxy/proxy.log": proxy.encode(),
        "logs/opt/proxy/nginx-access.log": (CORPUS / "nginx" / "real-1.22.1" / "access.log").read_bytes(),
        "logs/windows/vl.log": codecs.BOM_UTF16_LE + (VLLM / "vl.log").read_text().encode("utf-16-le"),
        "logs/containers/vllm-0.log": cri.encode(),
    }


def _unpacked(tmp: Path) -> Path:
    root = tmp / "unpacked"
    for name, data in _members().items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (MTIME, MTIME))
    (root / "logs" / "var" / "log" / "vllm" / "current.log").symlink_to("vllm.log")  # a link: not read again
    return root


def _py_tar(root: Path, dest: Path, mode: str) -> None:
    with tarfile.open(dest, mode) as t:
        for name in _members():
            t.add(root / name, name)
        t.add(root / "logs" / "var" / "log" / "vllm" / "current.log", "logs/var/log/vllm/current.log")
        t.add(root / "logs" / "opt", "logs/opt", recursive=False)  # a directory entry


def _py_zip(root: Path, dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(root / "logs" / "opt", "logs/opt/")
        for name in _members():
            z.write(root / name, name)


def _tool(*cmd: str, cwd: Path) -> None:
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"no `{cmd[0]}` command on this machine (apt-get install {cmd[0]})")
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, timeout=60)


PACKERS = {
    "tarfile-gz": ("logs.tgz", lambda root, dest: _py_tar(root, dest, "w:gz")),
    "tarfile": ("logs.tar", lambda root, dest: _py_tar(root, dest, "w")),
    "tarfile-bz2": ("logs.tar.bz2", lambda root, dest: _py_tar(root, dest, "w:bz2")),
    "tarfile-xz": ("logs.tar.xz", lambda root, dest: _py_tar(root, dest, "w:xz")),
    "zipfile": ("logs.zip", _py_zip),
    "tar-czf": ("logs.tar.gz", lambda root, dest: _tool("tar", "czf", str(dest), "logs", cwd=root)),
    "tar-cJf": ("logs.txz", lambda root, dest: _tool("tar", "cJf", str(dest), "logs", cwd=root)),
    "zip-ry": ("bundle.zip", lambda root, dest: _tool("zip", "-r", "-y", "-q", str(dest), "logs", cwd=root)),
}


def _regular_members(bundle: Path) -> list[str]:
    """The regular files in the bundle, in its order (the real tools pack in directory order)."""
    if bundle.suffix == ".zip":
        with zipfile.ZipFile(bundle) as z:
            return [i.filename for i in z.infolist() if not i.is_dir() and not stat.S_ISLNK(i.external_attr >> 16)]
    with tarfile.open(bundle) as t:
        return [m.name for m in t.getmembers() if m.isreg()]


def _same_modulo_names(doc: dict, bundle: Path, root: Path) -> str:
    d = json.loads(json.dumps(doc).replace(f"{bundle}:", f"{root}/"))
    d["stats"].pop("seconds")
    return json.dumps(d, sort_keys=True)


@pytest.mark.parametrize("packer", list(PACKERS))
def test_a_bundle_reads_each_member_as_the_unpacked_file_is_read(packer, tmp_path):
    """Whoever packed it, each regular member is a source of its own with the findings, traces,
    facts and locations the unpacked file gives, named `<archive>:<member>`; the link and the
    directory are passed over; the year of vLLM's `MM-DD` times comes from the member's own mtime (2024-06-01: the
    November before it)."""
    root = _unpacked(tmp_path)
    name, pack = PACKERS[packer]
    bundle = tmp_path / name
    pack(root, bundle)
    order = _regular_members(bundle)
    assert sorted(order) == sorted(_members())  # (the link and the directory are no regular members)
    doc = scan(bundle)
    want = scan(*(root / m for m in order))
    assert [f["path"] for f in doc["files"]] == [f"{bundle}:{m}" for m in order]
    assert _same_modulo_names(doc, bundle, root) == _same_modulo_names(want, bundle, root)
    formats = {f["path"].rsplit("/", 1)[1]: f["format"] for f in doc["files"]}
    assert formats == {"vllm.log": "vllm", "vllm.log.1.gz": "vllm", "kv.log": "vllm", "proxy.log": "proxy",
                       "nginx-access.log": "nginx", "vl.log": "vllm", "vllm-0.log": "vllm"}
    assert {"kv-cache-no-blocks", "upstream-closed", "unknown-model"} <= {f["rule"] for f in doc["findings"]}
    assert any(loc["path"] == f"{bundle}:logs/var/log/vllm/vllm.log.1.gz" for f in doc["findings"] for loc in f["locations"])
    vllm_traces = [t for t in doc["traces"] if t["source"] == f"{bundle}:logs/var/log/vllm/vllm.log"]
    assert vllm_traces and all(t["received_at"].startswith("2023-11-22") for t in vllm_traces if t["received_at"])


def _diag(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diag", "scan", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_a_truncated_tgz_keeps_the_members_read_before_it_breaks_in_one_line(tmp_path):
    """`tar czf` cut short (a copy that ran out of disk, a download cut off): the members before the
    cut are in the report, the one it breaks in keeps the lines read, and stderr has one line
    naming it; exit 2 as for any input that cannot be read."""
    root = _unpacked(tmp_path)
    whole = tmp_path / "whole.tgz"
    _py_tar(root, whole, "w:gz")
    cut = tmp_path / "cut.tgz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    r = _diag("--json", str(cut))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"diag: {cut}:logs/") and "truncated or corrupt" in r.stderr
    files = json.loads(r.stdout)["files"]
    assert [f["path"] for f in files] == [f"{cut}:{m}" for m in list(_members())[: len(files)]]
    assert all(f["lines"] > 0 for f in files) and "error" in files[-1] and all("error" not in f for f in files[:-1])
    assert 2 <= len(files) < len(_members())
    full = {f["path"].split(":", 1)[1]: f["lines"] for f in scan(whole)["files"]}
    assert all(f["lines"] == full[f["path"].split(":", 1)[1]] for f in files[:-1])


def test_a_corrupt_tar_header_and_a_truncated_zip_are_one_line_each(tmp_path):
    """A plain tar whose second header is overwritten: tarfile lists nothing past it quietly, and diag
    says where it stopped. A zip cut short has no directory: nothing in it can be found."""
    root = _unpacked(tmp_path)
    tar = tmp_path / "bad.tar"
    _py_tar(root, tar, "w")
    with tarfile.open(tar) as t:
        second = t.getmember("logs/var/log/vllm/vllm.log.1.gz").offset  # (its header)
    data = bytearray(tar.read_bytes())
    data[second:second + 512] = b"\x07garbage" * 64
    tar.write_bytes(bytes(data))
    z = tmp_path / "cut.zip"
    _py_zip(root, tmp_path / "whole.zip")
    z.write_bytes((tmp_path / "whole.zip").read_bytes()[:5000])
    r = _diag("--json", str(tar), str(z))
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"diag: {tar}: corrupt tar archive after {tar}:logs/var/log/vllm/vllm.log")
    assert lines[1].startswith(f"diag: {z}: truncated or corrupt zip archive")
    files = json.loads(r.stdout)["files"]
    assert [(f["path"], f["lines"] > 0, "error" in f) for f in files] == [
        (f"{tar}:logs/var/log/vllm/vllm.log", True, False), (str(tar), False, True), (str(z), False, True)]


def test_an_encrypted_zip_member_is_one_line_and_the_others_are_read(tmp_path):
    if shutil.which("zip") is None:
        pytest.skip("no `zip` command (apt-get install zip): zipfile cannot write an encrypted member")
    root = _unpacked(tmp_path)
    bundle = tmp_path / "support.zip"
    _tool("zip", "-q", "-P", "secret", str(bundle), "logs/var/log/vllm/vllm.log", cwd=root)
    _tool("zip", "-q", str(bundle), "logs/opt/proxy/proxy.log", cwd=root)  # added without a password
    r = _diag("--json", str(bundle))
    assert r.returncode == 2
    assert r.stderr == f"diag: {bundle}:logs/var/log/vllm/vllm.log: encrypted; not read\n"
    doc = json.loads(r.stdout)
    assert [(f["path"], f["lines"]) for f in doc["files"]] == [
        (f"{bundle}:logs/var/log/vllm/vllm.log", 0), (f"{bundle}:logs/opt/proxy/proxy.log", 40)]
    assert "upstream-closed" in {f["rule"] for f in doc["findings"]}


def test_member_names_are_escaped_like_file_names(tmp_path):
    """A member name is whoever packed it's text: ANSI escapes, a bell, a bidi override and a byte
    that is not UTF-8 are spelled as `diag.fsname.display` spells a file's name, in the report and
    the JSON document; `..` and an absolute name are only names."""
    text = (VLLM / "text.log").read_bytes()
    evil = "logs/\x1b[2J\x1b[31mred\x07\u202egol.log"
    bundle = tmp_path / "evil.tar"
    with tarfile.open(bundle, "w", format=tarfile.GNU_FORMAT) as t:
        for name in (evil, "../../etc/escape.log", "/abs/vllm.log", "logs/bad-\udcff.log"):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            t.addfile(info, io.BytesIO(text))
    for args in ([], ["--json"]):
        r = _diag(*args, str(bundle), cwd=tmp_path)
        assert r.returncode == 1, r.stderr  # (the log's own findings)
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\u202e" not in r.stdout
    doc = json.loads(r.stdout)
    assert [f["path"] for f in doc["files"]] == [
        f"{bundle}:logs/\\x1b[2J\\x1b[31mred\\x07\\xe2\\x80\\xaegol.log", f"{bundle}:../../etc/escape.log",
        f"{bundle}:/abs/vllm.log", f"{bundle}:logs/bad-\\xff.log"]
    assert all(f["format"] == "vllm" for f in doc["files"])
    assert {t["source"] for t in doc["traces"]} == {f["path"] for f in doc["files"]}


def test_a_nested_archive_is_named_and_passed_over(tmp_path):
    """A tar or zip inside the bundle (gzipped or not) is one line, "nested archive: unpack it"; the
    bundle's logs are still read."""
    text = (VLLM / "text.log").read_bytes()
    inner_tar, inner_zip = io.BytesIO(), io.BytesIO()
    with tarfile.open(fileobj=inner_tar, mode="w:gz") as t:
        info = tarfile.TarInfo("vllm.log")
        info.size = len(text)
        t.addfile(info, io.BytesIO(text))
    with zipfile.ZipFile(inner_zip, "w") as z:
        z.writestr("vllm.log", text)
    bundle = tmp_path / "outer.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner.tgz", inner_tar.getvalue())
        z.writestr("inner.zip", inner_zip.getvalue())
        z.writestr("vllm.log", text)
    r = _diag("--json", str(bundle))
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"diag: {bundle}:inner.tgz: nested archive: unpack it",
                                     f"diag: {bundle}:inner.zip: nested archive: unpack it"]
    assert [(f["path"], f["lines"]) for f in json.loads(r.stdout)["files"]] == [
        (f"{bundle}:inner.tgz", 0), (f"{bundle}:inner.zip", 0), (f"{bundle}:vllm.log", 216)]


def test_a_huge_member_is_cut_like_a_file_line(tmp_path):
    """A member that decompresses to 64 MiB without a newline (a small zip bomb): streamed, it is one
    line cut at --max-line-bytes, as the same bytes in a file would be."""
    bundle = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("zeros.log", "w") as f:
            block = b"A" * (1 << 20)
            for _ in range(64):
                f.write(block)
        z.writestr("vllm.log", (VLLM / "text.log").read_bytes())
    assert bundle.stat().st_size < 1 << 20
    r = _diag("--json", str(bundle))
    assert r.returncode == 1  # (the vLLM log's own error findings)
    assert r.stderr == f"diag: {bundle}:zeros.log: not recognised as a server log: its one line is not a vllm, llamacpp, " \
                       "lmdeploy, uvicorn, nginx or proxy log line, and no rule matched any (--format NAME forces a format)\n"
    files = json.loads(r.stdout)["files"]
    assert [(f["lines"], f["truncated_lines"], f.get("recognised", True)) for f in files] == [(1, 1, False), (216, 0, True)]


def test_scan_store_keys_members_by_the_archive(tmp_path):
    """`--store`: a member's rows are the archive's (scanned_path: its absolute path). Scanning the
    archive again replaces them, even when it no longer holds a member; the unpacked files are other files."""
    root = _unpacked(tmp_path)
    bundle = tmp_path / "logs.tgz"
    _py_tar(root, bundle, "w:gz")
    state = tmp_path / "state"

    def stored() -> dict:
        db = sqlite3.connect(state / "diag.sqlite3")
        try:
            return {t: dict(db.execute(f"SELECT scanned_path, count(*) FROM {t} GROUP BY 1").fetchall()) for t in ("findings", "traces")}
        finally:
            db.close()

    r = _diag("--store", str(state), "--json", str(bundle), cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    first = stored()
    assert first == {"findings": {str(bundle): sum(f["count"] for f in doc["findings"])}, "traces": {str(bundle): len(doc["traces"])}}
    assert _diag("--store", str(state), "logs.tgz", cwd=tmp_path).returncode == 1  # the same file by another name
    assert stored() == first
    with tarfile.open(bundle, "w:gz") as t:  # the bundle collected again, the proxy's log left out
        t.add(root / "logs/var/log/vllm/vllm.log", "logs/var/log/vllm/vllm.log")
    assert _diag("--store", str(state), str(bundle)).returncode == 1
    again = stored()
    assert set(again["findings"]) == {str(bundle)} and again["findings"][str(bundle)] < first["findings"][str(bundle)]
    db = sqlite3.connect(state / "diag.sqlite3")
    assert db.execute("SELECT count(*) FROM findings WHERE rule = 'upstream-closed'").fetchone() == (0,)
    db.close()


def test_a_bundle_on_stdin_is_one_line_asking_for_its_path(tmp_path):
    """A pipe is read once, and a zip's directory is at its end: `diag scan - < logs.tgz` says to give
    the path instead of reading binary headers and compressed bytes as log lines."""
    root = _unpacked(tmp_path)
    for name, pack in (PACKERS["tarfile-gz"], PACKERS["tarfile"], PACKERS["zipfile"]):
        bundle = tmp_path / name
        pack(root, bundle)
        r = subprocess.run([sys.executable, "-m", "diag", "scan", "-"], input=bundle.read_bytes(), capture_output=True, timeout=120)
        assert r.returncode == 2
        assert r.stderr == b"diag: -: an archive of several files on standard input: give its path (diag scan logs.tgz)\n"


def test_a_name_given_twice_is_read_once_and_entries_are_bounded(tmp_path, monkeypatch):
    """`tar rf` appends another copy under the same name: one source per name (the first). An
    archive of more entries than MAX_ENTRIES (here lowered to 6; directories count: tarfile keeps
    every header it reads) is read to that many and says so."""
    from diag.analysis.rules import ruleset as rules
    from diag.ingest import archive
    from diag.pipeline import Pipeline

    text = (VLLM / "text.log").read_bytes()
    bundle = tmp_path / "appended.tar"
    with tarfile.open(bundle, "w") as t:
        for name in ("a/vllm.log", "a/vllm.log", "a/other.log"):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            t.addfile(info, io.BytesIO(text))
        for i in range(10):
            t.addfile(_dir(f"d{i}"))
        info = tarfile.TarInfo("late.log")
        info.size = len(text)
        t.addfile(info, io.BytesIO(text))
    monkeypatch.setattr(archive, "MAX_ENTRIES", 6)
    pipe = Pipeline(rules.load())
    whole = pipe.scan_path(str(bundle))
    pipe.finish()
    assert [(s.path, s.lines, s.error) for s in pipe.sources] == [
        (f"{bundle}:a/vllm.log", 216, None),
        (f"{bundle}:a/vllm.log", 0, f"{bundle}:a/vllm.log: named twice in the archive; the first one read"),
        (f"{bundle}:a/other.log", 216, None),
        (str(bundle), 0, f"{bundle}: more than 6 entries; the rest not read")]
    assert (whole.lines, whole.error) == (432, f"{bundle}: more than 6 entries; the rest not read")


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def test_an_archive_without_files_is_listed_as_read(tmp_path):
    """A bundle of directories only (the logs were not collected): the archive is a source with no
    lines, so the report says it was read and found nothing, not silence."""
    bundle = tmp_path / "empty.tgz"
    with tarfile.open(bundle, "w:gz") as t:
        t.addfile(_dir("var/log/vllm"))
    empty_zip = tmp_path / "empty.zip"
    zipfile.ZipFile(empty_zip, "w").close()
    r = _diag("--json", str(bundle), str(empty_zip))
    assert r.returncode == 0 and r.stderr == ""
    assert json.loads(r.stdout)["files"] == [{"path": str(bundle), "format": "unknown", "lines": 0, "truncated_lines": 0},
                                             {"path": str(empty_zip), "format": "unknown", "lines": 0, "truncated_lines": 0}]


def test_a_corrupt_zip_member_says_so_in_one_escaped_line_and_the_next_is_read(tmp_path):
    """A member whose bytes were damaged (its CRC no longer matches): zipfile's message quotes the
    member's name, which here holds an escape sequence; the line stays one line of plain text."""
    text = (VLLM / "text.log").read_bytes()
    bundle = tmp_path / "damaged.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_STORED) as z:
        z.writestr("logs/\x1b]0;owned\x07.log", text)
        z.writestr("logs/vllm.log", text)
    data = bytearray(bundle.read_bytes())
    at = data.index(b"Received request") if b"Received request" in data else data.index(b"INFO")
    data[at:at + 4] = b"XXXX"
    bundle.write_bytes(bytes(data))
    r = _diag("--json", str(bundle))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "\x1b" not in r.stderr and "\x07" not in r.stderr
    assert r.stderr.startswith(f"diag: {bundle}:logs/\\x1b]0;owned\\x07.log: read failed: CorruptArchive: corrupt member (BadZipFile: Bad CRC-32")
    files = json.loads(r.stdout)["files"]
    assert [(f["path"], "error" in f) for f in files] == [(f"{bundle}:logs/\\x1b]0;owned\\x07.log", True), (f"{bundle}:logs/vllm.log", False)]
    assert files[1]["lines"] == 216


def test_a_zip_member_in_a_method_zipfile_cannot_read_is_passed_over_in_one_line(tmp_path):
    """Deflate64 (method 9: Windows Explorer's "Send to compressed folder" for large files) is no
    method of the standard library: that member is one line, the next one is read."""
    text = (VLLM / "text.log").read_bytes()
    bundle = tmp_path / "explorer.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_STORED) as z:
        z.writestr("big.log", text)
        z.writestr("vllm.log", text)
    data = bytearray(bundle.read_bytes())
    for sig, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # the first member's method, in both headers
        i = data.index(sig)
        data[i + at:i + at + 2] = (9).to_bytes(2, "little")
    bundle.write_bytes(bytes(data))
    r = _diag("--json", str(bundle))
    assert r.returncode == 2
    assert r.stderr == f"diag: {bundle}:big.log: compressed with a method diag cannot read (zip method 9); not read\n"
    assert [(f["path"], f["lines"]) for f in json.loads(r.stdout)["files"]] == [(f"{bundle}:big.log", 0), (f"{bundle}:vllm.log", 216)]


# A core file's first bytes (an ELF header) and, further on, what the process had in memory: a log
# line it was writing, and a user's prompt. `diag scan DIR` leaves such a file out as binary.
CORE = (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x04\x00\x3e\x00\x01\x00\x00\x00" + bytes(range(256)) * 4 + b"\n"
        + b"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n"
        + b"prompt: 'summarise CANARYCORE for me'\n")
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108020000009077") + b"\x00" * 64


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_binary_members_are_left_out_as_binary_files_in_a_directory_are(kind, tmp_path):
    """A bundle often holds a core file or a screenshot beside the logs. Unpacked, `diag scan DIR`
    leaves them out in one line; packed, read as a log, a core file's memory raised findings and put
    what it held (users' prompts among it) in the report."""
    root = tmp_path / "unpacked"
    (root / "logs").mkdir(parents=True)
    shutil.copy(CORPUS / "seed-style" / "proxy.log", root / "logs" / "proxy.log")
    (root / "logs" / "core.4242").write_bytes(CORE)
    (root / "screenshot.png").write_bytes(PNG)
    bundle = tmp_path / f"bundle.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(root.rglob("*")):
                z.write(p, p.relative_to(root).as_posix())
    else:
        with tarfile.open(bundle, "w:gz") as t:
            t.add(root, "")
    unpacked = _diag("--json", str(root))
    packed = _diag("--json", str(bundle))
    assert "left out 2 binary file(s)" in unpacked.stderr
    assert packed.returncode == unpacked.returncode == 1, packed.stderr
    doc = json.loads(packed.stdout)
    assert [f["path"] for f in doc["files"]] == [f"{bundle}:logs/proxy.log"]
    assert "cuda-oom" not in {f["rule"] for f in doc["findings"]}
    assert "CANARYCORE" not in packed.stdout + packed.stderr
    assert f"{bundle}: left out 2 binary file(s): {bundle}:" in packed.stderr, packed.stderr
    assert packed.stderr.count("\n") == 1, packed.stderr
    assert _same_modulo_names(json.loads(packed.stdout), bundle, root) == _same_modulo_names(json.loads(unpacked.stdout), bundle, root)
