"""k-mer counting for the NPMI table (docs/design.md#kmer-counting): counts of every
n-gram, their files, and the split of a genome into shards that are counted apart.

Every n-gram, n = 1..k_max (k_max <= 12), is counted over the forward strand of each
record (``both_strands`` adds the reverse complement of each record). Lowercase
(soft-masked) bases count as uppercase, and U as T; any window holding another letter (N,
other IUPAC codes, X, '.') is skipped; gaps ('-') and whitespace are removed; a record
shorter than n contributes no n-gram. Counts are dense int64 arrays indexed by the
2-bit/base-4 code of the n-gram (A0 C1 G2 T3, lexicographic order, as in ``dnalm.seq``).

Genome scale (hg38, 3.1 Gbp) is handled without anything growing with the genome:

* **Reading** (:mod:`dnalm.fasta`). A plain FASTA is memory-mapped window by window, gzip
  and bgzip are decompressed in blocks; sequence bytes are never copied or upper-cased:
  the kernels (:mod:`dnalm._kernels`) read them in place through a 256-entry class table
  (``dnalm.fasta.BYTE_CLASS``), so a letter that is no nucleotide code (a protein FASTA)
  is found while counting.
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
  ``_counter.BATCH`` bytes (inside records too: the state (rolling code and L) at a cut is
  recomputed exactly by scanning back at most k_max letters), which ``threads`` workers
  (numba kernels release the GIL) take as they come free, while the calling thread reads
  and parses the next window. So the result does not depend on the threads, the
  ``block_size`` or where records fall, and a worker that a busy machine slows down just
  takes fewer units (no barrier until the end).
* **Cache-friendly tables.** Up to k_max = 9 each worker increments its own uint32
  k_max-gram table (<= 1 MiB, in cache), folded into int64 totals before it could reach
  2**32 (``_counter.FOLD_LIMIT`` bases), so counts are exact at any genome size. Above that a
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

Scatter/gather: :func:`dnalm.fasta.fasta_records` (a streaming pass: names and lengths,
validates the file) and :func:`shard_records` split the records into ``n_shards`` groups
of about equal length; :func:`count_fasta` with ``records=`` counts one group (with
``index=`` it reads only the group's records; without, it streams the whole file and skips
the other records' bytes, which works on plain gzip too); :func:`merge_count_files` sums
the groups. :func:`count_corpus` counts a pretraining corpus (e.g. the barcodes a model
trains on). Problems of the input raise :class:`dnalm.io.InputError` naming the file, the
record and the problem (listed in :mod:`dnalm.fasta`).

Counts files (:func:`save_counts`) are compressed ``.npz`` archives with arrays
``counts_1`` .. ``counts_{k_max}`` (int64, length 4**n), ``k_max`` and ``both_strands``.
A run killed while writing one leaves a temporary file that the next write removes.
"""

from __future__ import annotations

import heapq
import os
import zipfile
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from dnalm import _counter, fasta, io
from dnalm._kernels import kernel
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

# dnalm.seq codes (corpora, count_sequences): 0..3 bases, 4 any other letter
_CODE_CLASS = np.full(256, fasta.ERROR, dtype=np.uint8)
_CODE_CLASS[:4] = np.arange(4)
_CODE_CLASS[4] = INVALID

_BLOCK_SIZE = fasta.BLOCK_SIZE  # bytes read (decompressed, or mapped) at a time; bases per corpus chunk


def warm_up(k_max: int = 6) -> None:
    """Load (or compile, after a code change) every kernel that :func:`count_fasta` may use,
    for the argument types it uses, so that a timing of it measures counting only. The
    kernels take k as an argument: small tables of the same kind (direct up to k = 9,
    bucketed above) stand in for the real ones."""
    k = check_k_max(k_max)
    buf = np.frombuffer(b"ACGT", dtype=np.uint8)  # read-only, as mapped files are
    kernel("state_at")(buf, 0, 4, fasta.BYTE_CLASS, k, 0, 0)
    kernel("scan_piece")(buf, 0, 4, fasta.BYTE_CLASS, fasta.AMBIGUOUS)
    small_k = 3 if k <= _counter.DIRECT_MAX_K else _counter.DIRECT_MAX_K + 1
    counter = _counter.CountJob(small_k, 2, fasta.BYTE_CLASS, batch=16)
    try:
        counter.count(buf, np.array([[0, 4, 0, 0, 0]], dtype=np.int64))
        counter.result(True)
    finally:
        counter.close()


def memory_mb(k_max: int, threads: int = 1) -> int:
    """Upper estimate of the peak memory (MiB) of :func:`count_fasta` or of merging counts."""
    k = check_k_max(k_max)
    threads = _check_threads(threads)
    heads = (4**k // 3) * 8
    if _counter.bucket_bits(k):  # shared uint16 table (its int64 carries stay untouched) + batches
        batches = threads * 6 * _counter.BATCH
        tables = max(4**k * 8, batches + 4**k * 2) + heads  # batches + table, then the result
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
    index) raises :class:`dnalm.io.InputError`, as does any problem of the file (see
    :mod:`dnalm.fasta`). ``threads``: counting workers (with more than one, the calling thread reads
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
    state_at = kernel("state_at")
    counter = _counter.CountJob(k, threads, fasta.BYTE_CLASS)
    stream = fasta.FastaStream(path, block_size)  # this thread reads (and decompresses) while workers count
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
                carry = state_at(buf, start, end, fasta.BYTE_CLASS, k, code, run)
            if not rows:
                continue
            counter.count(buf, np.array(rows, dtype=np.int64), wait=False, offset=stream.offset)
            del buf
            if counter.failed:
                break
        bad = counter.wait()
        if bad is not None:
            raise fasta.byte_error(path, stream.names[bad[0]], *bad[1:])
        if wanted is not None:
            missing = sorted(wanted - set(stream.names))
            if missing:
                raise io.InputError(path, f"record(s) not found in the FASTA: {', '.join(missing[:10])}")
        return KmerCounts(k, both_strands, counter.result(both_strands))
    finally:
        counter.close()


def _count_indexed(path, index, records, k, both_strands, threads, block_size) -> KmerCounts:
    """count_fasta for the records of a plain FASTA located through its .fai index."""
    if fasta.is_gzip(path):
        raise io.InputError(
            path, "a .fai index is used for plain (uncompressed) FASTA only; count a gzip file without it"
        )
    ranges = fasta.read_index(path, index)
    missing = [r for r in records if r not in ranges]
    if missing:
        raise io.InputError(index, f"record(s) not found in the index: {', '.join(missing[:10])}")
    size = os.path.getsize(path)
    spans = [(ranges[name][0], min(ranges[name][1], size)) for name in records]  # no final newline: bend = size + 1
    state_at = kernel("state_at")
    counter = _counter.CountJob(k, threads, fasta.BYTE_CLASS)
    try:
        with open(path, "rb") as fh:
            for name, (start, end) in zip(records, spans):
                fasta.check_indexed_record(fh, path, index, name, start, end, size)
            for rec, (name, (start, end)) in enumerate(zip(records, spans)):
                code, run = 0, 0
                for lo in range(start, end, block_size):  # windows mapped while their units are counted
                    hi = min(end, lo + block_size)
                    mm, base = fasta.map_range(fh, lo, hi)
                    buf = np.frombuffer(mm, dtype=np.uint8)
                    if mm.find(b">", lo - base, hi - base) >= 0:
                        raise io.InputError(
                            index,
                            f"does not match {path}: a '>' inside the record's indexed bytes; rebuild the index",
                            record=name,
                        )
                    piece = np.array([[lo - base, hi - base, code, run, rec]], dtype=np.int64)
                    counter.count(buf, piece, wait=False, offset=base)
                    code, run = state_at(buf, lo - base, hi - base, fasta.BYTE_CLASS, k, code, run)
                    del buf, mm  # unmapped once its units are counted
                    if counter.failed:
                        break
                if counter.failed:
                    break
        bad = counter.wait()
        if bad is not None:
            raise fasta.byte_error(path, records[bad[0]], *bad[1:])
        return KmerCounts(k, both_strands, counter.result(both_strands))
    finally:
        counter.close()


def count_sequences(seqs: Iterable[str], k_max: int, both_strands: bool = False, threads: int = 1) -> KmerCounts:
    """Count every n-gram (n = 1..k_max) in an iterable of DNA strings (one record each).

    Letters other than ACGT (either case) break windows, gaps ('-') are removed, as in
    :func:`dnalm.seq.encode` (which the tokenizer uses: unlike :func:`count_fasta`, U is not
    read as T here).
    """
    k = check_k_max(k_max)
    counter = _counter.CountJob(k, _check_threads(threads), _CODE_CLASS)
    try:
        chunk, size = [], 0
        for seq in seqs:
            chunk.append(encode(seq))
            size += len(chunk[-1])
            if size >= _BLOCK_SIZE:
                _count_code_arrays(counter, chunk)
                chunk, size = [], 0
        _count_code_arrays(counter, chunk)
        return KmerCounts(k, both_strands, counter.result(both_strands))
    finally:
        counter.close()


def _count_code_arrays(counter: "_counter.CountJob", arrays: list[np.ndarray]) -> None:
    if not arrays:
        return
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    _count_codes(counter, np.concatenate(arrays), offsets)


def _count_codes(counter: "_counter.CountJob", bases: np.ndarray, offsets: np.ndarray) -> None:
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
    counter = _counter.CountJob(k, _check_threads(threads), _CODE_CLASS)
    offsets = np.asarray(corpus.offsets, dtype=np.int64)
    try:
        first = 0
        while first < len(offsets) - 1:  # about _BLOCK_SIZE bases of windows at a time
            last = int(np.searchsorted(offsets, offsets[first] + _BLOCK_SIZE, side="right")) - 1
            last = min(max(last, first + 1), len(offsets) - 1)
            lo, hi = int(offsets[first]), int(offsets[last])
            _count_codes(counter, np.asarray(corpus.bases[lo:hi]), offsets[first : last + 1] - lo)
            first = last
        return KmerCounts(k, both_strands, counter.result(both_strands))
    finally:
        counter.close()


# --------------------------------------------------------------------------- sharding


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
    """Write counts as a compressed ``.npz`` atomically (see module docstring for the keys),
    first removing the temporary files that a killed earlier write of ``path`` left."""
    io.remove_stale_temps(path)
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
