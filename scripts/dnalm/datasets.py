"""Reading the pipeline's evaluation datasets (task tables and the barcode table).

Task tables: TSV with columns ``id, sequence, label`` (``train.tsv`` is the few-shot pool,
``test.tsv`` the fixed test set). Barcode table: TSV with BIOSCAN-5M column names
``processid, dna_barcode, order, family, genus, species, split``.
"""

from __future__ import annotations

import pandas as pd

from .io import InputError

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


def read_barcodes(path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    _require(df, BARCODE_COLUMNS, path)
    return df


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
