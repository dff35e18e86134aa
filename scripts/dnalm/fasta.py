"""FASTA files: reading (plain, gzip or bgzip; streamed, or by byte range through a .fai
index), checking their letters, and writing them.

One reader serves every stage, so that every stage accepts the same files and names the
same problems: :class:`FastaStream` splits a byte stream into records window by window. A
plain file is memory-mapped in windows of ``block_size`` bytes (never copied); gzip and
bgzip are decompressed with ISA-L (``isal``) in blocks of at most ``block_size``. Record
boundaries are found with ``find`` of '>' (memchr) on each window; a header or a record may
straddle windows. The k-mer counter (:mod:`dnalm.kmers`) counts the sequence bytes in place;
:func:`fasta_records` checks every letter and returns the record lengths (the shard plan);
:func:`read_fasta` yields ``(name, sequence)`` strings (genome preparation, corpora).

Letters (:data:`BYTE_CLASS`, read by the counting kernels): ACGT in either case (lowercase
is soft-masking) are bases, and so is U (RNA is read as DNA, U as T); the other IUPAC
nucleotide codes, X (masked) and '.' are kept but break k-mers; whitespace and alignment
gaps ('-') are removed; anything else (a protein letter, a digit, binary data) is an error.

Every problem raises :class:`dnalm.io.InputError` naming the file, the record and the
problem: empty file, not FASTA (no '>' header first, or binary data), a letter that is not
a nucleotide code (protein FASTA), a record that is more than 10 % ambiguity codes other
than N (a protein spelled in letters that double as nucleotide codes; checked by
:func:`fasta_records` and :func:`sequence_problem`), a truncated or corrupt gzip (naming the
record being read when the stream ended), a bgzip file without its 28-byte end-of-file
block (a cut at a block boundary decompresses cleanly otherwise), empty or duplicate record
names, no records, a .fai index that does not describe the file.
"""

from __future__ import annotations

import mmap
import os
import re
from typing import Iterator

import numpy as np

from . import io
from ._kernels import kernel
from .prefetch import prefetched
from .seq import INVALID

BLOCK_SIZE = 1 << 24  # bytes read (decompressed, or mapped) at a time

# --------------------------------------------------------------------------- letters

SKIP, ERROR = 5, 6  # byte classes besides 0..3 (ACGT) and INVALID (4)
BYTE_CLASS = np.full(256, ERROR, dtype=np.uint8)
for _i, _b in enumerate(b"ACGT"):
    BYTE_CLASS[_b] = BYTE_CLASS[_b + 32] = _i
BYTE_CLASS[ord("U")] = BYTE_CLASS[ord("u")] = 3  # RNA: U is T
for _b in b"RYSWKMBDHVNX":  # other IUPAC nucleotide codes, X (masked): break windows
    BYTE_CLASS[_b] = BYTE_CLASS[_b + 32] = INVALID
BYTE_CLASS[ord(".")] = INVALID
for _b in b" \t\r\n\v\f-":  # line breaks, stray whitespace and alignment gaps are removed
    BYTE_CLASS[_b] = SKIP
PROTEIN_ONLY = set("EFIJLOPQZefijlopqz*")  # amino-acid letters that are no nucleotide code
# Letters that are nucleotide codes but neither ACGTU nor N/X/'.': a "DNA" record with many of
# them is probably a protein made only of letters that double as IUPAC codes (e.g. 'MKVAHDS').
AMBIGUOUS = np.zeros(256, dtype=np.uint8)
for _b in b"RYSWKMBDHV":
    AMBIGUOUS[_b] = AMBIGUOUS[_b + 32] = 1
AMBIGUOUS_MAX_SHARE = 0.10  # a record with more than this share of such letters is rejected ...
AMBIGUOUS_MIN_LETTERS = 20  # ... once it holds at least this many letters
_WHITESPACE = b" \t\r\n\v\f"
_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")  # control bytes other than whitespace


def _letter_problem(letter: str, where: str, what: str = "") -> str:
    """Why ``letter`` (of class ERROR; ``what`` names it) found at ``where`` is refused."""
    code = ord(letter)
    if code < 0x20 or code == 0x7F:
        return f"not a FASTA file: binary data (byte 0x{code:02x} at {where})"
    if code >= 0x80:
        return f"non-ASCII {what or 'byte '}{letter!r} at {where} is not a nucleotide code"
    problem = f"{what}{letter!r} at {where} is not a nucleotide code"
    return problem + (" (this looks like a protein FASTA)" if letter in PROTEIN_ONLY else "")


def byte_error(path, record: str, letter: str, offset: int) -> io.InputError:
    """InputError for the bad byte ``letter`` at file offset ``offset`` in ``record``."""
    return io.InputError(path, _letter_problem(letter, f"byte {offset}"), record=record)


def sequence_problem(seq: str) -> str | None:
    """What is wrong with one record's sequence (a ``str``, line breaks removed) under the
    counter's rules, or None: a letter that is no nucleotide code (position 1-based), or
    too many ambiguity codes (:func:`ambiguity_problem`). What the counter accepts is
    accepted: ACGT, U, other IUPAC codes, X, '.', gaps ('-') and whitespace, either case."""
    raw = np.frombuffer(seq.encode("latin-1", errors="replace"), dtype=np.uint8)
    cls = BYTE_CLASS[raw]
    bad = np.flatnonzero(cls == ERROR)
    if bad.size:
        i = int(bad[0])
        return _letter_problem(seq[i], f"position {i + 1}", what="letter ")
    return ambiguity_problem(int(np.count_nonzero(cls <= INVALID)), int(AMBIGUOUS[raw].sum()))


def ambiguity_problem(n_letters: int, n_ambiguous: int) -> str | None:
    """Why a "DNA" record of ``n_letters`` letters, ``n_ambiguous`` of them IUPAC ambiguity
    codes other than N (R, Y, S, W, K, M, B, D, H, V), is probably a protein; or None.

    Real genomes hold a handful of such letters; a protein whose letters all double as
    nucleotide codes (e.g. ``MKVAHDSNGTRW...``) holds far more than ``AMBIGUOUS_MAX_SHARE``.
    """
    if n_letters >= AMBIGUOUS_MIN_LETTERS and n_ambiguous > AMBIGUOUS_MAX_SHARE * n_letters:
        return (
            f"{n_ambiguous} of its {n_letters} letters ({n_ambiguous / n_letters:.0%}) are IUPAC ambiguity "
            f"codes other than N (more than {AMBIGUOUS_MAX_SHARE:.0%}): probably a protein, not DNA"
        )
    return None


# --------------------------------------------------------------------------- bytes

BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def is_gzip(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _is_bgzf(head: bytes) -> bool:
    """Does a gzip member header carry BGZF's 'BC' extra subfield (bgzip, htslib, Biopython)?"""
    return len(head) >= 16 and head[:4] == b"\x1f\x8b\x08\x04" and head[12:16] == b"BC\x02\x00"


def _gzip_blocks(path, block_size: int) -> Iterator[bytes]:
    """Decompressed bytes of a gzip or bgzip file (any number of members), at most
    ``block_size`` at a time (ISA-L). Everything that decompresses is yielded before a
    truncated or corrupt stream raises, so the caller knows which record it was reading
    (a bgzip file without its end-of-file block raises once its last block is read)."""
    from isal import isal_zlib

    with open(path, "rb") as fh:
        lacks_eof = False
        if _is_bgzf(fh.read(18)):
            fh.seek(0, os.SEEK_END)
            lacks_eof = fh.tell() < len(BGZF_EOF) or (fh.seek(-len(BGZF_EOF), os.SEEK_END), fh.read())[1] != BGZF_EOF
        fh.seek(0)
        member, started, pending, at_end = isal_zlib.decompressobj(wbits=31), False, b"", False
        try:
            while True:
                if not pending and not at_end:
                    pending = fh.read(1 << 20)
                    at_end = not pending
                if not pending and not started:
                    break  # the file ends between members
                started = True
                out = member.decompress(pending, block_size)
                if out:
                    yield out
                if member.eof:  # the next member (bgzip: every block is one)
                    pending, member, started = member.unused_data, isal_zlib.decompressobj(wbits=31), False
                else:
                    pending = member.unconsumed_tail  # left over when the output limit was reached
                    if at_end and not pending and not out:
                        raise io.InputError(path, "truncated or corrupt gzip file: it ends inside a compressed member")
        except isal_zlib.error as exc:
            raise io.InputError(path, f"truncated or corrupt gzip file: {exc}") from exc
        if lacks_eof:
            raise io.InputError(
                path,
                "BGZF (bgzip) file lacks its 28-byte end-of-file marker block: it is truncated "
                "(a cut at a block boundary leaves every remaining block readable)",
            )


def map_range(fh, lo: int, hi: int) -> tuple[mmap.mmap, int]:
    """A read-only map of the file's bytes lo..hi, starting at the allocation boundary at
    or before ``lo``: returns (map, base), the file offset of map[0]."""
    base = lo - lo % mmap.ALLOCATIONGRANULARITY
    return mmap.mmap(fh.fileno(), hi - base, access=mmap.ACCESS_READ, offset=base), base


def _mapped_windows(path, block_size: int) -> Iterator[tuple[mmap.mmap, int, int]]:
    """A plain file as read-only memory maps of ``block_size`` bytes each: yields
    (map, lo, offset), the window's bytes being map[lo:], which starts at file offset
    ``offset + lo``. A window stays mapped only while someone holds a view of it (the
    parser, or counting units in flight) and the next one is mapped ahead (read-ahead
    requested), so resident memory does not grow with the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:

        def window(start):
            mm, base = map_range(fh, start, min(size, start + block_size))
            if hasattr(mmap, "MADV_WILLNEED"):
                mm.madvise(mmap.MADV_WILLNEED)  # read ahead while the previous window is counted
            return mm, start - base, base

        nxt = window(0) if size else None
        for start in range(0, size, block_size):
            current = nxt
            nxt = window(start + block_size) if start + block_size < size else None
            yield current
            current = None  # unmapped once the consumer drops its views


# --------------------------------------------------------------------------- records


class FastaStream:
    """Splits a FASTA byte stream into records, window by window.

    A plain file is memory-mapped window by window (its bytes are never copied); gzip and
    bgzip are decompressed in blocks (in a reader thread with ``prefetch``). Iterating
    yields ``(buf, segments)``: ``buf`` a uint8 array over the window, ``segments`` a list
    of ``(record_index, start, end, first)`` byte ranges of sequence lines in ``buf``
    (``first``: the range starts the record's sequence). Names are in ``self.names``;
    ``self.current`` is the index of the record being read, ``self.offset`` the stream
    offset of ``buf[0]``.
    """

    def __init__(self, path, block_size: int = BLOCK_SIZE, prefetch: bool = False):
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.path = path
        self.block_size = int(block_size)
        self.prefetch = prefetch
        self.names: list[str] = []
        self.offset = 0  # file (or decompressed stream) offset of buf[0]
        self.current = -1  # index of the record being read

    def _new_record(self, header: bytes, seen: set) -> int:
        name = header.decode("utf-8", errors="replace").split(None, 1)
        name = name[0] if name else ""
        index = len(self.names)
        if not name:
            raise io.InputError(self.path, "record with an empty name", record=f"#{index + 1}")
        if name in seen:
            raise io.InputError(self.path, "duplicate record name", record=name)
        seen.add(name)
        self.names.append(name)
        return index

    def _windows(self):
        """(data, lo, offset): bytes data[lo:] of the stream, data[0] at stream offset ``offset``."""
        if is_gzip(self.path):
            blocks = _gzip_blocks(self.path, self.block_size)
            if self.prefetch:
                blocks = prefetched(blocks, depth=2, name="fasta-reader")
            offset = 0
            for block in blocks:
                yield block, 0, offset
                offset += len(block)
        else:
            yield from _mapped_windows(self.path, self.block_size)

    def __iter__(self):
        path = self.path
        seen: set[str] = set()
        in_header = False
        header = bytearray()
        line_start = True  # the next byte starts a line
        self.current = -1
        first = False
        total = 0
        windows = self._windows()
        while True:
            try:
                data, lo, offset = next(windows)
            except StopIteration:
                break
            except io.InputError as exc:  # a truncated or corrupt archive: which record was being read
                if exc.record is not None or self.current < 0:
                    raise
                where = " (in the header line after it)" if in_header else ""
                raise io.InputError(exc.path, exc.problem + where, record=self.names[self.current]) from exc
            self.offset = offset
            size = len(data)
            segments = []
            pos = lo
            while pos < size:
                if in_header:
                    j = data.find(b"\n", pos)
                    if j < 0:
                        header += data[pos:]
                        break
                    header += data[pos:j]
                    self.current = self._new_record(bytes(header), seen)
                    header.clear()
                    in_header, first, line_start, pos = False, True, True, j + 1
                    continue
                # next header: a '>' at a line start ('>' elsewhere is left to the kernels)
                j = data.find(b">", pos)
                while j >= 0 and not (data[j - 1] == 10 if j > lo else line_start):
                    j = data.find(b">", j + 1)
                end = size if j < 0 else j
                if end > pos:
                    if self.current < 0:
                        if data[pos:end].strip():
                            raise io.InputError(path, "not a FASTA file (it does not start with a '>' header line)")
                    else:
                        segments.append((self.current, pos, end, first))
                        first = False
                if j < 0:
                    break
                in_header, pos = True, j + 1
            line_start = data[size - 1] == 10 if size > lo else line_start
            total += size - lo
            buf = np.frombuffer(data, dtype=np.uint8)
            yield buf, segments
            del buf
        if in_header:  # a last header line without a newline
            self.current = self._new_record(bytes(header), seen)
        if total == 0:
            raise io.InputError(path, "file is empty")
        if not self.names:
            raise io.InputError(path, "no FASTA records found")

    def error(self, buf: np.ndarray, record: int, index: int):
        """InputError for the byte ``buf[index]`` of class ERROR in ``record``."""
        return byte_error(self.path, self.names[record], chr(buf[index]), self.offset + index)


def fasta_records(path: str | os.PathLike, block_size: int = BLOCK_SIZE) -> dict[str, int]:
    """Length of each record in file order (letters, gaps and whitespace not counted).

    One streaming pass (plain gzip included) that also checks the whole file, so that a
    bad genome fails here, once, with a clear :class:`dnalm.io.InputError`; this includes a
    record that is probably a protein spelled with letters that double as nucleotide codes
    (:func:`ambiguity_problem`).
    """
    scan = kernel("scan_piece")
    stream = FastaStream(path, block_size, prefetch=True)
    lengths: dict[int, int] = {}
    ambiguous: dict[int, int] = {}
    for buf, segments in stream:
        for rec, start, end, _ in segments:
            n, amb, bad = scan(buf, start, end, BYTE_CLASS, AMBIGUOUS)
            if bad >= 0:
                raise stream.error(buf, rec, bad)
            lengths[rec] = lengths.get(rec, 0) + n
            ambiguous[rec] = ambiguous.get(rec, 0) + amb
    for rec, n in lengths.items():
        problem = ambiguity_problem(n, ambiguous[rec])
        if problem:
            raise io.InputError(path, problem, record=stream.names[rec])
    return {name: lengths.get(i, 0) for i, name in enumerate(stream.names)}


def read_fasta(path: str | os.PathLike, block_size: int = BLOCK_SIZE) -> Iterator[tuple[str, str]]:
    """Yield ``(name, sequence)`` for each record of a plain, gzip or bgzip FASTA file.

    ``name`` is the header's first word; ``sequence`` the record's letters as they are in
    the file, line breaks and other whitespace removed (bytes read as latin-1, one
    character each, so that a stray byte keeps its position; letters are not checked here:
    :func:`sequence_problem`). The file's problems raise :class:`dnalm.io.InputError` as for
    :class:`FastaStream`: empty, not FASTA (binary data included), truncated gzip or bgzip
    (naming the record being read), empty or duplicate names, no records.
    """
    stream = FastaStream(path, block_size, prefetch=True)
    parts: list[bytes] = []
    done = 0  # records yielded so far

    def record(index):
        seq = b"".join(parts).decode("latin-1")
        parts.clear()
        return stream.names[index], seq

    for buf, segments in stream:
        for rec, start, end, _ in segments:
            while done < rec:  # the records before ``rec`` are complete
                yield record(done)
                done += 1
            raw = buf[start:end].tobytes()
            binary = _BINARY.search(raw)
            if binary:
                raise stream.error(buf, rec, start + binary.start())
            parts.append(raw.translate(None, _WHITESPACE))
        while done < stream.current:
            yield record(done)
            done += 1
    while done < len(stream.names):
        yield record(done)
        done += 1


def write_fasta(path: str | os.PathLike, records, width: int = 80) -> None:
    """Write ``(name, sequence)`` pairs as FASTA, atomically (removing the temporary
    files that a killed earlier write of ``path`` left)."""
    io.remove_stale_temps(path)
    with io.atomic_open(path) as out:
        for name, seq in records:
            out.write(f">{name}\n")
            for i in range(0, len(seq), width):
                out.write(seq[i : i + width] + "\n")


# --------------------------------------------------------------------------- .fai index


def read_index(path, index) -> dict:
    """name -> (offset, end) byte range of each record's sequence, from a .fai via pyfaidx."""
    import pyfaidx

    try:
        faidx = pyfaidx.Faidx(str(path), indexname=str(index), build_index=False, rebuild=False)
    except FileNotFoundError:
        raise
    except (pyfaidx.IndexNotFoundError, pyfaidx.FastaIndexingError, ValueError) as exc:
        raise io.InputError(index, f"cannot read the .fai index: {exc}") from exc
    try:
        return {name: (int(r.offset), int(r.bend)) for name, r in faidx.index.items()}
    finally:
        faidx.close()


def check_indexed_record(fh, path, index, name: str, start: int, end: int, size: int) -> None:
    """The bytes just before and after a record's range must be its header line and the next
    header (or the end of the file): else the index does not describe this file."""
    problem = None
    if not 0 < start <= end <= size:
        problem = f"byte range {start}..{end} lies outside the file ({size} bytes)"
    else:
        span = 256  # read back just far enough to see the whole header line
        while True:
            before = os.pread(fh.fileno(), min(start, span), start - min(start, span))
            cut = before.rfind(b"\n", 0, len(before) - 1)
            if cut >= 0 or span >= start or span >= 1 << 20:
                break
            span *= 4
        line = before[cut + 1 :].rstrip(b"\r\n")
        if not before.endswith(b"\n") or not line.startswith(b">") or line[1:].split(None, 1)[:1] != [name.encode()]:
            problem = f"the bytes before offset {start} are not the header line of {name!r}"
        else:
            after = os.pread(fh.fileno(), 256, end).lstrip(b" \t\r\n")
            if after and not after.startswith(b">"):
                problem = f"the record goes on past byte {end} (the next byte is no '>' header)"
    if problem:
        raise io.InputError(
            index, f"does not match {path}: {problem}; rebuild the index (samtools faidx or pyfaidx)", record=name
        )
