"""Embedding matrices: shape checks, unit-length rows and dot products of row pairs, shared by
the probes, the nearest-neighbour search and the evaluation protocols."""

from __future__ import annotations

import numpy as np


def as_2d(emb, name: str) -> np.ndarray:
    """``emb`` as a float32 ``(n, dim)`` array; ValueError naming ``name`` otherwise."""
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {emb.shape}")
    return emb


def check_pair(emb, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(embeddings, labels)`` after checking that there is one label per row."""
    emb = as_2d(emb, name)
    labels = np.asarray(labels)
    if labels.shape != (emb.shape[0],):
        raise ValueError(f"{name}: {emb.shape[0]} embeddings but labels of shape {labels.shape}")
    return emb, labels


def l2_normalize(emb) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); all-zero rows stay zero."""
    emb = np.asarray(emb, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", emb, emb, dtype=np.float64)).astype(np.float32)[:, None]
    return emb / np.maximum(norms, np.float32(1e-12))


def pair_dots(a: np.ndarray, rows: np.ndarray, b: np.ndarray, cols: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """``a[rows[i]] . b[cols[i]]`` in float64 for each pair, in chunks (bounded memory)."""
    out = np.empty(rows.shape[0], dtype=np.float64)
    for lo in range(0, rows.shape[0], chunk):
        x = a[rows[lo : lo + chunk]].astype(np.float64)
        x *= b[cols[lo : lo + chunk]]
        out[lo : lo + chunk] = x.sum(axis=1)
    return out
