"""Sequence embeddings from pretrained encoders, and the k-mer spectrum baseline.

docs/design.md#embeddings: the embedding of a sequence pools the last hidden layer of the
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

import functools
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
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


def window_weights(input_ids, attention_mask, pooling: str = "mean", keep=None):
    """Pooling weights of windows that are averaged into one sequence embedding (torch).

    :func:`pool_weights` over the tokens that stand for the sequence (``keep``, bool; default
    the k-mer tokens of dnalm's vocabulary, ``input_ids >= N_SPECIAL``), except that a window
    without any such token (all [UNK]) is scaled down to 1e-6, so that it cannot pull the
    mean of a sequence whose other windows have them (a sequence with none at all still gets
    the mean of its tokens). ``mean``: the mean over the kept tokens of all windows;
    ``cls``, ``last``: the mean of the windows' pooled vectors.
    """
    kmers = input_ids >= dseq.N_SPECIAL if keep is None else keep
    weights = pool_weights(attention_mask, kmers, pooling)
    return weights * kmers.any(1, keepdim=True).float().clamp(min=1e-6)


@dataclass(frozen=True)
class Feed:
    """How padded token windows reach a model: the padding id, and which ids are special
    (not pooled). The default is dnalm's own vocabulary (ids below ``N_SPECIAL``);
    ``dnalm.external`` gives a checkpoint tokenizer's ``all_special_ids``."""

    pad_id: int = dseq.PAD_ID
    special_ids: tuple[int, ...] | None = None

    def keep(self, input_ids):
        """Bool tensor: the tokens that may stand for the sequence (not special)."""
        if self.special_ids is None:
            return input_ids >= dseq.N_SPECIAL
        import torch

        return ~torch.isin(input_ids, torch.as_tensor(self.special_ids, dtype=input_ids.dtype, device=input_ids.device))

    def pad(self, windows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded ``(input_ids, attention_mask)`` (:func:`dnalm.seq.pad_batch`), padded with ``pad_id``."""
        ids, mask = dseq.pad_batch(windows)
        if self.pad_id != dseq.PAD_ID:
            ids[mask == 0] = self.pad_id
        return ids, mask


OWN_FEED = Feed()


@functools.lru_cache(maxsize=64)
def _forward_arguments(cls) -> frozenset:
    import inspect

    return frozenset(inspect.signature(cls.forward).parameters)


_ASK_HIDDEN_STATES: set = set()  # model classes whose output has no last_hidden_state


def _hidden_of(model, input_ids, attention_mask):
    """Last hidden layer (B, L, H) of one forward pass: ``last_hidden_state``, else the last
    of ``hidden_states`` (asked for when the model returns none, e.g. a masked-LM head
    class), else a base model's first tuple element."""
    cls = type(model)
    kwargs = {"input_ids": input_ids}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if cls in _ASK_HIDDEN_STATES:
        kwargs.update(output_hidden_states=True, return_dict=True)
    out = model(**kwargs)
    if not hasattr(out, "get"):  # a plain tuple
        if "For" not in cls.__name__:
            return out[0]
    else:
        last = out.get("last_hidden_state")
        if last is not None:
            return last
        hidden = out.get("hidden_states")
        if hidden is not None:
            return hidden[-1]
    if cls in _ASK_HIDDEN_STATES:
        raise ValueError(f"{cls.__name__} returns neither last_hidden_state nor hidden_states")
    _ASK_HIDDEN_STATES.add(cls)
    return _hidden_of(model, input_ids, attention_mask)


def forward_hidden(model, input_ids, attention_mask):
    """The model's last hidden layer ``(B, L, H)`` for right-padded windows (torch).

    A model whose ``forward`` takes an ``attention_mask`` reads the padded batch once; one
    that takes none (e.g. HyenaDNA, Caduceus) reads the windows of each length separately
    without padding, so padding never changes a result (padded positions are zero).
    """
    if "attention_mask" in _forward_arguments(type(model)):
        return _hidden_of(model, input_ids, attention_mask)
    lengths = attention_mask.sum(1)
    if bool((lengths == input_ids.shape[1]).all()):
        return _hidden_of(model, input_ids, None)
    out = None
    for length in lengths.unique().tolist():
        rows = (lengths == length).nonzero().flatten()
        h = _hidden_of(model, input_ids[rows, : int(length)], None)
        if out is None:
            out = h.new_zeros((input_ids.shape[0], input_ids.shape[1], h.shape[-1]))
        out[rows, : int(length)] = h
    return out


def hidden_width(model) -> int | None:
    """Width of the model's hidden layer from its config (``hidden_size``, ``d_model``,
    ``n_embd``), None when the config names none."""
    for key in ("hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(model.config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def pool_windows(
    model,
    windows: list[np.ndarray],
    owner: np.ndarray,
    n: int,
    pooling: str = "mean",
    chunked: bool = True,
    batch_size: int = 64,
    progress: bool = True,
    feed: Feed = OWN_FEED,
) -> np.ndarray:
    """Pooled embeddings ``(n, hidden)`` float32 of token windows; window ``i`` belongs to
    sequence ``owner[i]``. ``chunked``: the weights of :func:`window_weights` (a sequence's
    windows are averaged), else of :func:`pool_weights` (one window per sequence). Windows
    run in batches of similar length (longest first, order restored) under
    ``torch.inference_mode`` and bf16 autocast on GPUs that support it, on the model's device."""
    import torch
    from tqdm import tqdm

    from .device import autocast

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    dev = next(model.parameters()).device
    if n == 0:
        return np.zeros((0, hidden_width(model) or 0), dtype=np.float32)
    sums = weight = None
    lengths = np.fromiter((len(t) for t in windows), dtype=np.int64, count=len(windows))
    order = np.argsort(-lengths, kind="stable")  # longest first: memory problems show up at once
    amp = autocast(dev)  # bf16 on GPUs that support it
    with (
        torch.inference_mode(),
        tqdm(total=len(windows), desc="embedding", unit="window", file=sys.stderr, disable=not progress) as bar,
    ):
        for start in range(0, len(windows), batch_size):
            idx = order[start : start + batch_size]
            ids_np, mask_np = feed.pad([windows[i] for i in idx])
            ids = torch.from_numpy(ids_np).to(dev)
            mask = torch.from_numpy(mask_np).to(dev)
            with amp:
                last = forward_hidden(model, ids, mask)
            keep = feed.keep(ids)
            weights = window_weights(ids, mask, pooling, keep) if chunked else pool_weights(mask, keep, pooling)
            total = (last.float() * weights[:, :, None]).sum(1).double().cpu().numpy()
            if sums is None:
                sums = np.zeros((n, total.shape[1]), dtype=np.float64)
                weight = np.zeros(n, dtype=np.float64)
            np.add.at(sums, owner[idx], total)
            np.add.at(weight, owner[idx], weights.sum(1).double().cpu().numpy())
            bar.update(len(idx))
    return (sums / weight[:, None]).astype(np.float32)


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
    from .device import resolve_device

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if long not in ("truncate", "chunk"):
        raise ValueError(f"long must be 'truncate' or 'chunk', got {long!r}")
    pooling = pooling or meta.get("pooling", "mean")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if device != "auto":
        model.to(resolve_device(device))
    model.eval()
    n = len(sequences)
    if n == 0:
        return np.zeros((0, int(model.config.hidden_size)), dtype=np.float32)
    limit = max_input_tokens(model, max_tokens)
    if long == "truncate":
        windows = tokenize_for_model(sequences, int(meta["k"]), meta["tokenization"], limit)
        owner = np.arange(n)
    else:
        per_sequence = sequence_windows(sequences, int(meta["k"]), meta["tokenization"], limit)
        windows = [w for ws in per_sequence for w in ws]
        owner = np.repeat(np.arange(n), [len(ws) for ws in per_sequence])
    return pool_windows(
        model, windows, owner, n, pooling=pooling, chunked=long == "chunk", batch_size=batch_size, progress=progress
    )


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
