"""Masking strategies for pretraining (docs/design.md#masking).

:class:`Masker` computes the masks of a whole batch of sequences at once (vectorised, no
Python loop over sequences): the sequences are 1-D int64 token ids as produced by
:func:`dnalm.seq.tokenize_codes` (``[CLS] k-mers [SEP]``, no padding), concatenated, with
their boundaries. Only k-mer tokens are maskable (see :func:`maskable`). The result is a
boolean mask over the concatenated tokens; the model-specific corruption (MLM 80/10/10,
:func:`apply_mlm_corruption`, or MAE dropping) happens later.

All randomness comes in as uniforms drawn up front, in a fixed and documented order, so
that the slow pure-Python references of the tests can replay exactly the same draws and a
resumed training run can replay a stream from a saved generator state. Per sequence of n
tokens, the strategies use:

================================  ===========================================================
strategy, tokenization            uniforms (``u`` rows of that sequence)
================================  ===========================================================
random, overlapping               one per token (a centre if < center_prob)
genemask, overlapping             one per token (a centre if < center_prob)
random, non-overlapping           one per token (masked if < mask_ratio)
genemask, non-overlapping         two per token (column 0: a candidate if < q; column 1 of a
                                  window's first maskable token: the window's stochastic
                                  rounding)
================================  ===========================================================

and ``rng.random(n_tokens)`` (or ``rng.random((n_tokens, 2))``) over the concatenated
batch gives every sequence exactly the uniforms that ``rng.random(n)`` per sequence would,
as numpy's generators make one double per 64-bit output with no buffering.
:func:`apply_mlm_corruption` then draws ``rng.random(shape)`` and
``rng.integers(5, V, shape)``. (Uniforms of non-maskable positions are drawn and ignored.)

NPMI lookups use the CONTENT of a token: ``npmi[token_id - N_SPECIAL]`` is the NPMI of the
k-mer the token stands for. (The public GeneMask code indexed its NPMI list by the token's
position in the sequence, which makes the "NPMI-guided" choice independent of the
sequence; docs/design.md#masking-genemask-overlapping calls this out as a defect not to copy.)
"""

from __future__ import annotations

import math
import os

import numpy as np

from .seq import MASK_ID, N_SPECIAL, TOKENIZATIONS, kmer_to_id

STRATEGIES = ("random", "genemask")

#: Defaults (docs/design.md#masking-parameters). ``center_prob`` depends on the strategy (DNABERT 0.025,
#: GeneMask 0.0176), so its generic default is ``None`` = "the strategy's default".
DEFAULT_MASKING_PARAMS = {
    "center_prob": None,  # overlapping: probability that a maskable token is a centre
    "span": 11,  # overlapping genemask: tokens masked around each chosen token
    "keep_fraction": 0.5,  # genemask: fraction of centres (or candidates) kept by NPMI
    "min_keep": 5,  # overlapping genemask: keep all centres unless more than this survive
    "mask_ratio": 0.5,  # non-overlapping: fraction of maskable tokens masked (BarcodeMAE)
    "window": None,  # non-overlapping genemask: maskable tokens per NPMI-ranking window (None: k)
}
DEFAULT_CENTER_PROB = {"random": 0.025, "genemask": 0.0176}


def resolve_masking_params(strategy: str, params: dict | None = None, k: int | None = None) -> dict:
    """Fill the default masking parameters (docs/design.md#masking-parameters) into ``params``; unknown keys raise ``ValueError``.

    ``window`` defaults to ``k`` when ``k`` is given (the k-token window of the overlapping
    case) and stays ``None`` (= "k", resolved where k is known) otherwise."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown masking strategy {strategy!r}; expected one of {STRATEGIES}")
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULT_MASKING_PARAMS))
    if unknown:
        raise ValueError(f"unknown masking parameter(s) {unknown}; expected {sorted(DEFAULT_MASKING_PARAMS)}")
    out = {**DEFAULT_MASKING_PARAMS, **{k: v for k, v in params.items() if v is not None}}
    if out["center_prob"] is None:
        out["center_prob"] = DEFAULT_CENTER_PROB[strategy]
    out["center_prob"] = float(out["center_prob"])
    out["keep_fraction"] = float(out["keep_fraction"])
    out["mask_ratio"] = float(out["mask_ratio"])
    out["span"] = int(out["span"])
    out["min_keep"] = int(out["min_keep"])
    if out["window"] is None and k is not None:
        out["window"] = int(k)
    if out["window"] is not None:
        if isinstance(out["window"], bool) or int(out["window"]) != out["window"] or out["window"] < 1:
            raise ValueError(f"window must be an integer >= 1, got {out['window']!r}")
        out["window"] = int(out["window"])
    if not 0.0 <= out["center_prob"] <= 1.0:
        raise ValueError(f"center_prob must be in [0, 1], got {out['center_prob']}")
    if not 0.0 < out["keep_fraction"] <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {out['keep_fraction']}")
    if not 0.0 <= out["mask_ratio"] <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {out['mask_ratio']}")
    if out["span"] < 1:
        raise ValueError(f"span must be >= 1, got {out['span']}")
    if out["min_keep"] < 0:
        raise ValueError(f"min_keep must be >= 0, got {out['min_keep']}")
    return out


def maskable(token_ids) -> np.ndarray:
    """True for k-mer tokens (id >= ``N_SPECIAL``); special tokens are never masked.

    [UNK] (a k-mer containing N or another non-ACGT letter) is NOT maskable: it carries no
    k-mer identity to predict, it has no NPMI, and predicting "[UNK]" would teach the model
    where the assembly gaps are rather than anything about sequence. It stays visible.
    """
    return np.asarray(token_ids) >= N_SPECIAL


def _span_offsets(width: int) -> tuple[int, int]:
    """(left, right) reach of a run of ``width`` tokens centred on a token."""
    return (width - 1) // 2, width // 2  # floor((w-1)/2), ceil((w-1)/2)


def _content_npmi(ids: np.ndarray, ok: np.ndarray, npmi: np.ndarray) -> np.ndarray:
    """NPMI of each token's k-mer (float64; -inf for non-maskable tokens or unknown k-mers)."""
    npmi = np.asarray(npmi, dtype=np.float64)
    score = np.full(ids.shape[0], -np.inf)
    score[ok] = npmi[ids[ok] - N_SPECIAL]
    return np.where(np.isnan(score), -np.inf, score)


def _candidate_rate(mask_ratio: float, keep_fraction: float) -> tuple[float, float]:
    """(q, f): candidates are drawn at rate ``q = min(1, mask_ratio / keep_fraction)`` and a
    fraction ``f = mask_ratio / q`` of them is masked, so ``q * f = mask_ratio`` (``f`` is
    ``keep_fraction`` unless the cap applies, i.e. unless mask_ratio > keep_fraction)."""
    q = min(1.0, mask_ratio / keep_fraction)
    return q, mask_ratio / q


def uniforms_per_token(strategy: str, tokenization: str) -> int:
    """How many uniforms per token the strategy uses (1, or 2 for non-overlapping genemask),
    i.e. the second dimension of :class:`Masker`'s ``u``."""
    return 2 if (strategy == "genemask" and tokenization == "non-overlapping") else 1


def _segment_of(offsets: np.ndarray, n: int) -> np.ndarray:
    """Index of the sequence each of the n flat positions belongs to."""
    return np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets)) if n else np.zeros(0, np.int64)


def _cover_segments(n: int, centres: np.ndarray, lo: np.ndarray, hi: np.ndarray, width: int) -> np.ndarray:
    """Boolean array of length n covering ``width`` tokens centred on each centre, each run
    clipped to its own sequence [lo, hi)."""
    left, right = _span_offsets(width)
    starts = np.bincount(np.maximum(centres - left, lo), minlength=n + 1)
    ends = np.bincount(np.minimum(centres + right + 1, hi), minlength=n + 1)
    return np.cumsum(starts[:n] - ends[:n]) > 0


def _rank_within(seg: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rank of each element within its segment, given ``order`` sorting by (segment, key)."""
    rank = np.empty(order.shape[0], dtype=np.int64)
    sorted_seg = seg[order]
    first = np.searchsorted(sorted_seg, sorted_seg, side="left")
    rank[order] = np.arange(order.shape[0]) - first
    return rank


class Masker:
    """One strategy x tokenization with its parameters resolved and its NPMI table checked
    once; calling it masks a batch (:meth:`__call__`).

    ``params`` is completed with :data:`DEFAULT_MASKING_PARAMS` (``center_prob`` defaults
    to 0.025 for random, 0.0176 for genemask; ``window`` to ``k``). ``npmi`` (length 4**k,
    see :func:`load_npmi_table`) is required for genemask and ignored for random.

    The four strategies, per sequence:

    * random, overlapping (DNABERT span masking): every maskable token is a centre when its
      uniform is < ``center_prob``; each centre c masks tokens c-floor((k-1)/2) ..
      c+ceil((k-1)/2) (k tokens: all k-mers sharing c's middle base), clipped to the
      sequence; special tokens and [UNK] inside a span stay unmasked.
    * genemask, overlapping (GeneMask): centres as above. For each centre c, its window is
      the k tokens around it (clipped; only maskable tokens count); b(c) is the window
      token whose k-mer CONTENT has the highest NPMI (unknown = -inf; ties -> leftmost).
      ``n_top = int(keep_fraction * n_centres)``; if ``n_top > min_keep`` only the n_top
      centres with the highest NPMI(b) are kept (ties -> leftmost centre), else all are.
      ``span`` tokens b-floor((span-1)/2) .. b+ceil((span-1)/2) around each kept b are
      masked (clipped; special tokens and [UNK] stay unmasked).
    * random, non-overlapping (BarcodeBERT/MAE): token i is masked when maskable and its
      uniform is < ``mask_ratio``. If that masks nothing but some token is maskable, the
      maskable token with the smallest uniform (leftmost on ties) is masked, so every
      sequence with a k-mer contributes to the loss.
    * genemask, non-overlapping: the maskable tokens, in order, are cut into consecutive
      windows of ``window`` maskable tokens (the last one may be shorter). With
      ``q, f = min(1, mask_ratio / keep_fraction), mask_ratio / q``: candidates are the
      maskable tokens with ``u[i, 0] < q``; in a window with ``c`` candidates, ``x = f * c``
      of them are masked, rounded stochastically (``floor(x) + (v < x - floor(x))``,
      ``v = u[first, 1]`` of the window's first maskable token); those are the window's
      candidates with the highest content NPMI (NaN or unknown = -inf; ties -> leftmost).
      The expected mask rate is exactly ``mask_ratio`` (no "at least one" rule, which would
      bias it; a sequence may have nothing masked); with keep_fraction 1 this is i.i.d.
      masking at ``mask_ratio`` with no NPMI preference.
    """

    def __init__(self, strategy: str, tokenization: str, k: int, params: dict | None = None, npmi=None):
        if tokenization not in TOKENIZATIONS:
            raise ValueError(f"unknown tokenization {tokenization!r}; expected one of {TOKENIZATIONS}")
        self.strategy, self.tokenization, self.k = strategy, tokenization, int(k)
        self.params = resolve_masking_params(strategy, params, k)
        if strategy == "genemask":
            if npmi is None:
                raise ValueError("genemask masking needs an NPMI table (npmi=None given)")
            if len(npmi) != 4**k:
                raise ValueError(f"NPMI table has {len(npmi)} entries, expected 4**{k} = {4**k}")
        self.npmi = None if npmi is None else np.asarray(npmi, dtype=np.float64)
        self.per_token = uniforms_per_token(strategy, tokenization)

    def uniforms(self, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
        """The uniforms of ``n_tokens`` concatenated tokens, drawn from ``rng``."""
        return rng.random(n_tokens) if self.per_token == 1 else rng.random((n_tokens, self.per_token))

    def __call__(self, flat_ids, offsets, u) -> np.ndarray:
        """Masks of many sequences at once (bool, the length of ``flat_ids``).

        ``flat_ids``: the sequences' token ids concatenated; ``offsets``: n + 1 boundaries
        (sequence j is ``flat_ids[offsets[j]:offsets[j + 1]]``); ``u``: the uniforms of all
        tokens in order, shape ``(n_tokens,)`` or, for non-overlapping genemask,
        ``(n_tokens, 2)`` (:meth:`uniforms`).
        """
        p = self.params
        ids = np.asarray(flat_ids)
        offsets = np.asarray(offsets, dtype=np.int64)
        u = np.asarray(u, dtype=np.float64)
        n = ids.shape[0]
        want_shape = (n,) if self.per_token == 1 else (n, self.per_token)
        if u.shape != want_shape or offsets[0] != 0 or offsets[-1] != n:
            raise ValueError(
                f"masks: u must hold {self.per_token} uniform(s) per token, shape {want_shape} "
                f"(got {u.shape}), and offsets must span flat_ids"
            )
        ok = maskable(ids)
        seg = _segment_of(offsets, n)
        lo, hi = offsets[:-1][seg], offsets[1:][seg]  # bounds of each position's sequence
        if self.tokenization == "overlapping":
            centres = np.flatnonzero(ok & (u < p["center_prob"]))
            if self.strategy == "random":
                return _cover_segments(n, centres, lo[centres], hi[centres], self.k) & ok
            return self._genemask_overlapping(ids, ok, seg, lo, hi, offsets, centres)
        if self.strategy == "random":
            return self._random_nonoverlapping(ok, seg, offsets, u)
        return self._genemask_nonoverlapping(ids, ok, seg, offsets, u)

    def _genemask_overlapping(self, ids, ok, seg, lo, hi, offsets, centres) -> np.ndarray:
        p, n = self.params, ids.shape[0]
        if centres.size == 0:
            return np.zeros(n, dtype=bool)
        score = _content_npmi(ids, ok, self.npmi)
        left, right = _span_offsets(self.k)
        window = centres[:, None] + np.arange(-left, right + 1)[None, :]  # (n_centres, k)
        inside = (window >= lo[centres][:, None]) & (window < hi[centres][:, None])
        window = np.clip(window, 0, n - 1)
        valid = inside & ok[window]  # the centre itself is always valid
        wscore = np.where(valid, score[window], -np.inf)
        best = wscore.max(axis=1)
        # leftmost valid position reaching the best score (works when best == -inf too)
        b = window[np.arange(centres.size), np.argmax(valid & (wscore == best[:, None]), axis=1)]
        # per sequence: keep the top int(keep_fraction * n_centres) centres by NPMI(b) (ties ->
        # leftmost centre) when that number exceeds min_keep, else all
        cseg = seg[centres]
        n_centres = np.bincount(cseg, minlength=offsets.shape[0] - 1)
        n_top = np.floor(p["keep_fraction"] * n_centres).astype(np.int64)[cseg]
        rank = _rank_within(cseg, np.lexsort((centres, -best, cseg)))
        keep = (n_top <= p["min_keep"]) | (rank < n_top)
        b = b[keep]
        return _cover_segments(n, b, lo[b], hi[b], p["span"]) & ok

    def _random_nonoverlapping(self, ok, seg, offsets, u) -> np.ndarray:
        n_ok = np.bincount(seg[ok], minlength=offsets.shape[0] - 1)
        mask = ok & (u < self.params["mask_ratio"])
        # a sequence with a maskable token but nothing masked: mask its smallest uniform
        empty = (n_ok > 0) & (np.bincount(seg[mask], minlength=n_ok.shape[0]) == 0)
        pos = np.flatnonzero(ok & empty[seg])
        if pos.size:
            first = _rank_within(seg[pos], np.lexsort((pos, u[pos], seg[pos]))) == 0
            mask[pos[first]] = True
        return mask

    def _genemask_nonoverlapping(self, ids, ok, seg, offsets, u) -> np.ndarray:
        # windows of `window` consecutive maskable tokens of a sequence; candidates u[:, 0] < q;
        # per window floor(x) + (v < frac(x)) of them, x = f * c, v = u[first maskable token of
        # the window, 1]; the highest-NPMI candidates (ties -> leftmost)
        p = self.params
        mask = np.zeros(ids.shape[0], dtype=bool)
        pos = np.flatnonzero(ok)
        if p["mask_ratio"] <= 0 or pos.size == 0:
            return mask
        n_ok = np.bincount(seg[ok], minlength=offsets.shape[0] - 1)
        q, f = _candidate_rate(p["mask_ratio"], p["keep_fraction"])
        first_ok = np.cumsum(n_ok) - n_ok  # index into pos of each sequence's first maskable token
        j = np.arange(pos.size) - first_ok[seg[pos]]  # maskable index within its sequence
        starts = j % p["window"] == 0
        win = np.cumsum(starts) - 1  # window of each maskable token (global numbering)
        is_cand = u[pos, 0] < q
        cand, cwin = pos[is_cand], win[is_cand]
        x = f * np.bincount(cwin, minlength=int(win[-1]) + 1)
        floor = np.floor(x)
        n_mask = floor.astype(np.int64) + (u[pos[starts], 1] < x - floor)
        score = _content_npmi(ids, ok, self.npmi)[cand]
        chosen = cand[_rank_within(cwin, np.lexsort((cand, -score, cwin))) < n_mask[cwin]]
        mask[chosen] = True
        return mask


def make_masks(flat_ids, offsets, strategy: str, tokenization: str, k: int, params: dict, npmi, u) -> np.ndarray:
    """``Masker(strategy, tokenization, k, params, npmi)(flat_ids, offsets, u)``: the masks of
    a batch in one call (see :class:`Masker`)."""
    return Masker(strategy, tokenization, k, params, npmi)(flat_ids, offsets, u)


def apply_mlm_corruption(
    input_ids, mask, vocab_size: int, rng, mask_prob: float = 0.8, random_prob: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's 80/10/10 corruption of masked positions (any array shape, e.g. a padded batch).

    Draws ``u = rng.random(shape)`` and ``r = rng.integers(N_SPECIAL, vocab_size, shape)``.
    A masked position becomes [MASK] if ``u < mask_prob``, the random k-mer token ``r`` if
    ``u < mask_prob + random_prob`` (never a special token), and stays unchanged otherwise.
    Returns ``(corrupted_ids, labels)`` with ``labels`` = original id at masked positions and
    -100 (ignored by the loss) elsewhere.
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != ids.shape:
        raise ValueError(f"mask shape {mask.shape} != input shape {ids.shape}")
    u = rng.random(ids.shape)
    r = rng.integers(N_SPECIAL, vocab_size, size=ids.shape, dtype=np.int64)
    corrupted = np.where(mask & (u < mask_prob), MASK_ID, ids)
    corrupted = np.where(mask & (u >= mask_prob) & (u < mask_prob + random_prob), r, corrupted)
    labels = np.where(mask, ids, -100)
    return corrupted, labels


def load_npmi_table(path: str | os.PathLike, k: int) -> np.ndarray:
    """NPMI lookup array for k-mers from the TSV written by ``dnalm.npmi``.

    Reads the rows with ``n == k`` and returns a float32 array of length 4**k indexed by
    :func:`dnalm.seq.kmer_to_id` (== token id - N_SPECIAL); k-mers absent from the table
    (below ``min_count``) or with a NaN NPMI are -inf, so they are never preferred.
    """
    import pandas as pd

    from .io import InputError

    try:
        df = pd.read_csv(path, sep="\t", dtype={"kmer": str})
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read NPMI table: {exc}") from exc
    missing = {"kmer", "n", "npmi"} - set(df.columns)
    if missing:
        raise InputError(path, f"NPMI table lacks column(s) {sorted(missing)}")
    rows = df[df["n"] == k]
    if rows.empty:
        raise InputError(path, f"NPMI table has no {k}-mers (rows with n == {k}); was it built with k_max >= {k}?")
    table = np.full(4**k, -np.inf, dtype=np.float32)
    for kmer, value in zip(rows["kmer"], rows["npmi"], strict=True):
        if not isinstance(kmer, str) or len(kmer) != k or set(kmer.upper()) - set("ACGT"):
            raise InputError(path, f"bad k-mer {kmer!r} in a row with n == {k}")
        if not math.isnan(value):
            table[kmer_to_id(kmer)] = value
    return table
