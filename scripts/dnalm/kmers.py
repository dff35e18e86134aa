"""k-mer counting for the NPMI table (DESIGN.md "k-mer counts and NPMI").

Every n-gram, n = 1..k_max, is counted over the forward strand of each record
(``both_strands`` adds the reverse complement of each record). Lowercase (soft-masked)
bases count as uppercase; any window holding a non-ACGT letter is skipped; a record
shorter than n contributes no n-gram. Counts are dense int64 arrays indexed by the
2-bit/base-4 code of the n-gram (A0 C1 G2 T3, lexicographic order, as in ``dnalm.seq``).

How counting works (designed to stream: the cost is one pass over the bases, the memory
is bounded by ``chunk_size`` and the 4**k_max table, never by the genome size):

* The bases of all records are fed, as 2-bit codes, to one :class:`_StreamCounter`, with
  one invalid code between records so that no window spans two records. Long records
  are fed in chunks; the counter keeps the last ``k_max - 1`` codes (the *carry*) and
  counts, for every chunk, exactly the windows that *end* inside it, so windows across a
  chunk boundary are counted once and only once.
* For each end position e let L[e] be the number of consecutive valid bases ending at e.
  A valid k_max-gram ends at e iff L[e] >= k_max; a valid n-gram ends at e iff
  L[e] >= n. Only the k_max-grams are bin-counted in full; an n-gram ending at e with
  L[e] >= n + 1 is the suffix of the valid (n+1)-gram ending at e, so
  ``counts[n] = (sum of (n+1)-gram counts over their first base) + (n-grams with
  L[e] == n exactly)``. The second term holds only the few n-grams right after a record
  start or a non-ACGT base, and L is computed only there.
* ``both_strands``: each window of the reverse-complement strand is the reverse
  complement of a window of the forward strand, so the two-strand counts are the
  forward counts plus the forward counts permuted by the reverse-complement of the code.

Counts files (:func:`save_counts`) are compressed ``.npz`` archives with arrays
``counts_1`` .. ``counts_{k_max}`` (int64, length 4**n), ``k_max`` and ``both_strands``.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Iterable, Sequence

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


# --------------------------------------------------------------------------- counting


def _window_codes(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes of all k-windows of ``codes`` and whether each holds a non-ACGT code.

    Same values as ``dnalm.seq.kmer_codes`` (``dirty == ~valid``), computed in place in
    uint32 (k <= 12 needs 24 bits), which is several times faster on long chunks.
    """
    n = len(codes) - k + 1
    if n <= 0:
        return np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=bool)
    bad = codes > 3
    clean = np.where(bad, np.uint8(0), codes)
    ids = clean[:n].astype(np.uint32)
    dirty = bad[:n].copy()
    for j in range(1, k):
        ids <<= np.uint32(2)
        ids |= clean[j : j + n]
        dirty |= bad[j : j + n]
    return ids, dirty


class _StreamCounter:
    """Counts n-grams (n = 1..k_max) over a stream of 2-bit code chunks.

    ``add(codes)`` appends codes to the current record; ``end_record()`` inserts a break so
    no window spans two records. Codes are buffered up to ``chunk_size`` and counted in one
    vectorised pass per buffer; see the module docstring for the method.
    """

    def __init__(self, k_max: int, chunk_size: int = 1 << 24):
        self.k = check_k_max(k_max)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self.top = np.zeros(4**self.k, dtype=np.int64)
        # heads[n - 1]: n-grams ending at e with exactly n valid bases ending at e (n < k)
        self.heads = [np.zeros(4**n, dtype=np.int64) for n in range(1, self.k)]
        # the last k-1 codes seen (invalid at the start: nothing to the left)
        self.carry = np.full(self.k - 1, INVALID, dtype=np.uint8)
        self.buffer: list[np.ndarray] = []
        self.buffered = 0

    def add(self, codes: np.ndarray) -> None:
        codes = np.asarray(codes, dtype=np.uint8)
        for start in range(0, len(codes), self.chunk_size):
            piece = codes[start : start + self.chunk_size]
            self.buffer.append(piece)
            self.buffered += len(piece)
            if self.buffered >= self.chunk_size:
                self.flush()

    def end_record(self) -> None:
        self.add(np.array([INVALID], dtype=np.uint8))

    def flush(self) -> None:
        if not self.buffered:
            return
        k = self.k
        new = np.concatenate(self.buffer)
        self.buffer, self.buffered = [], 0
        codes = np.concatenate([self.carry, new])  # windows ending in `new` start at >= 0
        self.carry = codes[len(codes) - (k - 1) :].copy()
        # window j = codes[j : j + k] ends at new[j]; `dirty` if it holds a non-ACGT code
        ids, dirty = _window_codes(codes, k)
        self.top += np.bincount(ids[~dirty], minlength=4**k)
        if k > 1 and dirty.any():
            # n-grams ending at e whose run of valid bases ending at e is exactly n long
            # (after a non-ACGT code or a record start); only dirty windows can have them
            idx = np.flatnonzero(dirty)
            ends = idx + (k - 1)
            bad_pos = np.flatnonzero(codes > 3)
            run = ends - bad_pos[np.searchsorted(bad_pos, ends, side="right") - 1]
            ids_d = ids[idx]
            for n in range(1, k):
                sel = ids_d[run == n] & np.uint32(4**n - 1)  # suffix n-gram ending at e
                if sel.size:
                    self.heads[n - 1] += np.bincount(sel, minlength=4**n)

    def result(self, both_strands: bool = False) -> KmerCounts:
        self.flush()
        counts = [None] * self.k
        counts[self.k - 1] = self.top.copy()
        for n in range(self.k - 1, 0, -1):
            # an n-gram ending at e with >= n+1 valid bases is the suffix of an (n+1)-gram
            counts[n - 1] = counts[n].reshape(4, 4**n).sum(axis=0) + self.heads[n - 1]
        if both_strands:
            counts = [c + c[reverse_complement_codes(n)] for n, c in enumerate(counts, start=1)]
        return KmerCounts(self.k, both_strands, counts)


def count_sequences(seqs: Iterable[str], k_max: int, both_strands: bool = False) -> KmerCounts:
    """Count every n-gram (n = 1..k_max) in an iterable of DNA strings (one record each)."""
    counter = _StreamCounter(k_max)
    for seq in seqs:
        counter.add(encode(seq))
        counter.end_record()
    return counter.result(both_strands)


def count_fasta(
    path: str | os.PathLike,
    k_max: int,
    both_strands: bool = False,
    records: Sequence[str] | None = None,
    chunk_size: int = 1 << 24,
) -> KmerCounts:
    """Count every n-gram (n = 1..k_max) in a (gzipped) FASTA file.

    ``records``: count only the records with these names (a shard); an empty list gives
    all-zero counts without reading the file. A name missing from the file raises
    :class:`dnalm.io.InputError`. Records are counted ``chunk_size`` bases at a time,
    with a ``k_max - 1`` carry between chunks, so memory does not grow with record length
    beyond the record string itself (which ``dnalm.io.read_fasta`` holds).
    """
    counter = _StreamCounter(k_max, chunk_size)
    wanted = None if records is None else set(records)
    if wanted is not None and not wanted:
        return counter.result(both_strands)
    found: set[str] = set()
    for name, seq in io.read_fasta(path):
        if wanted is not None:
            if name not in wanted:
                continue
            found.add(name)
        for start in range(0, len(seq), chunk_size):
            counter.add(encode(seq[start : start + chunk_size]))
        counter.end_record()
        if wanted is not None and found == wanted:
            break  # every requested record is counted; the rest of the file is not needed
    if wanted is not None and found != wanted:
        missing = sorted(wanted - found)
        raise io.InputError(path, f"record(s) not found in the FASTA: {', '.join(missing[:10])}")
    return counter.result(both_strands)


# --------------------------------------------------------------------------- sharding


def fasta_lengths(path: str | os.PathLike) -> dict[str, int]:
    """Length of each record, in file order (raw letters, gaps included).

    Uses a pyfaidx ``.fai`` index (built next to the file if absent) when the FASTA is
    plain or bgzip-compressed and indexable; otherwise (plain gzip, unequal line lengths,
    read-only directory, ...) falls back to a streaming scan with ``dnalm.io.read_fasta``,
    which also gives the clear error for a malformed file.
    """
    try:
        import pyfaidx

        fai = pyfaidx.Faidx(str(path))
        try:
            lengths = {name: int(rec.rlen) for name, rec in fai.index.items()}
        finally:
            fai.close()
        if lengths:
            return lengths
    except Exception:  # any indexing problem: the scan below is always correct
        pass
    return {name: len(seq) for name, seq in io.read_fasta(path)}


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
    for i in order:
        s = min(range(n_shards), key=lambda j: (totals[j], j))
        totals[s] += lengths[names[i]]
        members[s].append(i)
    return [[names[i] for i in sorted(m)] for m in members]


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
