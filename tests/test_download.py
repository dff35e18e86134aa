"""Checked downloads against a real HTTP server on 127.0.0.1, and completeness checks.

The server (a ThreadingHTTPServer in a thread) serves fixture bytes with or without
``Range`` support, can drop the connection midway through the body (for its first request
or for all of them), answer with an HTTP error first, serve content that does not match
the pinned checksum, or, HTTP/1.0 style, send no length and close the connection early.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io as _io
import json
import lzma
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath

import pytest

from dnalm import download

PAYLOAD = bytes(range(256)) * 1200  # 300 kB, every byte value
MD5 = hashlib.md5(PAYLOAD).hexdigest()
TABLE = b"processid\tgenus_name\tnucleotides\n" + b"".join(
    b"P%d\tGenus%d\t%s\n" % (i, i % 7, b"ACGT" * (10 + i % 5)) for i in range(3000)
)
FASTA = b">chr1\n" + b"ACGTTGCA" * 40000 + b"\n"
# served by file name: <name>.gz / .tsv / .fa, anything else PAYLOAD
CONTENT = {".gz": gzip.compress(TABLE, mtime=0), ".tsv": TABLE, ".fa": FASTA}


class _Handler(BaseHTTPRequestHandler):
    """Paths: /<mode>/<name>; modes ok, norange, drop (first request cut), drop-norange,
    alwaysdrop, flaky (first request 503), corrupt (one byte changed), missing (404), stall
    (the first request sends half the body, then waits for ``server.release``), and, HTTP/1.0
    style without a Content-Length, nolength (the whole body), nolength-cut (every request
    closes the connection halfway through the body) and nolength-cutonce (the first does)."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        mode = self.path.strip("/").split("/")[0]
        with srv.lock:
            srv.requests.append((self.path, self.headers.get("Range")))
            n = sum(1 for p, _ in srv.requests if p == self.path)
        data = CONTENT.get(PurePosixPath(self.path).suffix, PAYLOAD)
        if mode.startswith("nolength"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            cut = mode == "nolength-cut" or (mode == "nolength-cutonce" and n == 1)
            self.wfile.write(data[: len(data) // 2] if cut else data)
            self.wfile.flush()
            self.close_connection = True  # the end of the body is the end of the connection
            return
        if mode == "missing":
            self.send_error(404, "Not Found")
            return
        if mode == "flaky" and n == 1:
            self.send_error(503, "Service Unavailable")
            return
        if mode == "corrupt":
            data = PAYLOAD[:1000] + bytes([PAYLOAD[1000] ^ 0xFF]) + PAYLOAD[1001:]
        ranges = mode in ("ok", "drop", "alwaysdrop", "flaky", "corrupt", "stall")
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if ranges and m:
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        if ranges:
            self.send_header("Accept-Ranges", "bytes")
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if mode == "stall" and n == 1:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            srv.release.wait(30)
            self.close_connection = True
            return
        cut = mode == "alwaysdrop" or (mode in ("drop", "drop-norange") and n == 1)
        if cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests, srv.lock, srv.release = [], threading.Lock(), threading.Event()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


def _get(server, tmp_path, mode, checksums=None, retries=3, name="file.bin", **kwargs):
    delays = []
    dest = tmp_path / "out" / name
    try:
        download.download(
            f"{server.url}/{mode}/{name}", dest, checksums=checksums, retries=retries, backoff=0.01,
            timeout=5, sleep=delays.append, **kwargs,
        )
    finally:
        leftovers = sorted(p.name for p in (tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    return dest, delays, leftovers


def test_download_checks_md5_and_git_blob_hash(server, tmp_path):
    git = hashlib.sha1(b"blob %d\0" % len(PAYLOAD) + PAYLOAD).hexdigest()
    dest, delays, left = _get(server, tmp_path, "ok", {"md5": MD5, "git_sha1": git})
    assert dest.read_bytes() == PAYLOAD
    assert left == ["file.bin"] and delays == []
    assert download.file_checksums(dest, ("md5", "git_sha1")) == {"md5": MD5, "git_sha1": git}


def test_checksum_mismatch_is_an_error_and_leaves_no_file(server, tmp_path):
    with pytest.raises(download.ChecksumError) as err:
        _get(server, tmp_path, "corrupt", {"md5": MD5})
    msg = str(err.value)
    assert "/corrupt/file.bin" in msg and "md5 mismatch" in msg and MD5 in msg
    assert hashlib.md5(PAYLOAD[:1000] + bytes([PAYLOAD[1000] ^ 0xFF]) + PAYLOAD[1001:]).hexdigest() in msg
    assert list((tmp_path / "out").iterdir()) == []


def test_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    dest, delays, left = _get(server, tmp_path, "drop", {"md5": MD5})
    assert dest.read_bytes() == PAYLOAD and left == ["file.bin"]
    (first, r1), (second, r2) = server.requests
    assert r1 is None and r2 == f"bytes={len(PAYLOAD) // 2}-"  # continued where the cut was
    assert delays == [0.01]


def test_server_without_range_support_starts_again(server, tmp_path):
    dest, _, left = _get(server, tmp_path, "drop-norange", {"md5": MD5})
    assert dest.read_bytes() == PAYLOAD and left == ["file.bin"]
    assert server.requests[1][1] == f"bytes={len(PAYLOAD) // 2}-"  # asked, got a full 200


def test_truncated_transfers_give_up_with_back_off_and_keep_the_part_to_resume(server, tmp_path):
    with pytest.raises(download.DownloadError) as err:
        _get(server, tmp_path, "alwaysdrop", {"md5": MD5}, retries=2)
    msg = str(err.value)
    assert "/alwaysdrop/file.bin" in msg and "after 3 attempt(s)" in msg
    assert "truncated" in msg or "connection broken" in msg
    assert len(server.requests) == 3
    # each attempt got half of what was missing: 1/2 + 1/4 + 1/8 of the file, kept for a rerun
    part = tmp_path / "out" / "file.bin.part"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["file.bin.part", "file.bin.part.json"]
    n = len(PAYLOAD)
    assert part.read_bytes() == PAYLOAD[: n // 2 + n // 4 + n // 8] and f"kept in {part}" in msg
    assert [r for _, r in server.requests] == [None, f"bytes={n // 2}-", f"bytes={n // 2 + n // 4}-"]


def test_http_errors(server, tmp_path):
    with pytest.raises(download.DownloadError) as err:
        _get(server, tmp_path, "missing")
    assert "HTTP 404" in str(err.value) and "not retried" in str(err.value)
    assert len(server.requests) == 1 and list((tmp_path / "out").iterdir()) == []
    dest, delays, _ = _get(server, tmp_path, "flaky", {"md5": MD5})  # 503 once, then fine
    assert dest.read_bytes() == PAYLOAD and delays == [0.01]


def test_bad_checksum_spec():
    with pytest.raises(ValueError, match="32 hex digits"):
        download.check_checksum_spec({"md5": "abc"})
    with pytest.raises(ValueError, match="unknown checksum kind"):
        download.check_checksum_spec({"crc32": "0" * 8})


# --------------------------------------------------------------------------- completeness without a checksum


@pytest.mark.parametrize("name", ["genome.fa.gz", "table.tsv"])
def test_a_cut_transfer_without_length_or_checksum_is_refused(server, tmp_path, name):
    """HTTP/1.0 style: no Content-Length, the server closes halfway. The gzip stream / the
    table's last record shows the cut; each attempt is retried, then the error names the
    config key and the URL, and no file is left."""
    with pytest.raises(download.DownloadError) as err:
        _get(server, tmp_path, "nolength-cut", retries=2, name=name, config_key="data.genome")
    msg = str(err.value)
    assert f"{server.url}/nolength-cut/{name}" in msg and "config key 'data.genome'" in msg, msg
    assert ("gzip stream is truncated" in msg) if name.endswith(".gz") else ("last line has no newline" in msg), msg
    assert "in 3 download(s)" in msg and "md5 or sha256 under config key 'data.genome'" in msg
    assert len(server.requests) == 3 and all(r is None for _, r in server.requests)  # fresh each time
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("name", ["genome.fa.gz", "table.tsv"])
def test_a_transfer_without_length_passes_when_its_content_is_complete(server, tmp_path, name):
    dest, delays, left = _get(server, tmp_path, "nolength-cutonce", name=name)
    assert dest.read_bytes() == CONTENT[PurePosixPath(name).suffix] and left == [name]
    assert delays == [0.01] and len(server.requests) == 2  # the cut first copy was downloaded again


def test_an_unverifiable_download_is_refused_unless_allowed(server, tmp_path):
    """A plain FASTA, no length, no checksum: a cut cannot be detected, so it is refused."""
    for mode in ("nolength", "nolength-cut"):
        with pytest.raises(download.DownloadError) as err:
            _get(server, tmp_path, mode, name="genome.fa", config_key="data.genome")
        msg = str(err.value)
        assert f"/{mode}/genome.fa (config key 'data.genome')" in msg and "refused" in msg, msg
        assert "data.download.allow_unverified: true" in msg and "server announced no length" in msg
        assert list((tmp_path / "out").iterdir()) == []
    dest, _, left = _get(server, tmp_path, "nolength", name="genome.fa", allow_unverified=True)
    assert dest.read_bytes() == FASTA and left == ["genome.fa"]
    # with a length announced by the server, the length is the check (as before)
    dest, _, _ = _get(server, tmp_path, "ok", name="other.fa")
    assert dest.read_bytes() == FASTA


def bgzf_block(data: bytes) -> bytes:
    """One BGZF block (SAM/BAM spec 4.1): a gzip member with the 'BC' extra subfield."""
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    cdata = comp.compress(data) + comp.flush()
    header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00"
    return header + (len(cdata) + 25).to_bytes(2, "little") + cdata + zlib.crc32(data).to_bytes(4, "little") + len(data).to_bytes(4, "little")


def _tar(members: dict) -> bytes:
    buf = _io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, _io.BytesIO(data))
    return buf.getvalue()


def _zip_bytes(members: dict) -> bytes:
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def test_verify_complete_by_format(tmp_path):
    assert bgzf_block(b"") == download.BGZF_EOF  # the spec's EOF marker is an empty block
    gz = gzip.compress(TABLE, mtime=0)
    bgzf = bgzf_block(TABLE[:40000]) + bgzf_block(TABLE[40000:]) + download.BGZF_EOF
    zipped = _zip_bytes({"a/t.tsv": TABLE, "b.txt": b"x" * 5000})
    tar = _tar({"t.tsv": TABLE})
    cases = {  # name: (bytes, expected message words or None when complete)
        "ok.gz": (gz, None),
        "cut.gz": (gz[: len(gz) // 2], "gzip stream is truncated"),
        "nocrc.gz": (gz[:-8], "gzip stream is truncated"),
        "ok.bgz": (bgzf, None),
        "block.bgz": (bgzf[: -len(download.BGZF_EOF)], "lacks its end-of-file block"),  # every block readable
        "ok.bz2": (bz2.compress(TABLE), None),
        "cut.bz2": (bz2.compress(TABLE)[:-10], "bzip2 stream is truncated"),
        "ok.xz": (lzma.compress(TABLE), None),
        "cut.xz": (lzma.compress(TABLE)[:-10], "xz stream is truncated"),
        "ok.zip": (zipped, None),
        "cut.zip": (zipped[:-30], "zip archive is truncated or corrupt"),
        "crc.zip": (_flip(zipped, 200), "a/t.tsv"),
        "ok.tar": (tar, None),
        "cut.tar": (tar[:1024], "tar archive is truncated"),
        "ok.tsv": (TABLE, None),
        "cut.tsv": (TABLE[:-7], "last line has no newline"),
        "short.tsv": (TABLE + b"P9\tGenus\n", "last record has 2 field(s), its header 3"),
        "ok.csv": (b'a,b\n"x,y",2\n', None),
        "short.csv": (b'a,b\n"x,y",2\n3\n', "last record has 1 field(s), its header 2"),
    }
    for name, (data, problem) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        if problem is None:
            assert download.verify_complete(path), name
        else:
            with pytest.raises(download.IncompleteError) as err:
                download.verify_complete(path)
            assert problem in str(err.value) and str(path) in str(err.value), (name, str(err.value))
    # the control: the truncated BGZF file is a readable gzip stream (only the EOF block shows the cut)
    assert gzip.decompress(bgzf[: -len(download.BGZF_EOF)]) == TABLE
    # formats with nothing to check
    for name, data in {"g.fa": FASTA, "p.bin": PAYLOAD, "empty": b""}.items():
        (tmp_path / name).write_bytes(data)
        assert download.verify_complete(tmp_path / name) is None, name


# --------------------------------------------------------------------------- interrupted runs


def test_a_killed_download_is_resumed_by_the_rerun(server, tmp_path):
    """SIGKILL mid-transfer leaves <name>.part; the next call continues it with a Range request."""
    url, dest = f"{server.url}/stall/file.bin", tmp_path / "out" / "file.bin"
    part = download.partial_path(dest)
    code = (
        "import sys; from dnalm import download; download.CHUNK = 4096; "
        "download.download(sys.argv[1], sys.argv[2], retries=0, timeout=60)"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(download.__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", code, url, str(dest)], env=env)
    try:
        deadline, last = time.monotonic() + 60, -1
        while time.monotonic() < deadline:  # until the body stops arriving (the server stalls)
            size = part.stat().st_size if part.exists() else 0
            if size > 0 and size == last:
                break
            last = size
            time.sleep(0.3)
        assert 0 < size <= len(PAYLOAD) // 2, size
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    server.release.set()
    kept = part.stat().st_size
    assert proc.returncode == -signal.SIGKILL and not dest.exists() and part.read_bytes() == PAYLOAD[:kept]

    delays = []
    download.download(url, dest, checksums={"md5": MD5}, retries=0, backoff=0.01, timeout=5, sleep=delays.append)
    assert dest.read_bytes() == PAYLOAD and delays == []
    assert [r for _, r in server.requests] == [None, f"bytes={kept}-"]  # resumed, not started again
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]


class _Interrupted(BaseException):
    """Stands for the job being killed while it waits to retry."""


def _interrupt(delay):
    raise _Interrupted


def test_rerun_against_a_server_without_range_support_starts_cleanly(server, tmp_path):
    url, dest = f"{server.url}/drop-norange/file.bin", tmp_path / "out" / "file.bin"
    with pytest.raises(_Interrupted):  # the first request is cut halfway, then the job "dies"
        download.download(url, dest, checksums={"md5": MD5}, retries=3, sleep=_interrupt)
    part = download.partial_path(dest)
    assert part.read_bytes() == PAYLOAD[: len(PAYLOAD) // 2] and not dest.exists()
    download.download(url, dest, checksums={"md5": MD5}, retries=0, timeout=5)
    assert dest.read_bytes() == PAYLOAD  # the 200 answer to Range replaced the part, not appended
    assert [r for _, r in server.requests] == [None, f"bytes={len(PAYLOAD) // 2}-"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]


def test_stale_temporaries_and_parts_of_another_url_are_not_reused(server, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".file.bin.k3j_x9ab.tmp.bin").write_bytes(b"an atomic_path temporary of a killed run")
    (out / ".other.bin.k3j_x9ab.tmp.bin").write_bytes(b"someone else's")
    dest = out / "file.bin"
    download.partial_path(dest).write_bytes(PAYLOAD[:1000])
    (out / "file.bin.part.json").write_text(json.dumps({"url": f"{server.url}/ok/older-version.bin"}))
    download.download(f"{server.url}/ok/file.bin", dest, checksums={"md5": MD5}, retries=0, timeout=5)
    assert dest.read_bytes() == PAYLOAD and server.requests[0][1] is None  # not resumed
    assert sorted(p.name for p in out.iterdir()) == [".other.bin.k3j_x9ab.tmp.bin", "file.bin"]


def test_a_resumed_file_that_fails_its_checksum_is_downloaded_again_once(server, tmp_path):
    dest = tmp_path / "out" / "file.bin"
    dest.parent.mkdir()
    url = f"{server.url}/ok/file.bin"
    download.partial_path(dest).write_bytes(b"\xff" * 5000)  # e.g. the start of another version
    (dest.parent / "file.bin.part.json").write_text(json.dumps({"url": url}))
    download.download(url, dest, checksums={"md5": MD5}, retries=0, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == ["bytes=5000-", None]
    # corrupt on the server: the fresh download fails too, and nothing is left
    with pytest.raises(download.ChecksumError, match="md5 mismatch"):
        _get(server, tmp_path, "corrupt", {"md5": MD5})
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]


def test_disk_full_fails_at_once_with_a_clear_message(server, tmp_path, monkeypatch):
    real_open = open

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, block):
            self.fh.write(block[:100])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def fake_open(path, mode="r", *args, **kwargs):
        fh = real_open(path, mode, *args, **kwargs)
        return Full(fh) if str(path).endswith(".part") else fh

    monkeypatch.setattr(download, "open", fake_open, raising=False)
    with pytest.raises(download.DownloadError) as err:
        _get(server, tmp_path, "ok", {"md5": MD5}, retries=5)
    msg = str(err.value)
    assert "/ok/file.bin" in msg and "disk full" in msg and "No space left on device" in msg, msg
    assert "not retried" in msg and "file.bin.part" in msg
    assert len(server.requests) == 1  # no retry, no back-off
    assert not (tmp_path / "out" / "file.bin").exists()


GENEMASK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "genemask"


@pytest.mark.skipif(not GENEMASK.is_dir(), reason=f"real GeneMask files not present ({GENEMASK})")
def test_full_config_pins_match_the_genemask_files_at_hand():
    """config/full.yaml pins each GeneMask file by its git blob hash; the files copied from
    that commit (../shared/data/genemask) must match them, byte for byte."""
    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "full.yaml").read_text())
    checked = []
    for task, roles in cfg["data"]["tasks"].items():
        for role, src in roles.items():
            if role not in ("train", "test"):
                continue
            rel = src["url"].split("/c7614461323015ffcbbdb39fc4778e9255ddfcab/", 1)[1]
            local = GENEMASK / rel
            if local.exists():
                pins = {k: src[k] for k in download.CHECKSUMS if k in src}
                assert pins and download.verify_checksums(local, pins) == pins, (task, role)
                checked.append(f"{task}/{role}")
    assert sorted(checked) == ["prom-300/train", "prom-core/test", "prom-core/train", "splice-40/test"]
