"""k-mer counting for the NPMI table (DESIGN.md "k-mer counts and NPMI").

Every n-gram, n = 1..k_max (k_max <= 12), is counted over the forward strand of each
record (``both_strands`` adds the reverse complement of each record). Lowercase
(soft-masked) bases count as uppercase; any window holding a non-ACGT letter (N, other
IUPAC codes, U, X, '.') is skipped; gaps ('-') and whitespace are removed; a record
shorter than n contributes no n-gram. Counts are dense int64 arrays indexed by the
2-bit/base-4 code of the n-gram (A0 C1 G2 T3, lexicographic order, as in ``dnalm.seq``).

Genome scale (hg38, 3.1 Gbp) is handled without anything growing with the genome:

* **Reading.** A plain FASTA is memory-mapped in windows of ``block_size`` bytes (never
  copied); gzip and bgzip are decompressed with ISA-L (``isal``) in blocks of at most
  ``block_size``. Record boundaries are found with ``find`` of '>' (memchr) on each
  window; a header or record may straddle windows. Sequence bytes are never copied or
  upper-cased: the kernels read them in place through a 256-entry class table (ACGT/acgt
  -> 0..3, other nucleotide codes -> "invalid", whitespace and '-' -> "skip", anything
  else -> error, e.g. a protein FASTA). A bgzip file must end with BGZF's 28-byte EOF
  block (a cut at a block boundary decompresses cleanly otherwise); a truncated gzip
  error names the record being read.
* **Indexed shards.** With the ``.fai`` of a plain FASTA (``index=``), a shard maps only
  its own records' byte ranges (checking that the bytes around each are its header line
  and the next header, i.e. that the index describes this file); nothing else is read.
* **Counting all n at once.** For each end position e let L[e] be the number of
  consecutive valid bases ending at e. A valid n-gram ends at e iff L[e] >= n. The kernel
  keeps a rolling 2k_max-bit code and L; when L >= k_max it counts the k_max-gram, and
  when L < k_max (only right after a record start or a non-ACGT letter) it counts the
  L-gram in a small "heads" table. Every n-gram ending at e with L[e] >= n + 1 is the
  suffix of the (n+1)-gram ending at e, so afterwards ``counts[n] = (counts[n+1] summed
  over its first base) + heads[n]``: one pass, one table lookup per base.
* **Work units and threads.** The bytes to count are cut into units of at most
  ``_BATCH`` bytes (inside records too: the state (rolling code and L) at a cut is
  recomputed exactly by scanning back at most k_max letters), which ``threads`` workers
  (numba kernels release the GIL) take as they come free, while the calling thread reads
  and parses the next window. So the result does not depend on the threads, the
  ``block_size`` or where records fall, and a worker that a busy machine slows down just
  takes fewer units (no barrier until the end).
* **Cache-friendly tables.** Up to k_max = 9 each worker increments its own uint32
  k_max-gram table (<= 1 MiB, in cache), folded into int64 totals before it could reach
  2**32 (``_FOLD_LIMIT`` bases), so counts are exact at any genome size. Above that a
  random increment into a big table misses the cache on nearly every base, so a worker
  collects a unit's codes, counting-sorts them into 2**(2k-15) buckets by their leading
  bits, and counts them bucket by bucket (each bucket a 64 KiB slice) into one table that
  all workers share: uint16 (a quarter of int64's memory traffic: 32 MiB at k = 12),
  where a count reaching 2**16 wraps to 0 and carries 1 into an int64 table that is
  touched only then; workers hold a lock per bucket range and start at different ranges.
  The shared table and the workers' batch buffers are one block of memory that becomes
  the int64 result in place at the end: on a VM, the first touch of fresh memory can cost
  more than counting 70 Mbp, so nothing else that large is allocated. Heads are collected
  with a unit's codes and added to one table (a dense table per worker would be mostly
  untouched, yet merging it would read all of it).

Scatter/gather: :func:`fasta_records` (a streaming pass: names and lengths, validates
the file) and :func:`shard_records` split the records into ``n_shards`` groups of about
equal length; :func:`count_fasta` with ``records=`` counts one group (with ``index=`` it
reads only the group's records; without, it streams the whole file and skips the other
records' bytes, which works on plain gzip too); :func:`merge_count_files` sums the groups.
:func:`count_corpus` counts a pretraining corpus (e.g. the barcodes a model trains on).

Errors in the input raise :class:`dnalm.io.InputError` naming the file, the record and
the problem: empty file, not FASTA, a letter that is not a nucleotide code (protein
FASTA), a record that is more than 10 % ambiguity codes other than N (a protein spelled in
letters that double as nucleotide codes; :func:`fasta_records` and
:func:`sequence_problem`), truncated or corrupt gzip, bgzip without its EOF block, empty
or duplicate record names, no records, an index that does not match the file.

Counts files (:func:`save_counts`) are compressed ``.npz`` archives with arrays
``counts_1`` .. ``counts_{k_max}`` (int64, length 4**n), ``k_max`` and ``both_strands``.
"""

from __future__ import annotations

import functools
import heapq
import mmap
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
# Letters that are nucleotide codes but neither ACGT nor N/X/'.': a "DNA" record with many of
# them is probably a protein made only of letters that double as IUPAC codes (e.g. 'MKVAHDS').
_AMBIGUOUS = np.zeros(256, dtype=np.uint8)
for _b in b"RYSWKMBDHVU":
    _AMBIGUOUS[_b] = _AMBIGUOUS[_b + 32] = 1
AMBIGUOUS_MAX_SHARE = 0.10  # a record with more than this share of such letters is rejected ...
AMBIGUOUS_MIN_LETTERS = 20  # ... once it holds at least this many letters
# dnalm.seq codes (corpora, count_sequences): 0..3 bases, 4 any other letter
_CODE_CLASS = np.full(256, _ERROR, dtype=np.uint8)
_CODE_CLASS[:4] = np.arange(4)
_CODE_CLASS[4] = INVALID

_BATCH = 1 << 23  # bytes per work unit (k >= 10: codes per batch; uint32 codes + uint16 sorted, 48 MiB)
_FOLD_LIMIT = (1 << 32) - (1 << 26)  # bases per thread before uint32 tables go to int64
_BLOCK_SIZE = 1 << 24  # bytes read (decompressed, or mapped) at a time
_DIRECT_MAX_K = 9  # up to here the k_max-gram table (uint32, <= 1 MiB) is incremented directly
_SLICE_BITS = 15  # above it, codes are bucketed so that a bucket touches 2**15 counts (64 KiB)
assert _SLICE_BITS <= 16  # a code within its bucket is stored as uint16


def _bucket_bits(k: int) -> int:
    """Leading code bits used to bucket k-mer codes (0: increment the table directly)."""
    return 0 if k <= _DIRECT_MAX_K else 2 * k - _SLICE_BITS


def _head_offsets(k: int) -> np.ndarray:
    """Heads of length n (1 <= n < k) live at heads[off[n] : off[n] + 4**n]."""
    off = np.zeros(k + 1, dtype=np.int64)
    for n in range(1, k):
        off[n + 1] = off[n] + 4**n
    return off


# --------------------------------------------------------------------------- kernels
# Plain Python functions compiled with numba on first use (nogil: threads run them in
# parallel; cache: a Snakemake job loads the machine code instead of recompiling it).
# A "piece" is a row (start, end, code, run, record) of an int64 array: bytes buf[start:end]
# of one record, with the rolling state (code, run) just before ``start``.


def _count_direct(buf, pieces, state, cls, k, top, heads, head_off):
    """k <= 9: count the windows of every piece straight into ``top`` (uint32, in cache).
    On a byte of class _ERROR, sets state[0:2] = (piece, byte index) and stops."""
    mask = (1 << (2 * k)) - 1
    for p in range(pieces.shape[0]):
        code = pieces[p, 2]
        run = pieces[p, 3]
        for i in range(pieces[p, 0], pieces[p, 1]):
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
                state[0] = p
                state[1] = i
                return
    state[0] = -1


def _collect(buf, pieces, state, cls, k, head_off, codes, tmp, starts, fill, shift):
    """k >= 10, first half of a batch: from the cursor ``state`` = (piece, byte, code, run;
    byte -1 = at the piece's start) collect up to len(codes) k_max-gram codes and
    counting-sort them by their leading bits into ``tmp`` (bucket b is
    tmp[starts[b]:starts[b+1]], holding only the codes' low ``shift`` bits, since the
    bucket gives the others). Returns their number; on a byte of class _ERROR sets
    state[4:6] = (piece, byte index) and returns -1. A byte ends either a k_max-gram or
    a shorter head, never both, so the heads' indices into the heads table fill ``codes``
    from the back: codes[len(codes) - state[6]:]."""
    mask = (1 << (2 * k)) - 1
    cap = codes.shape[0]
    n_buckets = starts.shape[0] - 1
    fill[:] = 0
    m = 0
    h = 0
    p = state[0]
    i = state[1]
    code = state[2]
    run = state[3]
    n_pieces = pieces.shape[0]
    while p < n_pieces and m + h < cap:
        if i < 0:
            i = pieces[p, 0]
            code = pieces[p, 2]
            run = pieces[p, 3]
        end = pieces[p, 1]
        stop = min(end, i + cap - m - h)  # a byte gives at most one code or head
        while i < stop:
            c = cls[buf[i]]
            if c < 4:
                code = ((code << 2) | c) & mask
                run += 1
                if run >= k:
                    codes[m] = code
                    m += 1
                    fill[(code >> shift) + 1] += 1
                else:
                    h += 1
                    codes[cap - h] = head_off[run] + (code & ((1 << (2 * run)) - 1))
            elif c == 4:
                run = 0
            elif c != 5:
                state[4] = p
                state[5] = i
                return -1
            i += 1
        if i >= end:
            p += 1
            i = -1
    state[0] = p
    state[1] = i
    state[2] = code
    state[3] = run
    state[6] = h
    starts[0] = 0
    for b in range(n_buckets):
        starts[b + 1] = starts[b] + fill[b + 1]
        fill[b] = starts[b]
    low = (1 << shift) - 1
    for j in range(m):  # counting sort of the batch by leading bits ...
        cd = codes[j]
        b = cd >> shift
        tmp[fill[b]] = cd & low  # the bucket (leading bits) is known from the position
        fill[b] += 1
    return m


def _increment(top, carry, tmp, starts, b0, b1, shift):
    """Count the buckets b0..b1-1 of one sorted batch (``tmp``, bucket b at
    tmp[starts[b]:starts[b+1]], code = b << shift | low bits), so that the increments walk
    the table slice by slice.
    ``top`` is uint16 (a quarter of int64's memory traffic); a count reaching 2**16 wraps to
    0 and adds 1 to ``carry`` (int64, touched only there). Returns the number of wraps."""
    wraps = 0
    for b in range(b0, b1):
        base = b << shift
        for j in range(starts[b], starts[b + 1]):
            c = base | tmp[j]
            v = top[c] + 1
            if v == 65536:
                top[c] = 0
                carry[c] += 1
                wraps += 1
            else:
                top[c] = v
    return wraps


def _add_heads(heads, events, lo, hi):
    """heads[events[j]] += 1 for j in lo..hi-1."""
    for j in range(lo, hi):
        heads[events[j]] += 1


def _widen(top, carry, out, wrapped, chunk):
    """out = top + carry * 2**16 (int64), reading ``carry`` only if some count wrapped.

    ``out`` may share memory with ``top`` as long as top's bytes start at least 6 bytes per
    entry past out's: top is copied to ``chunk`` piece by piece before out's matching piece
    is written, and what that write overwrites of top has been read already."""
    n = top.shape[0]
    size = chunk.shape[0]
    for a in range(0, n, size):
        b = min(n, a + size)
        for i in range(a, b):
            chunk[i - a] = top[i]
        if wrapped:
            for i in range(a, b):
                out[i] = chunk[i - a] + (carry[i] << 16)
        else:
            for i in range(a, b):
                out[i] = chunk[i - a]


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


def _scan_piece(buf, start, end, cls, ambiguous):
    """Letters (bases, gaps and whitespace excluded) in buf[start:end], how many of them are
    in ``ambiguous``, and the index of the first byte of class _ERROR (-1 if none)."""
    n = 0
    amb = 0
    for i in range(start, end):
        c = cls[buf[i]]
        if c <= 4:
            n += 1
            amb += ambiguous[buf[i]]
        elif c != 5:
            return n, amb, i
    return n, amb, -1


def _merge_heads(dst, src):
    """dst += src, writing only where src is non-zero (heads are sparse; pages stay untouched)."""
    for i in range(src.shape[0]):
        if src[i] != 0:
            dst[i] += src[i]


def _add_reverse_complements(c, n):
    """In place: c[w] += c[rc(w)] for every n-gram code w (palindromes doubled)."""
    for w in range(c.shape[0]):
        x = w
        r = 0
        for _ in range(n):
            r = (r << 2) | (3 - (x & 3))
            x >>= 2
        if r > w:
            s = c[w] + c[r]
            c[w] = s
            c[r] = s
        elif r == w:
            c[w] *= 2


@functools.cache
def _kernel(name: str):
    """The compiled kernel ``name`` (numba is imported and the cache read on first use)."""
    import numba

    return numba.njit(nogil=True, cache=True)(globals()[name])


def _kernels():
    return _kernel("_count_direct"), _kernel("_state_at"), _kernel("_scan_piece")


def warm_up(k_max: int = 6) -> None:
    """Load (or compile, after a code change) every kernel that :func:`count_fasta` may use,
    for the argument types it uses, so that a timing of it measures counting only. The
    kernels take k as an argument: small tables of the same kind (direct up to k = 9,
    bucketed above) stand in for the real ones."""
    k = check_k_max(k_max)
    buf = np.frombuffer(b"ACGT", dtype=np.uint8)  # read-only, as mapped files are
    _kernel("_state_at")(buf, 0, 4, _BYTE_CLASS, k, 0, 0)
    _kernel("_scan_piece")(buf, 0, 4, _BYTE_CLASS, _AMBIGUOUS)
    counter = _Counter(3 if k <= _DIRECT_MAX_K else _DIRECT_MAX_K + 1, 2, _BYTE_CLASS, batch=16)
    try:
        counter.count(buf, np.array([[0, 4, 0, 0, 0]], dtype=np.int64))
        counter.result(True)
    finally:
        counter.close()


# --------------------------------------------------------------------------- FASTA bytes

BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


def _is_bgzf(head: bytes) -> bool:
    """Does a gzip member header carry BGZF's 'BC' extra subfield (bgzip, htslib, Biopython)?"""
    return len(head) >= 16 and head[:4] == b"\x1f\x8b\x08\x04" and head[12:16] == b"BC\x02\x00"


def _gzip_blocks(path, block_size: int) -> Iterator[bytes]:
    """Decompressed bytes of a gzip or bgzip file (any number of members), at most
    ``block_size`` at a time (ISA-L). Everything that decompresses is yielded before a
    truncated or corrupt stream raises, so the caller knows which record it was reading."""
    from isal import isal_zlib

    with open(path, "rb") as fh:
        if _is_bgzf(fh.read(18)):
            fh.seek(0, os.SEEK_END)
            if fh.tell() < len(BGZF_EOF) or (fh.seek(-len(BGZF_EOF), os.SEEK_END), fh.read())[1] != BGZF_EOF:
                raise io.InputError(
                    path,
                    "BGZF (bgzip) file lacks its 28-byte end-of-file marker block: it is truncated "
                    "(a cut at a block boundary leaves every remaining block readable)",
                )
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


def _map_range(fh, lo: int, hi: int) -> tuple[mmap.mmap, int]:
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
            mm, base = _map_range(fh, start, min(size, start + block_size))
            if hasattr(mmap, "MADV_WILLNEED"):
                mm.madvise(mmap.MADV_WILLNEED)  # read ahead while the previous window is counted
            return mm, start - base, base

        nxt = window(0) if size else None
        for start in range(0, size, block_size):
            current = nxt
            nxt = window(start + block_size) if start + block_size < size else None
            yield current
            current = None  # unmapped once the consumer drops its views


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


def _is_gzip(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


class _FastaStream:
    """Splits a FASTA byte stream into records, window by window.

    A plain file is memory-mapped window by window (its bytes are never copied); gzip and
    bgzip are decompressed in blocks (in a reader thread with ``prefetch``). Iterating
    yields ``(buf, segments)``: ``buf`` a uint8 array over the window, ``segments`` a list
    of ``(record_index, start, end, first)`` byte ranges of sequence lines in ``buf``
    (``first``: the range starts the record's sequence). Names are in ``self.names``.
    """

    def __init__(self, path, block_size: int = _BLOCK_SIZE, prefetch: bool = False):
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
        if _is_gzip(self.path):
            blocks = _gzip_blocks(self.path, self.block_size)
            if self.prefetch:
                blocks = _prefetched(blocks)
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
        """InputError for the byte ``buf[index]`` of class _ERROR in ``record``."""
        return _byte_error(self.path, self.names[record], chr(buf[index]), self.offset + index)


def _byte_error(path, record: str, letter: str, offset: int) -> io.InputError:
    problem = f"{letter!r} at byte {offset} is not a nucleotide code"
    if letter in _PROTEIN_ONLY:
        problem += " (this looks like a protein FASTA)"
    return io.InputError(path, problem, record=record)


# --------------------------------------------------------------------------- counting


def _split(buf, pieces: np.ndarray, parts: int, k: int, cls) -> list[np.ndarray]:
    """Cut pieces (start, end, code, run, record) into at most ``parts`` groups of about
    equal size, cutting inside a piece where needed (state at the cut recomputed exactly)."""
    if parts <= 1 or len(pieces) == 0:
        return [pieces]
    state_at = _kernel("_state_at")
    total = int((pieces[:, 1] - pieces[:, 0]).sum())
    groups, rest, taken = [], pieces, 0
    for j in range(1, parts):
        want = total * j // parts - taken  # bytes of ``rest`` that go into this group
        if want <= 0:
            continue
        cum = np.cumsum(rest[:, 1] - rest[:, 0])
        p = int(np.searchsorted(cum, want))  # first piece reaching the target
        if p >= len(rest):
            break
        start, end, code, run, _ = (int(x) for x in rest[p])
        cut = end - int(cum[p] - want)
        if cut >= end:
            groups.append(rest[: p + 1])
            rest = rest[p + 1 :]
        else:
            head = rest[: p + 1].copy()
            head[p, 1] = cut
            tail = rest[p:].copy()
            tail[0, 0] = cut
            tail[0, 2], tail[0, 3] = state_at(buf, start, cut, cls, k, code, run)
            groups.append(head)
            rest = tail
        taken += want
    groups.append(rest)
    return [g for g in groups if len(g)]


class _Counter:
    """Count tables of one counting job (k, threads) and the workers that fill them.

    Work comes in units of at most ``batch`` bytes (a record cut anywhere, its rolling state
    at the cut recomputed), which ``threads`` workers take as they come free, so a thread
    that the machine slows down simply does fewer units; with one thread a unit is counted
    at once in the calling thread. k <= 9: each worker increments its own uint32
    k_max-gram table (in cache), folded into int64 before it could overflow. k >= 10: a
    worker collects and counting-sorts a unit's codes into its batch buffers, then counts
    them into one shared uint16 table range by range, holding that range's lock (workers
    start at different ranges, so they rarely wait). Heads (n-grams right after a record
    start or a non-ACGT letter) go to per-worker int64 tables up to k = 9; above, a unit's
    heads are collected with its codes and added to one table (a per-worker table of
    4**(k-1) * 4/3 entries would be mostly untouched, yet merging it reads all of it).
    """

    RANGES_PER_THREAD = 4

    def __init__(self, k: int, threads: int, cls: np.ndarray, batch: int | None = None):
        self.k, self.threads, self.cls = k, threads, cls
        self.nbits = _bucket_bits(k)
        self.batch = int(batch or _BATCH)
        self.head_off = _head_offsets(k)
        n_heads = max(1, int(self.head_off[k]))
        # heads: per worker up to k = 9 (small); above, one table, added to under a lock
        self.heads = [np.zeros(n_heads, dtype=np.int64) for _ in range(threads if self.nbits == 0 else 1)]
        self.heads_lock = threading.Lock()
        self.fold_lock = threading.Lock()  # k <= 9: workers folding their uint32 tables into int64
        self.state = np.zeros((threads, 7), dtype=np.int64)
        if self.nbits == 0:
            self.tops = [np.zeros(4**k, dtype=np.uint32) for _ in range(threads)]
            self.folded = np.zeros(4**k, dtype=np.int64)
            self.pending = [0] * threads
        else:
            # One block of memory for the batch buffers and the uint16 table, large enough to
            # become the int64 result in place at the end (so the result needs no fresh
            # memory, whose first touch can cost more than the counting on a busy VM).
            n = 4**k
            buffers = threads * self.batch * 6  # uint32 codes + uint16 sorted low bits per worker
            top_at = max(6 * n, buffers)  # _widen's condition for writing the result in place
            self.arena = np.empty(top_at + 2 * n, dtype=np.uint8)
            self.codes = self.arena[: threads * self.batch * 4].view(np.uint32).reshape(threads, self.batch)
            self.tmp = self.arena[threads * self.batch * 4 : buffers].view(np.uint16).reshape(threads, self.batch)
            self.top = self.arena[top_at : top_at + 2 * n].view(np.uint16)
            self.top[:] = 0
            self.carry = np.zeros(n, dtype=np.int64)  # touched only where a count wraps
            self.wraps = [0] * threads
            self.starts = np.zeros((threads, (1 << self.nbits) + 1), dtype=np.int64)
            self.fill = np.zeros((threads, (1 << self.nbits) + 1), dtype=np.int64)
            n_ranges = min(1 << self.nbits, self.RANGES_PER_THREAD * threads)
            self.edges = [(1 << self.nbits) * r // n_ranges for r in range(n_ranges + 1)]
            self.locks = [threading.Lock() for _ in range(n_ranges)]
        self.free = queue.SimpleQueue()  # worker slots (buffers) not in use
        for t in range(threads):
            self.free.put(t)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="count") if threads > 1 else None
        self.inflight: list = []  # (sequence number, future) of submitted units, oldest first
        self.seq = 0
        self.errors: list = []  # (unit number, record, letter, file offset) of bad bytes found

    def close(self):
        if self.pool is not None:
            for _, f in self.inflight:
                f.cancel()
            self.pool.shutdown(wait=True)
            self.pool = None

    def count(self, buf: np.ndarray, pieces: np.ndarray, wait: bool = True, offset: int = 0):
        """Count the pieces (start, end, code, run, record) of ``buf``, whose byte 0 is at
        ``offset`` in the file. With ``wait`` (default) return (record, letter, file
        offset) of the first bad byte of everything counted so far, or None; else return
        at once (a few units may still be in flight: :meth:`wait`)."""
        if len(pieces):
            size = int((pieces[:, 1] - pieces[:, 0]).sum())
            parts = -(-size // self.batch)
            for unit in _split(buf, pieces, parts, self.k, self.cls):
                self.seq += 1
                if self.pool is None:
                    self._unit(self.seq, buf, unit, offset)
                    continue
                while len(self.inflight) >= 2 * self.threads:  # bounded: windows stay mapped while in flight
                    self.inflight.pop(0)[1].result()
                self.inflight.append((self.seq, self.pool.submit(self._unit, self.seq, buf, unit, offset)))
        return self.wait() if wait else None

    def wait(self):
        """Wait for the units in flight; (record, letter, file offset) of the first bad
        byte (units are numbered in file order and each stops at its first), or None."""
        while self.inflight:
            self.inflight.pop(0)[1].result()
        if not self.errors:
            return None
        return min(self.errors)[1:]

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    def _unit(self, seq: int, buf, unit: np.ndarray, offset: int) -> None:
        slot = self.free.get()
        try:
            bad = self._count_direct(slot, buf, unit) if self.nbits == 0 else self._count_batch(slot, buf, unit)
            if bad is not None:
                self.errors.append((seq, int(unit[bad[0], 4]), chr(buf[bad[1]]), offset + bad[1]))
        finally:
            self.free.put(slot)

    def _count_direct(self, t, buf, unit):
        size = int((unit[:, 1] - unit[:, 0]).sum())
        if self.pending[t] + size > _FOLD_LIMIT:
            with self.fold_lock:
                self.folded += self.tops[t]
            self.tops[t][:] = 0
            self.pending[t] = 0
        self.pending[t] += size
        state = self.state[t]
        _kernel("_count_direct")(buf, unit, state, self.cls, self.k, self.tops[t], self.heads[t], self.head_off)
        return None if state[0] < 0 else (int(state[0]), int(state[1]))

    def _count_batch(self, t, buf, unit):
        collect, increment = _kernel("_collect"), _kernel("_increment")
        state = self.state[t]
        state[:] = 0
        state[1] = -1
        shift = 2 * self.k - self.nbits
        starts, tmp = self.starts[t], self.tmp[t]
        n_ranges = len(self.locks)
        first = t * n_ranges // self.threads  # workers start at different ranges
        while state[0] < len(unit):
            codes = self.codes[t]
            m = collect(buf, unit, state, self.cls, self.k, self.head_off, codes, tmp, starts, self.fill[t], shift)
            if m < 0:
                return int(state[4]), int(state[5])
            if state[6]:
                with self.heads_lock:
                    _kernel("_add_heads")(self.heads[0], codes, len(codes) - int(state[6]), len(codes))
            todo = [(first + i) % n_ranges for i in range(n_ranges)]
            todo = [r for r in todo if starts[self.edges[r + 1]] > starts[self.edges[r]]]
            while todo:  # ranges whose lock is free first; wait only when all are taken
                r = next((r for r in todo if self.locks[r].acquire(blocking=False)), None)
                if r is None:
                    r = todo[0]
                    self.locks[r].acquire()
                try:
                    self.wraps[t] += increment(
                        self.top, self.carry, tmp, starts, self.edges[r], self.edges[r + 1], shift
                    )
                finally:
                    self.locks[r].release()
                todo.remove(r)
        return None

    def result(self, both_strands: bool) -> "KmerCounts":
        bad = self.wait()
        if bad is not None:  # callers that name files and records have raised already
            raise ValueError(
                f"record #{bad[0]}: byte {bad[1]!r} at offset {bad[2]} is not a letter of the input's kind"
            )
        heads = self.heads[0]
        merge = _kernel("_merge_heads")
        for h in self.heads[1:]:
            merge(heads, h)
        if self.nbits == 0:
            top = self.folded
            for t in self.tops:
                top += t
        else:
            if self.top is None:
                raise RuntimeError("result() was taken already")
            top = self.arena[: 8 * 4**self.k].view(np.int64)
            _kernel("_widen")(self.top, self.carry, top, sum(self.wraps) > 0, np.empty(1 << 16, dtype=np.uint16))
            self.top = self.codes = self.tmp = None
        return _collapse(self.k, top, heads, self.head_off, both_strands)


def _collapse(k: int, top: np.ndarray, heads: np.ndarray, head_off: np.ndarray, both_strands: bool) -> "KmerCounts":
    counts = [None] * k
    counts[k - 1] = top
    for n in range(k - 1, 0, -1):
        # an n-gram ending at e with >= n+1 valid bases is the suffix of an (n+1)-gram
        c = counts[n].reshape(4, 4**n).sum(axis=0)
        c += heads[head_off[n] : head_off[n] + 4**n]
        counts[n - 1] = c
    if both_strands:
        add_rc = _kernel("_add_reverse_complements")
        for n, c in enumerate(counts, start=1):
            add_rc(c, n)
    return KmerCounts(k, both_strands, counts)


def memory_mb(k_max: int, threads: int = 1) -> int:
    """Upper estimate of the peak memory (MiB) of :func:`count_fasta` or of merging counts."""
    k = check_k_max(k_max)
    threads = _check_threads(threads)
    heads = (4**k // 3) * 8
    if _bucket_bits(k):  # shared uint16 table (its int64 carries stay untouched) + batches
        tables = max(4**k * 8, threads * 6 * _BATCH + 4**k * 2) + heads  # batches + table, then the result
    else:
        tables = 4**k * 8 + threads * (4**k * 4 + heads)
    result = 3 * 4**k * 8  # shorter n; or while merging, a second counts file and the sum
    return int((tables + result + 4 * _BLOCK_SIZE) / 2**20) + 400


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
    index: str | os.PathLike | None = None,
) -> KmerCounts:
    """Count every n-gram (n = 1..k_max) in a plain, gzip or bgzip FASTA file.

    ``records``: count only the records with these names (a shard). Without ``index`` the
    file is streamed and the other records are read past without being counted or checked;
    with ``index`` (the ``.fai`` of a plain FASTA, from samtools or pyfaidx) only the
    shard's records are read, at their byte offsets. A name missing from the file (or the
    index) raises :class:`dnalm.io.InputError`, as does any problem of the file (see module
    docstring). ``threads``: counting workers (with more than one, the calling thread reads
    and decompresses meanwhile). Memory: :func:`memory_mb`.
    """
    k = check_k_max(k_max)
    threads = _check_threads(threads)
    if records is not None:
        records = list(dict.fromkeys(records))
        if not records:  # an empty shard (more shards than records)
            return KmerCounts.zeros(k, both_strands)
    if index is not None:
        if records is None:
            raise ValueError("count_fasta with an index needs the records to count")
        return _count_indexed(path, index, records, k, both_strands, threads, block_size)
    wanted = None if records is None else set(records)
    state_at = _kernel("_state_at")
    counter = _Counter(k, threads, _BYTE_CLASS)
    stream = _FastaStream(path, block_size)  # this thread reads (and decompresses) while workers count
    carry = (0, 0)  # state at the end of the previous window, for a record that goes on
    try:
        for buf, segments in stream:
            rows = []
            for rec, start, end, first in segments:
                if wanted is not None and stream.names[rec] not in wanted:
                    continue
                code, run = (0, 0) if first else carry
                rows.append((start, end, code, run, rec))
            if rows and rows[-1][1] == len(buf):
                start, end, code, run, _ = rows[-1]
                carry = state_at(buf, start, end, _BYTE_CLASS, k, code, run)
            if not rows:
                continue
            counter.count(buf, np.array(rows, dtype=np.int64), wait=False, offset=stream.offset)
            del buf
            if counter.failed:
                break
        bad = counter.wait()
        if bad is not None:
            raise _byte_error(path, stream.names[bad[0]], *bad[1:])
        if wanted is not None:
            missing = sorted(wanted - set(stream.names))
            if missing:
                raise io.InputError(path, f"record(s) not found in the FASTA: {', '.join(missing[:10])}")
        return counter.result(both_strands)
    finally:
        counter.close()


def _read_index(path, index) -> dict:
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


def _check_indexed_record(fh, path, index, name: str, start: int, end: int, size: int) -> None:
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


def _count_indexed(path, index, records, k, both_strands, threads, block_size) -> KmerCounts:
    """count_fasta for the records of a plain FASTA located through its .fai index."""
    if _is_gzip(path):
        raise io.InputError(
            path, "a .fai index is used for plain (uncompressed) FASTA only; count a gzip file without it"
        )
    ranges = _read_index(path, index)
    missing = [r for r in records if r not in ranges]
    if missing:
        raise io.InputError(index, f"record(s) not found in the index: {', '.join(missing[:10])}")
    size = os.path.getsize(path)
    spans = [(ranges[name][0], min(ranges[name][1], size)) for name in records]  # no final newline: bend = size + 1
    state_at = _kernel("_state_at")
    counter = _Counter(k, threads, _BYTE_CLASS)
    try:
        with open(path, "rb") as fh:
            for name, (start, end) in zip(records, spans):
                _check_indexed_record(fh, path, index, name, start, end, size)
            for rec, (name, (start, end)) in enumerate(zip(records, spans)):
                code, run = 0, 0
                for lo in range(start, end, block_size):  # windows mapped while their units are counted
                    hi = min(end, lo + block_size)
                    mm, base = _map_range(fh, lo, hi)
                    buf = np.frombuffer(mm, dtype=np.uint8)
                    if mm.find(b">", lo - base, hi - base) >= 0:
                        raise io.InputError(
                            index,
                            f"does not match {path}: a '>' inside the record's indexed bytes; rebuild the index",
                            record=name,
                        )
                    piece = np.array([[lo - base, hi - base, code, run, rec]], dtype=np.int64)
                    counter.count(buf, piece, wait=False, offset=base)
                    code, run = state_at(buf, lo - base, hi - base, _BYTE_CLASS, k, code, run)
                    del buf, mm  # unmapped once its units are counted
                    if counter.failed:
                        break
                if counter.failed:
                    break
        bad = counter.wait()
        if bad is not None:
            raise _byte_error(path, records[bad[0]], *bad[1:])
        return counter.result(both_strands)
    finally:
        counter.close()


def count_sequences(seqs: Iterable[str], k_max: int, both_strands: bool = False, threads: int = 1) -> KmerCounts:
    """Count every n-gram (n = 1..k_max) in an iterable of DNA strings (one record each).

    Letters other than ACGT (either case) break windows, gaps ('-') are removed, as in
    :func:`dnalm.seq.encode`.
    """
    k = check_k_max(k_max)
    counter = _Counter(k, _check_threads(threads), _CODE_CLASS)
    try:
        chunk, size = [], 0
        for seq in seqs:
            chunk.append(encode(seq))
            size += len(chunk[-1])
            if size >= _BLOCK_SIZE:
                _count_code_arrays(counter, chunk)
                chunk, size = [], 0
        _count_code_arrays(counter, chunk)
        return counter.result(both_strands)
    finally:
        counter.close()


def _count_code_arrays(counter: "_Counter", arrays: list[np.ndarray]) -> None:
    if not arrays:
        return
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    _count_codes(counter, np.concatenate(arrays), offsets)


def _count_codes(counter: "_Counter", bases: np.ndarray, offsets: np.ndarray) -> None:
    """Count windows bases[offsets[i]:offsets[i+1]] (dnalm.seq codes) as separate records."""
    n = len(offsets) - 1
    pieces = np.zeros((n, 5), dtype=np.int64)
    pieces[:, 0] = offsets[:-1]
    pieces[:, 1] = offsets[1:]
    pieces[:, 4] = np.arange(n)
    counter.count(bases, pieces[pieces[:, 1] > pieces[:, 0]], wait=False)  # checked in result()


def count_corpus(corpus, k_max: int, both_strands: bool = False, threads: int = 1) -> KmerCounts:
    """Count every n-gram (n = 1..k_max) over the windows of a :class:`dnalm.corpus.Corpus`
    (each window one record; code 4 breaks windows), reading its memory-mapped bases in place."""
    k = check_k_max(k_max)
    counter = _Counter(k, _check_threads(threads), _CODE_CLASS)
    offsets = np.asarray(corpus.offsets, dtype=np.int64)
    try:
        first = 0
        while first < len(offsets) - 1:  # about _BLOCK_SIZE bases of windows at a time
            last = int(np.searchsorted(offsets, offsets[first] + _BLOCK_SIZE, side="right")) - 1
            last = min(max(last, first + 1), len(offsets) - 1)
            lo, hi = int(offsets[first]), int(offsets[last])
            _count_codes(counter, np.asarray(corpus.bases[lo:hi]), offsets[first : last + 1] - lo)
            first = last
        return counter.result(both_strands)
    finally:
        counter.close()


# --------------------------------------------------------------------------- sharding


def fasta_records(path: str | os.PathLike, block_size: int = _BLOCK_SIZE) -> dict[str, int]:
    """Length of each record in file order (letters, gaps and whitespace not counted).

    One streaming pass (plain gzip included) that also checks the whole file, so that a
    bad genome fails here, once, with a clear :class:`dnalm.io.InputError`; this includes a
    record that is probably a protein spelled with letters that double as nucleotide codes
    (:func:`ambiguity_problem`).
    """
    scan = _kernel("_scan_piece")
    stream = _FastaStream(path, block_size, prefetch=True)
    lengths: dict[int, int] = {}
    ambiguous: dict[int, int] = {}
    for buf, segments in stream:
        for rec, start, end, _ in segments:
            n, amb, bad = scan(buf, start, end, _BYTE_CLASS, _AMBIGUOUS)
            if bad >= 0:
                raise stream.error(buf, rec, bad)
            lengths[rec] = lengths.get(rec, 0) + n
            ambiguous[rec] = ambiguous.get(rec, 0) + amb
    for rec, n in lengths.items():
        problem = ambiguity_problem(n, ambiguous[rec])
        if problem:
            raise io.InputError(path, problem, record=stream.names[rec])
    return {name: lengths.get(i, 0) for i, name in enumerate(stream.names)}


def sequence_problem(seq: str) -> str | None:
    """What is wrong with one record's sequence (a ``str``, line breaks removed) under the
    counter's rules, or None: a letter that is no nucleotide code (position 1-based), or
    too many ambiguity codes (:func:`ambiguity_problem`). What the counter accepts is
    accepted: ACGT, other IUPAC codes, U, X, '.', gaps ('-') and whitespace, either case."""
    raw = np.frombuffer(seq.encode("ascii", errors="replace"), dtype=np.uint8)
    cls = _BYTE_CLASS[raw]
    bad = np.flatnonzero(cls == _ERROR)
    if bad.size:
        letter = seq[int(bad[0])]
        problem = f"letter {letter!r} at position {int(bad[0]) + 1} is not a nucleotide code"
        return problem + (" (this looks like a protein FASTA)" if letter in _PROTEIN_ONLY else "")
    return ambiguity_problem(int(np.count_nonzero(cls <= INVALID)), int(_AMBIGUOUS[raw].sum()))


def ambiguity_problem(n_letters: int, n_ambiguous: int) -> str | None:
    """Why a "DNA" record of ``n_letters`` letters, ``n_ambiguous`` of them IUPAC ambiguity
    codes other than N (R, Y, S, W, K, M, B, D, H, V) or U, is probably a protein; or None.

    Real genomes hold a handful of such letters; a protein whose letters all double as
    nucleotide codes (e.g. ``MKVAHDSNGTRW...``) holds far more than ``AMBIGUOUS_MAX_SHARE``.
    """
    if n_letters >= AMBIGUOUS_MIN_LETTERS and n_ambiguous > AMBIGUOUS_MAX_SHARE * n_letters:
        return (
            f"{n_ambiguous} of its {n_letters} letters ({n_ambiguous / n_letters:.0%}) are IUPAC ambiguity "
            f"codes other than N (more than {AMBIGUOUS_MAX_SHARE:.0%}): probably a protein, not DNA"
        )
    return None


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
