"""Masking strategies: the production (batched) masks equal slow pure-Python references,
content-based NPMI lookup, achieved mask rates, and the 80/10/10 corruption."""

import math

import numpy as np
import pandas as pd
import pytest

from dnalm import masking, seq
from dnalm.io import InputError
from dnalm.masking import Masker, apply_mlm_corruption, load_npmi_table, maskable

NS = seq.N_SPECIAL


# ----------------------------------------------------------------------------------------
# the production masking (dnalm.masking.Masker, batched) applied to one sequence, drawing
# its uniforms from ``rng`` as the training pipeline does for a batch of one
# ----------------------------------------------------------------------------------------


def make_mask(ids, strategy, tokenization, k, params, npmi, rng):
    ids = np.asarray(ids)
    masker = Masker(strategy, tokenization, k, params, npmi)
    return masker(ids, [0, len(ids)], masker.uniforms(len(ids), rng))


def random_mask_overlapping(ids, k, center_prob, rng):
    return make_mask(ids, "random", "overlapping", k, {"center_prob": center_prob}, None, rng)


def genemask_mask_overlapping(ids, npmi, k, center_prob, span, keep_fraction, min_keep, rng):
    params = {"center_prob": center_prob, "span": span, "keep_fraction": keep_fraction, "min_keep": min_keep}
    return make_mask(ids, "genemask", "overlapping", k, params, npmi, rng)


def random_mask_nonoverlapping(ids, mask_ratio, rng):
    return make_mask(ids, "random", "non-overlapping", 3, {"mask_ratio": mask_ratio}, None, rng)


def genemask_mask_nonoverlapping(ids, npmi, mask_ratio, keep_fraction, window, rng):
    params = {"mask_ratio": mask_ratio, "keep_fraction": keep_fraction, "window": window}
    k = round(math.log(len(npmi), 4))
    return make_mask(ids, "genemask", "non-overlapping", k, params, npmi, rng)


# ----------------------------------------------------------------------------------------
# slow references: plain loops over lists, written from docs/design.md#masking, replaying the same draws
# ----------------------------------------------------------------------------------------


def ref_maskable(ids):
    return [t >= 5 for t in ids]


def ref_span(n, centre, width):
    lo = centre - (width - 1) // 2
    hi = centre + math.ceil((width - 1) / 2)
    return [i for i in range(lo, hi + 1) if 0 <= i < n]


def ref_random_overlapping(ids, k, p, rng):
    u = rng.random(len(ids)).tolist()
    ok = ref_maskable(ids)
    out = [False] * len(ids)
    for c in range(len(ids)):
        if ok[c] and u[c] < p:
            for i in ref_span(len(ids), c, k):
                if ok[i]:
                    out[i] = True
    return out


def ref_npmi_of(token, npmi):
    v = float(npmi[token - 5])
    return -math.inf if math.isnan(v) else v


def ref_genemask_overlapping(ids, npmi, k, p, span, keep_fraction, min_keep, rng):
    u = rng.random(len(ids)).tolist()
    ok = ref_maskable(ids)
    chosen = []  # (npmi of b, centre position, b)
    for c in range(len(ids)):
        if not (ok[c] and u[c] < p):
            continue
        best_b, best_v = None, None
        for i in ref_span(len(ids), c, k):
            if not ok[i]:
                continue
            v = ref_npmi_of(ids[i], npmi)
            if best_b is None or v > best_v:  # strict: ties keep the leftmost
                best_b, best_v = i, v
        chosen.append((best_v, c, best_b))
    n_top = int(keep_fraction * len(chosen))
    if n_top > min_keep:
        chosen = sorted(chosen, key=lambda t: (-t[0], t[1]))[:n_top]
    out = [False] * len(ids)
    for _, _, b in chosen:
        for i in ref_span(len(ids), b, span):
            if ok[i]:
                out[i] = True
    return out


def ref_random_nonoverlapping(ids, ratio, rng):
    u = rng.random(len(ids)).tolist()
    ok = ref_maskable(ids)
    out = [ok[i] and u[i] < ratio for i in range(len(ids))]
    if not any(out) and any(ok):
        j = min((i for i in range(len(ids)) if ok[i]), key=lambda i: (u[i], i))
        out[j] = True
    return out


def ref_genemask_nonoverlapping(ids, npmi, ratio, keep_fraction, window, rng):
    """Windows of `window` consecutive maskable tokens; candidates at rate q = min(1, ratio /
    keep); in each window, f = ratio / q of its candidates (stochastic rounding with the
    second uniform of the window's first maskable token), highest NPMI first, leftmost on
    ties."""
    u = rng.random((len(ids), 2)).tolist()  # [candidate uniform, rounding uniform] per token
    out = [False] * len(ids)
    if ratio == 0:
        return out
    q = min(1.0, ratio / keep_fraction)
    f = ratio / q
    pos = [i for i in range(len(ids)) if ids[i] >= 5]
    for w0 in range(0, len(pos), window):
        win = pos[w0 : w0 + window]
        cand = [i for i in win if u[i][0] < q]
        x = f * len(cand)
        n_mask = math.floor(x)
        if u[win[0]][1] < x - math.floor(x):
            n_mask += 1
        for i in sorted(cand, key=lambda i: (-ref_npmi_of(ids[i], npmi), i))[:n_mask]:
            out[i] = True
    return out


def ref_mask(ids, strategy, tokenization, k, params, npmi, rng):
    """The reference of one strategy x tokenization (every parameter given)."""
    p = params
    if tokenization == "overlapping":
        if strategy == "random":
            return ref_random_overlapping(ids, k, p["center_prob"], rng)
        return ref_genemask_overlapping(
            ids, npmi, k, p["center_prob"], p["span"], p["keep_fraction"], p["min_keep"], rng
        )
    if strategy == "random":
        return ref_random_nonoverlapping(ids, p["mask_ratio"], rng)
    return ref_genemask_nonoverlapping(ids, npmi, p["mask_ratio"], p["keep_fraction"], p["window"], rng)


# ----------------------------------------------------------------------------------------
# random inputs
# ----------------------------------------------------------------------------------------


def random_tokens(rng, k, tokenization, max_len=160):
    """Token ids of a random DNA string with occasional N runs (-> [UNK] tokens)."""
    n = int(rng.integers(0, max_len))
    bases = rng.choice(list("ACGT"), size=n)
    if n and rng.random() < 0.5:
        start = int(rng.integers(0, n))
        bases[start : start + int(rng.integers(1, 8))] = "N"
    return seq.tokenize("".join(bases), k, tokenization)


def random_npmi(rng, k):
    """NPMI table with ties (one decimal), unknown k-mers (-inf) and NaNs."""
    t = np.round(rng.uniform(-1, 1, 4**k), 1).astype(np.float32)
    t[rng.random(4**k) < 0.2] = -np.inf
    t[rng.random(4**k) < 0.02] = np.nan
    return t


@pytest.mark.parametrize("k", [3, 4, 6])
def test_random_overlapping_matches_reference(k):
    data = np.random.default_rng(k)
    for trial in range(150):
        ids = random_tokens(data, k, "overlapping")
        p = float(data.choice([0.0, 0.025, 0.1, 0.4, 1.0]))
        s = int(data.integers(1 << 30))
        got = random_mask_overlapping(ids, k, p, np.random.default_rng(s))
        want = ref_random_overlapping(ids.tolist(), k, p, np.random.default_rng(s))
        assert got.dtype == bool and got.tolist() == want, (trial, ids.tolist(), p)


@pytest.mark.parametrize("k", [3, 4, 6])
def test_genemask_overlapping_matches_reference(k):
    data = np.random.default_rng(100 + k)
    npmi = random_npmi(data, k)
    n_branch = 0
    for trial in range(200):
        ids = random_tokens(data, k, "overlapping", max_len=220)
        p = float(data.choice([0.0176, 0.05, 0.2, 0.5]))
        span = int(data.choice([1, 4, 6, 11]))
        keep = float(data.choice([0.3, 0.5, 1.0]))
        min_keep = int(data.choice([0, 2, 5]))
        s = int(data.integers(1 << 30))
        got = genemask_mask_overlapping(ids, npmi, k, p, span, keep, min_keep, np.random.default_rng(s))
        want = ref_genemask_overlapping(ids.tolist(), npmi, k, p, span, keep, min_keep, np.random.default_rng(s))
        assert got.tolist() == want, (trial, ids.tolist(), p, span, keep, min_keep)
        n_centres = int((maskable(ids) & (np.random.default_rng(s).random(len(ids)) < p)).sum())
        n_branch += int(keep * n_centres) > min_keep
    assert n_branch > 20  # the "keep only the top centres" branch was exercised


@pytest.mark.parametrize("k", [3, 6])
def test_nonoverlapping_masks_match_reference(k):
    data = np.random.default_rng(200 + k)
    npmi = random_npmi(data, k)
    for trial in range(200):
        ids = random_tokens(data, k, "non-overlapping", max_len=400)
        ratio = float(data.choice([0.0, 0.05, 0.15, 0.5, 0.9]))
        keep = float(data.choice([0.25, 0.3, 0.5, 1.0]))  # 0.9 / 0.25 > 1: the capped rate
        window = int(data.choice([1, 2, k, 7, 500]))
        s = int(data.integers(1 << 30))
        got = random_mask_nonoverlapping(ids, ratio, np.random.default_rng(s))
        assert got.tolist() == ref_random_nonoverlapping(ids.tolist(), ratio, np.random.default_rng(s))
        got = genemask_mask_nonoverlapping(ids, npmi, ratio, keep, window, np.random.default_rng(s))
        want = ref_genemask_nonoverlapping(ids.tolist(), npmi, ratio, keep, window, np.random.default_rng(s))
        assert got.tolist() == want, (trial, ids.tolist(), ratio, keep, window)


def test_shared_stream_replays_across_calls():
    """Calls in sequence on one generator equal the reference run on one generator."""
    k = 4
    data = np.random.default_rng(7)
    npmi = random_npmi(data, k)
    seqs = [random_tokens(data, k, "overlapping") for _ in range(50)]
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for ids in seqs:
        assert random_mask_overlapping(ids, k, 0.1, a).tolist() == ref_random_overlapping(ids.tolist(), k, 0.1, b)
        got = genemask_mask_overlapping(ids, npmi, k, 0.1, 11, 0.5, 1, a)
        assert got.tolist() == ref_genemask_overlapping(ids.tolist(), npmi, k, 0.1, 11, 0.5, 1, b)


def test_special_tokens_and_unk_never_masked():
    ids = seq.tokenize("ACGTNACGTACGGTTACNNA" * 5, 3, "overlapping")
    rng = np.random.default_rng(0)
    npmi = random_npmi(rng, 3)
    for fn in (
        lambda: random_mask_overlapping(ids, 3, 1.0, rng),
        lambda: genemask_mask_overlapping(ids, npmi, 3, 1.0, 11, 1.0, 0, rng),
        lambda: random_mask_nonoverlapping(ids, 1.0, rng),
        lambda: genemask_mask_nonoverlapping(ids, npmi, 1.0, 1.0, 3, rng),
    ):
        m = fn()
        assert not m[ids < NS].any()
        assert m[ids >= NS].all()  # everything maskable is masked at probability 1
    assert maskable(np.array([0, 1, 2, 3, 4, 5, 68])).tolist() == [False] * 5 + [True, True]


# ----------------------------------------------------------------------------------------
# the NPMI lookup uses the token CONTENT, not its position
# ----------------------------------------------------------------------------------------


class FixedUniforms:
    """Stand-in generator whose ``random(n)`` returns planted uniforms."""

    def __init__(self, u):
        self.u = np.asarray(u, dtype=float)

    def random(self, n):
        assert n == len(self.u)
        return self.u.copy()


def one_centre(n, c):
    u = np.ones(n)
    u[c] = 0.0
    return FixedUniforms(u)


def test_planted_high_npmi_kmer_attracts_the_span():
    k, span = 6, 5
    base = "A" * 80  # every token is AAAAAA (code 0) -> all ties
    ids = seq.tokenize(base, k, "overlapping")
    npmi = np.zeros(4**k, dtype=np.float32)
    planted = seq.kmer_to_id("ACGTAC")
    npmi[planted] = 5.0
    c = 40  # the only centre; its window is tokens 38..43

    m = genemask_mask_overlapping(ids, npmi, k, 0.5, span, 0.5, 5, one_centre(len(ids), c))
    assert np.flatnonzero(m).tolist() == list(range(36, 41))  # ties -> leftmost (38)

    for where in (38, 42, 43):  # plant the k-mer at different positions inside the window
        planted_ids = ids.copy()
        planted_ids[where] = planted + NS
        m = genemask_mask_overlapping(planted_ids, npmi, k, 0.5, span, 0.5, 5, one_centre(len(ids), c))
        assert np.flatnonzero(m).tolist() == list(range(where - 2, where + 3))

    # same position, a different (ordinary) k-mer: back to the leftmost tie
    other = ids.copy()
    other[42] = seq.kmer_to_id("CCCCCC") + NS
    m = genemask_mask_overlapping(other, npmi, k, 0.5, span, 0.5, 5, one_centre(len(ids), c))
    assert np.flatnonzero(m).tolist() == list(range(36, 41))


def test_planted_kmer_nonoverlapping_is_chosen_per_window():
    k = 3
    ids = seq.tokenize("AAA" * 30, k, "non-overlapping")  # [CLS] + 30 k-mers + [SEP]
    npmi = np.zeros(4**k, dtype=np.float32)
    npmi[seq.kmer_to_id("GTC")] = 1.0
    planted = ids.copy()
    planted[[7, 9, 20]] = seq.kmer_to_id("GTC") + NS
    # ratio 0.1 = keep_fraction: every token is a candidate (q = 1) and each window of 10
    # masks exactly 0.1 * 10 = 1 token (no rounding): the highest NPMI of its window
    for seed in range(3):
        m = genemask_mask_nonoverlapping(planted, npmi, 0.1, 0.1, 10, np.random.default_rng(seed))
        # windows: tokens 1-10 (GTC at 7 and 9: leftmost), 11-20 (GTC at 20), 21-30 (all tied)
        assert np.flatnonzero(m).tolist() == [7, 11 + 9, 21]
        m = genemask_mask_nonoverlapping(ids, npmi, 0.1, 0.1, 10, np.random.default_rng(seed))
        assert np.flatnonzero(m).tolist() == [1, 11, 21]  # all tied -> leftmost of each window
    # one window over the whole sequence (ranked over all 30): 3 masked, the three GTCs
    m = genemask_mask_nonoverlapping(planted, npmi, 0.1, 0.1, 30, np.random.default_rng(0))
    assert np.flatnonzero(m).tolist() == [7, 9, 20]
    # windows count maskable tokens: [UNK] tokens are skipped when the windows are cut
    unk = seq.tokenize("AAA" * 32, k, "non-overlapping")
    unk[[7, 9, 20]] = seq.kmer_to_id("GTC") + NS
    unk[[2, 3]] = seq.UNK_ID  # 30 maskable tokens: windows 1,4-12 | 13-22 | 23-32
    for seed in range(3):
        m = genemask_mask_nonoverlapping(unk, npmi, 0.1, 0.1, 10, np.random.default_rng(seed))
        assert np.flatnonzero(m).tolist() == [7, 20, 23]


def test_permuting_npmi_table_changes_spans():
    k = 4
    rng = np.random.default_rng(11)
    npmi = rng.normal(size=4**k).astype(np.float32)
    perm = npmi[rng.permutation(4**k)]
    n_diff = 0
    for trial in range(20):
        ids = random_tokens(rng, k, "overlapping", max_len=300)
        s = int(rng.integers(1 << 30))
        a = genemask_mask_overlapping(ids, npmi, k, 0.1, 11, 0.5, 5, np.random.default_rng(s))
        b = genemask_mask_overlapping(ids, perm, k, 0.1, 11, 0.5, 5, np.random.default_rng(s))
        n_diff += not np.array_equal(a, b)
    assert n_diff >= 15
    # and a position-based lookup would not see a change of content: ours does
    ids = seq.tokenize("".join(rng.choice(list("ACGT"), 300)), k, "overlapping")
    shuffled = ids.copy()
    shuffled[1:-1] = rng.permutation(ids[1:-1])
    a = genemask_mask_overlapping(ids, npmi, k, 0.1, 11, 0.5, 5, np.random.default_rng(1))
    b = genemask_mask_overlapping(shuffled, npmi, k, 0.1, 11, 0.5, 5, np.random.default_rng(1))
    assert not np.array_equal(a, b)


def test_permuting_npmi_table_changes_nonoverlapping_masks():
    """The same draws with the NPMI values permuted across k-mers choose other tokens, and
    the chosen tokens follow the table: their mean NPMI is well above the candidates'."""
    k = 4
    rng = np.random.default_rng(12)
    npmi = rng.normal(size=4**k).astype(np.float32)
    perm = npmi[rng.permutation(4**k)]
    n_diff, picked, everyone = 0, {"a": [], "b": []}, []
    for trial in range(30):
        ids = seq.tokenize("".join(rng.choice(list("ACGT"), 400)), k, "non-overlapping")
        s = int(rng.integers(1 << 30))
        a = genemask_mask_nonoverlapping(ids, npmi, 0.3, 0.5, k, np.random.default_rng(s))
        b = genemask_mask_nonoverlapping(ids, perm, 0.3, 0.5, k, np.random.default_rng(s))
        n_diff += not np.array_equal(a, b)
        picked["a"] += npmi[ids[a] - NS].tolist()
        picked["b"] += perm[ids[b] - NS].tolist()
        everyone += npmi[ids[maskable(ids)] - NS].tolist()
    assert n_diff == 30
    # top 60 % (0.3 / 0.5) of ~0.6 * 4 candidates per window: clearly above the mean
    assert np.mean(picked["a"]) > np.mean(everyone) + 0.4
    assert np.mean(picked["b"]) > np.mean(everyone) + 0.4


# ----------------------------------------------------------------------------------------
# achieved rates
# ----------------------------------------------------------------------------------------


def _rate(masks, seqs):
    return sum(int(m.sum()) for m in masks) / sum(int(maskable(s).sum()) for s in seqs)


def test_random_overlapping_rate_k6():
    rng = np.random.default_rng(5)
    seqs = [seq.tokenize("".join(rng.choice(list("ACGT"), 2000)), 6, "overlapping") for _ in range(40)]
    masks = [random_mask_overlapping(s, 6, 0.025, rng) for s in seqs]
    expected = 1 - (1 - 0.025) ** 6  # 14.1 %, edges negligible at 2000 tokens
    assert abs(_rate(masks, seqs) - expected) < 0.008


@pytest.mark.parametrize("n_bases,n_ref", [(515, 1500), (133, 2000)])
def test_genemask_overlapping_rate_k6(n_bases, n_ref):
    """GeneMask at centre 0.0176, span 11 on 510-token sequences (the pretraining length) and
    128-token ones (the training crop): the fast path's rate equals the expected rate,
    estimated by Monte Carlo with the slow reference on other sequences and other draws.

    ~9 centres per 510 tokens; int(0.5 * n) <= 5 keeps all of them unless there are 12 or
    more, and several centres can pick the same high-NPMI token, so the rate is below
    1 - (1 - 0.0176)**11 = 17.7 % (~14.9 % at 510 tokens, ~17 % at 128 where the top-half
    rule almost never applies). Standard errors: ~0.002 (fast, 1000 sequences) and ~0.002
    (reference), so +-0.01 is ~3.5 sigma of their difference.
    """
    k, npmi = 6, np.random.default_rng(6).normal(size=4**6).astype(np.float32)

    def draw(seed, n):
        rng = np.random.default_rng(seed)
        return [seq.tokenize("".join(rng.choice(list("ACGT"), n_bases)), k, "overlapping") for _ in range(n)], rng

    ref_seqs, rng = draw(60, n_ref)
    ref_masks = [ref_genemask_overlapping(s.tolist(), npmi, k, 0.0176, 11, 0.5, 5, rng) for s in ref_seqs]
    expected = sum(map(sum, ref_masks)) / sum(sum(ref_maskable(s.tolist())) for s in ref_seqs)
    seqs, rng = draw(61, 1000)
    rate = _rate([genemask_mask_overlapping(s, npmi, k, 0.0176, 11, 0.5, 5, rng) for s in seqs], seqs)
    assert abs(rate - expected) < 0.01, (rate, expected)
    assert 0.13 < expected < 0.177  # below the no-overlap, keep-all bound (see above)


def test_nonoverlapping_rates():
    rng = np.random.default_rng(8)
    rng.normal(size=4**6)  # (keeps the draws of the sequences below as they were)
    seqs = [seq.tokenize("".join(rng.choice(list("ACGT"), 660)), 6, "non-overlapping") for _ in range(200)]
    masks = [random_mask_nonoverlapping(s, 0.5, rng) for s in seqs]
    assert abs(_rate(masks, seqs) - 0.5) < 0.015



@pytest.mark.parametrize(
    "ratio,keep,window",
    [(0.5, 0.5, 6), (0.15, 0.5, 6), (0.3, 0.25, 4), (0.5, 0.3, 6), (0.5, 0.5, 7), (0.5, 0.5, 1), (0.07, 1.0, 25)],
)
def test_nonoverlapping_genemask_rate_is_mask_ratio(ratio, keep, window):
    """The achieved rate over many barcode-length sequences is mask_ratio (+-0.01), also when
    the candidate rate ratio / keep is capped at 1 (0.5 / 0.3), when the windows do not divide
    the sequence (110 tokens, window 7 or 25) and with [UNK] tokens; each sequence's count
    varies (stochastic rounding)."""
    rng = np.random.default_rng(13)
    npmi = rng.normal(size=4**6).astype(np.float32)
    seqs = []
    for _ in range(1000):
        bases = rng.choice(list("ACGT"), int(rng.integers(600, 661)))
        bases[int(rng.integers(0, 600)) :][: int(rng.integers(0, 20))] = "N"
        seqs.append(seq.tokenize("".join(bases), 6, "non-overlapping"))
    flat = np.concatenate(seqs)
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in seqs])])
    params = {"mask_ratio": ratio, "keep_fraction": keep, "window": window}
    got = masking.make_masks(flat, offsets, "genemask", "non-overlapping", 6, params, npmi, rng.random((len(flat), 2)))
    masks = np.split(got, offsets[1:-1])
    assert abs(_rate(masks, seqs) - ratio) < 0.01
    assert len({int(m.sum()) for m in masks}) > 3


def test_make_mask_dispatch_and_defaults():
    k = 4
    rng = np.random.default_rng(9)
    npmi = random_npmi(rng, k)
    ids = random_tokens(rng, k, "overlapping", max_len=300)
    cases = [
        ("random", "overlapping", lambda r: random_mask_overlapping(ids, k, 0.025, r)),
        ("genemask", "overlapping", lambda r: genemask_mask_overlapping(ids, npmi, k, 0.0176, 11, 0.5, 5, r)),
        ("random", "non-overlapping", lambda r: random_mask_nonoverlapping(ids, 0.5, r)),
        ("genemask", "non-overlapping", lambda r: genemask_mask_nonoverlapping(ids, npmi, 0.5, 0.5, k, r)),
    ]
    for strategy, tok, direct in cases:
        got = make_mask(ids, strategy, tok, k, {}, npmi, np.random.default_rng(1))
        assert np.array_equal(got, direct(np.random.default_rng(1))), (strategy, tok)
    got = make_mask(ids, "random", "overlapping", k, {"center_prob": 0.3}, None, np.random.default_rng(2))
    assert np.array_equal(got, random_mask_overlapping(ids, k, 0.3, np.random.default_rng(2)))
    with pytest.raises(ValueError, match="NPMI"):
        make_mask(ids, "genemask", "overlapping", k, {}, None, rng)
    with pytest.raises(ValueError, match="bogus"):
        make_mask(ids, "random", "overlapping", k, {"bogus": 1}, None, rng)
    with pytest.raises(ValueError, match="strategy"):
        make_mask(ids, "pmi", "overlapping", k, {}, None, rng)
    with pytest.raises(ValueError, match="window"):
        make_mask(ids, "genemask", "non-overlapping", k, {"window": 0}, npmi, rng)
    # window: k unless given
    assert masking.resolve_masking_params("genemask", {}, k=6)["window"] == 6
    assert masking.resolve_masking_params("genemask", {"window": 9}, k=6)["window"] == 9
    got = make_mask(ids, "genemask", "non-overlapping", k, {"window": 9}, npmi, np.random.default_rng(1))
    assert np.array_equal(got, genemask_mask_nonoverlapping(ids, npmi, 0.5, 0.5, 9, np.random.default_rng(1)))


# ----------------------------------------------------------------------------------------
# MLM corruption
# ----------------------------------------------------------------------------------------


def test_mlm_corruption_matches_reference_and_proportions():
    V = seq.vocab_size(2)
    rng = np.random.default_rng(10)
    ids = rng.integers(NS, V, size=(400, 500))
    ids[:, 0] = seq.CLS_ID
    mask = rng.random(ids.shape) < 0.5
    mask[:, 0] = False
    corrupted, labels = apply_mlm_corruption(ids, mask, V, np.random.default_rng(4))

    # replay the draws
    r = np.random.default_rng(4)
    u = r.random(ids.shape)
    rand = r.integers(NS, V, size=ids.shape)
    want = []
    for t, m, uu, rr in zip(ids.ravel()[:5000], mask.ravel()[:5000], u.ravel()[:5000], rand.ravel()[:5000]):
        if not m:
            want.append(t)
        elif uu < 0.8:
            want.append(seq.MASK_ID)
        elif uu < 0.9:
            want.append(rr)
        else:
            want.append(t)
    assert corrupted.ravel()[:5000].tolist() == [int(x) for x in want]
    assert np.array_equal(labels, np.where(mask, ids, -100))
    assert np.array_equal(corrupted[~mask], ids[~mask])

    sel = corrupted[mask]
    n = sel.size
    frac_mask = np.mean(sel == seq.MASK_ID)
    replaced = (sel != seq.MASK_ID) & (sel != ids[mask])
    # random draws equal the original with probability 1/16 for 2-mers
    assert abs(frac_mask - 0.8) < 0.005
    assert abs(replaced.mean() - 0.1 * (1 - 1 / 16)) < 0.003
    assert abs(np.mean(sel == ids[mask]) - (0.1 + 0.1 / 16)) < 0.003
    rand_tokens = sel[replaced]
    assert rand_tokens.min() >= NS and rand_tokens.max() < V
    counts = np.bincount(rand_tokens - NS, minlength=16)
    assert counts.min() > 0.8 * counts.mean()  # every k-mer drawn, roughly uniformly
    assert n > 90_000


# ----------------------------------------------------------------------------------------
# reading the NPMI table
# ----------------------------------------------------------------------------------------


def test_load_npmi_table(tmp_path):
    df = pd.DataFrame(
        {
            "kmer": ["A", "C", "AC", "GT", "TT", "ACG", "GGG"],
            "n": [1, 1, 2, 2, 2, 3, 3],
            "count": [5] * 7,
            "log_p": [-1.0] * 7,
            "pmi": [0.1] * 7,
            "npmi": [0.0, 0.0, 0.25, -0.5, float("nan"), 0.9, 0.1],
            "rank": [1, 2, 1, 2, 3, 1, 2],
        }
    )
    path = tmp_path / "npmi.tsv"
    df.to_csv(path, sep="\t", index=False)
    t = load_npmi_table(path, 2)
    assert t.dtype == np.float32 and t.shape == (16,)
    assert t[seq.kmer_to_id("AC")] == 0.25 and t[seq.kmer_to_id("GT")] == -0.5
    assert np.isneginf(t[seq.kmer_to_id("TT")])  # NaN -> unknown
    assert np.isneginf(np.delete(t, [seq.kmer_to_id("AC"), seq.kmer_to_id("GT")])).all()
    t3 = load_npmi_table(path, 3)
    assert t3[seq.kmer_to_id("ACG")] == np.float32(0.9)
    with pytest.raises(InputError, match="no 4-mers"):
        load_npmi_table(path, 4)
    df.drop(columns="npmi").to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match="npmi"):
        load_npmi_table(path, 2)
    assert masking.DEFAULT_CENTER_PROB == {"random": 0.025, "genemask": 0.0176}


# ----------------------------------------------------------------------------------------
# a whole batch at once (make_masks) equals the references sequence by sequence
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenization,k", [("overlapping", 3), ("overlapping", 6), ("non-overlapping", 3), ("non-overlapping", 6)])
@pytest.mark.parametrize("strategy", ["random", "genemask"])
def test_batch_masks_equal_per_sequence_masks(strategy, tokenization, k):
    """make_masks over a concatenated batch, fed the uniforms of all its tokens at once, gives
    each sequence the mask the pure-Python reference gives it drawing
    rng.random(len(sequence)) (two per token for non-overlapping genemask) from the same
    stream."""
    data = np.random.default_rng(300 + k)
    npmi = random_npmi(data, k)
    n_branch = 0
    for trial in range(25):
        seqs = [random_tokens(data, k, tokenization, max_len=int(data.choice([8, 60, 300]))) for _ in range(int(data.integers(1, 40)))]
        params = {
            "center_prob": float(data.choice([0.0176, 0.05, 0.2, 1.0])),
            "span": int(data.choice([1, 4, 11])),
            "keep_fraction": float(data.choice([0.3, 0.5, 1.0])),
            "min_keep": int(data.choice([0, 1, 5])),
            "mask_ratio": float(data.choice([0.0, 0.05, 0.5, 0.9])),
            "window": int(data.choice([1, 3, 6, 40])),
        }
        s = int(data.integers(1 << 30))
        rng = np.random.default_rng(s)
        want = [ref_mask(ids.tolist(), strategy, tokenization, k, params, npmi, rng) for ids in seqs]
        flat = np.concatenate(seqs)
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in seqs])])
        two = strategy == "genemask" and tokenization == "non-overlapping"
        assert masking.uniforms_per_token(strategy, tokenization) == (2 if two else 1)
        shape = (len(flat), 2) if two else len(flat)
        u = np.random.default_rng(s).random(shape)  # the same stream, drawn at once
        got = masking.make_masks(flat, offsets, strategy, tokenization, k, params, npmi, u)
        assert got.dtype == bool and got.tolist() == [x for w in want for x in w], (trial, params)
        if tokenization == "overlapping" and strategy == "genemask":
            n_branch += sum(
                int(params["keep_fraction"] * int((maskable(x) & (uu < params["center_prob"])).sum())) > params["min_keep"]
                for x, uu in zip(seqs, np.split(u, offsets[1:-1]))
            )
    if tokenization == "overlapping" and strategy == "genemask":
        assert n_branch > 10  # the "keep only the top centres" branch was exercised
    with pytest.raises(ValueError, match="uniform"):
        masking.make_masks(np.array([2, 9, 3]), np.array([0, 3]), strategy, tokenization, k, {}, npmi, np.zeros(2))
    with pytest.raises(ValueError, match="uniform"):  # the wrong number per token
        bad = np.zeros(3) if two else np.zeros((3, 2))
        masking.make_masks(np.array([2, 9, 3]), np.array([0, 3]), strategy, tokenization, k, {}, npmi, bad)
