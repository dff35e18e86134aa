"""Checked downloads and safe archive extraction.

:func:`download` streams a URL into ``<destination>.part`` next to the destination, retries
with exponential back-off, resumes with an HTTP ``Range`` request where the server
supports it (and starts again where it does not), also after the process was killed,
checks the transfer length and the configured checksums, and only then renames the file
onto its destination. Whatever goes wrong (HTTP error, dropped connection after the last
retry, truncated body, checksum mismatch, disk full) raises :class:`DownloadError` naming
the URL and the problem; the destination is never a partial file.

:func:`verify_checksums` checks a local file against ``md5``, ``sha256`` and/or
``git_sha1`` (the git blob hash GitHub shows for a file: SHA-1 of ``"blob <size>\\0"`` plus
the content), so files of a public repository can be pinned to the blobs of a commit.

:func:`extract` unpacks zip and tar archives (plain or compressed) into a folder; it checks
every member before writing anything and refuses absolute paths, ``..`` components, links
and special files, so an archive can never write outside the target folder.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping

from .io import InputError, atomic_path

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


def _clean_stale(dest: Path) -> None:
    """Remove temporaries of killed runs that can never be resumed: the random-named files
    of :func:`dnalm.io.atomic_path` (``.<name>.*.tmp*``, as earlier versions downloaded).
    (A ``.part`` without matching metadata is discarded by :func:`_fetch`.)"""
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp*"):
        log.info("removing the stale temporary file %s of an interrupted run", stale)
        stale.unlink(missing_ok=True)


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

    Sets ``state["resumed"]`` when bytes already in ``part`` are kept (the server resumed).
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
                state["resumed"] = True
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


def download(
    url: str,
    dest,
    checksums: Mapping[str, str] | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
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
    """
    import requests

    pinned = check_checksum_spec(checksums, where=url)
    if not pinned:
        log.warning("%s: no checksum pinned; only the transfer length is checked", url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    _clean_stale(dest)
    if part.exists() and _load_meta(part, url) is not None:
        log.info("%s: found %s (%d bytes) of an interrupted run", url, part, part.stat().st_size)
    again = True  # one fresh download after a mismatch of a resumed file
    with requests.Session() as session:
        while True:
            state = {"resumed": False}
            _transfer(session, url, part, retries, backoff, timeout, sleep, state)
            size = part.stat().st_size
            try:
                got = verify_checksums(part, pinned, name=url)
            except ChecksumError as exc:
                _discard(part)
                if not (state["resumed"] and again):
                    raise
                # the bytes kept from before may belong to another version of the file
                log.warning("%s: %s after resuming; downloading it again from the start", url, exc)
                again = False
                continue
            break
    os.replace(part, dest)
    _meta_path(part).unlink(missing_ok=True)
    log.info("%s: %d bytes%s", url, size, "".join(f", {k} {v} verified" for k, v in got.items()))
    return dest


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


# --------------------------------------------------------------------------- archives


def archive_kind(path) -> str | None:
    """``"zip"``, ``"tar"`` or ``None`` (not an archive), from the file's content."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, EOFError):  # e.g. a truncated compressed file
        return None
    return None


def _safe_name(archive, name: str) -> PurePosixPath:
    """The member's relative path, or InputError if it could escape the target folder."""
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in rel.parts:
        raise DownloadError(archive, "refusing to extract a path outside the target folder", record=name)
    parts = [p for p in rel.parts if p not in ("", ".")]
    if not parts:
        raise DownloadError(archive, "member with an empty path", record=name)
    return PurePosixPath(*parts)


def list_members(archive) -> list[str]:
    """Names of the regular files in a zip or tar archive."""
    kind = archive_kind(archive)
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            return [i.filename for i in zf.infolist() if not i.is_dir()]
    if kind == "tar":
        with tarfile.open(archive) as tf:
            return [m.name for m in tf.getmembers() if m.isfile()]
    raise DownloadError(archive, "not a zip or tar archive")


def extract(archive, target, members: list[str] | None = None) -> list[Path]:
    """Extract ``members`` (default: every file) of a zip/tar archive under ``target``.

    Every requested member is checked before anything is written: absolute paths, ``..``
    components, symbolic/hard links and device files raise :class:`DownloadError` naming
    the archive and the member. Each file is written atomically. Returns the written paths.
    """
    archive, target = Path(archive), Path(target)
    kind = archive_kind(archive)
    if kind is None:
        raise DownloadError(archive, "not a zip or tar archive (or a damaged one)")
    root = target.resolve()
    written: list[Path] = []
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            wanted = _select(archive, infos, members, lambda i: not i.is_dir())
            plan = [(_checked_dest(archive, root, name), infos[name]) for name in wanted]
            for dest, info in plan:
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DownloadError(archive, "refusing to extract a symbolic link", record=info.filename)
            for dest, info in plan:
                with zf.open(info) as src, atomic_path(dest) as tmp, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                written.append(dest)
    else:
        with tarfile.open(archive) as tf:
            infos = {m.name: m for m in tf.getmembers()}
            wanted = _select(archive, infos, members, lambda m: not m.isdir())
            plan = [(_checked_dest(archive, root, name), infos[name]) for name in wanted]
            for dest, info in plan:
                if not info.isfile():
                    what = "link" if (info.issym() or info.islnk()) else "special file"
                    raise DownloadError(archive, f"refusing to extract a {what}", record=info.name)
            for dest, info in plan:
                src = tf.extractfile(info)
                with src, atomic_path(dest) as tmp, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                written.append(dest)
    return written


def _select(archive, infos: dict, members, default_filter) -> list[str]:
    if members is None:
        return [name for name, info in infos.items() if default_filter(info)]
    missing = [m for m in members if m not in infos]
    if missing:
        names = [name for name, info in infos.items() if default_filter(info)]
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise DownloadError(archive, f"no member {missing[0]!r} in the archive; it holds: {shown}")
    return list(members)


def _checked_dest(archive, root: Path, name: str) -> Path:
    rel = _safe_name(archive, name)
    dest = (root / rel).resolve()
    if dest != root and root not in dest.parents:  # e.g. through an existing symlink
        raise DownloadError(archive, "refusing to extract a path outside the target folder", record=name)
    return dest

