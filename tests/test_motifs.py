"""Motif recovery on a hand-built NPMI table whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dnalm.kmers import count_sequences
from dnalm.motifs import annotate_top_kmers, kmer_matches_motif, motif_recovery
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
    assert list(res.columns) == ["top", "n", "precision", "recall", "n_matched_kmers", "n_motifs_recovered"]
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
