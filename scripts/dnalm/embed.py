"""Sequence embeddings from pretrained encoders, and the k-mer spectrum baseline.

DESIGN.md "Embeddings": the embedding of a sequence pools the last hidden layer of the
model over its tokens (:func:`pool_weights`): by default the mean over its non-padding,
non-special tokens; ``pooling: cls`` takes the first token, ``pooling: last`` the last
non-special one (the natural choice for a causal model, whose last token has read the whole
sequence). Embeddings are stored together with the sequence ids, one ``.npz`` file per
(model, dataset); see :func:`save_embeddings`.

A model directory is what the trainer writes: ``save_pretrained`` output (a
``BertForMaskedLM``, a bare ``BertModel`` encoder or a ``GPT2LMHeadModel``; ``AutoModel``
loads the encoder, or the decoder stack, of each) plus ``dnalm.json`` with at least ``k``,
``tokenization`` and ``max_tokens``, and optionally ``pooling`` (default ``mean``).

The non-neural baseline of every table, :func:`kmer_spectrum`, lives here too so that the
evaluation stage treats it exactly like a model's embeddings.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import seq as dseq
from .io import InputError, atomic_path

META_FILE = "dnalm.json"
REQUIRED_META = ("k", "tokenization", "max_tokens")
POOLINGS = ("mean", "cls", "last")


def read_meta(model_dir: str | os.PathLike) -> dict:
    """Read and check ``dnalm.json`` of a model directory (raises :class:`InputError`)."""
    path = Path(model_dir) / META_FILE
    if not path.is_file():
        raise InputError(path, "model metadata file not found (expected next to the weights)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON: {exc}") from exc
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise InputError(path, f"missing keys {missing}")
    if meta["tokenization"] not in dseq.TOKENIZATIONS:
        raise InputError(path, f"tokenization {meta['tokenization']!r} is not one of {dseq.TOKENIZATIONS}")
    if int(meta["k"]) < 1 or int(meta["max_tokens"]) < 3:
        raise InputError(path, "k must be >= 1 and max_tokens >= 3")
    if meta.get("pooling", "mean") not in POOLINGS:
        raise InputError(path, f"pooling {meta['pooling']!r} is not one of {POOLINGS}")
    return meta


def load_encoder(model_dir: str | os.PathLike, device: str = "auto"):
    """Load the encoder of a saved model and its ``dnalm.json`` metadata.

    Returns ``(model, meta)``: ``model`` is the ``transformers.AutoModel`` (a ``BertModel``
    also for a directory holding a ``BertForMaskedLM``), in eval mode, on ``device``
    (``"auto"``: CUDA if available, else CPU); ``meta`` is the parsed ``dnalm.json``.
    """
    from transformers import AutoModel

    from .device import resolve_device

    meta = read_meta(model_dir)
    model = AutoModel.from_pretrained(str(model_dir))
    expected = dseq.vocab_size(int(meta["k"]))
    if model.config.vocab_size != expected:
        raise InputError(
            Path(model_dir) / "config.json",
            f"vocab_size {model.config.vocab_size} does not match k={meta['k']} "
            f"(expected {expected}) in {META_FILE}",
        )
    model.to(resolve_device(device)).eval()
    return model, meta


def max_input_tokens(model, max_tokens: int | None = None) -> int:
    """Longest token sequence (``[CLS]`` and ``[SEP]`` included) the model is fed.

    The model's position table (``config.max_position_embeddings``, the trainer's inference
    length), or ``max_tokens`` when given and smaller. Note that positions at or beyond the
    training crop length (``dnalm.json`` ``max_tokens``) saw no training; pass that value
    to stay inside the trained positions.
    """
    limit = int(model.config.max_position_embeddings)
    if max_tokens is not None:
        limit = min(limit, int(max_tokens))
    return limit


def tokenize_for_model(sequences: Sequence[str], k: int, tokenization: str, max_len: int) -> list[np.ndarray]:
    """``[CLS] k-mers [SEP]`` token ids per sequence, truncated to ``max_len`` tokens.

    Truncation drops k-mers from the end and keeps the closing ``[SEP]``.
    """
    if max_len < 2:
        raise ValueError("max_len must leave room for [CLS] and [SEP]")
    out = []
    for s in sequences:
        tok = dseq.tokenize(s, k, tokenization, add_special=True)
        if tok.shape[0] > max_len:
            tok = np.concatenate([tok[: max_len - 1], [dseq.SEP_ID]])
        out.append(tok)
    return out


def pooling_mask(input_ids, attention_mask):
    """Weights of the mean pooling: attended tokens that are k-mers (not special, not [UNK]).

    A row with no such token falls back to all its attended tokens. Works on numpy arrays
    and torch tensors alike (returns the same kind, float).
    """
    keep = (input_ids >= dseq.N_SPECIAL) & (attention_mask > 0)
    empty = keep.sum(1) == 0
    keep = keep | (empty[:, None] & (attention_mask > 0))
    return keep.float() if hasattr(keep, "float") else keep.astype(np.float32)


def chunk_tokens(tokens: np.ndarray, max_len: int) -> list[np.ndarray]:
    """Split ``[CLS] k-mers [SEP]`` into consecutive windows of at most ``max_len`` tokens,
    each wrapped in its own ``[CLS]`` ... ``[SEP]`` (a sequence that fits is returned whole)."""
    if len(tokens) <= max_len:
        return [tokens]
    body = tokens[1:-1]
    step = max_len - 2
    return [np.concatenate([[dseq.CLS_ID], body[i : i + step], [dseq.SEP_ID]]) for i in range(0, len(body), step)]


def sequence_windows(sequences: Sequence[str], k: int, tokenization: str, max_len: int) -> list[list[np.ndarray]]:
    """The windows (:func:`chunk_tokens`) of each sequence's ``[CLS] k-mers [SEP]``: one
    window when it fits in ``max_len`` tokens, else consecutive windows that each do."""
    return [chunk_tokens(dseq.tokenize(s, k, tokenization), max_len) for s in sequences]


def pool_weights(attention_mask, keep, pooling: str = "mean"):
    """Per-token weights (B, L) of a pooling, for any tokenizer (torch tensors).

    ``attention_mask``: the tokens the model reads (> 0); ``keep``: bool, the tokens that may
    stand for the sequence (not special; for dnalm's tokenizers the k-mer tokens, not [UNK]).
    ``mean``: 1 on attended ``keep`` tokens (a row with none: on all its attended tokens);
    ``cls``: 1 on the first attended token; ``last``: 1 on the last attended ``keep`` token
    (a row with none: its last attended token). The pooled vector is the weighted mean of
    the hidden states.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    import torch

    attended = attention_mask > 0
    if pooling == "mean":
        chosen = keep & attended
        return (chosen | (~chosen.any(1, keepdim=True) & attended)).float()
    if pooling == "cls":
        at = attended.int().argmax(1)
    else:
        chosen = keep & attended
        chosen = torch.where(chosen.any(1, keepdim=True), chosen, attended)
        at = chosen.shape[1] - 1 - chosen.flip(1).int().argmax(1)
    weights = torch.zeros(attended.shape, dtype=torch.float32, device=attended.device)
    return weights.scatter_(1, at[:, None], 1.0)


def window_weights(input_ids, attention_mask, pooling: str = "mean"):
    """Pooling weights of windows that are averaged into one sequence embedding (torch).

    :func:`pool_weights` over the k-mer tokens, except that a window without any k-mer
    token (all [UNK]) is scaled down to 1e-6, so that it cannot pull the mean of a sequence
    whose other windows have k-mers (a sequence with no k-mer at all still gets the mean of
    its tokens). ``mean``: the mean over the k-mer tokens of all windows; ``cls``, ``last``:
    the mean of the windows' pooled vectors.
    """
    kmers = input_ids >= dseq.N_SPECIAL
    weights = pool_weights(attention_mask, kmers, pooling)
    return weights * kmers.any(1, keepdim=True).float().clamp(min=1e-6)


def embed_sequences(
    model,
    meta: dict,
    sequences: Sequence[str],
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
    max_tokens: int | None = None,
    long: str = "truncate",
    pooling: str | None = None,
) -> np.ndarray:
    """Pooled last-hidden-layer embeddings, float32 array ``(len(sequences), hidden)``.

    Sequences are tokenised with the fast numpy tokenizer (``meta["k"]``,
    ``meta["tokenization"]``). A sequence longer than :func:`max_input_tokens` (the model's
    position table, or ``max_tokens`` if given and smaller) is either truncated
    (``long="truncate"``) or split into consecutive windows that each fit
    (``long="chunk"``); a chunked sequence's embedding is the mean over the k-mer tokens of
    all its windows (``cls``, ``last``: the mean of its windows' pooled vectors), so no part
    of it is dropped and no untrained position is used when ``max_tokens`` is the training
    length. ``pooling``: ``mean``, ``cls`` or ``last`` (:func:`pool_weights`; None: the
    model's ``dnalm.json`` setting, ``mean`` without one). Windows run in batches of similar length
    (sorted longest first, order restored on output) under ``torch.inference_mode`` (bf16
    autocast on CUDA GPUs that support it, :func:`dnalm.device.autocast`).
    ``device="auto"`` keeps the model where it is; any other value moves the model there
    first. A tqdm progress bar goes to stderr unless ``progress=False``.
    """
    import torch
    from tqdm import tqdm

    from .device import autocast, resolve_device

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if long not in ("truncate", "chunk"):
        raise ValueError(f"long must be 'truncate' or 'chunk', got {long!r}")
    pooling = pooling or meta.get("pooling", "mean")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if device == "auto":
        dev = next(model.parameters()).device
    else:
        dev = resolve_device(device)
        model.to(dev)
    model.eval()
    hidden = int(model.config.hidden_size)
    n = len(sequences)
    out = np.zeros((n, hidden), dtype=np.float32)
    if n == 0:
        return out

    limit = max_input_tokens(model, max_tokens)
    if long == "truncate":
        windows = tokenize_for_model(sequences, int(meta["k"]), meta["tokenization"], limit)
        owner = np.arange(n)
    else:
        per_sequence = sequence_windows(sequences, int(meta["k"]), meta["tokenization"], limit)
        windows = [w for ws in per_sequence for w in ws]
        owner = np.repeat(np.arange(n), [len(ws) for ws in per_sequence])
    sums = np.zeros((n, hidden), dtype=np.float64)
    weight = np.zeros(n, dtype=np.float64)
    lengths = np.fromiter((len(t) for t in windows), dtype=np.int64, count=len(windows))
    order = np.argsort(-lengths, kind="stable")  # longest first: memory problems show up at once
    amp = autocast(dev)  # bf16 on GPUs that support it

    with (
        torch.inference_mode(),
        tqdm(total=len(windows), desc="embedding", unit="window", file=sys.stderr, disable=not progress) as bar,
    ):
        for start in range(0, len(windows), batch_size):
            idx = order[start : start + batch_size]
            ids_np, mask_np = dseq.pad_batch([windows[i] for i in idx])
            ids = torch.from_numpy(ids_np).to(dev)
            mask = torch.from_numpy(mask_np).to(dev)
            with amp:
                last = model(input_ids=ids, attention_mask=mask).last_hidden_state
            if long == "chunk":
                weights = window_weights(ids, mask, pooling)
            else:
                weights = pool_weights(mask, ids >= dseq.N_SPECIAL, pooling)
            total = (last.float() * weights[:, :, None]).sum(1).double().cpu().numpy()
            np.add.at(sums, owner[idx], total)
            np.add.at(weight, owner[idx], weights.sum(1).double().cpu().numpy())
            bar.update(len(idx))
    out[:] = sums / weight[:, None]
    return out


def kmer_spectrum(sequences: Sequence[str], k: int, chunk: int = 4096) -> np.ndarray:
    """Normalised overlapping k-mer frequencies, float32 ``(len(sequences), 4**k)``.

    Column ``j`` is the k-mer with lexicographic index ``j`` (``dnalm.seq.id_to_kmer``).
    Only windows of pure ACGT count (either case; gaps removed). Each row sums to 1, or is
    all zero when the sequence has no valid k-mer.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    n, width = len(sequences), 4**k
    out = np.zeros((n, width), dtype=np.float32)
    for lo in range(0, n, chunk):  # one bincount per chunk of sequences: bounded temporaries
        rows, cols = [], []
        for i in range(lo, min(lo + chunk, n)):
            ids, valid = dseq.kmer_codes(dseq.encode(sequences[i]), k, 1)
            ids = ids[valid]
            cols.append(ids)
            rows.append(np.full(ids.shape[0], i - lo, dtype=np.int64))
        flat = np.concatenate(rows) * width + np.concatenate(cols)
        m = min(lo + chunk, n) - lo
        counts = np.bincount(flat, minlength=m * width).reshape(m, width).astype(np.float64)
        totals = counts.sum(1, keepdims=True)
        out[lo : lo + m] = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    return out


def save_embeddings(path: str | os.PathLike, ids: Sequence[str], embeddings: np.ndarray) -> None:
    """Write ``ids`` and ``embeddings`` to an ``.npz`` file atomically.

    Keys: ``ids`` (fixed-width unicode array, loadable without pickle) and ``embeddings``
    (float32, one row per id).
    """
    ids_arr = np.asarray([str(i) for i in ids], dtype=str)
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != ids_arr.shape[0]:
        raise ValueError(f"embeddings of shape {emb.shape} do not match {ids_arr.shape[0]} ids")
    if ids_arr.shape[0] == 0:
        ids_arr = np.zeros(0, dtype="<U1")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, ids=ids_arr, embeddings=emb)


def load_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a file written by :func:`save_embeddings`: ``(ids, embeddings)``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            ids, emb = data["ids"], data["embeddings"]
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(path, f"not an embeddings file: {exc}") from exc
    if emb.ndim != 2 or emb.shape[0] != ids.shape[0]:
        raise InputError(path, f"{ids.shape[0]} ids but embeddings of shape {emb.shape}")
    return ids, emb.astype(np.float32, copy=False)
