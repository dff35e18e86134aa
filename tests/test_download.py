"""Checked downloads against a real HTTP server on 127.0.0.1, and safe archive extraction.

The server (a ThreadingHTTPServer in a thread) serves fixture bytes with or without
``Range`` support, can drop the connection midway through the body (for its first request
or for all of them), answer with an HTTP error first, or serve content that does not match
the pinned checksum.
"""

from __future__ import annotations

import hashlib
import io as _io
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dnalm import download

PAYLOAD = bytes(range(256)) * 1200  # 300 kB, every byte value
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Paths: /<mode>/<name>; modes ok, norange, drop (first request cut), drop-norange,
    alwaysdrop, flaky (first request 503), corrupt (one byte changed), missing (404)."""

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
        ranges = mode in ("ok", "drop", "alwaysdrop", "flaky", "corrupt")
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
    srv.requests, srv.lock = [], threading.Lock()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
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


def test_truncated_transfers_give_up_with_back_off_and_leave_nothing(server, tmp_path):
    with pytest.raises(download.DownloadError) as err:
        _get(server, tmp_path, "alwaysdrop", {"md5": MD5}, retries=2)
    msg = str(err.value)
    assert "/alwaysdrop/file.bin" in msg and "after 3 attempt(s)" in msg
    assert "truncated" in msg or "connection broken" in msg
    assert len(server.requests) == 3
    assert list((tmp_path / "out").iterdir()) == []


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
