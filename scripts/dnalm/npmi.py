"""NPMI table of n-grams (docs/design.md#npmi).

For an n-gram w (n >= 2), with p(s) = count(s) / n_windows(|s|) and natural logs,

    PMI(w)  = log p(w) - max over segmentations sigma of w into >= 2 contiguous non-empty
              parts of  sum_{s in sigma} log p(s)                      (Levine et al. 2021)
    NPMI(w) = PMI(w) / (-log p(w))

For n = 2 this is Bouma's NPMI. The max is a dynamic programme over prefixes,
vectorised over all kept n-grams of one length: ``best[j]`` is the best log-probability
of any segmentation (>= 1 part) of the prefix w[0:j]; the answer is
``max_{0<i<n} best[i] + log p(w[i:n])``. Sub-part codes come from code arithmetic
(w[i:j] = (code >> 2*(n-j)) & (4**(j-i) - 1)). The cost is O(rows * n**2) plus reading
the count tables, independent of genome size.

Conventions for degenerate rows (only reachable on tiny corpora or with ``min_count`` 0):
* count(w) = 0 (``min_count`` <= 0): log_p = -inf, PMI = -inf and NPMI = -1 (Bouma's
  value for an n-gram that never occurs); a sub-part that never occurs has log p = -inf
  and so never wins the max.
* p(w) = 1 (every window of length n is w): -log p = 0, NPMI is set to 1 if PMI > 0
  and 0 otherwise.

Table columns (TSV on disk): kmer, n, count, log_p, pmi, npmi, rank — rank 1 is the
highest NPMI within its length, ties broken by the k-mer string; rows sorted by n, rank.
:func:`write_npmi_tsv` computes and writes it length by length in chunks of ``_CHUNK``
n-grams, so a k_max = 12 table (up to 22 M rows) needs about 1 GB whatever the genome.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from dnalm import io
from dnalm.kmers import KmerCounts, codes_to_strings, strings_to_codes

COLUMNS = ["kmer", "n", "count", "log_p", "pmi", "npmi", "rank"]


def _log_p_tables(counts: KmerCounts) -> list[np.ndarray]:
    """log p(s) for every n-gram code of every length (index n - 1); -inf where count is 0."""
    out = []
    for n in range(1, counts.k_max + 1):
        c = counts.counts[n - 1].astype(np.float64)
        total = c.sum()
        with np.errstate(divide="ignore"):
            out.append(np.log(c / total) if total > 0 else np.full_like(c, -np.inf))
    return out


def best_segmentation_log_p(codes: np.ndarray, n: int, log_p: list[np.ndarray]) -> np.ndarray:
    """For each n-gram code, max over segmentations into >= 2 parts of the sum of log p(part)."""
    codes = np.asarray(codes, dtype=np.int64)

    def part(i: int, j: int) -> np.ndarray:  # log p of w[i:j] for every code
        sub = (codes >> (2 * (n - j))) & (4 ** (j - i) - 1)
        return log_p[j - i - 1][sub]

    best = [np.zeros(len(codes))]  # best[j]: best segmentation (>= 1 part) of w[0:j]
    for j in range(1, n):
        cand = part(0, j)
        for i in range(1, j):
            cand = np.maximum(cand, best[i] + part(i, j))
        best.append(cand)
    out = np.full(len(codes), -np.inf)
    for i in range(1, n):  # the last part is w[i:n] with i >= 1, so at least two parts
        out = np.maximum(out, best[i] + part(i, n))
    return out


_CHUNK = 1 << 20  # n-grams per vectorised step: bounds memory at k_max = 12 (16.7 M 12-mers)


def _length_table(counts: KmerCounts, log_p: list[np.ndarray], n: int, min_count: int) -> dict[str, np.ndarray]:
    """Columns (codes, count, log_p, pmi, npmi, rank) of the kept n-grams of length n,
    sorted by rank. Work and memory scale with 4**n, never with the genome size."""
    cnt = counts.counts[n - 1]
    codes = np.flatnonzero(cnt >= min_count).astype(np.int64)
    lp = log_p[n - 1][codes]
    seg = np.empty(len(codes))
    for start in range(0, len(codes), _CHUNK):
        seg[start : start + _CHUNK] = best_segmentation_log_p(codes[start : start + _CHUNK], n, log_p)
    with np.errstate(invalid="ignore", divide="ignore"):
        pmi = np.where(np.isneginf(lp), -np.inf, lp - seg)
        npmi = np.where(lp < 0, pmi / -lp, np.where(pmi > 0, 1.0, 0.0))
    npmi[np.isneginf(lp)] = -1.0
    order = np.lexsort((codes, -npmi))  # NPMI descending, then code == string ascending
    return {
        "codes": codes[order],
        "count": cnt[codes[order]].astype(np.int64),
        "log_p": lp[order],
        "pmi": pmi[order],
        "npmi": npmi[order],
        "rank": np.arange(1, len(codes) + 1, dtype=np.int64),
    }


def _frame(cols: dict[str, np.ndarray], n: int, start: int = 0, stop: int | None = None) -> pd.DataFrame:
    sl = slice(start, stop)
    codes = cols["codes"][sl]
    return pd.DataFrame(
        {
            "kmer": codes_to_strings(codes, n),
            "n": np.full(len(codes), n, dtype=np.int64),
            "count": cols["count"][sl],
            "log_p": cols["log_p"][sl],
            "pmi": cols["pmi"][sl],
            "npmi": cols["npmi"][sl],
            "rank": cols["rank"][sl],
        }
    )[COLUMNS]


def _check_n_min(n_min: int) -> None:
    if n_min < 2:
        raise ValueError(f"n_min must be >= 2 (PMI needs at least two parts), got {n_min}")


def npmi_table(counts: KmerCounts, min_count: int = 1, n_min: int = 2) -> pd.DataFrame:
    """One row per n-gram with n in n_min..k_max and count >= min_count (see module docstring)."""
    _check_n_min(n_min)
    log_p = _log_p_tables(counts)
    frames = [_frame(_length_table(counts, log_p, n, min_count), n) for n in range(n_min, counts.k_max + 1)]
    if not frames:
        return _empty_table()
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def write_npmi_tsv(counts: KmerCounts, path: str | os.PathLike, min_count: int = 1, n_min: int = 2) -> int:
    """Compute the table length by length and write it as TSV in chunks, atomically.

    Same content as ``write_npmi_table(npmi_table(...))`` but the peak memory is one
    length's numeric columns plus one chunk of strings (about 1 GB at k_max = 12 with
    every 12-mer kept). Returns the number of rows.
    """
    _check_n_min(n_min)
    log_p = _log_p_tables(counts)
    rows = 0
    with io.atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            fh.write("\t".join(COLUMNS) + "\n")
            for n in range(n_min, counts.k_max + 1):
                cols = _length_table(counts, log_p, n, min_count)
                for start in range(0, len(cols["codes"]), _CHUNK):
                    _frame(cols, n, start, start + _CHUNK).to_csv(fh, sep="\t", index=False, header=False)
                rows += len(cols["codes"])
    return rows


def _empty_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "kmer": pd.Series([], dtype=object),
            "n": pd.Series([], dtype=np.int64),
            "count": pd.Series([], dtype=np.int64),
            "log_p": pd.Series([], dtype=np.float64),
            "pmi": pd.Series([], dtype=np.float64),
            "npmi": pd.Series([], dtype=np.float64),
            "rank": pd.Series([], dtype=np.int64),
        }
    )


def write_npmi_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the table as TSV (full float precision, -inf as '-inf'), atomically."""
    io.write_tsv(df[COLUMNS], path)


_READ_OPTIONS = dict(
    sep="\t",
    dtype={"kmer": str, "n": np.int64, "count": np.int64, "rank": np.int64},
    keep_default_na=False,
    na_values={"log_p": ["nan"], "pmi": ["nan"], "npmi": ["nan"]},
)


def _checked(df: pd.DataFrame, path) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise io.InputError(path, f"NPMI table lacks column(s) {', '.join(missing)}")
    for c in ("log_p", "pmi", "npmi"):
        df[c] = df[c].astype(np.float64)
    return df[COLUMNS]


def read_npmi_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table written by :func:`write_npmi_table`; InputError if columns are missing."""
    try:
        df = pd.read_csv(path, **_READ_OPTIONS)
    except (ValueError, pd.errors.ParserError) as exc:
        raise io.InputError(path, f"cannot read NPMI table: {exc}") from exc
    return _checked(df, path)


def read_top_rows(path: str | os.PathLike, n: int, top: int) -> pd.DataFrame:
    """The rows of length n with rank <= top, read in chunks (a k_max = 12 table of a real
    genome has ~22 M rows; only these few are kept in memory)."""
    parts = []
    try:
        with pd.read_csv(path, chunksize=_CHUNK, **_READ_OPTIONS) as reader:
            for chunk in reader:
                chunk = _checked(chunk, path)
                parts.append(chunk[(chunk["n"] == n) & (chunk["rank"] <= top)])
    except (ValueError, pd.errors.ParserError) as exc:
        if isinstance(exc, io.InputError):
            raise
        raise io.InputError(path, f"cannot read NPMI table: {exc}") from exc
    if not parts:
        return _empty_table()
    return pd.concat(parts, ignore_index=True).sort_values("rank", kind="stable").reset_index(drop=True)


def npmi_lookup(table: pd.DataFrame, k: int) -> np.ndarray:
    """float32 array of length 4**k: NPMI of each k-mer by its code; -inf where absent."""
    out = np.full(4**k, -np.inf, dtype=np.float32)
    rows = table[table["n"] == k]
    if len(rows):
        out[strings_to_codes(rows["kmer"].tolist(), k)] = rows["npmi"].to_numpy(np.float32)
    return out
