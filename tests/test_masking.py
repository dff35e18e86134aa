"""Masking strategies: equality with slow pure-Python references, content-based NPMI lookup,
achieved mask rates, and the 80/10/10 corruption."""

import math

import numpy as np
import pandas as pd
import pytest

from dnalm import masking, seq
from dnalm.io import InputError
from dnalm.masking import (
    apply_mlm_corruption,
    genemask_mask_nonoverlapping,
    genemask_mask_overlapping,
    load_npmi_table,
    make_mask,
    maskable,
    random_mask_nonoverlapping,
    random_mask_overlapping,
)

NS = seq.N_SPECIAL


# ----------------------------------------------------------------------------------------
# slow references: plain loops over lists, written from DESIGN.md, replaying the same draws
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


def ref_genemask_nonoverlapping(ids, npmi, ratio, keep_fraction, rng):
    u = rng.random(len(ids)).tolist()
    pos = [i for i in range(len(ids)) if ids[i] >= 5]
    out = [False] * len(ids)
    if not pos:
        return out
    m = min(len(pos), max(1, round(ratio * len(pos))))
    n_cand = min(len(pos), round(m / keep_fraction))
    cand = sorted(pos, key=lambda i: (u[i], i))[:n_cand]
    for i in sorted(cand, key=lambda i: (-ref_npmi_of(ids[i], npmi), i))[:m]:
        out[i] = True
    return out


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
        keep = float(data.choice([0.25, 0.5, 1.0]))
        s = int(data.integers(1 << 30))
        got = random_mask_nonoverlapping(ids, ratio, np.random.default_rng(s))
        assert got.tolist() == ref_random_nonoverlapping(ids.tolist(), ratio, np.random.default_rng(s))
        got = genemask_mask_nonoverlapping(ids, npmi, ratio, keep, np.random.default_rng(s))
        want = ref_genemask_nonoverlapping(ids.tolist(), npmi, ratio, keep, np.random.default_rng(s))
        assert got.tolist() == want, (trial, ids.tolist(), ratio, keep)


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
        lambda: genemask_mask_nonoverlapping(ids, npmi, 1.0, 1.0, rng),
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


def test_planted_kmer_nonoverlapping_is_chosen():
    k = 3
    ids = seq.tokenize("AAA" * 30, k, "non-overlapping")
    npmi = np.zeros(4**k, dtype=np.float32)
    npmi[seq.kmer_to_id("GTC")] = 1.0
    planted = ids.copy()
    planted[[7, 20]] = seq.kmer_to_id("GTC") + NS
    # m = round(0.04 * 30) = 1; keep_fraction 1/30 makes all 30 maskable tokens candidates
    m = genemask_mask_nonoverlapping(planted, npmi, 0.04, 1 / 30, np.random.default_rng(0))
    assert np.flatnonzero(m).tolist() == [7]  # highest NPMI, leftmost of the two
    m = genemask_mask_nonoverlapping(ids, npmi, 0.04, 1 / 30, np.random.default_rng(0))
    assert np.flatnonzero(m).tolist() == [1]  # all tied -> leftmost maskable token


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


def test_genemask_overlapping_rate_k6():
    """GeneMask at centre 0.0176, span 11 on 510-token sequences (the pretraining length).

    ~9 centres per sequence on average; int(0.5 * n) <= 5 keeps all of them unless there are
    12 or more, and several centres can pick the same high-NPMI token, so the rate is below
    1 - (1 - 0.0176)**11 = 17.7 % (observed 14.9 %; 17.3 % at 128 tokens, where the top-half
    rule never applies; 8.9 % at 2000 tokens, where it always does).
    """
    rng = np.random.default_rng(6)
    npmi = rng.normal(size=4**6).astype(np.float32)
    seqs = [seq.tokenize("".join(rng.choice(list("ACGT"), 515)), 6, "overlapping") for _ in range(300)]
    masks = [genemask_mask_overlapping(s, npmi, 6, 0.0176, 11, 0.5, 5, rng) for s in seqs]
    rate = _rate(masks, seqs)
    assert 0.14 < rate < 0.177, rate


def test_nonoverlapping_rates():
    rng = np.random.default_rng(8)
    npmi = rng.normal(size=4**6).astype(np.float32)
    seqs = [seq.tokenize("".join(rng.choice(list("ACGT"), 660)), 6, "non-overlapping") for _ in range(200)]
    masks = [random_mask_nonoverlapping(s, 0.5, rng) for s in seqs]
    assert abs(_rate(masks, seqs) - 0.5) < 0.015
    masks = [genemask_mask_nonoverlapping(s, npmi, 0.5, 0.5, rng) for s in seqs]
    assert all(int(m.sum()) == 55 for m in masks)  # exactly round(0.5 * 110)


def test_make_mask_dispatch_and_defaults():
    k = 4
    rng = np.random.default_rng(9)
    npmi = random_npmi(rng, k)
    ids = random_tokens(rng, k, "overlapping", max_len=300)
    cases = [
        ("random", "overlapping", lambda r: random_mask_overlapping(ids, k, 0.025, r)),
        ("genemask", "overlapping", lambda r: genemask_mask_overlapping(ids, npmi, k, 0.0176, 11, 0.5, 5, r)),
        ("random", "non-overlapping", lambda r: random_mask_nonoverlapping(ids, 0.5, r)),
        ("genemask", "non-overlapping", lambda r: genemask_mask_nonoverlapping(ids, npmi, 0.5, 0.5, r)),
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


# ----------------------------------------------------------------------------------------
# MLM corruption
# ----------------------------------------------------------------------------------------


def test_mlm_corruption_matches_reference_and_proportions():
    k, V = 2, seq.vocab_size(2)
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
# the batch path (make_masks) equals the per-sequence functions
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenization,k", [("overlapping", 3), ("overlapping", 6), ("non-overlapping", 3), ("non-overlapping", 6)])
@pytest.mark.parametrize("strategy", ["random", "genemask"])
def test_batch_masks_equal_per_sequence_masks(strategy, tokenization, k):
    """make_masks over a concatenated batch, fed one uniform per token, gives each sequence
    the mask make_mask gives it drawing rng.random(len(sequence)) from the same stream."""
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
        }
        s = int(data.integers(1 << 30))
        rng = np.random.default_rng(s)
        want = [make_mask(ids, strategy, tokenization, k, params, npmi, rng) for ids in seqs]
        flat = np.concatenate(seqs)
        offsets = np.concatenate([[0], np.cumsum([len(x) for x in seqs])])
        u = np.random.default_rng(s).random(len(flat))  # the same stream, drawn at once
        got = masking.make_masks(flat, offsets, strategy, tokenization, k, params, npmi, u)
        assert got.dtype == bool and got.tolist() == np.concatenate(want).tolist(), (trial, params)
        if tokenization == "overlapping" and strategy == "genemask":
            n_branch += sum(
                int(params["keep_fraction"] * int((maskable(x) & (uu < params["center_prob"])).sum())) > params["min_keep"]
                for x, uu in zip(seqs, np.split(u, offsets[1:-1]))
            )
    if tokenization == "overlapping" and strategy == "genemask":
        assert n_branch > 10  # the "keep only the top centres" branch was exercised
    with pytest.raises(ValueError, match="one uniform per token"):
        masking.make_masks(np.array([2, 9, 3]), np.array([0, 3]), strategy, tokenization, k, {}, npmi, np.zeros(2))
