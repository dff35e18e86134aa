"""The numba loops of the k-mer counter (dnalm.kmers): plain Python functions over byte and
count arrays, compiled on first use by :func:`kernel`.

``nogil=True``: the counter's worker threads run them in parallel. ``cache=True``: a
Snakemake job loads the machine code (in ``__pycache__`` next to this file, or in
``NUMBA_CACHE_DIR``) instead of recompiling it.

A byte's class comes from a 256-entry table (``dnalm.fasta.BYTE_CLASS`` for FASTA bytes):
0..3 a base (A C G T), 4 a letter that breaks windows, 5 a byte that is skipped (line
breaks, gaps), anything else an error. A "piece" is a row (start, end, code, run, record) of
an int64 array: bytes buf[start:end] of one record, with the rolling state (code: the last
bases, 2 bits each; run: how many valid bases end there) just before ``start``.
"""

from __future__ import annotations

import functools


@functools.cache
def kernel(name: str):
    """The compiled kernel ``name`` (numba is imported and its cache read on first use)."""
    import numba

    return numba.njit(nogil=True, cache=True)(globals()[name])


def count_direct(buf, pieces, state, cls, k, top, heads, head_off):
    """k <= 9: count the windows of every piece straight into ``top`` (uint32, in cache).
    On a byte of the error class, sets state[0:2] = (piece, byte index) and stops."""
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


def collect(buf, pieces, state, cls, k, head_off, codes, tmp, starts, fill, shift):
    """k >= 10, first half of a batch: from the cursor ``state`` = (piece, byte, code, run;
    byte -1 = at the piece's start) collect up to len(codes) k_max-gram codes and
    counting-sort them by their leading bits into ``tmp`` (bucket b is
    tmp[starts[b]:starts[b+1]], holding only the codes' low ``shift`` bits, since the
    bucket gives the others). Returns their number; on a byte of the error class sets
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


def increment(top, carry, tmp, starts, b0, b1, shift):
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


def add_heads(heads, events, lo, hi):
    """heads[events[j]] += 1 for j in lo..hi-1."""
    for j in range(lo, hi):
        heads[events[j]] += 1


def widen(top, carry, out, wrapped, chunk):
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


def state_at(buf, lo, s, cls, k, code0, run0):
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


def scan_piece(buf, start, end, cls, ambiguous):
    """Letters (bases, gaps and whitespace excluded) in buf[start:end], how many of them are
    in ``ambiguous``, and the index of the first byte of the error class (-1 if none)."""
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


def merge_heads(dst, src):
    """dst += src, writing only where src is non-zero (heads are sparse; pages stay untouched)."""
    for i in range(src.shape[0]):
        if src[i] != 0:
            dst[i] += src[i]


def add_reverse_complements(c, n):
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
