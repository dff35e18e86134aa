"""The count tables of one k-mer counting job and the worker threads that fill them, unit
by unit, through the numba kernels of :mod:`dnalm._kernels` (the algorithm: :mod:`dnalm.kmers`).

Work is given as "pieces", rows (start, end, code, run, record) of an int64 array: bytes
buf[start:end] of one record, with the rolling state (code, run) just before ``start``.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dnalm._kernels import kernel

BATCH = 1 << 23  # bytes per work unit (k >= 10: codes per batch; uint32 codes + uint16 sorted, 48 MiB)
FOLD_LIMIT = (1 << 32) - (1 << 26)  # bases per thread before uint32 tables go to int64
DIRECT_MAX_K = 9  # up to here the k_max-gram table (uint32, <= 1 MiB) is incremented directly
SLICE_BITS = 15  # above it, codes are bucketed so that a bucket touches 2**15 counts (64 KiB)
assert SLICE_BITS <= 16  # a code within its bucket is stored as uint16


def bucket_bits(k: int) -> int:
    """Leading code bits used to bucket k-mer codes (0: increment the table directly)."""
    return 0 if k <= DIRECT_MAX_K else 2 * k - SLICE_BITS


def head_offsets(k: int) -> np.ndarray:
    """Heads of length n (1 <= n < k) live at heads[off[n] : off[n] + 4**n]."""
    off = np.zeros(k + 1, dtype=np.int64)
    for n in range(1, k):
        off[n + 1] = off[n] + 4**n
    return off


def split(buf, pieces: np.ndarray, parts: int, k: int, cls) -> list[np.ndarray]:
    """Cut pieces (start, end, code, run, record) into at most ``parts`` groups of about
    equal size, cutting inside a piece where needed (state at the cut recomputed exactly)."""
    if parts <= 1 or len(pieces) == 0:
        return [pieces]
    state_at = kernel("state_at")
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


class CountJob:
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
        self.nbits = bucket_bits(k)
        self.batch = int(batch or BATCH)
        self.head_off = head_offsets(k)
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
            for unit in split(buf, pieces, parts, self.k, self.cls):
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
        if self.pending[t] + size > FOLD_LIMIT:
            with self.fold_lock:
                self.folded += self.tops[t]
            self.tops[t][:] = 0
            self.pending[t] = 0
        self.pending[t] += size
        state = self.state[t]
        kernel("count_direct")(buf, unit, state, self.cls, self.k, self.tops[t], self.heads[t], self.head_off)
        return None if state[0] < 0 else (int(state[0]), int(state[1]))

    def _count_batch(self, t, buf, unit):
        collect, increment = kernel("collect"), kernel("increment")
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
                    kernel("add_heads")(self.heads[0], codes, len(codes) - int(state[6]), len(codes))
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

    def result(self, both_strands: bool) -> list[np.ndarray]:
        """The int64 counts of n = 1..k (counts[n - 1], length 4**n), once every unit is
        counted; with ``both_strands`` each n-gram also gets its reverse complement's count."""
        bad = self.wait()
        if bad is not None:  # callers that name files and records have raised already
            raise ValueError(
                f"record #{bad[0]}: byte {bad[1]!r} at offset {bad[2]} is not a letter of the input's kind"
            )
        heads = self.heads[0]
        merge = kernel("merge_heads")
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
            kernel("widen")(self.top, self.carry, top, sum(self.wraps) > 0, np.empty(1 << 16, dtype=np.uint16))
            self.top = self.codes = self.tmp = None
        return _collapse(self.k, top, heads, self.head_off, both_strands)


def _collapse(k: int, top: np.ndarray, heads: np.ndarray, head_off: np.ndarray, both_strands: bool) -> list[np.ndarray]:
    """counts[n - 1] for n = 1..k from the k-gram table and the heads."""
    counts = [None] * k
    counts[k - 1] = top
    for n in range(k - 1, 0, -1):
        # an n-gram ending at e with >= n+1 valid bases is the suffix of an (n+1)-gram
        c = counts[n].reshape(4, 4**n).sum(axis=0)
        c += heads[head_off[n] : head_off[n] + 4**n]
        counts[n - 1] = c
    if both_strands:
        add_rc = kernel("add_reverse_complements")
        for n, c in enumerate(counts, start=1):
            add_rc(c, n)
    return counts
