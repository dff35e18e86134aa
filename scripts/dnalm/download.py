"""Checked downloads: resumable transfers, pinned checksums, completeness checks.

:func:`download` streams a URL into ``<destination>.part`` next to the destination, retries
with exponential back-off, resumes with an HTTP ``Range`` request where the server
supports it (and starts again where it does not), also after the process was killed,
checks the transfer length and the configured checksums, and only then renames the file
onto its destination. Whatever goes wrong (HTTP error, dropped connection after the last
retry, truncated body, checksum mismatch, disk full) raises :class:`DownloadError` naming
the URL and the problem; the destination is never a partial file.

Without a pinned checksum, :func:`verify_complete` checks what the file's format allows
(gzip / bzip2 / xz streams decompressed to their end, BGZF's end-of-file block, a zip's
central directory and member CRCs, a tar's end-of-archive blocks, or a text table's last
record: a final newline and as many fields as the header). A download that neither a
checksum, nor a length announced by the server, nor such a check can vouch for (e.g. a
plain FASTA from a server that sends no ``Content-Length``) is refused unless
``allow_unverified`` is set (config key ``data.download.allow_unverified``).

:func:`verify_checksums` checks a local file against ``md5``, ``sha256`` and/or
``git_sha1`` (the git blob hash GitHub shows for a file: SHA-1 of ``"blob <size>\\0"`` plus
the content), so files of a public repository can be pinned to the blobs of a commit.

Archives are unpacked by :mod:`dnalm.archives`.
"""

from __future__ import annotations

import bz2
import csv
import errno
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import tarfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Mapping

from .io import InputError, remove_stale_temps

log = logging.getLogger("dnalm.download")

#: Checksum kinds a source may pin, with the length of their hex digest.
CHECKSUMS = {"md5": 32, "sha256": 64, "git_sha1": 40}
#: HTTP status codes worth retrying (besides connection errors and truncated bodies).
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
CHUNK = 1 << 20
USER_AGENT = "dnalm-workflow (python-requests)"


class DownloadError(InputError):
    """A download or archive problem; the message names the URL or file and the problem."""


class ChecksumError(DownloadError):
    """A file's checksum differs from the pinned value."""


class IncompleteError(DownloadError):
    """A file's own structure shows that it is truncated or corrupt."""


class _Retry(Exception):
    """A transient failure: try again (resuming if possible)."""


# --------------------------------------------------------------------------- checksums


def _hashers(checksums: Mapping[str, str], size: int) -> dict:
    out = {}
    for kind in checksums:
        if kind == "git_sha1":
            h = hashlib.sha1()
            h.update(b"blob %d\0" % size)
            out[kind] = h
        else:
            out[kind] = hashlib.new(kind)
    return out


def check_checksum_spec(checksums: Mapping[str, str] | None, where: str = "checksums") -> dict[str, str]:
    """Validated ``{kind: lowercase hex}``; unknown kinds or malformed digests raise ValueError."""
    out = {}
    for kind, value in (checksums or {}).items():
        if value is None:
            continue
        if kind not in CHECKSUMS:
            raise ValueError(f"{where}: unknown checksum kind {kind!r}; known: {sorted(CHECKSUMS)}")
        value = str(value).strip().lower()
        if not re.fullmatch(rf"[0-9a-f]{{{CHECKSUMS[kind]}}}", value):
            raise ValueError(f"{where}: {kind} must be {CHECKSUMS[kind]} hex digits, got {value!r}")
        out[kind] = value
    return out


def file_checksums(path, kinds=("md5",)) -> dict[str, str]:
    """Hex digests of ``path`` for each kind in ``kinds`` (one pass over the file)."""
    path = Path(path)
    hashers = _hashers(dict.fromkeys(kinds), path.stat().st_size)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            for h in hashers.values():
                h.update(block)
    return {kind: h.hexdigest() for kind, h in hashers.items()}


def verify_checksums(path, checksums: Mapping[str, str] | None, name: str | None = None) -> dict[str, str]:
    """Raise :class:`ChecksumError` unless ``path`` matches every pinned checksum.

    ``name`` (default: the path) is what the error message calls the file, e.g. its URL.
    Returns the computed digests (empty when nothing is pinned).
    """
    pinned = check_checksum_spec(checksums, where=str(name or path))
    if not pinned:
        return {}
    got = file_checksums(path, tuple(pinned))
    for kind, want in pinned.items():
        if got[kind] != want:
            size = Path(path).stat().st_size
            raise ChecksumError(
                name or path,
                f"{kind} mismatch: expected {want}, got {got[kind]} ({size} bytes); the file is corrupt, "
                "truncated or a different version than the one pinned in the config",
            )
    return got


# --------------------------------------------------------------------------- completeness

#: BGZF's end-of-file marker: an empty block that bgzip/htslib write last (SAM/BAM spec 4.1.2).
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def _gzip_module():
    try:
        from isal import igzip  # ISA-L: the same API, ~3x faster

        return igzip
    except ImportError:
        return gzip


def file_format(path) -> str | None:
    """``gzip``, ``bzip2``, ``xz``, ``zip``, ``tar``, ``table`` (UTF-8 text whose first line
    has tab- or comma-separated fields) or ``None`` (anything else, e.g. plain FASTA)."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bzip2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[257:262] == b"ustar":
        return "tar"
    line = head.split(b"\n", 1)[0]
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if text.startswith(">") or "\x00" in text or not ("\t" in text or "," in text):
        return None
    return "table"


def _stream_to_end(path, opener, what: str) -> int:
    """Decompress ``path`` to its end; the number of bytes it holds, or IncompleteError."""
    errors: tuple = (EOFError, OSError, ValueError, zlib.error, lzma.LZMAError)
    try:
        from isal.isal_zlib import error as isal_error

        errors += (isal_error,)
    except ImportError:
        pass
    total = 0
    try:
        with opener(path, "rb") as fh:
            while block := fh.read(CHUNK * 16):
                total += len(block)
    except errors as exc:
        raise IncompleteError(
            path, f"the {what} stream is truncated or corrupt after {total} decompressed bytes ({exc})"
        ) from None
    return total


def _check_tar(path) -> int:
    """Every member of a plain tar lies inside the file, followed by the end-of-archive blocks."""
    size = Path(path).stat().st_size
    try:
        with tarfile.open(path, "r:") as tf:
            members = tf.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise IncompleteError(path, f"the tar archive is truncated or corrupt ({exc})") from None
    end = 0
    for m in members:
        end = max(end, m.offset_data + -(-m.size // 512) * 512)
    with open(path, "rb") as fh:
        fh.seek(end)
        tail = fh.read(1024)
    if end > size or len(tail) < 1024 or tail.strip(b"\0"):
        raise IncompleteError(
            path, f"the tar archive is truncated: its last member ends at byte {end} of {size}, "
            "without the two zero blocks that end a tar archive"
        )
    return len(members)


def _check_table(path) -> str:
    """The last record ends with a newline and has as many fields as the header."""
    with open(path, "rb") as fh:
        header = fh.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - (1 << 20)))
        tail = fh.read()
    sep = "\t" if "\t" in header else ","

    def fields(line: str) -> int:
        return len(line.split("\t")) if sep == "\t" else len(next(csv.reader([line])))

    if not tail.endswith(b"\n"):
        last = tail.rsplit(b"\n", 1)[-1][-60:]
        raise IncompleteError(
            path, f"the table's last line has no newline (it ends with {last!r}): the transfer was probably cut"
        )
    if size > len(tail) and b"\n" not in tail[:-1]:
        return "final newline (the last record is longer than 1 MB)"
    lines = [ln for ln in tail.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    last = lines[-1] if lines else header
    want, got = fields(header), fields(last)
    if got != want:
        raise IncompleteError(
            path, f"the table's last record has {got} field(s), its header {want}: the transfer was probably cut"
        )
    return f"complete last record ({want} fields)"


def verify_complete(path) -> str | None:
    """Check that ``path`` is complete as far as its format shows; what was checked, or
    ``None`` for a format with nothing to check (:func:`file_format`).

    Raises :class:`IncompleteError` for a truncated or corrupt gzip/bzip2/xz stream, a BGZF
    file without its end-of-file block (a cut at a block boundary leaves the rest
    readable), a zip without its central directory or with a bad member CRC, a tar without
    its end, or a table whose last line is cut. A table cut exactly at a line end cannot
    be told from a complete one (nor can a CSV whose last record holds a quoted line
    break be checked by its field count): pin a checksum for certainty.
    """
    kind = file_format(path)
    if kind == "gzip":
        with open(path, "rb") as fh:
            head = fh.read(18)
            bgzf = head[:4] == b"\x1f\x8b\x08\x04" and head[12:16] == b"BC\x02\x00"
            if bgzf:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - len(BGZF_EOF)))
                if fh.read() != BGZF_EOF:
                    raise IncompleteError(
                        path, "the BGZF (bgzip) file lacks its end-of-file block: it is truncated"
                    )
        n = _stream_to_end(path, _gzip_module().open, "gzip")
        return f"{'BGZF' if bgzf else 'gzip'} stream complete ({n} bytes uncompressed)"
    if kind == "bzip2":
        return f"bzip2 stream complete ({_stream_to_end(path, bz2.open, 'bzip2')} bytes uncompressed)"
    if kind == "xz":
        return f"xz stream complete ({_stream_to_end(path, lzma.open, 'xz')} bytes uncompressed)"
    if kind == "zip":
        errors = (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError)
        try:
            zf = zipfile.ZipFile(path)
        except errors as exc:
            raise IncompleteError(path, f"the zip archive is truncated or corrupt ({exc})") from None
        with zf:
            for info in zf.infolist():  # every member decompressed, its CRC checked
                try:
                    with zf.open(info) as member:
                        while member.read(CHUNK * 16):
                            pass
                except errors as exc:
                    raise IncompleteError(path, f"the zip archive is corrupt ({exc})", record=info.filename) from None
            return f"zip central directory and CRCs of {len(zf.infolist())} member(s)"
    if kind == "tar":
        return f"tar archive complete ({_check_tar(path)} members)"
    if kind == "table":
        return _check_table(path)
    return None


# --------------------------------------------------------------------------- downloads


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``(start, end, total)`` of a ``Content-Range`` header (``None`` where absent or '*')."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None, None

    def num(s):
        return int(s) if s not in (None, "*") else None

    return num(m.group(1)), num(m.group(2)), num(m.group(3))


def partial_path(dest) -> Path:
    """Where :func:`download` keeps the bytes received so far for ``dest``: ``<dest>.part``."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


class _LocalWriteError(Exception):
    """Writing the partial file failed (e.g. disk full): not a network problem."""


def _local_problem(part: Path, exc: OSError) -> str:
    try:
        have = part.stat().st_size
    except OSError:
        have = 0
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        what = "disk full (or quota exceeded)"
    else:
        what = "cannot write the file"
    return (
        f"{what} while writing {part} after {have} bytes ({type(exc).__name__}: {exc}); not retried. "
        f"Free space in {part.parent} (data.download.dir) and rerun: the download resumes from {part.name}"
    )


def _load_meta(part: Path, url: str) -> dict | None:
    """The stored response validators of ``part`` if it is a partial download of ``url``."""
    meta = _meta_path(part)
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("url") == url else None


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _meta_path(part).unlink(missing_ok=True)


def _validator(resp) -> dict:
    """Headers that identify the version of the file (for ``If-Range`` when resuming)."""
    etag = resp.headers.get("ETag")
    return {
        "etag": etag if etag and not etag.startswith("W/") else None,  # If-Range needs a strong ETag
        "last_modified": resp.headers.get("Last-Modified"),
    }


def _fetch(session, url: str, part: Path, timeout: float, state: dict) -> None:
    """One attempt: continue ``part`` from its current size (Range) or start it again.

    Sets ``state["resumed"]`` when bytes already in ``part`` are kept (the server resumed)
    and ``state["length_checked"]`` when the server announced the file's length (and the
    bytes received match it).
    """
    import urllib3

    have = part.stat().st_size if part.exists() else 0
    meta = _load_meta(part, url) if have else None
    if have and meta is None:  # bytes of unknown origin: never append to them
        _discard(part)
        have = 0
    headers = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
        if meta.get("etag") or meta.get("last_modified"):
            headers["If-Range"] = meta.get("etag") or meta["last_modified"]
    with session.get(url, stream=True, headers=headers, timeout=timeout, allow_redirects=True) as resp:
        status = resp.status_code
        if status == 416 and have:
            _, _, total = _content_range(resp.headers.get("Content-Range"))
            if total == have:
                state["resumed"] = state["length_checked"] = True
                return  # an earlier attempt had in fact received everything
            _discard(part)
            raise _Retry(f"the server refused to resume at byte {have}; starting again")
        if status >= 400:
            msg = f"HTTP {status} {resp.reason or ''}".strip()
            if status in RETRY_STATUS:
                raise _Retry(msg)
            _discard(part)
            raise DownloadError(url, f"{msg}; not retried")
        if have and status == 206:
            start, _, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:
                _discard(part)
                raise _Retry(f"the server resumed at byte {start}, not {have}; starting again")
            mode, expected = "ab", total
            state["resumed"] = True
            log.info("%s: resuming at byte %d", url, have)
        else:
            if have:
                log.info("%s: the server does not resume (HTTP %d to a Range request); starting again", url, status)
            length = resp.headers.get("Content-Length")
            mode, expected = "wb", int(length) if length and length.isdigit() else None
            try:  # metadata first: a partial file without it is never resumed
                _meta_path(part).write_text(json.dumps({"url": url, **_validator(resp)}))
            except OSError as exc:
                raise _LocalWriteError(_local_problem(part, exc)) from exc
        stream = resp.raw.stream(CHUNK, decode_content=False)
        try:
            out = open(part, mode)
        except OSError as exc:
            raise _LocalWriteError(_local_problem(part, exc)) from exc
        try:
            with out:
                while True:
                    try:
                        block = next(stream, None)
                    except (urllib3.exceptions.HTTPError, OSError) as exc:
                        out.flush()
                        raise _Retry(
                            f"connection broken after {out.tell()} bytes ({type(exc).__name__}: {exc})"
                        ) from exc
                    if block is None:
                        break
                    out.write(block)
        except OSError as exc:  # write, flush or close of the local file (network errors are _Retry)
            raise _LocalWriteError(_local_problem(part, exc)) from exc
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise _Retry(f"truncated transfer: got {size} of {expected} bytes")
    state["length_checked"] = expected is not None


def download(
    url: str,
    dest,
    checksums: Mapping[str, str] | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    allow_unverified: bool = False,
    config_key: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and verify it; returns ``dest``.

    The bytes go to ``<dest>.part`` (with ``<dest>.part.json``: the URL and the server's
    ETag / Last-Modified), which is renamed onto ``dest`` only once complete and verified.
    ``retries`` further attempts follow a failed one after ``backoff * 2**i`` seconds
    (capped at 5 minutes); each continues the partial file with a ``Range`` request
    (``If-Range``: only if the file has not changed), and so does a rerun after the process
    was killed. A server that answers a ``Range`` request with the whole file starts it
    again. 4xx errors other than 408/425/429 are not retried, nor is a failed local write
    (disk full). A checksum mismatch deletes the partial file; if bytes of an earlier
    attempt were reused, the file is first downloaded once more from scratch. After the last
    retry of a network failure the partial file is kept, so a rerun resumes it. ``timeout``
    bounds connecting and each read of the socket (not the whole transfer).

    Without a pinned checksum the file must prove complete by :func:`verify_complete`
    (a failure is retried from scratch when the server announced no length) or by the
    length the server announced; otherwise it is refused unless ``allow_unverified``.
    ``config_key`` (e.g. ``data.genome``) is named in the errors.
    """
    import requests

    where = f"{url} (config key '{config_key}')" if config_key else url
    pinned = check_checksum_spec(checksums, where=where)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    remove_stale_temps(dest)  # files of dnalm.io.atomic_path that a killed run left
    if part.exists() and _load_meta(part, url) is not None:
        log.info("%s: found %s (%d bytes) of an interrupted run", url, part, part.stat().st_size)
    again = True  # one fresh download after a mismatch of a resumed file
    incomplete = 0  # downloads that proved incomplete by their content
    with requests.Session() as session:
        while True:
            state = {"resumed": False, "length_checked": False}
            _transfer(session, url, part, retries, backoff, timeout, sleep, state)
            size = part.stat().st_size
            try:
                got = verify_checksums(part, pinned, name=where)
            except ChecksumError as exc:
                _discard(part)
                if not (state["resumed"] and again):
                    raise
                # the bytes kept from before may belong to another version of the file
                log.warning("%s: %s after resuming; downloading it again from the start", url, exc)
                again = False
                continue
            if pinned:
                how = ", ".join(f"{k} {v} verified" for k, v in got.items())
                break
            try:
                how = verify_complete(part)
            except IncompleteError as exc:
                _discard(part)
                problem = f"{size} bytes received, but {exc.problem}"
                if state["length_checked"] or incomplete >= retries:
                    tries = "" if state["length_checked"] else f" (in {incomplete + 1} download(s))"
                    raise DownloadError(
                        where, f"{problem}{tries}; the partial file was deleted. {_pin_hint(config_key)}"
                    ) from None
                incomplete += 1
                delay = min(backoff * 2 ** (incomplete - 1), 300.0)
                log.warning("%s: %s (no length announced); downloading again in %.1f s", url, problem, delay)
                sleep(delay)
                continue
            if how is None and state["length_checked"]:
                how = "no checksum pinned; only the transfer length announced by the server is checked"
            if how is None:
                if not allow_unverified:
                    _discard(part)
                    raise DownloadError(
                        where,
                        f"{size} bytes received, but the server announced no length, no checksum is pinned "
                        "and the file's format cannot show whether it is complete, so a truncated transfer "
                        f"would pass unnoticed; refused. {_pin_hint(config_key)}, or set "
                        "data.download.allow_unverified: true to accept unverified downloads",
                    )
                how = "UNVERIFIED (data.download.allow_unverified): may be truncated"
                log.warning("%s: %s", url, how)
            break
    os.replace(part, dest)
    _meta_path(part).unlink(missing_ok=True)
    log.info("%s: %d bytes; %s", url, size, how)
    return dest


def _pin_hint(config_key: str | None) -> str:
    where = f"under config key '{config_key}'" if config_key else "in the config"
    return f"Pin the file's md5 or sha256 {where} (e.g. from the provider's checksum list)"


def _transfer(session, url, part, retries, backoff, timeout, sleep, state) -> None:
    """Attempts of :func:`_fetch` until ``part`` holds the whole body (or DownloadError)."""
    import requests
    import urllib3

    attempt = 0
    while True:
        try:
            _fetch(session, url, part, timeout, state)
            return
        except _LocalWriteError as exc:
            raise DownloadError(url, str(exc)) from None
        except (_Retry, requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            attempt += 1
            if attempt > retries:
                have = part.stat().st_size if part.exists() else 0
                kept = f"; the {have} bytes received are kept in {part}, and a rerun resumes them" if have else ""
                raise DownloadError(url, f"download failed after {attempt} attempt(s): {exc}{kept}") from None
            delay = min(backoff * 2 ** (attempt - 1), 300.0)
            log.warning("%s: attempt %d failed (%s); retrying in %.1f s", url, attempt, exc, delay)
            sleep(delay)
