"""Motif recovery on a hand-built NPMI table whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dnalm.kmers import count_sequences
from dnalm.motifs import MIN_BITS_PER_COLUMN, annotate_top_kmers, kmer_matches_motif, kmer_matches_pwm, motif_recovery
from dnalm.npmi import npmi_table

MOTIFS = pd.DataFrame(
    {
        "motif_id": ["M1", "M2", "M3", "M4"],
        "consensus": ["GATTACA", "CCGG", "TATAWAW", "GTAAT"],  # rc: TGTAATC, CCGG, WTWTATA, ATTAC
    }
)


@pytest.fixture
def table():
    rows = [  # (kmer, n, rank); given out of order on purpose
        ("TATA", 4, 5),  # M3 (TATAWAW, W = A/T)
        ("ATTA", 4, 1),  # M1 (GATTACA) and M4 (reverse complement ATTAC)
        ("GGGC", 4, 6),  # nothing
        ("ACGT", 4, 3),  # nothing
        ("TGTA", 4, 2),  # M1 via its reverse complement TGTAATC
        ("CCGG", 4, 4),  # M2
        ("GAT", 3, 1),  # other length: must be ignored for n = 4
    ]
    return pd.DataFrame(
        {
            "kmer": [r[0] for r in rows],
            "n": [r[1] for r in rows],
            "count": [10 * r[2] for r in rows],
            "log_p": -1.0,
            "pmi": 0.5,
            "npmi": [1 - 0.1 * r[2] for r in rows],
            "rank": [r[2] for r in rows],
        }
    )


def test_kmer_matches_motif_rule():
    assert kmer_matches_motif("ATTA", "GATTACA")
    assert kmer_matches_motif("gatTACA", "GATTACA")  # case-insensitive, whole consensus
    assert kmer_matches_motif("TGTAA", "GATTACA")  # reverse complement TGTAATC
    assert not kmer_matches_motif("ACAT", "GATTACA")  # reverse, not reverse complement
    assert not kmer_matches_motif("GATTACAG", "GATTACA")  # longer than the motif
    assert kmer_matches_motif("AAAA", "TATAWAW")  # AWAW with W = A
    assert kmer_matches_motif("TTTA", "TATAWAW")  # reverse complement WTWTATA, W = T
    assert not kmer_matches_motif("CAT", "TATAWAW")
    assert not kmer_matches_motif("", "ACGT")


def test_motif_recovery_by_hand(table):
    res = motif_recovery(table, MOTIFS, n=4, top=[1, 2, 3, 5, 10])
    assert list(res.columns) == [
        "top",
        "n",
        "precision",
        "recall",
        "n_matched_kmers",
        "n_motifs_recovered",
        "background",
        "enrichment",
        "rule",
    ]
    assert (res["rule"] == "consensus-substring").all()
    # background: the 4-mers (of all 256) inside a consensus or its reverse complement
    import itertools

    every = ["".join(p) for p in itertools.product("ACGT", repeat=4)]
    bg = np.mean([any(kmer_matches_motif(k, c) for c in MOTIFS["consensus"]) for k in every])
    assert res["background"].tolist() == pytest.approx([bg] * 5)
    np.testing.assert_allclose(res["enrichment"], res["precision"] / bg)
    assert res["top"].tolist() == [1, 2, 3, 5, 10]
    assert (res["n"] == 4).all()
    # top-1 ATTA -> M1, M4; +TGTA -> M1; +ACGT none; +CCGG M2, +TATA M3; 10 -> all 6 rows (+GGGC)
    assert res["n_matched_kmers"].tolist() == [1, 2, 2, 4, 4]
    assert res["n_motifs_recovered"].tolist() == [2, 2, 2, 4, 4]
    np.testing.assert_allclose(res["precision"], [1, 1, 2 / 3, 4 / 5, 4 / 6])
    np.testing.assert_allclose(res["recall"], [0.5, 0.5, 0.5, 1, 1])


def test_motif_recovery_edge_cases(table):
    none = motif_recovery(table, MOTIFS, n=5, top=[3])
    assert np.isnan(none.loc[0, "precision"]) and none.loc[0, "recall"] == 0
    no_motifs = motif_recovery(table, MOTIFS.iloc[:0], n=4, top=[3])
    assert no_motifs.loc[0, "precision"] == 0 and np.isnan(no_motifs.loc[0, "recall"])
    with pytest.raises(ValueError, match="consensus"):
        motif_recovery(table, MOTIFS[["motif_id"]], n=4, top=[1])
    with pytest.raises(ValueError):
        motif_recovery(table, MOTIFS, n=4, top=[0])
    # a swapped-in rule is used
    exact = motif_recovery(table, MOTIFS, n=4, top=[6], rule=lambda k, c: k == c)
    assert exact.loc[0, "n_matched_kmers"] == 1 and exact.loc[0, "n_motifs_recovered"] == 1
    assert exact.loc[0, "rule"] == "custom:<lambda>"


def test_annotate_top_kmers(table):
    ann = annotate_top_kmers(table, MOTIFS, n=4, top=4)
    assert list(ann.columns) == ["kmer", "n", "count", "npmi", "rank", "motifs"]
    assert ann["kmer"].tolist() == ["ATTA", "TGTA", "ACGT", "CCGG"]
    assert ann["motifs"].tolist() == ["M1,M4", "M1", "", "M2"]
    assert ann["rank"].tolist() == [1, 2, 3, 4]
    assert ann["count"].tolist() == [10, 20, 30, 40]


def test_planted_motif_recovered_end_to_end():
    """Counts -> NPMI -> recovery on a random genome with one planted motif."""
    rng = np.random.default_rng(5)
    recs = []
    for _ in range(8):
        s = "".join(rng.choice(list("ACGT"), size=800))
        for pos in rng.integers(0, 790, size=12):
            s = s[:pos] + "CGTACTAG" + s[pos + 8 :]
        recs.append(s)
    t = npmi_table(count_sequences(recs, 5), min_count=5)
    motifs = pd.DataFrame({"motif_id": ["planted", "absent"], "consensus": ["CGTACTAG", "GGGGGGGG"]})
    res = motif_recovery(t, motifs, n=5, top=[4])
    assert res.loc[0, "precision"] == 1.0 and res.loc[0, "recall"] == 0.5


# --------------------------------------------------------------------------- PWM motifs (JASPAR)


def brute_pwm_match(kmer, probs, min_score):
    """Reference written out with loops: every placement, both strands (see dnalm.motifs)."""
    import math

    comp = {"A": "T", "C": "G", "G": "C", "T": "A"}
    rows = "ACGT"
    strands = [probs, [[probs[rows.index(comp[b])][len(probs[0]) - 1 - j] for j in range(len(probs[0]))] for b in rows]]
    k = len(kmer)
    for p in strands:
        length = len(p[0])
        m = min(k, length)
        for off in range(abs(length - k) + 1):
            cols = [off + i for i in range(m)] if k <= length else list(range(length))
            kpos = list(range(m)) if k <= length else [off + i for i in range(m)]
            ic = sum(2 + sum(p[r][c] * math.log2(p[r][c]) for r in range(4)) for c in cols)
            if ic < MIN_BITS_PER_COLUMN * m:
                continue
            lo = [[math.log2(p[r][c] / 0.25) for r in range(4)] for c in cols]
            score = sum(lo[i][rows.index(kmer[kpos[i]])] for i in range(m))
            best, worst = sum(max(x) for x in lo), sum(min(x) for x in lo)
            if best > worst and (score - worst) / (best - worst) >= min_score:
                return True
    return False


def test_pwm_rule_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(30):
        length = int(rng.integers(3, 10))
        counts = rng.gamma(0.3, size=(4, length)) * 20  # peaked columns, some flat
        probs = (counts + 0.25) / (counts.sum(axis=0) + 1)
        for k in (3, 5, 8, 11):
            kmers = ["".join(rng.choice(list("ACGT"), size=k)) for _ in range(25)]
            consensus = "".join("ACGT"[i] for i in probs.argmax(axis=0))
            if k <= length:
                kmers.append(consensus[:k])
            for score in (0.7, 0.9):
                got = [kmer_matches_pwm(km, probs, score) for km in kmers]
                assert got == [brute_pwm_match(km, probs.tolist(), score) for km in kmers]


def test_pwm_rule_by_hand():
    # a sharp CACGTG (E-box, palindromic) with flat flanks
    sharp = np.full((4, 6), 0.01)
    for j, b in enumerate("CACGTG"):
        sharp["ACGT".index(b), j] = 0.97
    flat = np.full((4, 3), 0.25)
    pwm = np.hstack([flat, sharp, flat])
    assert kmer_matches_pwm("CACGTG", pwm)
    assert kmer_matches_pwm("ACGT", pwm)
    assert not kmer_matches_pwm("AAAAAA", pwm)
    assert not kmer_matches_pwm("GGATCC", pwm)
    assert not kmer_matches_pwm("AAA", flat)  # uninformative: matches nothing
    gata = np.full((4, 4), 0.01)
    for j, b in enumerate("GATA"):
        gata["ACGT".index(b), j] = 0.97
    assert kmer_matches_pwm("TATC", gata)  # reverse complement of GATA
    assert kmer_matches_pwm("CCGATACC", gata)  # motif inside a longer k-mer
    assert not kmer_matches_pwm("CCGTTACC", gata)


def test_jaspar_from_pyjaspar_offline():
    from dnalm.motifs import load_motifs

    jaspar = load_motifs("jaspar")
    assert len(jaspar) > 500 and list(jaspar.columns) == ["motif_id", "name", "consensus", "pwm"]
    assert jaspar["motif_id"].is_unique
    arnt = jaspar[jaspar["motif_id"].str.startswith("MA0004")].iloc[0]  # Arnt, CACGTG
    assert arnt["name"] == "Arnt" and np.allclose(arnt["pwm"].sum(axis=0), 1)
    one = jaspar[jaspar["motif_id"] == arnt["motif_id"]]
    table = pd.DataFrame(
        {
            "kmer": ["CACGTG", "AAAAAA", "ACGTGA"],
            "n": 6,
            "count": 1,
            "log_p": -1.0,
            "pmi": 0.0,
            "npmi": [0.9, 0.8, 0.7],
            "rank": [1, 2, 3],
        }
    )
    res = motif_recovery(table, one, n=6, top=[1, 3])
    assert res["n_matched_kmers"].tolist() == [1, 1] and res["recall"].tolist() == [1.0, 1.0]
    assert res["rule"].tolist() == ["pwm>=0.95"] * 2
    strict = motif_recovery(table, one, n=6, top=[1], min_score=0.999)
    assert strict.loc[0, "rule"] == "pwm>=0.999"


def test_motif_tsv_errors(tmp_path):
    from dnalm import io
    from dnalm.motifs import load_motifs

    good = tmp_path / "m.tsv"
    good.write_text("motif_id\tconsensus\nM1\tGATTACA\nM2\tTATAWAW\n")
    assert load_motifs("path", good)["motif_id"].tolist() == ["M1", "M2"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\tseq\nM1\tGATTACA\n")
    with pytest.raises(io.InputError, match="motif_id"):
        load_motifs(str(bad), bad)
    prot = tmp_path / "prot.tsv"
    prot.write_text("motif_id\tconsensus\nM1\tGATTACA\nP\tMKVLE\n")
    with pytest.raises(io.InputError, match="'P'"):
        load_motifs(str(prot), prot)
