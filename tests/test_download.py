"""Checked downloads against a real HTTP server on 127.0.0.1, and safe archive extraction.

The server (a ThreadingHTTPServer in a thread) serves fixture bytes with or without
``Range`` support, can drop the connection midway through the body (for its first request
or for all of them), answer with an HTTP error first, or serve content that does not match
the pinned checksum.
"""

from __future__ import annotations

import errno
import hashlib
import io as _io
import json
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
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dnalm import download

PAYLOAD = bytes(range(256)) * 1200  # 300 kB, every byte value
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Paths: /<mode>/<name>; modes ok, norange, drop (first request cut), drop-norange,
    alwaysdrop, flaky (first request 503), corrupt (one byte changed), missing (404), stall
    (the first request sends half the body, then waits for ``server.release``)."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        mode = self.path.strip("/").split("/")[0]
        with srv.lock:
            srv.requests.append((self.path, self.headers.get("Range")))
            n = sum(1 for p, _ in srv.requests if p == self.path)
        data = PAYLOAD
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


def _get(server, tmp_path, mode, checksums=None, retries=3):
    delays = []
    dest = tmp_path / "out" / "file.bin"
    try:
        download.download(
            f"{server.url}/{mode}/file.bin", dest, checksums=checksums, retries=retries, backoff=0.01,
            timeout=5, sleep=delays.append,
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
    (out / ".file.bin.k3j_x9.tmp.bin").write_bytes(b"an atomic_path temporary of a killed run")
    (out / ".other.bin.k3j_x9.tmp.bin").write_bytes(b"someone else's")
    dest = out / "file.bin"
    download.partial_path(dest).write_bytes(PAYLOAD[:1000])
    (out / "file.bin.part.json").write_text(json.dumps({"url": f"{server.url}/ok/older-version.bin"}))
    download.download(f"{server.url}/ok/file.bin", dest, checksums={"md5": MD5}, retries=0, timeout=5)
    assert dest.read_bytes() == PAYLOAD and server.requests[0][1] is None  # not resumed
    assert sorted(p.name for p in out.iterdir()) == [".other.bin.k3j_x9.tmp.bin", "file.bin"]


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


# --------------------------------------------------------------------------- extraction


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_zip_and_tar_members(tmp_path):
    arc = _zip(tmp_path / "a.zip", {"dir/table.csv": "x,y\n1,2\n", "other.txt": "hi"})
    (out,) = download.extract(arc, tmp_path / "t1", members=["dir/table.csv"])
    assert out == (tmp_path / "t1" / "dir" / "table.csv").resolve() and out.read_text() == "x,y\n1,2\n"
    assert sorted(p.name for p in (tmp_path / "t1").rglob("*")) == ["dir", "table.csv"]
    tgz = tmp_path / "a.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        info = tarfile.TarInfo("data/t.tsv")
        info.size = 3
        tf.addfile(info, _io.BytesIO(b"abc"))
    assert [p.read_bytes() for p in download.extract(tgz, tmp_path / "t2")] == [b"abc"]
    with pytest.raises(download.DownloadError, match=r"no member 'nope.csv'.*dir/table.csv"):
        download.extract(arc, tmp_path / "t3", members=["nope.csv"])


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt"])
def test_extract_refuses_paths_outside_the_target(tmp_path, name):
    arc = _zip(tmp_path / "bad.zip", {"fine.txt": "ok", name: "evil"})
    target = tmp_path / "deep" / "target"
    with pytest.raises(download.DownloadError) as err:
        download.extract(arc, target)
    assert str(arc) in str(err.value) and repr(name) in str(err.value) and "outside" in str(err.value)
    assert not target.exists() or list(target.rglob("*")) == []  # checked before writing anything
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["bad.zip"]


def test_extract_refuses_tar_links(tmp_path):
    arc = tmp_path / "links.tar"
    with tarfile.open(arc, "w") as tf:
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tf.addfile(link)
        info = tarfile.TarInfo("escape/passwd")
        info.size = 4
        tf.addfile(info, _io.BytesIO(b"root"))
    with pytest.raises(download.DownloadError, match="link"):
        download.extract(arc, tmp_path / "t")
    assert not (tmp_path / "t").exists() or list((tmp_path / "t").rglob("*")) == []


def test_extract_refuses_tar_members_outside_the_target(tmp_path):
    arc = tmp_path / "dotdot.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        for name in ("fine.txt", "data/../../evil.txt"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tf.addfile(info, _io.BytesIO(b"evil"))
    with pytest.raises(download.DownloadError) as err:
        download.extract(arc, tmp_path / "t")
    assert str(arc) in str(err.value) and "'data/../../evil.txt'" in str(err.value) and "outside" in str(err.value)
    with pytest.raises(download.DownloadError, match="outside"):  # also when asked for by name
        download.extract(arc, tmp_path / "t", members=["data/../../evil.txt"])
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["dotdot.tar.gz"]


def test_extract_refuses_zip_symlinks(tmp_path):
    arc = tmp_path / "link.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("fine.txt", "ok")
        link = zipfile.ZipInfo("data/passwd")
        link.create_system = 3  # unix: the mode in the high bits of external_attr
        link.external_attr = (0o120777 << 16)  # S_IFLNK | 0777: the content is the link target
        zf.writestr(link, "/etc/passwd")
    assert (zipfile.ZipFile(arc).getinfo("data/passwd").external_attr >> 16) & 0o170000 == 0o120000
    with pytest.raises(download.DownloadError) as err:
        download.extract(arc, tmp_path / "t")
    assert "symbolic link" in str(err.value) and "'data/passwd'" in str(err.value)
    assert not (tmp_path / "t").exists() or list((tmp_path / "t").rglob("*")) == []  # nothing written
    (out,) = download.extract(arc, tmp_path / "t", members=["fine.txt"])  # other members still work
    assert out.read_text() == "ok"
