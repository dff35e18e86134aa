"""Do the top-NPMI n-grams recover known motifs? (GeneMask's motif claim.)

Known motifs (:func:`load_motifs`, config ``npmi.motifs``): the demo simulator's planted
motifs (``planted``), JASPAR CORE vertebrate matrices shipped in the ``pyjaspar`` wheel
(``jaspar``, offline), or a user TSV with columns motif_id and consensus.

Two matching rules, chosen by the motif table (:func:`match_matrix`):

* Consensus motifs (planted, user TSV), :func:`kmer_matches_motif`: an n-gram matches when
  it occurs, letter for letter, inside the motif's consensus or inside the reverse
  complement of the consensus (both upper-cased). Consensus letters may be IUPAC codes
  (e.g. W = A/T, N = any); such a position matches any of the bases it stands for.
* PWM motifs (JASPAR; a ``pwm`` column of 4 x L base-probability matrices),
  :func:`kmer_matches_pwm`: the k-mer is placed on the motif or its reverse complement
  at every offset where one lies inside the other (the k-mer inside the motif if k <= L,
  the motif inside the k-mer otherwise). A placement over the m = min(k, L) overlapping
  columns matches when (1) those columns are informative, at least 1.5 bits per column on
  average (information content against a uniform background), so that a k-mer cannot
  match a motif's uninformative flanks, and (2) the k-mer's log-odds score there reaches
  ``min_score`` (default 0.95) of the way from the worst to the best score of those
  columns (the relative score of MOODS/TFBSTools). Probabilities carry a pseudocount of
  0.25 per base (1 per column) before the log-odds.

With ~1000 JASPAR matrices many k-mers match some motif by chance (about 60 % of random
6-mers with the defaults), so precision alone says little. :func:`motif_recovery` also
reports ``background``, the fraction of all (k <= 5) or of 1000 random k-mers that match
some motif under the same rule, and ``enrichment`` = precision / background.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from dnalm import io

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


MIN_BITS_PER_COLUMN = 1.5  # information content a PWM window needs (mean over its columns)


def kmer_matches_pwm(kmer: str, pwm: np.ndarray, min_score: float = 0.95) -> bool:
    """True if ``kmer`` matches the 4 x L probability matrix ``pwm`` (see module docstring)."""
    return bool(_pwm_matches([kmer], pwm, min_score)[0])


def _pwm_matches(kmers: Sequence[str], pwm: np.ndarray, min_score: float) -> np.ndarray:
    """Boolean per k-mer (all of one length) for one PWM, both strands, every placement."""
    if not kmers:
        return np.zeros(0, dtype=bool)
    k = len(kmers[0])
    idx = np.array([["ACGT".index(b) for b in km.upper()] for km in kmers], dtype=np.int64)  # (N, k)
    pwm = np.asarray(pwm, dtype=np.float64)
    probs = pwm / pwm.sum(axis=0, keepdims=True)
    if (probs <= 0).any():
        raise ValueError("PWM probabilities must be > 0 (add a pseudocount)")
    out = np.zeros(len(kmers), dtype=bool)
    for strand in (probs, probs[::-1, ::-1]):  # reverse complement: rows ACGT -> TGCA, columns reversed
        logodds = np.log2(strand / 0.25)  # (4, L)
        ic = 2 + (strand * np.log2(strand)).sum(axis=0)  # bits per column
        length = strand.shape[1]
        m = min(k, length)
        for off in range(abs(length - k) + 1):
            cols = slice(off, off + m) if k <= length else slice(0, length)
            kcols = slice(0, k) if k <= length else slice(off, off + length)
            if ic[cols].sum() < MIN_BITS_PER_COLUMN * m:  # uninformative window
                continue
            lo_ = logodds[:, cols]
            score = lo_[idx[:, kcols], np.arange(m)].sum(axis=1)
            best, worst = lo_.max(axis=0).sum(), lo_.min(axis=0).sum()
            if best > worst:
                out |= (score - worst) / (best - worst) >= min_score
    return out


def match_matrix(
    kmers: Sequence[str],
    motifs: pd.DataFrame,
    rule: Callable[[str, str], bool] = None,
    min_score: float = 0.95,
) -> np.ndarray:
    """Boolean (n_kmers, n_motifs): does k-mer i match motif j. PWM rule when the table has
    a ``pwm`` column (and no explicit ``rule``), else the consensus rule."""
    kmers = list(kmers)
    if rule is None and "pwm" in motifs.columns:
        cols = [_pwm_matches(kmers, pwm, min_score) for pwm in motifs["pwm"]]
        return np.stack(cols, axis=1) if cols else np.zeros((len(kmers), 0), dtype=bool)
    rule = rule or kmer_matches_motif
    consensus = motifs["consensus"].astype(str).tolist()
    return np.array([[rule(k, c) for c in consensus] for k in kmers], dtype=bool).reshape(len(kmers), len(consensus))


# --------------------------------------------------------------------------- motif sources

MOTIF_SOURCES = ("planted", "jaspar")  # or a path


def load_jaspar(release: str | None = None, collection: str = "CORE", tax_group: str = "vertebrates") -> pd.DataFrame:
    """JASPAR matrices from the database inside the ``pyjaspar`` wheel (no network).

    Columns: motif_id (matrix id), name, consensus, pwm (4 x L base probabilities with a
    pseudocount of 0.25 per base). ``release``: e.g. 'JASPAR2024' (default: the newest shipped).
    """
    from pyjaspar import jaspardb

    db = jaspardb(release=release) if release else jaspardb()
    rows = []
    for m in db.fetch_motifs(collection=collection, tax_group=[tax_group]):
        counts = np.array([m.counts[b] for b in "ACGT"], dtype=np.float64)
        probs = (counts + 0.25) / (counts.sum(axis=0, keepdims=True) + 1.0)
        rows.append({"motif_id": m.matrix_id, "name": m.name, "consensus": str(m.consensus), "pwm": probs})
    return pd.DataFrame(rows, columns=["motif_id", "name", "consensus", "pwm"])


def read_motif_tsv(path: str | os.PathLike) -> pd.DataFrame:
    """A motif table (TSV with at least motif_id and consensus); InputError naming the problem."""
    try:
        table = pd.read_csv(path, sep="\t", dtype={"motif_id": str, "consensus": str}, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise io.InputError(path, f"cannot read motif table: {exc}") from exc
    missing = [c for c in ("motif_id", "consensus") if c not in table.columns]
    if missing:
        raise io.InputError(path, f"motif table lacks column(s) {', '.join(missing)} (needs motif_id, consensus)")
    for row in table.itertuples():
        bad = set(str(row.consensus).upper()) - set(IUPAC)
        if not str(row.consensus) or bad:
            raise io.InputError(
                path, f"consensus {row.consensus!r} is not a nucleotide (IUPAC) string", record=row.motif_id
            )
    return table


def load_motifs(source: str, path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Known motifs for ``npmi.motifs``: 'planted' and a path read ``path`` (the planted
    motifs.tsv, or the user's TSV); 'jaspar' loads JASPAR CORE vertebrates."""
    if source == "jaspar":
        return load_jaspar()
    if path is None:
        raise ValueError(f"motif source {source!r} needs a motif table path")
    return read_motif_tsv(path)


def motif_recovery(
    table: pd.DataFrame,
    motifs: pd.DataFrame,
    n: int,
    top: Sequence[int],
    rule: Callable[[str, str], bool] | None = None,
    min_score: float = 0.95,
) -> pd.DataFrame:
    """Precision and recall of the top-N n-grams of length n against the known motifs.

    For each N in ``top``: precision = fraction of the top-N n-grams that match some motif
    (NaN if the table has no n-gram of length n); recall = fraction of motifs matched by at
    least one of them (NaN if there are no motifs); background and enrichment as in the
    module docstring; ``rule``, the matching rule used (:func:`rule_name`). Columns:
    ``RECOVERY_COLUMNS``.
    """
    _check_motifs(motifs)
    top = [int(t) for t in top]
    if any(t < 1 for t in top):
        raise ValueError(f"top values must be >= 1, got {top}")
    best = _top_rows(table, n, max(top, default=0))
    match = match_matrix(best["kmer"].tolist(), motifs, rule, min_score)
    background = background_rate(n, motifs, rule, min_score)
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
                "background": background,
                "enrichment": (matched / n_taken) / background if n_taken and background > 0 else np.nan,
                "rule": rule_name(motifs, rule, min_score),
            }
        )
    return pd.DataFrame(rows, columns=RECOVERY_COLUMNS)


RECOVERY_COLUMNS = [
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


def rule_name(motifs: pd.DataFrame, rule: Callable[[str, str], bool] | None = None, min_score: float = 0.95) -> str:
    """Which rule :func:`match_matrix` applies to ``motifs``: ``consensus-substring``
    (planted or TSV consensus, :func:`kmer_matches_motif`), ``pwm>=<min_score>`` (JASPAR
    PWMs, :func:`kmer_matches_pwm`), or ``custom:<name>`` for a rule passed in."""
    if rule is not None:
        return f"custom:{getattr(rule, '__name__', type(rule).__name__)}"
    if "pwm" in motifs.columns:
        return f"pwm>={min_score:g}"
    return "consensus-substring"


def background_rate(
    n: int,
    motifs: pd.DataFrame,
    rule: Callable[[str, str], bool] | None = None,
    min_score: float = 0.95,
    sample: int = 1000,
) -> float:
    """Fraction of n-grams matching some motif: all 4**n of them if 4**n <= ``sample``,
    else ``sample`` distinct random ones (fixed seed). NaN if there are no motifs."""
    from dnalm.kmers import codes_to_strings

    if len(motifs) == 0:
        return np.nan
    if 4**n <= sample:
        codes = np.arange(4**n)
    else:
        codes = np.sort(np.random.default_rng(0).choice(4**n, size=sample, replace=False))
    kmers = codes_to_strings(codes, n).tolist()
    return float(match_matrix(kmers, motifs, rule, min_score).any(axis=1).mean())


def annotate_top_kmers(
    table: pd.DataFrame,
    motifs: pd.DataFrame,
    n: int,
    top: int,
    rule: Callable[[str, str], bool] | None = None,
    min_score: float = 0.95,
) -> pd.DataFrame:
    """The top-N n-grams of length n (kmer, n, count, npmi, rank) plus ``motifs``: the ids
    of the motifs each matches, joined by ',' in motif-table order ('' if none)."""
    _check_motifs(motifs)
    best = _top_rows(table, n, top)
    match = match_matrix(best["kmer"].tolist(), motifs, rule, min_score)
    ids = motifs["motif_id"].astype(str).to_numpy()
    out = best[["kmer", "n", "count", "npmi", "rank"]].copy()
    out["motifs"] = [",".join(ids[row]) for row in match]
    return out
