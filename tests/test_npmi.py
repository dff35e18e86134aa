"""NPMI table against a brute-force enumeration of every segmentation, and hand values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import brute_counts
from dnalm.kmers import KmerCounts, count_sequences
from dnalm.npmi import COLUMNS, npmi_lookup, npmi_table, read_npmi_table, write_npmi_table


def compositions(w):
    """Every way to cut w into contiguous non-empty parts (including the 1-part one)."""
    if not w:
        yield []
        return
    for i in range(1, len(w) + 1):
        for rest in compositions(w[i:]):
            yield [w[:i]] + rest


def brute_npmi(seqs, k_max, min_count=1):
    """Reference table as {kmer: (count, log_p, pmi, npmi)} with plain Python floats."""
    cnt = brute_counts(seqs, k_max)
    totals = [sum(c.values()) for c in cnt]

    def logp(s):
        c = cnt[len(s) - 1][s]
        return math.log(c / totals[len(s) - 1]) if c else -math.inf

    ref = {}
    for n in range(2, k_max + 1):
        for w, c in cnt[n - 1].items():
            if c < min_count:
                continue
            best = max(sum(logp(s) for s in seg) for seg in compositions(w) if len(seg) >= 2)
            lp = logp(w)
            pmi = lp - best
            ref[w] = (c, lp, pmi, pmi / -lp)
    return ref


def random_genome(rng, n_records=6, length=400):
    """Markov-ish random DNA with a planted motif, so NPMI values are spread out."""
    recs = []
    for _ in range(n_records):
        bases = rng.choice(list("ACGT"), size=length, p=[0.3, 0.2, 0.2, 0.3])
        s = "".join(bases)
        for pos in rng.integers(0, length - 8, size=8):
            s = s[:pos] + "GATTACA" + s[pos + 7 :]
        recs.append(s[: length // 2] + "NN" + s[length // 2 :].lower())
    return recs


@pytest.mark.parametrize("k_max,min_count", [(2, 1), (4, 1), (5, 1), (5, 3)])
def test_npmi_matches_brute_force(k_max, min_count):
    recs = random_genome(np.random.default_rng(k_max * 10 + min_count))
    table = npmi_table(count_sequences(recs, k_max), min_count=min_count)
    ref = brute_npmi(recs, k_max, min_count)
    assert list(table.columns) == COLUMNS
    assert set(table["kmer"]) == set(ref)
    assert len(table) == len(ref)
    exp = np.array([ref[k] for k in table["kmer"]])
    assert (table["count"].to_numpy() == exp[:, 0]).all()
    assert (table["n"].to_numpy() == table["kmer"].str.len().to_numpy()).all()
    np.testing.assert_allclose(table[["log_p", "pmi", "npmi"]].to_numpy(), exp[:, 1:], rtol=1e-10, atol=1e-12)
    assert table["count"].min() >= min_count


def test_bouma_npmi_by_hand():
    # "AACAAG": 1-mers A4 C1 G1 (6 windows); 2-mers AA2 AC1 CA1 AG1 (5 windows)
    t = npmi_table(count_sequences(["AACAAG"], 2)).set_index("kmer")
    # NPMI(x,y) = log(p(xy) / (p(x) p(y))) / -log p(xy)
    assert t.loc["AC", "npmi"] == pytest.approx(math.log((1 / 5) / ((4 / 6) * (1 / 6))) / math.log(5))
    assert t.loc["AC", "npmi"] == pytest.approx(math.log(9 / 5) / math.log(5))
    assert t.loc["AA", "npmi"] == pytest.approx(math.log(0.9) / math.log(2.5))
    assert t.loc["AA", "pmi"] == pytest.approx(math.log(0.9))
    assert t.loc["AA", "log_p"] == pytest.approx(math.log(0.4))
    assert t.loc["AA", "count"] == 2
    # AC, AG and CA all have p = 1/5 and parts A (4/6) and C or G (1/6): equal NPMI, so
    # the tie is broken by the k-mer string; AA has the lowest NPMI
    assert t.sort_values("rank").index.tolist() == ["AC", "AG", "CA", "AA"]
    assert t["rank"].tolist() == sorted(t["rank"].tolist())  # table is sorted by rank


def test_rank_semantics_and_sorting():
    recs = random_genome(np.random.default_rng(7))
    table = npmi_table(count_sequences(recs, 4), n_min=2)
    assert table["n"].is_monotonic_increasing
    for n, grp in table.groupby("n"):
        assert grp["rank"].tolist() == list(range(1, len(grp) + 1))
        expect = sorted(grp["kmer"], key=lambda k: (-grp.set_index("kmer").loc[k, "npmi"], k))
        assert grp["kmer"].tolist() == expect
    only3 = npmi_table(count_sequences(recs, 4), n_min=3)
    assert set(only3["n"]) == {3, 4}
    pd.testing.assert_frame_equal(only3.reset_index(drop=True), table[table["n"] >= 3].reset_index(drop=True))
    with pytest.raises(ValueError):
        npmi_table(count_sequences(recs, 4), n_min=1)


def test_planted_motif_ranks_high():
    recs = random_genome(np.random.default_rng(11), n_records=10, length=600)
    t = npmi_table(count_sequences(recs, 6), min_count=5)
    top = t[(t["n"] == 6) & (t["rank"] <= 3)]["kmer"].tolist()
    assert set(top) & {"GATTAC", "ATTACA"}


def test_min_count_zero_no_warnings_and_conventions():
    c = count_sequences(["ACGTAC"], 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = npmi_table(c, min_count=0)
    assert len(t) == 16 + 64
    absent = t[t["count"] == 0]
    assert np.isneginf(absent["log_p"]).all() and np.isneginf(absent["pmi"]).all()
    assert (absent["npmi"] == -1).all()
    present = t[t["count"] > 0]
    assert np.isfinite(present[["log_p", "pmi", "npmi"]].to_numpy()).all()
    # degenerate p(w) = 1 corpora
    assert npmi_table(count_sequences(["AAAA"], 2))["npmi"].tolist() == [0.0]  # PMI 0
    assert npmi_table(count_sequences(["AC"], 2))["npmi"].tolist() == [1.0]  # PMI > 0
    assert len(npmi_table(KmerCounts.zeros(3))) == 0


def test_write_read_roundtrip(tmp_path):
    t = npmi_table(count_sequences(["ACGTACGGA", "TTGCA"], 3), min_count=0)
    p = tmp_path / "npmi.tsv"
    write_npmi_table(t, p)
    assert p.read_text().splitlines()[0].split("\t") == COLUMNS
    back = read_npmi_table(p)
    assert list(back.columns) == COLUMNS
    np.testing.assert_array_equal(back[["log_p", "pmi", "npmi"]].to_numpy(), t[["log_p", "pmi", "npmi"]].to_numpy())
    assert back["kmer"].tolist() == t["kmer"].tolist()
    for c in ("n", "count", "rank"):
        assert back[c].tolist() == t[c].tolist() and back[c].dtype == np.int64


def test_npmi_lookup():
    t = npmi_table(count_sequences(["ACGTACGGATTA"], 3), min_count=1)
    lut = npmi_lookup(t, 3)
    assert lut.dtype == np.float32 and lut.shape == (64,)
    rows = t[t["n"] == 3]
    for kmer, v in zip(rows["kmer"], rows["npmi"]):
        code = sum("ACGT".index(b) * 4 ** (2 - i) for i, b in enumerate(kmer))
        assert lut[code] == np.float32(v)
    assert np.isneginf(lut).sum() == 64 - len(rows)
    assert lut[0] == -np.inf  # AAA never occurs
    assert np.isneginf(npmi_lookup(t, 4)).all() and npmi_lookup(t, 4).shape == (256,)


def test_brute_force_with_short_records_and_iupac():
    rng = np.random.default_rng(3)
    recs = random_genome(rng, n_records=3, length=300) + ["", "A", "AC", "ACG", "NNNN", "acRYgt", "GATTACA"]
    table = npmi_table(count_sequences(recs, 4), min_count=2)
    ref = brute_npmi([r.upper().replace("R", "N").replace("Y", "N") for r in recs], 4, 2)
    assert set(table["kmer"]) == set(ref)
    exp = np.array([ref[k] for k in table["kmer"]])
    np.testing.assert_allclose(table[["log_p", "pmi", "npmi"]].to_numpy(), exp[:, 1:], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk", [3, 1 << 20])
def test_streamed_tsv_equals_table(tmp_path, monkeypatch, chunk):
    """write_npmi_tsv (length by length, in chunks) writes exactly what the table gives."""
    import dnalm.npmi as npmi_mod

    monkeypatch.setattr(npmi_mod, "_CHUNK", chunk)
    counts = count_sequences(random_genome(np.random.default_rng(5)), 5)
    whole, streamed = tmp_path / "a.tsv", tmp_path / "b.tsv"
    write_npmi_table(npmi_table(counts, min_count=2), whole)
    rows = npmi_mod.write_npmi_tsv(counts, streamed, min_count=2)
    assert streamed.read_text() == whole.read_text()
    assert rows == len(read_npmi_table(streamed))
    top = npmi_mod.read_top_rows(streamed, 4, 7)
    full = read_npmi_table(whole)
    expect = full[(full["n"] == 4) & (full["rank"] <= 7)].reset_index(drop=True)
    pd.testing.assert_frame_equal(top, expect)
    assert len(npmi_mod.read_top_rows(streamed, 9, 7)) == 0


def test_streamed_tsv_failure_leaves_nothing(tmp_path, monkeypatch):
    import dnalm.npmi as npmi_mod

    counts = count_sequences(random_genome(np.random.default_rng(6)), 4)

    def boom(*args, **kwargs):
        raise MemoryError("out of memory in the middle")

    calls = {"n": 0}
    real = npmi_mod._frame

    def flaky(*args, **kwargs):  # the first chunks are written, then a failure
        calls["n"] += 1
        if calls["n"] > 1:
            boom()
        return real(*args, **kwargs)

    monkeypatch.setattr(npmi_mod, "_frame", flaky)
    with pytest.raises(MemoryError):
        npmi_mod.write_npmi_tsv(counts, tmp_path / "out" / "npmi.tsv")
    assert list((tmp_path / "out").iterdir()) == []
