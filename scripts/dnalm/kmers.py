"""k-mer counting for the NPMI table (DESIGN.md "k-mer counts and NPMI").

Every n-gram, n = 1..k_max (k_max <= 12), is counted over the forward strand of each
record (``both_strands`` adds the reverse complement of each record). Lowercase
(soft-masked) bases count as uppercase; any window holding a non-ACGT letter (N, other
IUPAC codes, U, X, '.') is skipped; gaps ('-') and whitespace are removed; a record
shorter than n contributes no n-gram. Counts are dense int64 arrays indexed by the
2-bit/base-4 code of the n-gram (A0 C1 G2 T3, lexicographic order, as in ``dnalm.seq``).

Genome scale (hg38, 3.1 Gbp) is handled by streaming; nothing grows with the genome:

* **Reading.** The FASTA (plain, gzip or bgzip) is read in blocks of ``block_size``
  decompressed bytes (gzip through ISA-L, ``isal``, about 3x faster than zlib; with
  ``threads >= 2`` in a background thread, so that decompression overlaps counting).
  Record boundaries are found with ``bytes.find`` on each block; a header or record may
  straddle blocks. Sequence bytes are never copied or upper-cased: a compiled kernel
  reads them in place through a 256-entry class table (ACGT/acgt -> 0..3, other
  nucleotide codes -> "invalid", whitespace and '-' -> "skip", anything else -> error,
  e.g. a protein FASTA).
* **Counting all n at once.** For each end position e let L[e] be the number of
  consecutive valid bases ending at e. A valid n-gram ends at e iff L[e] >= n. The kernel
  keeps a rolling 2k_max-bit code and L; when L >= k_max it counts the k_max-gram, and
  when L < k_max (only right after a record start or a non-ACGT letter) it counts the
  L-gram in a small "heads" table. Every n-gram ending at e with L[e] >= n + 1 is the
  suffix of the (n+1)-gram ending at e, so afterwards ``counts[n] = (counts[n+1] summed
  over its first base) + heads[n]``: one pass, one table lookup per base.
* **Cache-friendly tables.** Up to k_max = 9 the k_max-gram table (uint32, <= 1 MiB)
  stays in cache and is incremented directly. Above that a random increment into a
  64 MiB table misses the cache on nearly every base, so codes are collected in batches
  of ``_BATCH`` windows, scattered into 2**(2k-14) buckets by their leading bits (a
  counting sort) and then counted bucket by bucket, each bucket touching a 64 KiB slice of
  the table. This is what makes k_max = 12 several times faster than a direct loop.
* **Threads.** With ``threads = T > 1`` each block's sequence bytes are cut into T
  pieces of about equal size (inside records too) and counted in parallel, each thread
  into its own tables (the kernels release the GIL). The state (rolling code and L) at a
  cut is recomputed exactly by scanning back at most k_max letters, so the result does
  not depend on T, ``block_size`` or where records fall in blocks.
* **Exactness.** uint32 tables are folded into int64 totals before any of them could
  hold 2**32 (``_FOLD_LIMIT`` bases per thread), so counts are exact at any genome size.

Scatter/gather: :func:`fasta_records` (a streaming pass: names and lengths, validates
the file) and :func:`shard_records` split the records into ``n_shards`` groups of about
equal length; :func:`count_fasta` with ``records=`` counts one group (it still streams the
whole file, skipping the other records' bytes, which costs far less than counting them;
this works on plain gzip, which a ``.fai`` index cannot address); :func:`merge_count_files`
sums the groups.

Errors in the input raise :class:`dnalm.io.InputError` naming the file, the record and
the problem: empty file, not FASTA, a letter that is not a nucleotide code (protein
FASTA), truncated or corrupt gzip, empty or duplicate record names, no records.

Counts files (:func:`save_counts`) are compressed ``.npz`` archives with arrays
``counts_1`` .. ``counts_{k_max}`` (int64, length 4**n), ``k_max`` and ``both_strands``.
"""

from __future__ import annotations

import functools
import heapq
import os
import queue
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from dnalm import io
from dnalm.seq import ALPHABET, INVALID, encode

K_MAX_LIMIT = 12  # 4**12 int64 = 128 MiB for the top table; larger would not fit comfortably


def check_k_max(k_max) -> int:
    """Return ``k_max`` as int, or raise ValueError unless it is an integer in 1..12."""
    if isinstance(k_max, bool) or not isinstance(k_max, (int, np.integer)) or not 1 <= k_max <= K_MAX_LIMIT:
        raise ValueError(f"k_max must be an integer in 1..{K_MAX_LIMIT}, got {k_max!r}")
    return int(k_max)


# --------------------------------------------------------------------------- code helpers


def codes_to_strings(codes: np.ndarray, n: int) -> np.ndarray:
    """Base-4 codes of n-grams -> array of n-gram strings (vectorised ``seq.id_to_kmer``)."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.size == 0:
        return np.zeros(0, dtype=object)
    shifts = 2 * np.arange(n - 1, -1, -1, dtype=np.int64)
    digits = (codes[:, None] >> shifts) & 3
    letters = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)[digits]
    return np.ascontiguousarray(letters).view(f"S{n}").ravel().astype(str).astype(object)


def strings_to_codes(kmers: Sequence[str], n: int) -> np.ndarray:
    """n-gram strings of ACGT (either case) -> int64 base-4 codes (vectorised ``seq.kmer_to_id``).

    Raises ValueError if a string is not exactly n letters of ACGT.
    """
    kmers = list(kmers)
    if not kmers:
        return np.zeros(0, dtype=np.int64)
    if any(len(s) != n for s in kmers):
        bad = next(s for s in kmers if len(s) != n)
        raise ValueError(f"expected {n}-mers, got {bad!r}")
    raw = np.frombuffer("".join(kmers).encode("ascii", errors="replace"), dtype=np.uint8)
    c = encode(raw.tobytes()).reshape(len(kmers), n).astype(np.int64)
    if (c > 3).any():
        bad = kmers[int(np.flatnonzero((c > 3).any(axis=1))[0])]
        raise ValueError(f"n-gram {bad!r} holds a letter other than A, C, G, T")
    return c @ (4 ** np.arange(n - 1, -1, -1, dtype=np.int64))


def reverse_complement_codes(n: int) -> np.ndarray:
    """Permutation ``rc`` of 0..4**n-1 with ``rc[code(w)] == code(reverse_complement(w))``."""
    codes = np.arange(4**n, dtype=np.int64)
    out = np.zeros_like(codes)
    for _ in range(n):
        out = out * 4 + (3 - (codes & 3))  # complement of the last base becomes the first
        codes >>= 2
    return out


# --------------------------------------------------------------------------- KmerCounts


@dataclass(eq=False)
class KmerCounts:
    """Counts of every n-gram, n = 1..k_max.

    ``counts[n - 1]`` is an int64 array of length 4**n indexed by the n-gram's base-4 code.
    """

    k_max: int
    both_strands: bool
    counts: list[np.ndarray]

    def __post_init__(self):
        self.k_max = check_k_max(self.k_max)
        self.both_strands = bool(self.both_strands)
        if len(self.counts) != self.k_max:
            raise ValueError(f"expected {self.k_max} count arrays, got {len(self.counts)}")
        self.counts = [np.asarray(c, dtype=np.int64) for c in self.counts]
        for n, c in enumerate(self.counts, start=1):
            if c.shape != (4**n,):
                raise ValueError(f"counts for n={n} must have shape ({4**n},), got {c.shape}")

    @classmethod
    def zeros(cls, k_max: int, both_strands: bool = False) -> "KmerCounts":
        k_max = check_k_max(k_max)
        return cls(k_max, both_strands, [np.zeros(4**n, dtype=np.int64) for n in range(1, k_max + 1)])

    def n_windows(self, n: int) -> int:
        """Number of valid (all-ACGT) windows of length n that were counted."""
        if not 1 <= n <= self.k_max:
            raise ValueError(f"n must be in 1..{self.k_max}, got {n}")
        return int(self.counts[n - 1].sum())

    def count(self, kmer: str) -> int:
        """Count of one n-gram given as a string."""
        n = len(kmer)
        return int(self.counts[n - 1][strings_to_codes([kmer], n)[0]])

    def _check_compatible(self, other: "KmerCounts") -> None:
        if not isinstance(other, KmerCounts):
            raise TypeError(f"cannot combine KmerCounts with {type(other).__name__}")
        if (self.k_max, self.both_strands) != (other.k_max, other.both_strands):
            raise ValueError(
                "cannot add k-mer counts made with different settings: "
                f"k_max={self.k_max}, both_strands={self.both_strands} vs "
                f"k_max={other.k_max}, both_strands={other.both_strands}"
            )

    def __add__(self, other: "KmerCounts") -> "KmerCounts":
        self._check_compatible(other)
        return KmerCounts(self.k_max, self.both_strands, [a + b for a, b in zip(self.counts, other.counts)])

    def __eq__(self, other) -> bool:
        if not isinstance(other, KmerCounts):
            return NotImplemented
        return (self.k_max, self.both_strands) == (other.k_max, other.both_strands) and all(
            np.array_equal(a, b) for a, b in zip(self.counts, other.counts)
        )


# --------------------------------------------------------------------------- byte classes

_SKIP, _ERROR = 5, 6  # byte classes besides 0..3 (ACGT) and INVALID (4)
_BYTE_CLASS = np.full(256, _ERROR, dtype=np.uint8)
for _i, _b in enumerate(b"ACGT"):
    _BYTE_CLASS[_b] = _BYTE_CLASS[_b + 32] = _i
for _b in b"RYSWKMBDHVNUX":  # other IUPAC nucleotide codes, U, X (masked): break windows
    _BYTE_CLASS[_b] = _BYTE_CLASS[_b + 32] = INVALID
_BYTE_CLASS[ord(".")] = INVALID
for _b in b" \t\r\n\v\f-":  # line breaks, stray whitespace and alignment gaps are removed
    _BYTE_CLASS[_b] = _SKIP
_PROTEIN_ONLY = set("EFIJLOPQZefijlopqz*")  # amino-acid letters that are no nucleotide code

_BATCH = 1 << 22  # windows per counting-sort batch (two uint32 buffers of 16 MiB per thread)
_FOLD_LIMIT = (1 << 32) - (1 << 26)  # bases per thread before uint32 tables go to int64
_BLOCK_SIZE = 1 << 24  # decompressed bytes read at a time


def _bucket_bits(k: int) -> int:
    """Leading code bits used to bucket k-mer codes (0: increment the table directly)."""
    return 0 if k <= 9 else 2 * k - 14  # buckets of 4**7 codes = 64 KiB of uint32 counts


# --------------------------------------------------------------------------- kernels
# Plain Python functions compiled with numba on first use (nogil: threads run them in
# parallel; cache: a Snakemake job loads the machine code instead of recompiling it).


def _count_piece(buf, start, end, cls, k, code, run, top, heads, head_off, codes, tmp, nbits):
    """Count the windows ending in buf[start:end], given the rolling state (code, run)
    at ``start``. Returns the index of the first byte of class _ERROR, or -1."""
    mask = (1 << (2 * k)) - 1
    if nbits == 0:
        for i in range(start, end):
            c = cls[buf[i]]
            if c < 4:
                code = ((code << 2) | c) & mask
                run += 1
                if run >= k:
                    top[code] += 1
                else:
                    heads[head_off[run] + (code & ((1 << (2 * run)) - 1))] += 1
            elif c == 4:
                run = 0
            elif c != 5:
                return i
        return -1
    shift = 2 * k - nbits
    n_buckets = 1 << nbits
    fill = np.zeros(n_buckets + 1, np.int64)
    cap = codes.shape[0]
    i = start
    while i < end:
        stop = min(end, i + cap)
        m = 0
        fill[:] = 0
        for j in range(i, stop):
            c = cls[buf[j]]
            if c < 4:
                code = ((code << 2) | c) & mask
                run += 1
                if run >= k:
                    codes[m] = code
                    m += 1
                    fill[(code >> shift) + 1] += 1
                else:
                    heads[head_off[run] + (code & ((1 << (2 * run)) - 1))] += 1
            elif c == 4:
                run = 0
            elif c != 5:
                return j
        for b in range(n_buckets):  # counting sort of the batch by leading bits ...
            fill[b + 1] += fill[b]
        for j in range(m):
            cd = codes[j]
            b = cd >> shift
            tmp[fill[b]] = cd
            fill[b] += 1
        for j in range(m):  # ... so that these increments walk the table slice by slice
            top[tmp[j]] += 1
        i = stop
    return -1


def _state_at(buf, lo, s, cls, k, code0, run0):
    """Rolling state (code, run capped at k) just before buf[s], given the state
    (code0, run0) just before buf[lo] and that buf[lo:s] belongs to one record."""
    m = 0
    acc = 0
    i = s - 1
    while i >= lo and m < k:
        c = cls[buf[i]]
        if c < 4:
            acc |= c << (2 * m)
            m += 1
        elif c == 4:
            return acc, m
        i -= 1
    if m >= k:
        return acc, k
    return ((code0 << (2 * m)) | acc) & ((1 << (2 * k)) - 1), min(k, run0 + m)


def _scan_piece(buf, start, end, cls):
    """Letters (bases, gaps and whitespace excluded) in buf[start:end] and the index of
    the first byte of class _ERROR (-1 if none)."""
    n = 0
    for i in range(start, end):
        c = cls[buf[i]]
        if c <= 4:
            n += 1
        elif c != 5:
            return n, i
    return n, -1


@functools.cache
def _kernel(name: str):
    """The compiled kernel ``name`` (numba is imported and the cache read on first use)."""
    import numba

    return numba.njit(nogil=True, cache=True)(globals()[name])


def _kernels():
    return _kernel("_count_piece"), _kernel("_state_at"), _kernel("_scan_piece")


def warm_up(k_max: int = 6) -> None:
    """Load (or compile, after a code change) the kernels for the argument types that
    :func:`count_fasta` uses, so that a timing of it measures counting only."""
    buf = np.frombuffer(b"ACGT", dtype=np.uint8)  # read-only, as blocks from a file are
    _kernel("_state_at")(buf, 0, 4, _BYTE_CLASS, check_k_max(k_max), 0, 0)
    _Tables(k_max).run(buf, [(0, 0, 4, 0, 0)])


# --------------------------------------------------------------------------- FASTA stream


def _gzip_error() -> type:
    from isal import isal_zlib

    return isal_zlib.error


def _raw_blocks(path, block_size: int) -> Iterator[bytes]:
    """Decompressed bytes of a plain, gzip or bgzip file, ``block_size`` at a time."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    try:
        if gz:
            from isal import igzip

            handle = igzip.open(path, "rb")
        else:
            handle = open(path, "rb", buffering=0)
        with handle:
            while True:
                block = handle.read(block_size)
                if not block:
                    return
                yield block
    except FileNotFoundError:
        raise
    except (EOFError, OSError, ValueError, _gzip_error()) as exc:
        if isinstance(exc, io.InputError):
            raise
        what = "truncated or corrupt gzip file" if gz else "cannot read file"
        raise io.InputError(path, f"{what}: {exc}") from exc


def _prefetched(blocks: Iterator[bytes], depth: int = 2) -> Iterator[bytes]:
    """Run a block iterator in a background thread (bounded queue; errors re-raised)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for b in blocks:
                if not put(b):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer
            put(exc)

    thread = threading.Thread(target=produce, name="fasta-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
        close = getattr(blocks, "close", None)
        if close is not None:
            close()


class _FastaStream:
    """Splits a FASTA byte stream into records, block by block.

    Iterating yields ``(block, segments)``: ``segments`` is a list of
    ``(record_index, start, end, first)`` byte ranges of sequence lines in ``block``
    (``first``: the range starts the record's sequence). Names are in ``self.names``;
    ``self.offset`` is the stream offset of the current block.
    """

    def __init__(self, path, block_size: int = _BLOCK_SIZE, prefetch: bool = False):
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.path = path
        self.block_size = int(block_size)
        self.prefetch = prefetch
        self.names: list[str] = []
        self.offset = 0

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

    def __iter__(self):
        path = self.path
        blocks = _raw_blocks(path, self.block_size)
        if self.prefetch:
            blocks = _prefetched(blocks)
        seen: set[str] = set()
        in_header = False
        header = bytearray()
        line_start = True  # the next byte starts a line
        current = -1  # index of the record being read; -1 before the first header
        first = False
        self.offset = 0
        total = 0
        for block in blocks:
            segments = []
            pos, size = 0, len(block)
            while pos < size:
                if in_header:
                    j = block.find(b"\n", pos)
                    if j < 0:
                        header += block[pos:]
                        break
                    header += block[pos:j]
                    current = self._new_record(bytes(header), seen)
                    header.clear()
                    in_header, first, line_start, pos = False, True, True, j + 1
                    continue
                if line_start and block.startswith(b">", pos):
                    j = pos
                else:
                    j = block.find(b"\n>", pos)
                    j = -1 if j < 0 else j + 1
                end = size if j < 0 else j
                if end > pos:
                    if current < 0:
                        if block[pos:end].strip():
                            raise io.InputError(path, "not a FASTA file (it does not start with a '>' header line)")
                    else:
                        segments.append((current, pos, end, first))
                        first = False
                if j < 0:
                    break
                in_header, pos = True, j + 1
            line_start = block.endswith(b"\n")
            total += size
            yield block, segments
            self.offset = total
        if in_header:  # a last header line without a newline
            self._new_record(bytes(header), seen)
        if total == 0:
            raise io.InputError(path, "file is empty")
        if not self.names:
            raise io.InputError(path, "no FASTA records found")

    def error(self, block: bytes, record: int, index: int):
        """InputError for the byte ``block[index]`` of class _ERROR in ``record``."""
        letter = chr(block[index])
        problem = f"{letter!r} at byte {self.offset + index} is not a nucleotide code"
        if letter in _PROTEIN_ONLY:
            problem += " (this looks like a protein FASTA)"
        return io.InputError(self.path, problem, record=self.names[record])


# --------------------------------------------------------------------------- counting


class _Tables:
    """One thread's count tables: uint32 k_max-grams, int64 heads, int64 folded totals."""

    def __init__(self, k: int):
        self.k = k
        self.nbits = _bucket_bits(k)
        self.top = np.zeros(4**k, dtype=np.uint32)
        self.head_off = np.zeros(k + 1, dtype=np.int64)  # heads of length n start at head_off[n]
        for n in range(1, k):
            self.head_off[n + 1] = self.head_off[n] + 4**n
        self.heads = np.zeros(max(1, int(self.head_off[k])), dtype=np.int64)
        size = _BATCH if self.nbits else 1
        self.codes = np.zeros(size, dtype=np.uint32)
        self.tmp = np.zeros(size, dtype=np.uint32)
        self.folded = None  # int64 totals of earlier uint32 rounds
        self.pending = 0  # bases counted into ``top`` since the last fold

    def fold(self):
        if self.folded is None:
            self.folded = np.zeros(4**self.k, dtype=np.int64)
        self.folded += self.top
        self.top[:] = 0
        self.pending = 0

    def run(self, buf, pieces) -> tuple[int, int]:
        """Count pieces (record, start, end, code, run); (record, index) of a bad byte or None."""
        count = _kernel("_count_piece")
        size = sum(p[2] - p[1] for p in pieces)
        if self.pending + size > _FOLD_LIMIT:
            self.fold()
        self.pending += size
        for rec, start, end, code, run in pieces:
            bad = count(
                buf, start, end, _BYTE_CLASS, self.k, code, run,
                self.top, self.heads, self.head_off, self.codes, self.tmp, self.nbits,
            )  # fmt: skip
            if bad >= 0:
                return rec, bad
        return None

    def top_int64(self) -> np.ndarray:
        out = self.top.astype(np.int64)
        if self.folded is not None:
            out += self.folded
        return out


def _split(buf, pieces, parts: int, k: int) -> list[list[tuple]]:
    """Cut pieces (record, start, end, code, run) into ``parts`` groups of about equal size,
    cutting inside a piece where needed (state at the cut recomputed exactly)."""
    if parts == 1:
        return [pieces]
    state_at = _kernel("_state_at")
    total = sum(p[2] - p[1] for p in pieces)
    target = -(-total // parts)
    groups, group, room = [], [], target
    for rec, start, end, code, run in pieces:
        while end - start > room and len(groups) < parts - 1:
            cut = start + room
            if room >= 4096:  # too small a cut is not worth a thread
                group.append((rec, start, cut, code, run))
                code, run = state_at(buf, start, cut, _BYTE_CLASS, k, code, run)
                start = cut
            groups.append(group)
            group, room = [], target
        group.append((rec, start, end, code, run))
        room -= end - start
    groups.append(group)
    return [g for g in groups if g]


def _collapse(k: int, top: np.ndarray, heads: np.ndarray, head_off: np.ndarray, both_strands: bool) -> "KmerCounts":
    counts = [None] * k
    counts[k - 1] = top
    for n in range(k - 1, 0, -1):
        # an n-gram ending at e with >= n+1 valid bases is the suffix of an (n+1)-gram
        counts[n - 1] = counts[n].reshape(4, 4**n).sum(axis=0) + heads[head_off[n] : head_off[n] + 4**n]
    if both_strands:
        counts = [c + c[reverse_complement_codes(n)] for n, c in enumerate(counts, start=1)]
    return KmerCounts(k, both_strands, counts)


def _result(tables: list[_Tables], both_strands: bool) -> "KmerCounts":
    k = tables[0].k
    top = tables[0].top_int64()
    heads = tables[0].heads.copy()
    for t in tables[1:]:
        top += t.top_int64()
        heads += t.heads
    return _collapse(k, top, heads, tables[0].head_off, both_strands)


def memory_mb(k_max: int, threads: int = 1) -> int:
    """Upper estimate of the peak memory (MiB) of :func:`count_fasta` or of merging counts."""
    k = check_k_max(k_max)
    per_thread = 4**k * 4 + (4**k // 3) * 8 + (2 * 4 * _BATCH if _bucket_bits(k) else 0)
    result = 4 * 4**k * 8  # int64 totals, collapsed shorter n, a thread's int64 copy, strands
    return int((_check_threads(threads) * per_thread + result + 3 * _BLOCK_SIZE) / 2**20) + 400


def _check_threads(threads) -> int:
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return int(threads)


def count_fasta(
    path: str | os.PathLike,
    k_max: int,
    both_strands: bool = False,
    records: Sequence[str] | None = None,
    threads: int = 1,
    block_size: int = _BLOCK_SIZE,
) -> KmerCounts:
    """Count every n-gram (n = 1..k_max) in a plain, gzip or bgzip FASTA file, streaming.

    ``records``: count only the records with these names (a shard); the others are read
    past without being counted or checked. A name missing from the file raises
    :class:`dnalm.io.InputError`, as does any problem of the file (see module docstring).
    ``threads``: counting threads (plus a reader thread when > 1); memory is about
    ``threads * (4**k_max * 4 + 4**(k_max-1) * 11)`` bytes plus three ``block_size`` blocks.
    """
    k = check_k_max(k_max)
    threads = _check_threads(threads)
    wanted = None if records is None else set(records)
    if wanted is not None and not wanted:  # an empty shard (more shards than records)
        return KmerCounts.zeros(k, both_strands)
    state_at = _kernel("_state_at")
    tables = [_Tables(k) for _ in range(threads)]
    stream = _FastaStream(path, block_size, prefetch=threads > 1)
    pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="count") if threads > 1 else None
    carry = (0, 0)  # state at the end of the previous block, for a record that goes on
    try:
        for block, segments in stream:
            buf = np.frombuffer(block, dtype=np.uint8)
            pieces = []
            for rec, start, end, first in segments:
                if wanted is not None and stream.names[rec] not in wanted:
                    continue
                code, run = (0, 0) if first else carry
                pieces.append((rec, start, end, code, run))
            if pieces and pieces[-1][2] == len(block):
                _, start, end, code, run = pieces[-1]
                carry = state_at(buf, start, end, _BYTE_CLASS, k, code, run)
            if not pieces:
                continue
            groups = _split(buf, pieces, threads, k)
            jobs = [pool.submit(t.run, buf, g) for t, g in zip(tables[1:], groups[1:])] if pool else []
            bad = [tables[0].run(buf, groups[0])] + [j.result() for j in jobs]
            bad = [b for b in bad if b is not None]
            if bad:
                rec, index = min(bad, key=lambda b: b[1])
                raise stream.error(block, rec, index)
        if wanted is not None:
            missing = sorted(wanted - set(stream.names))
            if missing:
                raise io.InputError(path, f"record(s) not found in the FASTA: {', '.join(missing[:10])}")
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return _result(tables, both_strands)


def count_sequences(seqs: Iterable[str], k_max: int, both_strands: bool = False) -> KmerCounts:
    """Count every n-gram (n = 1..k_max) in an iterable of DNA strings (one record each).

    Letters other than ACGT (either case) break windows, gaps ('-') are removed, as in
    :func:`dnalm.seq.encode`.
    """
    k = check_k_max(k_max)
    t = _Tables(k)
    letters = np.frombuffer(b"ACGTN", dtype=np.uint8)
    for seq in seqs:
        buf = letters[encode(seq)]
        t.run(buf, [(0, 0, len(buf), 0, 0)])
    return _result([t], both_strands)


# --------------------------------------------------------------------------- sharding


def fasta_records(path: str | os.PathLike, block_size: int = _BLOCK_SIZE) -> dict[str, int]:
    """Length of each record in file order (letters, gaps and whitespace not counted).

    One streaming pass (plain gzip included) that also checks the whole file, so that a
    bad genome fails here, once, with a clear :class:`dnalm.io.InputError`.
    """
    scan = _kernel("_scan_piece")
    stream = _FastaStream(path, block_size, prefetch=True)
    lengths: dict[int, int] = {}
    for block, segments in stream:
        buf = np.frombuffer(block, dtype=np.uint8)
        for rec, start, end, _ in segments:
            n, bad = scan(buf, start, end, _BYTE_CLASS)
            if bad >= 0:
                raise stream.error(block, rec, bad)
            lengths[rec] = lengths.get(rec, 0) + n
    return {name: lengths.get(i, 0) for i, name in enumerate(stream.names)}


fasta_lengths = fasta_records  # former name


def shard_records(lengths: dict[str, int], n_shards: int) -> list[list[str]]:
    """Split records into ``n_shards`` groups of about equal total length.

    Greedy longest-first: records in decreasing length (ties: file order) each go to the
    shard with the smallest total so far (ties: lowest shard index). Deterministic; each
    shard lists its records in their original order; with more shards than records some
    shards are empty.
    """
    if isinstance(n_shards, bool) or not isinstance(n_shards, (int, np.integer)) or n_shards < 1:
        raise ValueError(f"n_shards must be a positive integer, got {n_shards!r}")
    names = list(lengths)
    order = sorted(range(len(names)), key=lambda i: (-lengths[names[i]], i))
    totals = [0] * n_shards
    members: list[list[int]] = [[] for _ in range(n_shards)]
    heap = [(0, j) for j in range(n_shards)]  # (total, shard): the smallest total first
    for i in order:
        total, s = heapq.heappop(heap)
        totals[s] = total + lengths[names[i]]
        members[s].append(i)
        heapq.heappush(heap, (totals[s], s))
    return [[names[i] for i in sorted(m)] for m in members]


SHARD_COLUMNS = ["record", "length", "shard"]


def write_shard_plan(path: str | os.PathLike, lengths: dict[str, int], n_shards: int):
    """Write the record -> shard table (record, length, shard), in file order, atomically."""
    import pandas as pd

    shard_of = {}
    for s, names in enumerate(shard_records(lengths, n_shards)):
        for name in names:
            shard_of[name] = s
    plan = pd.DataFrame(
        {"record": list(lengths), "length": list(lengths.values()), "shard": [shard_of[r] for r in lengths]},
        columns=SHARD_COLUMNS,
    )
    io.write_tsv(plan, path)
    return plan


def read_shard_plan(path: str | os.PathLike, shard: int) -> list[str]:
    """Names of the records of one shard, in file order, from :func:`write_shard_plan`'s table."""
    import pandas as pd

    try:
        plan = pd.read_csv(path, sep="\t", dtype={"record": str}, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise io.InputError(path, f"cannot read shard plan: {exc}") from exc
    if list(plan.columns) != SHARD_COLUMNS:
        raise io.InputError(path, f"shard plan must have columns {SHARD_COLUMNS}, got {list(plan.columns)}")
    return plan.loc[plan["shard"] == int(shard), "record"].tolist()


# --------------------------------------------------------------------------- files


def save_counts(path: str | os.PathLike, counts: KmerCounts) -> None:
    """Write counts as a compressed ``.npz`` atomically (see module docstring for the keys)."""
    arrays = {f"counts_{n}": c for n, c in enumerate(counts.counts, start=1)}
    with io.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a handle, so numpy never appends '.npz' to the name
            np.savez_compressed(fh, k_max=np.int64(counts.k_max), both_strands=np.bool_(counts.both_strands), **arrays)


def load_counts(path: str | os.PathLike) -> KmerCounts:
    """Read a counts file written by :func:`save_counts`; InputError if it is not one."""
    try:
        with open(path, "rb") as fh:  # our own handle: numpy leaks it when the zip is corrupt
            z = np.load(fh, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            with z:
                k_max = int(z["k_max"])
                both = bool(z["both_strands"])
                arrays = [z[f"counts_{n}"] for n in range(1, k_max + 1)]
    except FileNotFoundError:
        raise
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise io.InputError(path, f"not a k-mer counts file ({exc})") from exc
    try:
        return KmerCounts(k_max, both, arrays)
    except ValueError as exc:
        raise io.InputError(path, f"malformed k-mer counts file: {exc}") from exc


def merge_count_files(paths: Iterable[str | os.PathLike]) -> KmerCounts:
    """Sum several counts files (e.g. one per shard); they must share k_max and both_strands."""
    total = None
    for p in paths:
        c = load_counts(p)
        if total is not None:
            try:
                total._check_compatible(c)
            except ValueError as exc:
                raise io.InputError(p, str(exc)) from exc
        total = c if total is None else total + c
    if total is None:
        raise ValueError("merge_count_files needs at least one counts file")
    return total
