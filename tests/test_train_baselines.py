"""The no-model predictors of masked / next k-mer tokens (dnalm.token_baselines) against
values computed by hand on tiny corpora, and the counts they come from."""

import math

import numpy as np
import pytest

from dnalm import seq
from dnalm.batches import Batch
from dnalm.corpus import Corpus
from dnalm.token_baselines import TokenCounts, score


def corpus_of(texts):
    return Corpus.from_arrays([seq.encode(t) for t in texts])


def batch_of(windows, k, tokenization, masked):
    """One unpacked batch of the given windows; ``masked[w]``: token positions to predict
    (None: every k-mer, as the causal model)."""
    tokens = [seq.tokenize(w, k, tokenization) for w in windows]
    ids, attn = seq.pad_batch(tokens)
    mask = np.zeros(ids.shape, dtype=bool)
    for r, positions in enumerate(masked):
        if positions is None:
            mask[r] = ids[r] >= seq.N_SPECIAL
        else:
            mask[r, positions] = True
    return Batch(
        input_ids=ids, labels=ids, mask=mask, segments=attn.astype(np.int64),
        position_ids=np.where(attn > 0, np.arange(ids.shape[1]), 0), packed=False, n_windows=len(windows),
        n_tokens=int(attn.sum()), n_maskable=int((ids >= seq.N_SPECIAL).sum()), n_masked=int(mask.sum()),
    )  # fmt: skip


def kid(kmer):
    return seq.kmer_to_id(kmer)


# training windows 0-2 (2-mers AA x2, AC x4, CA x3); window 3 is held out and never counted
OVERLAPPING = ["AACA", "ACAC", "CAAC", "GGGGGGGG"]


def test_counts_cover_the_training_windows_only():
    counts = TokenCounts.from_corpus(corpus_of(OVERLAPPING), np.array([0, 1, 2]), 2, "overlapping", seed=0)
    want = np.zeros(16, dtype=np.int64)
    want[[kid("AA"), kid("AC"), kid("CA")]] = [2, 4, 3]
    assert np.array_equal(counts.unigram, want) and counts.bases == 12
    assert counts.pair_keys.size == 0  # pairs only for non-overlapping k-mers
    # an N makes [UNK], which is not counted
    counts = TokenCounts.from_corpus(corpus_of(["ANCA"]), np.array([0]), 2, "overlapping", seed=0)
    assert counts.unigram.sum() == 1 and counts.unigram[kid("CA")] == 1
    # beyond max_bases: a seeded subset of whole windows up to that many bases
    many = corpus_of(["ACGT" * 5] * 50)
    sub = TokenCounts.from_corpus(many, np.arange(50), 2, "overlapping", seed=1, max_bases=100)
    assert sub.bases == 100 and sub.unigram.sum() == 5 * 19
    again = TokenCounts.from_corpus(many, np.arange(50), 2, "overlapping", seed=1, max_bases=100)
    assert np.array_equal(sub.unigram, again.unigram)


def test_overlapping_masked_predictors_by_hand():
    counts = TokenCounts.from_corpus(corpus_of(OVERLAPPING), np.array([0, 1, 2]), 2, "overlapping", seed=0)
    # "ACAA": [CLS] AC CA AA [SEP], CA (2) and AA (3) masked; "CAAC": [CLS] CA AA AC [SEP], AA (2) masked
    b = batch_of(["ACAA", "CAAC"], 2, "overlapping", [[2, 3], [2]])
    got = score([b], counts)
    # unigram: always AC (count 4 of 9); p(x) = (count + 1) / (9 + 16)
    # CA: wrong, p = 4/25; AA: wrong, p = 3/25; AA: wrong, p = 3/25
    assert got["unigram"]["accuracy"] == 0.0
    assert got["unigram"]["cross_entropy"] == pytest.approx(-(math.log(4 / 25) + 2 * math.log(3 / 25)) / 3)
    # k-mer context:
    # CA after visible AC (distance 1): first base C; candidates CA 3, CC/CG/CT 0 -> CA right, p = 4/(3+4)
    # AA: nearest visible to the left is AC at distance 2 = k (no overlap), none to the right -> unigram AC,
    #     wrong, p = 3/25
    # AA between visible CA (left, distance 1: first base A) and AC (right, distance 1: last base A):
    #     fully known, AA, p = (2+1)/(2+1) = 1
    assert got["kmer_context"]["accuracy"] == pytest.approx(2 / 3)
    assert got["kmer_context"]["cross_entropy"] == pytest.approx(-(math.log(4 / 7) + math.log(3 / 25) + 0) / 3)


def test_overlapping_causal_predictors_by_hand():
    """Causal: every k-mer from the token before it only (the first k-mer: after [CLS], the unigram)."""
    counts = TokenCounts.from_corpus(corpus_of(OVERLAPPING), np.array([0, 1, 2]), 2, "overlapping", seed=0)
    b = batch_of(["ACAA"], 2, "overlapping", [None])
    got = score([b], counts, causal=True)
    # unigram: AC right (p 5/25), CA wrong (4/25), AA wrong (3/25)
    assert got["unigram"]["accuracy"] == pytest.approx(1 / 3)
    assert got["unigram"]["cross_entropy"] == pytest.approx(-math.log(5 * 4 * 3 / 25**3) / 3)
    # context: AC (after [CLS]: unigram) right, 5/25; CA after AC: C? -> CA right, 4/7;
    # AA after CA: A? with AA 2, AC 4 -> AC, wrong, p(AA) = 3/(6+4)
    assert got["kmer_context"]["accuracy"] == pytest.approx(2 / 3)
    assert got["kmer_context"]["cross_entropy"] == pytest.approx(-(math.log(5 / 25) + math.log(4 / 7) + math.log(3 / 10)) / 3)


def test_non_overlapping_bigram_predictors_by_hand():
    # training: AA CA AC | CA AC | AA AC  (unigram AA 2, CA 2, AC 3 of 7; pairs AA>CA, CA>AC x2, AA>AC)
    texts = ["AACAAC", "CAAC", "AAAC", "TTTTTT"]
    counts = TokenCounts.from_corpus(corpus_of(texts), np.array([0, 1, 2]), 2, "non-overlapping", seed=0)
    assert counts.unigram.sum() == 7 and counts.unigram[kid("AC")] == 3
    pairs = dict(zip(counts.pair_keys.tolist(), counts.pair_counts.tolist()))
    assert pairs == {kid("AA") * 16 + kid("CA"): 1, kid("CA") * 16 + kid("AC"): 2, kid("AA") * 16 + kid("AC"): 1}
    # "AACAAC": [CLS] AA CA AC [SEP], CA (2) and AC (3) masked; "CAAC": [CLS] CA AC [SEP], CA (1) masked
    b = batch_of(["AACAAC", "CAAC"], 2, "non-overlapping", [[2, 3], [1]])
    got = score([b], counts)
    # unigram: AC every time: CA wrong 3/23, AC right 4/23, CA wrong 3/23
    assert got["unigram"]["accuracy"] == pytest.approx(1 / 3)
    assert got["unigram"]["cross_entropy"] == pytest.approx(-(2 * math.log(3 / 23) + math.log(4 / 23)) / 3)
    # context: CA after visible AA: successors CA 1, AC 1 -> tie, the lower index AC: wrong, p = 2/(2+16)
    # AC: the token before (CA) is masked, the one after is [SEP] -> unigram AC: right, p = 4/23
    # CA before visible AC: predecessors CA 2, AA 1 -> CA right, p = 3/(3+16)
    assert got["kmer_context"]["accuracy"] == pytest.approx(2 / 3)
    assert got["kmer_context"]["cross_entropy"] == pytest.approx(-(math.log(2 / 18) + math.log(4 / 23) + math.log(3 / 19)) / 3)
    # causal on "AACAAC": AA after [CLS]: unigram AC, wrong (3/23); CA after AA: AC (tie), wrong (2/18);
    # AC after CA: AC right (3/(2+16))
    causal = score([batch_of(["AACAAC"], 2, "non-overlapping", [None])], counts, causal=True)
    assert causal["kmer_context"]["accuracy"] == pytest.approx(1 / 3)
    assert causal["kmer_context"]["cross_entropy"] == pytest.approx(-(math.log(3 / 23) + math.log(2 / 18) + math.log(3 / 18)) / 3)


def test_packed_rows_are_scored_window_by_window():
    """Two windows in one row: the context never crosses from one window into the next."""
    counts = TokenCounts.from_corpus(corpus_of(OVERLAPPING), np.array([0, 1, 2]), 2, "overlapping", seed=0)
    a, b = batch_of(["ACAA"], 2, "overlapping", [[2, 3]]), batch_of(["CAAC"], 2, "overlapping", [[1]])

    def row(f):
        return np.concatenate([getattr(a, f)[0, :6], getattr(b, f)[0, :6]])[None]

    packed = Batch(
        input_ids=row("input_ids"), labels=row("labels"), mask=row("mask"),
        segments=np.concatenate([a.segments[0, :6], 2 * b.segments[0, :6]])[None],
        position_ids=row("position_ids"), packed=True, n_windows=2, n_tokens=12, n_maskable=6, n_masked=3,
    )  # fmt: skip
    # CA in "CAAC" (first k-mer, masked): no visible k-mer to its left in its own window
    # (the packed row's previous window ends in [SEP], and AA of "ACAA" is masked anyway); to its
    # right AA (distance 1): last base A -> ?A: AA 2, CA 3 -> CA right, p = 4/(5+4)
    assert score([packed], counts) == score([a, b], counts)
    assert score([b], counts)["kmer_context"] == {"accuracy": 1.0, "cross_entropy": pytest.approx(-math.log(4 / 9))}


def test_overlapping_neighbours_on_both_sides_can_fix_the_whole_kmer():
    """k = 3, a masked k-mer between two visible ones at distance 1: the left one shows its
    first two bases, the right one its last two; together they fix it (even a k-mer never
    seen in training: p = (0 + 1) / (0 + 1)). With the right neighbour at distance 2 the
    middle base is free: the most frequent of the four candidates."""
    counts = TokenCounts.from_corpus(corpus_of(["AAAAA", "CGCGC"]), np.array([0, 1]), 3, "overlapping", seed=0)
    got = score([batch_of(["ACGTA"], 3, "overlapping", [[2]])], counts)  # ACG [CGT] GTA
    assert got["kmer_context"] == {"accuracy": 1.0, "cross_entropy": 0.0}
    # "CGCAA": CGC [GCA] [CAA] : GCA from CGC (first two bases GC), nothing usable on the right
    # -> GC?: GCG (count 1) beats GCA (0): wrong, p(GCA) = 1 / (1 + 4);
    # CAA: the left CGC at distance 2 shows C, no right neighbour -> C??: CGC (2) wins: wrong,
    # p(CAA) = 1 / (2 + 16)
    got = score([batch_of(["CGCAA"], 3, "overlapping", [[2, 3]])], counts)
    assert got["kmer_context"]["accuracy"] == 0.0
    assert got["kmer_context"]["cross_entropy"] == pytest.approx(-(math.log(1 / 5) + math.log(1 / 18)) / 2)
