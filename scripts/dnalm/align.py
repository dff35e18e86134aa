"""Alignment baseline: each query barcode takes the label of its nearest reference barcode.

Nearest means the highest pairwise identity: matching columns / aligned columns of the
score-optimal alignment, terminal gaps left out (``vsearch --usearch_global``'s default
``--iddef 2``; BLAST's pident over the aligned part). N, and any letter other than A, C, G,
T (read as N), matches every base, as in vsearch; so a barcode that is mostly N would look
close to everything: one with more than ``max_n_fraction`` N (or empty) is not aligned (as a
reference it is left out, as a query it has no hit). Ties go to the lowest reference index
(reference order in the barcode table). A query with no hit (too many Ns, or
``min_identity`` not reached) is predicted ``NO_HIT``, counted wrong, and logged.

Tool (config key ``evaluation.align.tool``): ``vsearch --usearch_global``, global alignment
with match 2, mismatch -4, N 0, gaps 20 + 2 per further position, terminal gaps 2 + 1. With
``maxaccepts = maxrejects = 0`` (the default) every reference is aligned to every query:
exact. Larger values are vsearch's k-mer heuristics (faster; may miss the best reference:
BENCHMARKS.md "Alignment baseline" measures how often, and why vsearch rather than BLAST or
parasail). tests/test_align.py checks the search against a parasail brute force.

Work is split in three steps (``rules/align.smk``): :func:`write_inputs` writes, per
protocol, the distinct query and reference sequences as FASTA plus a member table (identical
barcodes are aligned once: they tie, and the first one is the lowest index);
:func:`search_chunk` aligns chunk ``i`` of ``n`` of the queries against all references;
:func:`merge_hits` and :func:`taxonomy_tables` gather the chunks into the taxonomy table.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import evaluate
from .fasta import read_fasta, write_fasta
from .io import InputError, write_tsv
from .seq import decode, encode

log = logging.getLogger("dnalm.align")

TOOLS = ("vsearch",)
#: protocol -> (config key of the query split, of the reference split, label rank)
PROTOCOLS = {
    "closed_world": ("closed_test", "closed_train", "species"),
    "open_world": ("open_query", "open_reference", "genus"),
}
NO_HIT = "<no hit>"
HIT_COLUMNS = ["query", "reference", "identity", "matches", "columns"]
MEMBER_COLUMNS = ["processid", "role", "label", "seq"]


class AlignerNotFound(RuntimeError):
    """The configured aligner binary is not installed."""


@dataclass(frozen=True)
class Settings:
    """How to search (``evaluation.align``): tool, vsearch heuristics, threshold, threads."""

    tool: str = "vsearch"
    maxaccepts: int = 0  # 0 and maxrejects 0: align every reference (exact)
    maxrejects: int = 0
    min_identity: float = 0.0  # best hits below it count as no hit
    threads: int = 1

    def __post_init__(self):
        if self.tool not in TOOLS:
            raise ValueError(f"config key 'evaluation.align.tool': unknown tool {self.tool!r}; expected one of {TOOLS}")
        if not 0.0 <= self.min_identity <= 1.0:
            raise ValueError(f"config key 'evaluation.align.min_identity' must be in [0, 1], got {self.min_identity!r}")
        if self.maxaccepts < 0 or self.maxrejects < 0 or self.threads < 1:
            raise ValueError("config keys 'evaluation.align.maxaccepts/maxrejects' must be >= 0 and 'threads' >= 1")

    @property
    def exhaustive(self) -> bool:
        return self.maxaccepts == 0 and self.maxrejects == 0


# --------------------------------------------------------------------------- inputs


def normalize(sequence: str) -> str:
    """Upper case, gaps ('-') removed, every letter other than A, C, G, T turned into N."""
    return decode(encode(sequence))


def distinct(sequences) -> tuple[list[str], np.ndarray]:
    """``(unique, index)``: distinct normalised sequences in order of first appearance and,
    for each input, the position of its sequence in ``unique``."""
    codes, uniques = pd.factorize(pd.Series([normalize(s) for s in sequences], dtype=object), sort=False)
    return list(uniques), codes.astype(np.int64)


def read_splits(path, splits, label_columns, chunksize: int = 200_000) -> pd.DataFrame:
    """Rows of the barcode table whose ``split`` is in ``splits`` (read in chunks, so that a
    5M-row table never sits in memory whole), with processid, dna_barcode, split and
    ``label_columns``."""
    usecols = ["processid", "dna_barcode", "split", *label_columns]
    header = pd.read_csv(path, sep="\t", dtype=str, nrows=0)
    missing = [c for c in usecols if c not in header.columns]
    if missing:
        raise InputError(path, f"barcode table lacks column(s) {missing}")
    wanted = set(splits)
    parts = [
        chunk[chunk["split"].isin(wanted)]
        for chunk in pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, usecols=usecols, chunksize=chunksize)
    ]
    return pd.concat(parts, ignore_index=True)[usecols]


def members(table: pd.DataFrame, query_split: str, reference_split: str, level: str, path="barcodes"):
    """``(members, queries, references)`` of one protocol: the member table
    (:data:`MEMBER_COLUMNS`: queries then references in table order, ``seq`` the index of the
    row's sequence among the distinct ones of its role) and the distinct sequences."""
    out, seqs = [], {}
    for role, split in (("query", query_split), ("reference", reference_split)):
        rows = table[table["split"] == split]
        if rows.empty:
            raise InputError(path, f"split {split!r} has no barcodes (alignment baseline, {role} set)")
        seqs[role], index = distinct(rows["dna_barcode"])
        out.append(pd.DataFrame({"processid": rows["processid"].to_numpy(), "role": role,
                                 "label": rows[level].to_numpy(), "seq": index}))
    return pd.concat(out, ignore_index=True), seqs["query"], seqs["reference"]


def too_many_ns(sequence: str, max_n_fraction: float) -> bool:
    """Whether a normalised sequence is empty or more than ``max_n_fraction`` N."""
    return not sequence or sequence.count("N") > max_n_fraction * len(sequence)


def write_inputs(barcodes, splits: dict, outputs: dict, max_n_fraction: float = 0.2) -> None:
    """Write each protocol's ``queries`` / ``references`` FASTA (distinct sequences named by
    their index; a sequence with too many Ns, :func:`too_many_ns`, is written empty as a query
    and left out as a reference) and ``members`` TSV.

    ``splits``: protocol -> ``{"query": split, "reference": split}``; ``outputs``: protocol ->
    ``{"queries": path, "references": path, "members": path}``.
    """
    levels = sorted({PROTOCOLS[p][2] for p in splits})
    table = read_splits(barcodes, {s for pair in splits.values() for s in pair.values()}, levels)
    for protocol, pair in splits.items():
        table_members, queries, references = members(table, pair["query"], pair["reference"], PROTOCOLS[protocol][2], barcodes)
        bad_q = [too_many_ns(s, max_n_fraction) for s in queries]
        bad_r = [too_many_ns(s, max_n_fraction) for s in references]
        if all(bad_r):
            raise InputError(barcodes, f"{protocol}: every reference barcode (split {pair['reference']!r}) is empty or "
                                       f"more than {max_n_fraction:.0%} N (evaluation.align.max_n_fraction)")
        write_fasta(outputs[protocol]["queries"], ((str(i), "" if bad else s) for i, (s, bad) in enumerate(zip(queries, bad_q))))
        write_fasta(outputs[protocol]["references"], ((str(i), s) for i, (s, bad) in enumerate(zip(references, bad_r)) if not bad))
        write_tsv(table_members, outputs[protocol]["members"])
        log.info("%s: %d queries (%d distinct) against %d references (%d distinct)", protocol,
                 (table_members["role"] == "query").sum(), len(queries),
                 (table_members["role"] == "reference").sum(), len(references))
        if any(bad_q) or any(bad_r):
            log.warning("%s: %d distinct queries (no hit) and %d distinct references (left out) are empty or more "
                        "than %.0f%% N (evaluation.align.max_n_fraction)", protocol, sum(bad_q), sum(bad_r), 100 * max_n_fraction)


# --------------------------------------------------------------------------- search


def chunk_range(n: int, chunk: int, chunks: int) -> tuple[int, int]:
    """``[start, end)`` of chunk ``chunk`` (0-based) when ``n`` items split into ``chunks``
    contiguous, near-equal chunks."""
    if not 0 <= chunk < chunks:
        raise ValueError(f"chunk {chunk} is not in 0..{chunks - 1}")
    return n * chunk // chunks, n * (chunk + 1) // chunks


def read_indexed_fasta(path) -> list[str]:
    """Sequences of a FASTA written by :func:`write_inputs` (records named 0, 1, ...)."""
    seqs = []
    for name, seq in read_fasta(path):
        if name != str(len(seqs)):
            raise InputError(path, f"expected record {len(seqs)} here (rerun align_inputs)", record=name)
        seqs.append(seq)
    return seqs


def best_hits(candidates: pd.DataFrame, queries: np.ndarray) -> pd.DataFrame:
    """The best hit of each query in ``queries`` (:data:`HIT_COLUMNS`).

    ``candidates``: query, reference, matches, columns (any number of rows per query).
    Highest identity = matches / columns (compared as exact fractions), ties to the lowest
    reference; queries without candidates get reference -1, identity NaN, 0 / 0.
    """
    c = candidates[["query", "reference", "matches", "columns"]].astype(np.int64)
    c = c[c["columns"] > 0]
    if not c.empty:
        # Equal fractions divide to the same double, and distinct ones with denominators below
        # 2**26 differ by more than its rounding, so sorting the doubles ranks exactly (checked).
        c = c.assign(identity=c["matches"] / c["columns"])
        c = c.sort_values(["query", "identity", "reference"], ascending=[True, False, True], kind="stable")
        first = c.drop_duplicates("query")
        _check_exact_order(c, first)
        c = first
    out = pd.DataFrame({"query": np.asarray(queries, dtype=np.int64)})
    out = out.merge(c[["query", "reference", "matches", "columns"]], on="query", how="left")
    out["reference"] = out["reference"].fillna(-1).astype(np.int64)
    out["matches"] = out["matches"].fillna(0).astype(np.int64)
    out["columns"] = out["columns"].fillna(0).astype(np.int64)
    out["identity"] = (out["matches"] / out["columns"]).where(out["columns"] > 0)
    return out[HIT_COLUMNS]


def _check_exact_order(ranked: pd.DataFrame, first: pd.DataFrame) -> None:
    rest = ranked.merge(first[["query", "matches", "columns"]], on="query", suffixes=("", "_best"))
    better = rest["matches"] * rest["columns_best"] > rest["matches_best"] * rest["columns"]
    if better.any():  # cannot happen for barcode lengths; guards the float shortcut
        raise AssertionError(f"identity ranking is not exact for queries {rest.loc[better, 'query'].unique()[:5]}")


def _vsearch_binary() -> str:
    path = shutil.which("vsearch")
    if path is None:
        raise AlignerNotFound(
            "config key 'evaluation.align.tool' is 'vsearch' but no 'vsearch' program is on PATH: install it "
            "(Debian/Ubuntu: apt-get install vsearch; conda: bioconda vsearch, envs/align.yaml, "
            "snakemake --use-conda), or set evaluation.align.enabled: false"
        )
    return path


def vsearch_version() -> str:
    """First line of ``vsearch --version`` (raises :class:`AlignerNotFound` without it)."""
    proc = subprocess.run([_vsearch_binary(), "--version"], capture_output=True, text=True, check=False)
    return (proc.stderr or proc.stdout).splitlines()[0].strip()


def search_vsearch(queries: dict[int, str], references_fasta, settings: Settings) -> pd.DataFrame:
    """Every tied best hit of each query (query, reference, matches, columns) from one
    ``vsearch --usearch_global`` run against the FASTA of references (records 0, 1, ...)."""
    binary = _vsearch_binary()
    if not any(queries.values()):  # empty sequences have no hit
        return pd.DataFrame(columns=["query", "reference", "matches", "columns"])
    with tempfile.TemporaryDirectory(prefix="dnalm-align-") as tmp:
        qpath, out = Path(tmp) / "queries.fa", Path(tmp) / "hits.tsv"
        write_fasta(qpath, ((str(i), s) for i, s in queries.items() if s))
        cmd = [
            binary, "--usearch_global", str(qpath), "--db", str(references_fasta),
            # a hair under the threshold: vsearch compares rounded doubles; search() applies it exactly
            "--id", repr(max(0.0, float(settings.min_identity) - 1e-6)),
            "--maxaccepts", str(settings.maxaccepts), "--maxrejects", str(settings.maxrejects),
            "--minwordmatches", "0",  # every reference is a candidate, even without a shared 8-mer
            "--qmask", "none", "--dbmask", "none", "--minseqlength", "1", "--strand", "plus",
            "--top_hits_only", "--maxhits", "0",  # all hits tied at the best identity
            "--userout", str(out), "--userfields", "query+target+ids+mism+gaps",
            "--threads", str(settings.threads), "--quiet",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"vsearch failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()[-2000:]}")
        hits = pd.read_csv(out, sep="\t", header=None, names=["query", "reference", "ids", "mism", "gaps"], dtype=np.int64)
    # iddef 2: matching columns / (matching + mismatching + internal gap columns)
    return pd.DataFrame({"query": hits["query"], "reference": hits["reference"], "matches": hits["ids"],
                         "columns": hits["ids"] + hits["mism"] + hits["gaps"]})


def search(queries: dict[int, str], references_fasta, settings: Settings) -> pd.DataFrame:
    """Best hit (:data:`HIT_COLUMNS`) of each query (index -> sequence) among the references."""
    candidates = search_vsearch(queries, references_fasta, settings)
    hits = best_hits(candidates, np.fromiter(queries, dtype=np.int64, count=len(queries)))
    if settings.min_identity > 0:  # vsearch's --id rounds; apply the threshold exactly here
        low = hits["matches"] < settings.min_identity * hits["columns"]
        hits.loc[low, ["reference", "matches", "columns"]] = [-1, 0, 0]
        hits.loc[low, "identity"] = np.nan
    return hits


def search_chunk(queries_fasta, references_fasta, chunk: int, chunks: int, settings: Settings) -> pd.DataFrame:
    """Align chunk ``chunk`` of ``chunks`` of the queries (records 0, 1, ... of
    ``queries_fasta``) against every reference; best hits by query index."""
    seqs = read_indexed_fasta(queries_fasta)
    start, end = chunk_range(len(seqs), chunk, chunks)
    log.info("%s", vsearch_version())
    log.info("chunk %d of %d: queries %d..%d of %d, tool %s (%s)", chunk, chunks, start, end - 1, len(seqs),
             settings.tool, "exhaustive" if settings.exhaustive else
             f"heuristic: maxaccepts {settings.maxaccepts}, maxrejects {settings.maxrejects}")
    return search({i: seqs[i] for i in range(start, end)}, references_fasta, settings)


# --------------------------------------------------------------------------- gather


def merge_hits(tables: list[pd.DataFrame], n_queries: int | None = None) -> pd.DataFrame:
    """Concatenate chunk results; every query index must appear exactly once (and, with
    ``n_queries``, all of 0..n_queries-1)."""
    hits = pd.concat(tables, ignore_index=True)[HIT_COLUMNS].sort_values("query", kind="stable").reset_index(drop=True)
    if hits["query"].duplicated().any():
        raise ValueError(f"query {hits.loc[hits['query'].duplicated(), 'query'].iloc[0]} is in two chunks")
    if n_queries is not None and not np.array_equal(hits["query"].to_numpy(), np.arange(n_queries)):
        missing = sorted(set(range(n_queries)) - set(hits["query"]))[:5]
        raise ValueError(f"chunks miss queries {missing} of {n_queries} (wrong chunk count?)")
    return hits


def predictions(table_members: pd.DataFrame, hits: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(true, predicted, reference labels, identity)`` per query row of a protocol: the
    label of the first reference row holding the best hit's sequence, or :data:`NO_HIT`."""
    q = table_members[table_members["role"] == "query"]
    ref = table_members[table_members["role"] == "reference"]
    first_label = ref.drop_duplicates("seq").set_index("seq")["label"]  # lowest index per sequence
    by_query = hits.set_index("query")
    best = by_query["reference"].reindex(q["seq"].to_numpy())
    if best.isna().any():
        raise ValueError("hits lack some queries of the member table (rerun the align jobs)")
    best = best.to_numpy().astype(np.int64)
    pred = np.where(best >= 0, first_label.reindex(best).to_numpy(), NO_HIT).astype(object)
    identity = by_query["identity"].reindex(q["seq"].to_numpy()).to_numpy()
    return q["label"].to_numpy(), pred, ref["label"].to_numpy(), identity


def taxonomy_tables(protocols: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(metrics, per_class)`` like the taxonomy rule's (``dnalm.evaluate`` columns): 1-NN
    closed-world species (accuracy, macro_f1), open-world genus (accuracy, balanced_accuracy,
    macro_f1, chance_accuracy), and the class-imbalance bias of both.

    ``protocols``: protocol -> (member table, merged hits).
    """
    metric_names = {"closed_world": evaluate.CLOSED_WORLD_METRICS, "open_world": evaluate.OPEN_WORLD_METRICS}
    rows, bias_tables, per_class = [], [], []
    for protocol in ("closed_world", "open_world"):
        if protocol not in protocols:
            continue
        level = PROTOCOLS[protocol][2]
        y_true, y_pred, y_ref, identity = predictions(*protocols[protocol])
        no_hit = int((y_pred == NO_HIT).sum())
        if no_hit:
            log.warning("%s: %d of %d queries have no hit (predicted %r, counted wrong)", protocol, no_hit, len(y_pred), NO_HIT)
        log.info("%s %s: best identity median %.4f, min %.4f", protocol, level, np.nanmedian(identity) if len(identity) else np.nan,
                 np.nanmin(identity) if np.isfinite(identity).any() else np.nan)
        values = evaluate.classification_metrics(y_true, y_pred, metric_names[protocol])
        if protocol == "open_world":
            values["chance_accuracy"] = evaluate.chance_accuracy(y_ref, y_true)
        rows += [{"protocol": protocol, "level": level, "shots": np.nan, "repeat": 0, "metric": m, "value": float(v)}
                 for m, v in values.items()]
        table, classes = evaluate.bias(y_true, y_pred, y_ref, level)
        bias_tables.append(table)
        per_class.append(classes.assign(protocol=protocol, level=level))
    metrics = pd.concat([pd.DataFrame(rows, columns=evaluate.COLUMNS), *bias_tables], ignore_index=True)
    return metrics.astype({"shots": float, "repeat": int, "value": float}), pd.concat(per_class, ignore_index=True)
