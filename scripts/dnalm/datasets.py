"""Reading the pipeline's evaluation datasets (task tables and the barcode table).

Task tables: TSV with columns ``id, sequence, label`` (``train.tsv`` is the few-shot pool,
``test.tsv`` the fixed test set). Barcode table: TSV with BIOSCAN-5M column names
``processid, dna_barcode, order, family, genus, species, split``.

Real few-shot task files are converted into task tables by :func:`convert_task`:
GeneMask's files (``sequence<TAB>label``, sequences written as space-separated overlapping
k-mers, fields optionally quoted) or plain tables of bases (``sequence`` and ``label``
columns, optional ``id``; tab- or comma-separated).
"""

from __future__ import annotations

import csv
import logging
import re

import pandas as pd

from .io import InputError, open_text

log = logging.getLogger("dnalm.datasets")
TASK_FORMATS = ("auto", "genemask", "plain")
_NOT_IUPAC = re.compile(r"[^ACGTRYSWKMBDHVN]", re.IGNORECASE)

TASK_COLUMNS = ("id", "sequence", "label")
BARCODE_COLUMNS = ("processid", "dna_barcode", "order", "family", "genus", "species", "split")
RANKS = ("order", "family", "genus", "species")


def _require(df: pd.DataFrame, columns, path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing}; found {list(df.columns)}")


def read_task(path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype={"id": str, "sequence": str})
    _require(df, TASK_COLUMNS, path)
    if df["id"].duplicated().any():
        raise InputError(path, "duplicate id", record=str(df.loc[df["id"].duplicated(), "id"].iloc[0]))
    return df


def read_barcodes(path, columns=None) -> pd.DataFrame:
    """The barcode table; ``columns`` (a subset of :data:`BARCODE_COLUMNS`) reads only those,
    e.g. no ``dna_barcode`` where only labels are needed (BIOSCAN-5M's 5M sequences are
    several GB as Python strings)."""
    header = pd.read_csv(path, sep="\t", dtype=str, nrows=0)
    _require(header, BARCODE_COLUMNS, path)
    usecols = None if columns is None else list(columns)
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, usecols=usecols)


def dataset_sequences(paths: list[str], dataset: str, splits=None) -> tuple[list[str], list[str]]:
    """``(ids, sequences)`` to embed for a dataset: a task (train + test) or the barcodes."""
    if dataset == "barcodes":
        df = read_barcodes(paths[0])
        if splits is not None:
            df = df[df["split"].isin(list(splits))]
        return df["processid"].tolist(), df["dna_barcode"].tolist()
    frames = [read_task(p) for p in paths]
    df = pd.concat(frames, ignore_index=True)
    if df["id"].duplicated().any():
        raise InputError(paths[0], "ids repeat between train and test", record=str(df.loc[df["id"].duplicated(), "id"].iloc[0]))
    return df["id"].tolist(), df["sequence"].tolist()


def align(ids_wanted, ids_have, emb, path="embeddings"):
    """Rows of ``emb`` (indexed by ``ids_have``) in the order of ``ids_wanted``."""
    index = pd.Index(ids_have)
    pos = index.get_indexer(list(ids_wanted))
    if (pos < 0).any():
        missing = [i for i, p in zip(ids_wanted, pos) if p < 0][:3]
        raise InputError(path, f"no embedding for id(s) {missing} (rerun the embed rule)")
    return emb[pos]


# --------------------------------------------------------------------------- real task files


def kmers_to_sequence(text: str, path="<string>", record: str | None = None) -> str:
    """Bases of a sequence written as space-separated overlapping k-mers (stride 1).

    Every k-mer must have the length of the first, and each must continue the previous
    one (its first k-1 letters are the previous k-mer's last k-1); otherwise
    :class:`InputError` names ``path``, ``record`` and the two k-mers that disagree.
    """
    tokens = text.split()
    if not tokens:
        raise InputError(path, "empty sequence", record=record)
    k = len(tokens[0])
    for i in range(1, len(tokens)):
        prev, cur = tokens[i - 1], tokens[i]
        if len(cur) != k:
            raise InputError(
                path, f"k-mer {i + 1} {cur!r} has {len(cur)} letters, the first has {k}", record=record
            )
        if prev[1:] != cur[:-1]:
            raise InputError(
                path,
                f"k-mers {i} and {i + 1} do not overlap ({prev!r} then {cur!r}); overlapping {k}-mers "
                f"must share {k - 1} letters",
                record=record,
            )
    return tokens[0] + "".join(t[-1] for t in tokens[1:])


def read_task_file(path, fmt: str = "auto") -> pd.DataFrame:
    """``sequence, label`` (and ``id`` if the file has one) of a GeneMask or plain task file."""
    if fmt not in TASK_FORMATS:
        raise ValueError(f"unknown task format {fmt!r}; known: {TASK_FORMATS}")
    with open_text(path) as fh:
        header = fh.readline().lstrip("\ufeff")
    if not header.strip():
        raise InputError(path, "file is empty")
    if header.startswith("version https://git-lfs"):
        raise InputError(path, "is a Git LFS pointer, not the data (download the file through GitHub's media URL)")
    sep = "\t" if "\t" in header else ","
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False, quoting=csv.QUOTE_MINIMAL)
    except (pd.errors.ParserError, ValueError, OSError, EOFError) as exc:
        raise InputError(path, f"cannot parse the task table: {exc}") from exc
    df.columns = [str(c).strip().lstrip("\ufeff") for c in df.columns]
    missing = [c for c in ("sequence", "label") if c not in df.columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing}; found {list(df.columns)} (expected a header 'sequence<TAB>label')")
    if df.empty:
        raise InputError(path, "no rows")
    if fmt == "auto":
        fmt = "genemask" if " " in df["sequence"].iloc[0].strip() else "plain"
    seqs = []
    for i, text in enumerate(df["sequence"].tolist()):
        record = f"line {i + 2}"
        if fmt == "genemask":
            seq = kmers_to_sequence(text, path, record)
        else:
            seq = re.sub(r"\s+", "", text)
            if not seq:
                raise InputError(path, "empty sequence", record=record)
        bad = _NOT_IUPAC.search(seq)
        if bad:
            raise InputError(path, f"sequence contains {bad.group()!r}, which is not a nucleotide (IUPAC) letter", record=record)
        seqs.append(seq)
    out = pd.DataFrame({"sequence": seqs, "label": df["label"].str.strip().tolist()})
    if "id" in df.columns:
        out.insert(0, "id", df["id"].str.strip().tolist())
    empty = out["label"] == ""
    if empty.any():
        raise InputError(path, "empty label", record=f"line {int(empty.to_numpy().nonzero()[0][0]) + 2}")
    return out


def convert_task(train_path, test_path, task: str, fmt: str = "auto") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Task tables (``id, sequence, label``) from a real task's train and test files.

    Files without ids get ``<task>_train_000000``-style ids. Integer labels are written as
    integers. A test sequence that also occurs in train is logged (GeneMask's Splice-40
    dev and test sets overlap), not removed.
    """
    parts = {}
    for split, path in (("train", train_path), ("test", test_path)):
        df = read_task_file(path, fmt)
        if "id" not in df.columns:
            df.insert(0, "id", [f"{task}_{split}_{i:06d}" for i in range(len(df))])
        dup = df["id"].duplicated()
        if dup.any():
            raise InputError(path, "duplicate id", record=str(df.loc[dup, "id"].iloc[0]))
        parts[split] = df
    labels = pd.concat([parts["train"]["label"], parts["test"]["label"]])
    if labels.str.fullmatch(r"[+-]?\d+").all():
        for df in parts.values():
            df["label"] = df["label"].astype(int)
    both = set(parts["train"]["id"]) & set(parts["test"]["id"])
    if both:
        raise InputError(test_path, "id also used in the train file", record=sorted(both)[0])
    unknown = set(parts["test"]["label"]) - set(parts["train"]["label"])
    if unknown:
        raise InputError(test_path, f"label(s) {sorted(map(str, unknown))} never occur in the train file {train_path}")
    shared = parts["test"]["sequence"].isin(set(parts["train"]["sequence"]))
    if shared.any():
        log.warning(
            "%s: %d test row(s) (%d distinct sequence(s)) also occur in the train file %s; kept",
            task, int(shared.sum()), parts["test"].loc[shared, "sequence"].nunique(), train_path,
        )
    log.info(
        "%s: train %d rows, test %d rows, labels %s, lengths %d-%d bp",
        task, len(parts["train"]), len(parts["test"]), sorted(set(labels.tolist())),
        min(parts["train"]["sequence"].str.len().min(), parts["test"]["sequence"].str.len().min()),
        max(parts["train"]["sequence"].str.len().max(), parts["test"]["sequence"].str.len().max()),
    )
    return parts["train"][list(TASK_COLUMNS)], parts["test"][list(TASK_COLUMNS)]
