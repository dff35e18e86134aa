"""Do the top-NPMI n-grams recover known motifs? (GeneMask's motif claim, on planted motifs.)

Matching rule (:func:`kmer_matches_motif`): an n-gram matches a motif when it occurs,
letter for letter, inside the motif's consensus or inside the reverse complement of the
consensus (both upper-cased). Consensus letters may be IUPAC codes (e.g. W = A/T, N = any);
such a position matches any of the bases it stands for, so for a plain ACGT consensus the
rule is simply "substring of the consensus or of its reverse complement". The rule is a
separate function so that a PWM-based rule (JASPAR, real genomes) can replace it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

IUPAC = {
    "A": "A", "C": "C", "G": "G", "T": "T", "U": "T",
    "R": "AG", "Y": "CT", "S": "CG", "W": "AT", "K": "GT", "M": "AC",
    "B": "CGT", "D": "AGT", "H": "ACT", "V": "ACG", "N": "ACGT",
}  # fmt: skip
_IUPAC_COMPLEMENT = str.maketrans("ACGTURYSWKMBDHVN", "TGCAAYRSWMKVHDBN")


def _reverse_complement_iupac(seq: str) -> str:
    return seq.translate(_IUPAC_COMPLEMENT)[::-1]


def _occurs_in(kmer: str, pattern: str) -> bool:
    n = len(kmer)
    for start in range(len(pattern) - n + 1):
        if all(b in IUPAC.get(p, "") for b, p in zip(kmer, pattern[start : start + n])):
            return True
    return False


def kmer_matches_motif(kmer: str, consensus: str) -> bool:
    """True if ``kmer`` occurs in ``consensus`` or its reverse complement (IUPAC-aware)."""
    kmer, consensus = kmer.upper(), consensus.upper()
    if not kmer or len(kmer) > len(consensus):
        return False
    return _occurs_in(kmer, consensus) or _occurs_in(kmer, _reverse_complement_iupac(consensus))


def _check_motifs(motifs: pd.DataFrame) -> None:
    missing = [c for c in ("motif_id", "consensus") if c not in motifs.columns]
    if missing:
        raise ValueError(f"motif table lacks column(s) {', '.join(missing)}")


def _top_rows(table: pd.DataFrame, n: int, top: int) -> pd.DataFrame:
    """The ``top`` best-ranked rows of length n (fewer if the table holds fewer)."""
    rows = table[table["n"] == n].sort_values(["rank", "kmer"], kind="stable")
    return rows.head(int(top)).reset_index(drop=True)


def _match_matrix(kmers: Sequence[str], motifs: pd.DataFrame, rule: Callable[[str, str], bool]) -> np.ndarray:
    """Boolean (n_kmers, n_motifs): does k-mer i match motif j."""
    consensus = motifs["consensus"].astype(str).tolist()
    return np.array([[rule(k, c) for c in consensus] for k in kmers], dtype=bool).reshape(len(kmers), len(consensus))


def motif_recovery(
    table: pd.DataFrame,
    motifs: pd.DataFrame,
    n: int,
    top: Sequence[int],
    rule: Callable[[str, str], bool] = kmer_matches_motif,
) -> pd.DataFrame:
    """Precision and recall of the top-N n-grams of length n against the known motifs.

    For each N in ``top``: precision = fraction of the top-N n-grams that match some motif
    (NaN if the table has no n-gram of length n); recall = fraction of motifs matched by at
    least one of them (NaN if there are no motifs). Columns: top, n, precision, recall,
    n_matched_kmers, n_motifs_recovered.
    """
    _check_motifs(motifs)
    top = [int(t) for t in top]
    if any(t < 1 for t in top):
        raise ValueError(f"top values must be >= 1, got {top}")
    best = _top_rows(table, n, max(top, default=0))
    match = _match_matrix(best["kmer"].tolist(), motifs, rule)
    rows = []
    for t in top:
        m = match[:t]
        n_taken, n_motifs = m.shape
        matched = int(m.any(axis=1).sum())
        recovered = int(m.any(axis=0).sum())
        rows.append(
            {
                "top": t,
                "n": int(n),
                "precision": matched / n_taken if n_taken else np.nan,
                "recall": recovered / n_motifs if n_motifs else np.nan,
                "n_matched_kmers": matched,
                "n_motifs_recovered": recovered,
            }
        )
    return pd.DataFrame(rows, columns=["top", "n", "precision", "recall", "n_matched_kmers", "n_motifs_recovered"])


def annotate_top_kmers(
    table: pd.DataFrame,
    motifs: pd.DataFrame,
    n: int,
    top: int,
    rule: Callable[[str, str], bool] = kmer_matches_motif,
) -> pd.DataFrame:
    """The top-N n-grams of length n (kmer, n, count, npmi, rank) plus ``motifs``: the ids
    of the motifs each matches, joined by ',' in motif-table order ('' if none)."""
    _check_motifs(motifs)
    best = _top_rows(table, n, top)
    match = _match_matrix(best["kmer"].tolist(), motifs, rule)
    ids = motifs["motif_id"].astype(str).to_numpy()
    out = best[["kmer", "n", "count", "npmi", "rank"]].copy()
    out["motifs"] = [",".join(ids[row]) for row in match]
    return out
