"""Input/output helpers shared by every stage: atomic writes, clear input errors, text files.

FASTA files are read and written by :mod:`dnalm.fasta`.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

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


def __getattr__(name: str):
    """``io.read_fasta`` and ``io.write_fasta``, former names of :mod:`dnalm.fasta`'s
    (imported on use: dnalm.fasta itself imports this module)."""
    if name in ("read_fasta", "write_fasta"):
        from . import fasta

        return getattr(fasta, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
