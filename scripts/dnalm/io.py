"""Input/output helpers shared by every stage: atomic writes (files and directories), file
digests, clear input errors, text files.

FASTA files are read and written by :mod:`dnalm.fasta`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("dnalm.io")

_UMASK = os.umask(0)
os.umask(_UMASK)


class InputError(ValueError):
    """Bad user input; the message names the file, the record and the problem."""

    def __init__(self, path, problem: str, record: str | None = None):
        where = f"{path}"
        if record is not None:
            where += f", record {record!r}"
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.record = record
        self.problem = problem


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed, so no half-written output is left.
    ``suffix`` defaults to the target's own suffix(es) so that libraries which infer the
    format from the extension (numpy, matplotlib, pandas) behave as for the real path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty directory next to ``path``; on success it replaces ``path``.

    The directory is ``.tmp-<name>-<random>`` in the same folder, so the rename is atomic
    (an existing ``path`` is removed just before). On any exception the temporary directory
    is removed; a process killed meanwhile leaves it behind, and callers that own the folder
    remove such leftovers with :func:`remove_stale_dirs`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp creates 0700
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_dirs(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary directories that interrupted :func:`atomic_dir` writes of
    ``path`` left behind (only safe when no other process is writing ``path``)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    # mkdtemp's random part: 8 of [a-z0-9_], so ".tmp-a-b-<8>" (a target "a-b") never matches "a"
    mine = re.compile(rf"\.tmp-{re.escape(path.name)}-[a-z0-9_]{{8}}")
    stale = sorted(d for d in path.parent.iterdir() if mine.fullmatch(d.name) and d.is_dir())
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    return stale


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's contents (``hashlib`` algorithm name), read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs):
    """``open()`` a temporary file that replaces ``path`` only if the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as handle:
            yield handle


def open_text(path: str | os.PathLike):
    """Open a plain or gzip/bgzip-compressed text file for reading."""
    path = Path(path)
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt")
    return open(path, "rt")


def write_tsv(df, path: str | os.PathLike) -> None:
    """Write a pandas DataFrame as a tab-separated file with a header, atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


def remove_stale_temps(path: str | os.PathLike, suffix: str | None = None) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` for ``path`` that a killed run
    left (SIGKILL or a power cut: no clean-up ran). Only ``path``'s own ones
    (``.<name>.<8 random characters>.tmp<suffix>``, ``suffix`` as for :func:`atomic_path`),
    so that jobs writing other files in the same folder are left alone; call it before
    writing ``path``, when no other process writes ``path``. Returns the removed paths."""
    path = Path(path)
    if suffix is None:
        suffix = "".join(path.suffixes)
    # mkstemp's random part: 8 of [a-z0-9_]
    own = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}" + re.escape(f".tmp{suffix}"))
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if own.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            log.info("removing %s, the temporary file of an interrupted earlier run", entry.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed
