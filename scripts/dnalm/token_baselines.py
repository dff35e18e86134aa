"""Predictors of masked (or next) k-mer tokens that read no model: what a pretrained model
must beat to show it learnt more than k-mer frequencies (issue 11, "learning diagnostics").

Both are counted on training windows only (:class:`TokenCounts`: the corpus minus the
validation slice, whole windows, not crops) and scored on the validation slice's own
predicted positions (:func:`score`), with the accuracy of their single best guess and the
cross-entropy (nats per token, like the model's loss) of their add-one-smoothed
probabilities:

* ``unigram``: the most frequent k-mer of the training windows, at every position;
  p(x) = (count(x) + 1) / (N + 4**k).
* ``kmer_context``: the k-mers the visible neighbours allow, the most frequent first.
  A "visible" neighbour is a k-mer token that is not predicted (masked models: not masked,
  on either side; the causal model: the token just before, nothing after).

  - overlapping k-mers (stride 1): the nearest visible k-mer at distance d < k to the left
    shows the first k - d bases of the token, the nearest at distance d < k to the right its
    last k - d bases; the prediction is the most frequent training k-mer with those bases
    (ties: the lowest k-mer index), p(x) = (count(x) + 1) / (sum of the candidates' counts
    + number of candidates). With no overlapping neighbour it is the unigram. (For the
    causal model: the previous token's last k - 1 bases and the most likely next base.)
  - non-overlapping k-mers: a token bigram. With a visible token just before, the most
    frequent training successor of that token; else, with a visible token just after (masked
    models), its most frequent training predecessor; else the unigram. p(x | a) =
    (count(a, x) + 1) / (count(a, .) + 4**k); a context never seen in training falls back
    to the unigram.

An MLM input keeps the original token at 10 % of its masked positions; the predictors treat
every predicted position as hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import seq
from .corpus import VALIDATION_STREAM, Corpus

if TYPE_CHECKING:
    from .batches import Batch

#: training bases counted at most (a seeded random subset of the training windows beyond)
MAX_BASES = 20_000_000
_CHUNK_BASES = 2_000_000
_CELLS = 1 << 22  # candidate matrix entries per block of the overlapping predictor


@dataclass
class TokenCounts:
    """k-mer token counts of training windows: ``unigram[i]`` of k-mer index i (token id -
    N_SPECIAL), and for non-overlapping k-mers the adjacent pairs: ``pair_keys`` (sorted,
    ``first * 4**k + second``) and ``pair_counts``. ``bases``: the bases counted."""

    k: int
    tokenization: str
    unigram: np.ndarray
    pair_keys: np.ndarray
    pair_counts: np.ndarray
    bases: int

    @classmethod
    def from_corpus(
        cls, corpus: Corpus, windows: np.ndarray, k: int, tokenization: str, seed: int, max_bases: int = MAX_BASES
    ) -> TokenCounts:
        """Count the tokens of ``windows`` (corpus indices; the training windows). Beyond
        ``max_bases`` bases, a random subset of them (``np.random.default_rng([seed,
        VALIDATION_STREAM, 2])``) up to that many bases."""
        windows = np.asarray(windows, dtype=np.int64)
        offsets = np.asarray(corpus.offsets)
        lengths = offsets[windows + 1] - offsets[windows]
        if lengths.sum() > max_bases:
            order = np.random.default_rng([seed, VALIDATION_STREAM, 2]).permutation(windows.shape[0])
            keep = order[: max(1, int(np.searchsorted(np.cumsum(lengths[order]), max_bases, side="right")))]
            windows, lengths = windows[np.sort(keep)], lengths[np.sort(keep)]
        n_kmers = 4**k
        unigram = np.zeros(n_kmers, dtype=np.int64)
        keys, counts = [], []
        ends = np.cumsum(lengths)
        lo = 0
        while lo < windows.shape[0]:
            hi = max(lo + 1, int(np.searchsorted(ends, (ends[lo - 1] if lo else 0) + _CHUNK_BASES, side="right")))
            ids, _ = seq.tokenize_windows(corpus.bases, offsets[windows[lo:hi]], lengths[lo:hi], k, tokenization)
            unigram += np.bincount(ids[ids >= seq.N_SPECIAL] - seq.N_SPECIAL, minlength=n_kmers)
            if tokenization == "non-overlapping":
                a, b = ids[:-1], ids[1:]  # [SEP] [CLS] between windows: no pair crosses one
                both = (a >= seq.N_SPECIAL) & (b >= seq.N_SPECIAL)
                u, c = np.unique((a[both] - seq.N_SPECIAL) * n_kmers + (b[both] - seq.N_SPECIAL), return_counts=True)
                keys.append(u)
                counts.append(c)
            lo = hi
        pair_keys, pair_counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
        if keys:
            pair_keys, inverse = np.unique(np.concatenate(keys), return_inverse=True)
            pair_counts = np.bincount(inverse, weights=np.concatenate(counts)).astype(np.int64)
        return cls(k, tokenization, unigram, pair_keys, pair_counts, int(lengths.sum()))


def _targets(batches: list[Batch], causal: bool):
    """Flattened predicted positions of the batches: (labels as k-mer indices, index of the
    left context token or -1, of the right one or -1, distances to them), over all rows
    of all batches, each window apart from the others."""
    labels, targets, window = [], [], []
    offset = 0
    for b in batches:
        segs = b.segments
        labels.append(b.labels.ravel())
        targets.append(b.mask.ravel())
        ids = np.where(segs > 0, offset + np.arange(segs.shape[0])[:, None] * (segs.max() + 1) + segs, -1)
        window.append(ids.ravel())
        offset += segs.shape[0] * (int(segs.max()) + 1) + 1
    labels, targets, window = np.concatenate(labels), np.concatenate(targets), np.concatenate(window)
    n = labels.shape[0]
    pos = np.arange(n)
    kmer = (labels >= seq.N_SPECIAL) & (window >= 0)
    t = np.flatnonzero(targets)
    if causal:
        left = t - 1
        right = np.full(t.shape[0], -1)
    else:
        visible = kmer & ~targets
        before = np.maximum.accumulate(np.where(visible, pos, -1))
        after = np.minimum.accumulate(np.where(visible, pos, n)[::-1])[::-1]
        left = np.where(t > 0, before[np.maximum(t - 1, 0)], -1)
        right = np.where(t < n - 1, after[np.minimum(t + 1, n - 1)], n)
        right = np.where(right < n, right, -1)
    ok_left = (left >= 0) & kmer[np.maximum(left, 0)] & (window[np.maximum(left, 0)] == window[t])
    ok_right = (right >= 0) & kmer[np.maximum(right, 0)] & (window[np.maximum(right, 0)] == window[t])
    left, right = np.where(ok_left, left, -1), np.where(ok_right, right, -1)
    idx = labels - seq.N_SPECIAL
    return (
        idx[t],
        np.where(left >= 0, idx[np.maximum(left, 0)], -1),
        np.where(right >= 0, idx[np.maximum(right, 0)], -1),
        np.where(left >= 0, t - left, 0),
        np.where(right >= 0, right - t, 0),
    )


def _result(correct: np.ndarray, p_true: np.ndarray) -> dict:
    if correct.size == 0:
        return {"accuracy": None, "cross_entropy": None}
    return {"accuracy": float(correct.mean()), "cross_entropy": float(-np.log(p_true).mean())}


def _overlapping(c: np.ndarray, k: int, y, left, right, d_left, d_right):
    """Prediction and p(true) of the overlapping k-mer context predictor."""
    a = np.where(left >= 0, np.clip(k - d_left, 0, k - 1), 0)  # bases known from the left
    b = np.where(right >= 0, np.clip(k - d_right, 0, k - 1), 0)  # ... from the right
    prefix = np.where(a > 0, np.maximum(left, 0) % 4**a, 0)
    suffix = np.where(b > 0, np.maximum(right, 0) // 4 ** (k - b), 0)
    over = a + b > k  # both sides overlap each other: keep the right side's last k - a bases
    b = np.where(over, k - a, b)
    suffix = np.where(over, suffix % 4**b, suffix)
    m = k - a - b  # free middle bases
    base = prefix * 4 ** (k - a) + suffix
    step = 4**b
    pred = np.empty(y.shape[0], dtype=np.int64)
    p_true = np.empty(y.shape[0])
    for free in np.unique(m):
        rows = np.flatnonzero(m == free)
        width = 4 ** int(free)
        for lo in range(0, rows.shape[0], max(1, _CELLS // width)):
            r = rows[lo : lo + max(1, _CELLS // width)]
            ids = base[r, None] + np.arange(width)[None, :] * step[r, None]
            counts = c[ids]
            pred[r] = ids[np.arange(r.shape[0]), counts.argmax(1)]
            p_true[r] = (c[y[r]] + 1) / (counts.sum(1) + width)
    return pred, p_true


def _pair_table(firsts, seconds, cnt, v: int):
    """Per first token: its most frequent second token (ties: the lowest index; -1 if
    never seen), its total count, and the pairs as sorted keys with their counts."""
    order = np.lexsort((seconds, -cnt, firsts))
    f, s = firsts[order], seconds[order]
    head = np.r_[True, f[1:] != f[:-1]] if f.size else np.zeros(0, dtype=bool)
    best = np.full(v, -1, dtype=np.int64)
    best[f[head]] = s[head]
    total = np.bincount(firsts, weights=cnt, minlength=v)
    keys = firsts * v + seconds
    by_key = np.argsort(keys)
    return best, total, keys[by_key], cnt[by_key]


def _lookup(sorted_keys, sorted_counts, want) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(want.shape[0], dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, want), sorted_keys.shape[0] - 1)
    return np.where(sorted_keys[at] == want, sorted_counts[at], 0)


def _bigram(counts: TokenCounts, y, left, right, d_left, d_right, uni_pred, uni_p):
    """Prediction and p(true) of the non-overlapping token-bigram predictor."""
    v = 4**counts.k
    first, second = counts.pair_keys // v, counts.pair_keys % v
    pred, p_true = uni_pred.copy(), uni_p.copy()
    done = np.zeros(y.shape[0], dtype=bool)
    # the successor of the token just before, else the predecessor of the token just after
    for context, distance, (a, b) in ((left, d_left, (first, second)), (right, d_right, (second, first))):
        best, total, keys, cnt = _pair_table(a, b, counts.pair_counts, v)
        rows = np.flatnonzero(~done & (context >= 0) & (distance == 1))
        rows = rows[total[context[rows]] > 0]
        ctx = context[rows]
        pred[rows] = best[ctx]
        p_true[rows] = (_lookup(keys, cnt, ctx * v + y[rows]) + 1) / (total[ctx] + v)
        done[rows] = True
    return pred, p_true


def score(batches: list[Batch], counts: TokenCounts, causal: bool = False) -> dict:
    """``{"unigram": {...}, "kmer_context": {...}}``, each ``{"accuracy", "cross_entropy"}``
    on the predicted positions of ``batches`` (``mask``; the causal model: every k-mer,
    from the tokens before it). See the module doc for the predictors."""
    y, left, right, d_left, d_right = _targets(batches, causal)
    c, k = counts.unigram, counts.k
    total = c.sum()
    uni_pred = np.full(y.shape[0], int(c.argmax()), dtype=np.int64)
    uni_p = (c[y] + 1) / (total + c.shape[0])
    if counts.tokenization == "overlapping":
        pred, p_true = _overlapping(c, k, y, left, right, d_left, d_right)
    else:
        pred, p_true = _bigram(counts, y, left, right, d_left, d_right, uni_pred, uni_p)
    return {"unigram": _result(uni_pred == y, uni_p), "kmer_context": _result(pred == y, p_true)}
