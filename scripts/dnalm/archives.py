"""Safe extraction of zip and tar archives (plain or compressed).

:func:`extract` unpacks members into a folder; it checks every member before writing
anything and refuses absolute paths, ``..`` components, links, special files and names
that two entries share, so an archive can never write outside the target folder nor
silently pick one of two files. Problems raise :class:`dnalm.download.DownloadError`
naming the archive and the member.
"""

from __future__ import annotations

import re
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from .download import CHUNK, DownloadError
from .io import atomic_path


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
    the archive and the member, and so does a name that more than one entry of the archive
    has (after ``./``, ``//`` and ``\\`` are normalised): which one is meant cannot be told.
    Each file is written atomically. Returns the written paths.
    """
    archive, target = Path(archive), Path(target)
    kind = archive_kind(archive)
    if kind is None:
        raise DownloadError(archive, "not a zip or tar archive (or a damaged one)")
    root = target.resolve()
    written: list[Path] = []
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            wanted = _select(archive, infos, members, lambda i: i.filename, lambda i: not i.is_dir())
            plan = [(_checked_dest(archive, root, info.filename), info) for info in wanted]
            for dest, info in plan:
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DownloadError(archive, "refusing to extract a symbolic link", record=info.filename)
            for dest, info in plan:
                with zf.open(info) as src, atomic_path(dest) as tmp, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                written.append(dest)
    else:
        with tarfile.open(archive) as tf:
            infos = tf.getmembers()
            wanted = _select(archive, infos, members, lambda m: m.name, lambda m: not m.isdir())
            plan = [(_checked_dest(archive, root, info.name), info) for info in wanted]
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


def _normalised(name: str) -> str:
    """A member name as the path it extracts to (``..`` kept: :func:`_safe_name` rejects it)."""
    return "/".join(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def _select(archive, infos: list, members, name_of, default_filter) -> list:
    """The entries to extract: ``members`` by name (each must name exactly one entry), or
    every entry passing ``default_filter``; two entries extracting to one path are refused."""
    by_path: dict[str, list] = {}
    for info in infos:
        by_path.setdefault(_normalised(name_of(info)), []).append(info)

    def one(path: str, asked: str):
        group = by_path[path]
        if len(group) > 1:
            names = ", ".join(f"{name_of(i)!r} (entry {infos.index(i) + 1})" for i in group)
            raise DownloadError(
                archive,
                f"{len(group)} entries of the archive are named {asked!r}: {names}; refusing to choose one "
                "(repack the archive, or extract the right entry yourself and give its path)",
            )
        return group[0]

    if members is None:
        return [one(_normalised(name_of(i)), name_of(i)) for i in infos if default_filter(i)]
    out = []
    for member in members:
        if _normalised(member) not in by_path:
            names = [name_of(i) for i in infos if default_filter(i)]
            base = PurePosixPath(_normalised(member)).name
            similar = [n for n in names if PurePosixPath(_normalised(n)).name == base]
            hint = f"; entries with that file name: {', '.join(similar)}" if similar else ""
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise DownloadError(archive, f"no member {member!r} in the archive{hint}; it holds: {shown}")
        out.append(one(_normalised(member), member))
    return out


def _checked_dest(archive, root: Path, name: str) -> Path:
    rel = _safe_name(archive, name)
    dest = (root / rel).resolve()
    if dest != root and root not in dest.parents:  # e.g. through an existing symlink
        raise DownloadError(archive, "refusing to extract a path outside the target folder", record=name)
    return dest

