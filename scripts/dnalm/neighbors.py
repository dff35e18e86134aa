"""Exact cosine nearest neighbour of each query among reference embeddings: float32 block
products, or an int8 screen whose candidates are re-scored exactly, chosen by measuring both
kernels on this machine (the open-world 1-NN of the taxonomy protocol)."""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .vectors import as_2d, l2_normalize, pair_dots

_log = logging.getLogger("dnalm.neighbors")

#: work (queries x references x dims) above which ``nearest_neighbor(method="auto")``
#: considers the int8 screen (it calibrates the kernels first, :func:`calibrate`)
INT8_MIN_WORK = 5e10
#: the int8 screen is chosen when :func:`calibrate` measures a reference block at least this
#: many times cheaper than with float32: its preparation and exact re-scoring cost the rest
#: (at BIOSCAN-5M scale a 3.8x cheaper block gave a 2.7x faster search, BENCHMARKS.md)
INT8_MIN_SPEEDUP = 1.5
#: rows of queries and references per calibration product: big enough that thread start-up
#: does not swamp the int8 product (1,024-row blocks misjudged it under load)
CALIBRATION_BLOCK = 2048
_SLACK = 1e-5  # absolute slack on cosine similarities (float32 rounding of the split rows)
_CALIBRATION: dict[tuple[int, int, int], dict] = {}  # calibrate()'s results in this process


def _int8_available() -> bool:
    try:
        import torch

        return hasattr(torch, "_int_mm")
    except ImportError:  # pragma: no cover - torch is a pinned dependency
        return False


def _float32_block(q: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index and similarity of each row of ``q``'s most similar row of ``r`` (the first on
    ties), from one float32 product."""
    sims = q @ r.T
    j = sims.argmax(axis=1)
    return j, sims[np.arange(q.shape[0]), j]


def _int8_product(q_int, r_int, start: int, end: int) -> np.ndarray:
    """int32 ``Q R[start:end]^T`` (exact) as a numpy array."""
    import torch

    return torch._int_mm(q_int, r_int[start:end].T).numpy()


def _best_time(run, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return float(best)


def calibrate(dim: int, threads: int, block: int = CALIBRATION_BLOCK, repeats: int = 5) -> dict:
    """Measure what one ``block x block`` reference block costs each way, in seconds.

    ``float32_s``: the float32 product and argmax (:func:`_float32_block`, BLAS with the
    threads this process allows). ``int8_s``: the int8 product as the int8 search runs it
    (``threads`` worker threads each computing one ``torch._int_mm``, torch set to
    ``threads`` threads; ``product_s`` is the wall time of such a round over ``threads``)
    plus the screen of its result (``screen_s``). ``speedup`` is their ratio and ``method``
    the faster path: ``"int8"`` only when ``speedup`` reaches :data:`INT8_MIN_SPEEDUP`.

    Each side is the best of ``repeats`` timings after a warm-up (int8: the warm-up round
    counts as one), the two timed in turn so that other jobs on the cores slow both alike. An int8 round more than 10x slower than the
    float32 block is not timed again: a CPU without int8 dot-product units
    (``torch._int_mm`` then runs up to ~50x slower than float32) costs one round, once. A
    missing or failing int8 kernel gives ``int8_s`` None and ``method`` ``"float32"``.
    Cached per ``(dim, threads, block)`` for the process.
    """
    key = (int(dim), int(threads), int(block))
    if key in _CALIBRATION:
        return _CALIBRATION[key]
    threads = max(int(threads), 1)
    rng = np.random.default_rng(0)
    q = l2_normalize(rng.standard_normal((block, dim), dtype=np.float32))
    r = l2_normalize(rng.standard_normal((block, dim), dtype=np.float32))

    def float32():
        return _float32_block(q, r)

    float32()  # warm-up
    f32 = [_best_time(float32, 1), _best_time(float32, 1)]
    out = {"float32_s": None, "int8_s": None, "product_s": None, "screen_s": None, "speedup": 0.0,
           "method": "float32", "cpu": _cpu_capability()}
    rounds = []
    if _int8_available():
        import torch

        torch.set_num_threads(threads)  # as the int8 search sets it
        q_int = torch.from_numpy(rng.integers(-127, 128, (block, dim), dtype=np.int8))
        r_int = torch.from_numpy(rng.integers(-127, 128, (block, dim), dtype=np.int8))
        try:
            with ThreadPoolExecutor(max_workers=threads) as pool:

                def int8():  # one product per worker, as the search keeps them busy
                    return list(pool.map(lambda _: _int8_product(q_int, r_int, 0, block), range(threads)))

                started = time.perf_counter()
                d = int8()[0]  # warm-up, and a first (pessimistic) time
                rounds.append(time.perf_counter() - started)
                thr = np.full(block, np.iinfo(np.int32).max, dtype=np.int32)  # the screen keeps few pairs
                screen = _best_time(lambda: np.flatnonzero(d >= thr[:, None]), repeats)
                clearly_slow = rounds[0] / threads > 10 * min(f32)
                for _ in range(repeats - 2):
                    f32.append(_best_time(float32, 1))
                    if not clearly_slow:
                        rounds.append(_best_time(int8, 1))
        except (RuntimeError, TypeError, ValueError) as exc:  # no usable int8 kernel here
            _log.warning("int8 matrix product unavailable (%s); nearest neighbours use float32", exc)
            rounds = []
    while len(f32) < repeats:
        f32.append(_best_time(float32, 1))
    out["float32_s"] = min(f32)
    if rounds:
        product = min(rounds) / threads
        int8 = product + screen
        out.update(int8_s=int8, product_s=product, screen_s=screen, speedup=out["float32_s"] / int8)
        out["method"] = "int8" if out["speedup"] >= INT8_MIN_SPEEDUP else "float32"
    _CALIBRATION[key] = out
    return out


def _cpu_capability() -> str:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except (ImportError, AttributeError):  # pragma: no cover - torch is a pinned dependency
        return "unknown"


def nearest_neighbor(
    emb_ref,
    emb_query,
    block_size: int = 4096,
    method: str = "auto",
    stats: dict | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Index into ``emb_ref`` of each query's nearest neighbour by cosine similarity.

    Rows are L2-normalised (all-zero rows stay zero and are at similarity 0 to everything)
    and compared block by block over both queries and references, so memory stays at
    ``block_size**2`` similarities whatever the sizes. Ties go to the lowest reference index.
    The methods agree wherever no two references are within float32 rounding (~1e-7) of a
    query's best: ``"int8"`` returns the float64 nearest neighbour of the float32 unit rows,
    ``"float32"`` the float32 one. Returns int64 ``(len(emb_query),)``.

    ``method``:

    - ``"float32"``: float32 matrix products, the argmax taken block by block
      (:func:`_nearest_neighbor_float32`);
    - ``"int8"``: the same answer, faster on CPUs with int8 dot-product units (VNNI, AMX)
      (:func:`_nearest_neighbor_int8`): an int8 matrix product screens the references with
      a per-pair error bound, and every reference that could be the nearest (or tie with
      it) is re-scored exactly in float64, so the result is exact, not approximate;
    - ``"auto"`` (default): ``"float32"`` up to :data:`INT8_MIN_WORK` queries x references
      x dims; above, the path :func:`calibrate` measures faster on this machine (``"int8"``
      only when its blocks are :data:`INT8_MIN_SPEEDUP` times cheaper: on a CPU without
      int8 units ``torch._int_mm`` is far slower than float32).

    ``threads``: CPU threads to use (int8 workers and torch's pool; None: torch's current
    count). ``stats``, when given a dict, receives ``method``, ``calibration`` (when
    ``"auto"`` calibrated) and, for int8, ``rescored`` (pairs re-scored exactly), ``blocks``
    (reference blocks), ``workers`` (threads computing int8 products) and the seconds spent
    preparing the references (``prepare_s``) and searching (``search_s``).
    """
    ref = l2_normalize(as_2d(emb_ref, "emb_ref"))
    query = l2_normalize(as_2d(emb_query, "emb_query"))
    if ref.shape[0] == 0:
        raise ValueError("the reference set is empty")
    if ref.shape[1] != query.shape[1]:
        raise ValueError(f"reference and query embeddings differ in width: {ref.shape[1]} vs {query.shape[1]}")
    if block_size < 1:
        raise ValueError("block_size must be >= 1")
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if method not in ("auto", "float32", "int8"):
        raise ValueError(f"unknown nearest-neighbour method {method!r}; expected 'auto', 'float32' or 'int8'")
    calibration = None
    if method == "auto":
        work = float(query.shape[0]) * ref.shape[0] * ref.shape[1]
        method = "float32"
        if work > INT8_MIN_WORK and _int8_available():
            calibration = calibrate(ref.shape[1], threads or _torch_threads(), block=CALIBRATION_BLOCK)
            method = calibration["method"]
            _log.info(
                "1-NN of %d queries in %d references x %d dims: %s (one %d-row block: float32 %.1f ms, int8 %s; cpu %s)",
                query.shape[0], ref.shape[0], ref.shape[1], method, CALIBRATION_BLOCK,
                1e3 * calibration["float32_s"],
                "unavailable" if calibration["int8_s"] is None else f"{1e3 * calibration['int8_s']:.1f} ms",
                calibration["cpu"],
            )
    if stats is not None:
        stats["method"] = method
        if calibration is not None:
            stats["calibration"] = dict(calibration)
    if method == "int8":
        return _nearest_neighbor_int8(ref, query, block_size, stats, threads)
    return _nearest_neighbor_float32(ref, query, block_size)


def _nearest_neighbor_float32(ref: np.ndarray, query: np.ndarray, block_size: int) -> np.ndarray:
    """Cosine 1-NN of unit rows by float32 products, the argmax taken block by block (ties,
    in float32, to the lowest index)."""
    out = np.zeros(query.shape[0], dtype=np.int64)
    for qs in range(0, query.shape[0], block_size):
        q = query[qs : qs + block_size]
        best = np.full(q.shape[0], -np.inf, dtype=np.float32)
        arg = np.zeros(q.shape[0], dtype=np.int64)
        for rs in range(0, ref.shape[0], block_size):
            j, s = _float32_block(q, ref[rs : rs + block_size])
            better = s > best  # strict: an earlier block keeps ties
            best[better] = s[better]
            arg[better] = j[better] + rs
        out[qs : qs + q.shape[0]] = arg
    return out


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _quantize_rows(x: np.ndarray, scale) -> tuple[np.ndarray, np.ndarray]:
    """``round(x / scale)`` as int8 (scale: a number or one per row) and the L2 norm of
    each row's quantisation error ``x - scale * q`` (computed in ``x``'s precision; the
    caller's slack covers its rounding)."""
    scale = np.asarray(scale, dtype=x.dtype)
    col = scale[:, None] if scale.ndim else scale
    y = np.rint(x / col)
    np.clip(y, -127, 127, out=y)
    q = y.astype(np.int8)
    y *= col
    np.subtract(x, y, out=y)
    return q, np.sqrt(np.einsum("ij,ij->i", y, y, dtype=np.float64))


def _best_update(best, arg, rows, cols, sims) -> None:
    """Fold candidate ``(row, col, sim)`` triples into the running best (ties: lower col)."""
    order = np.lexsort((cols, -sims, rows))
    rows, cols, sims = rows[order], cols[order], sims[order]
    first = np.ones(rows.shape[0], dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    rows, cols, sims = rows[first], cols[first], sims[first]
    better = (sims > best[rows]) | ((sims == best[rows]) & (cols < arg[rows]))
    best[rows[better]] = sims[better]
    arg[rows[better]] = cols[better]


def _nearest_neighbor_int8(
    ref: np.ndarray, query: np.ndarray, block_size: int, stats: dict | None = None, threads: int | None = None
) -> np.ndarray:
    """Exact cosine 1-NN of unit rows: an int8 screen with a certified error bound, then an
    exact float64 re-score of every reference the screen cannot rule out.

    Mean-pooled embeddings are anisotropic: most of each row lies along the mean direction
    ``u``. Each row is split into that part and the rest, ``r = a_r u + r'``,
    ``q = b_q u + q'``, so ``q.r = a_r b_q + q.r'`` (an identity for any ``u``). The short
    remainders are quantised to int8 (``r' ~ s_r R`` with one scale, ``q' ~ s_q Q`` with one
    scale per query) and ``D = Q R^T`` is an exact int32 product (``torch._int_mm``, VNNI on
    x86). With ``e = |x' - s X|`` computed exactly per row,
    ``|q.r' - s_q s_r D| <= e_q |r'| + (|q'| + e_q) e_r =: m`` (maxima over a block of
    references). References are processed in order of ``a_r`` so that ``a_r b_q`` varies
    little within a block and is bounded by its block extremes. The screen keeps every
    reference whose upper bound ``s_q s_r D + max_block(a_r b_q) + m`` reaches the best exact
    similarity found so far (initially the best of one reference block, found in float32)
    and re-scores those exactly; a reference left out can neither beat nor tie the answer.
    The int8 products of the next blocks run in worker threads (``threads`` of them, else
    torch's thread count: ``torch._int_mm`` uses one core for a block this size) while this
    thread screens.
    """
    import torch

    if threads is not None:
        torch.set_num_threads(int(threads))
    workers = int(threads) if threads is not None else torch.get_num_threads()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return _nn_int8(ref, query, block_size, stats, pool, workers)


def _nn_int8(ref, query, block_size: int, stats: dict | None, pool, workers: int) -> np.ndarray:
    """The body of :func:`_nearest_neighbor_int8`, with its thread pool."""
    import torch

    started = time.perf_counter()
    n_ref = ref.shape[0]
    step = 16384  # rows per chunk: bounded temporaries
    chunks = range(0, n_ref, step)
    # torch._int_mm runs a block of this size on one core: one product per thread, ahead of
    # the screening that this thread does; the chunked numpy passes below use the same
    # threads (numpy and torch release the GIL)
    mu = ref.mean(axis=0, dtype=np.float64)
    norm = float(np.linalg.norm(mu))
    u = (mu / norm if norm > 1e-12 else np.eye(ref.shape[1])[0]).astype(np.float32)
    alpha = np.empty(n_ref, dtype=np.float64)
    row_abs = np.empty(n_ref, dtype=np.float32)

    def pass1(lo):  # input order: a_r, and max |r'_i| of each row
        chunk = ref[lo : lo + step]
        a = np.einsum("ij,j->i", chunk, u, dtype=np.float64)
        alpha[lo : lo + step] = a
        row_abs[lo : lo + step] = np.abs(chunk - a.astype(np.float32)[:, None] * u).max(axis=1)

    list(pool.map(pass1, chunks))
    order = np.argsort(alpha, kind="stable")
    rank = np.empty(n_ref, dtype=np.int64)
    rank[order] = np.arange(n_ref)
    # one scale per chunk of block_size rows in a_r order (every block lies in one chunk)
    chunk_scale = np.maximum.reduceat(row_abs[order], np.arange(0, n_ref, block_size)).astype(np.float64) / 127.0
    chunk_scale = np.maximum(chunk_scale, 1e-30)
    r_scale = chunk_scale[rank // block_size]  # per row, input order
    r_int = np.empty(ref.shape, dtype=np.int8)
    r_err = np.empty(n_ref, dtype=np.float64)
    r_norm = np.empty(n_ref, dtype=np.float64)

    def pass2(lo):  # input order: quantise r' = r - a_r u; exact error and length of each row
        part = ref[lo : lo + step] - alpha[lo : lo + step, None].astype(np.float32) * u
        r_norm[lo : lo + step] = np.sqrt(np.einsum("ij,ij->i", part, part, dtype=np.float64))
        r_int[lo : lo + step], r_err[lo : lo + step] = _quantize_rows(part, r_scale[lo : lo + step])

    list(pool.map(pass2, chunks))
    r_int, r_err, r_norm, alpha = r_int[order], r_err[order], r_norm[order], alpha[order]
    r_int_t = torch.from_numpy(r_int)
    # blocks of at most block_size references, each spanning at most ``width`` of a_r (so
    # that the a_r b_q term is tight); the largest a_r first: for anisotropic embeddings the
    # nearest neighbours lie there, so the best found so far is strong from the start
    width = max(float(r_err.max()), 1e-6)
    cuts = [0]
    for lo in range(0, n_ref, block_size):
        part = alpha[lo : lo + block_size]
        bins = np.floor((part - part[0]) / width)
        cuts += (lo + 1 + np.flatnonzero(np.diff(bins))).tolist() + [min(lo + block_size, n_ref)]
    starts, ends = cuts[-2::-1], cuts[:0:-1]
    err_max = np.array([r_err[s:e].max() for s, e in zip(starts, ends)])
    norm_max = np.array([r_norm[s:e].max() for s, e in zip(starts, ends)])
    a_lo = np.array([alpha[s] for s in starts])
    a_hi = np.array([alpha[e - 1] for e in ends])

    prepared = time.perf_counter()
    out = np.zeros(query.shape[0], dtype=np.int64)  # all-zero queries: every similarity 0 -> index 0
    live = np.flatnonzero(np.linalg.norm(query, axis=1) > 0)
    first_rows = order[max(n_ref - block_size, 0) :]  # the largest a_r: a strong first lower bound
    first = ref[first_rows]
    rescored = 0
    for qs in range(0, live.shape[0], block_size):
        qi = live[qs : qs + block_size]
        q32 = query[qi]
        beta = q32.astype(np.float64) @ u.astype(np.float64)
        q_rest = q32.astype(np.float64) - beta[:, None] * u.astype(np.float64)
        q_scale = np.maximum(np.abs(q_rest).max(axis=1), 1e-30) / 127.0
        q_int, q_err = _quantize_rows(q_rest, q_scale)
        q_int_t = torch.from_numpy(q_int)
        q_norm = np.linalg.norm(q_rest, axis=1)
        j = (q32 @ first.T).argmax(axis=1)
        best = np.einsum("ij,ij->i", q32, first[j], dtype=np.float64)
        arg = first_rows[j]
        pending = deque()
        for b, rs in enumerate(starts):
            while len(pending) < workers and b + len(pending) < len(starts):
                nxt = b + len(pending)
                pending.append(pool.submit(_int8_product, q_int_t, r_int_t, starts[nxt], ends[nxt]))
            d = pending.popleft().result()
            unit = q_scale * chunk_scale[rs // block_size]
            margin = q_err * norm_max[b] + (q_norm + q_err) * err_max[b] + _SLACK
            top = np.maximum(beta * a_lo[b], beta * a_hi[b])
            thr = np.clip(np.ceil((best - top - margin) / unit), -(2**31), 2**31 - 1).astype(np.int32)
            flat = np.flatnonzero(d >= thr[:, None])
            if flat.shape[0]:
                c_rows, c_cols = flat // d.shape[1], order[rs + flat % d.shape[1]]
                rescored += flat.shape[0]
                _best_update(best, arg, c_rows, c_cols, pair_dots(q32, c_rows, ref, c_cols))
        out[qi] = arg
    if stats is not None:
        stats.update(rescored=rescored, blocks=len(starts), workers=workers, prepare_s=prepared - started,
                     search_s=time.perf_counter() - prepared)
    return out
