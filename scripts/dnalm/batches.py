"""Training batches: draw windows from the corpus, crop, tokenize, mask, corrupt and lay
them out in rows, vectorised over the batch with numpy (:class:`Batcher`), optionally a few
batches ahead in a background thread (:func:`batch_stream`).

Every draw comes from one ``numpy.random.Generator`` in a documented order (see
:class:`Batcher`), so a training run resumed from a saved generator state replays exactly
the batches it would have drawn. The windows of the validation slice
(:func:`dnalm.corpus.validation_split`) are never drawn.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import seq
from .corpus import Corpus, validation_split
from .masking import Masker, apply_mlm_corruption, maskable
from .prefetch import prefetched

if TYPE_CHECKING:
    from .train import TrainConfig


@dataclass
class Batch:
    """One micro-batch: windows laid out in rows (several per row when packed).

    ``input_ids`` what the model reads (MLM: corrupted 80/10/10; MAE, CLM: the tokens);
    ``labels`` the original tokens; ``mask`` the positions to predict (MLM, MAE: the masked
    tokens; CLM: every k-mer token); ``segments`` 1, 2, ... for the windows of a row, 0 for
    padding; ``position_ids`` restart at 0 in every window. All (rows, width) arrays;
    ``packed`` says whether some row holds two windows or more. ``n_masked`` counts the
    masked tokens (0 for CLM, which masks nothing), ``n_predicted`` the positions with a
    loss (= ``n_masked`` unless given).
    """

    input_ids: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    segments: np.ndarray
    position_ids: np.ndarray
    packed: bool
    n_windows: int
    n_tokens: int  # real tokens ([CLS]/[SEP] included)
    n_maskable: int
    n_masked: int
    n_predicted: int | None = None

    def __post_init__(self):
        if self.n_predicted is None:
            self.n_predicted = self.n_masked

    def tensors(self, pin: bool = False) -> dict:
        """The model's keyword arguments as CPU tensors (page-locked if ``pin``)."""
        out = {}
        for name in ("input_ids", "labels", "mask", "segments", "position_ids"):
            t = torch.from_numpy(getattr(self, name))
            out[name] = t.pin_memory() if pin else t
        out["packed"] = self.packed
        return out


def pack_rows(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """First-fit decreasing: the windows (indices into ``lengths``) of each row, each row
    holding at most ``capacity`` tokens. Longest windows first (ties in index order), each
    into the first row with room; rows in order of creation, windows in order of placement.
    Deterministic; no draws."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in np.argsort(-np.asarray(lengths), kind="stable").tolist():
        n = int(lengths[i])
        if n > capacity:
            raise ValueError(f"window of {n} tokens exceeds the row capacity {capacity}")
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(capacity - n)
    return rows


class Batcher:
    """Draws training micro-batches from a corpus with the fast numpy path (vectorised over
    the batch: no Python loop over windows except the row packing).

    Only the training windows are drawn: :attr:`train_windows`, the corpus minus the
    validation slice of :func:`dnalm.corpus.validation_split` (``cfg.val_fraction``,
    ``cfg.val_max_windows``, ``cfg.seed``), whose indices are :attr:`val_windows`. Draws
    from ``rng``, in this order, per micro-batch:

    1. ``rng.integers(0, n_train, batch_size)``: the windows (uniform over the training
       windows, with replacement; with no validation slice, window i is draw i);
    2. one ``rng.integers`` call over the windows longer than ``max_tokens`` allows, in batch
       order: their crop offsets (overlapping: any base; non-overlapping: a multiple of k,
       keeping the reading frame of inference);
    3. MLM, MAE: ``rng.random(n_tokens)`` (non-overlapping genemask:
       ``rng.random((n_tokens, 2))``): the uniforms of the batch's windows tokenized and
       concatenated, which are the uniforms each window would draw on its own
       (:class:`dnalm.masking.Masker`); CLM draws nothing here (it predicts every k-mer);
    4. MLM only: the 80/10/10 corruption (:func:`dnalm.masking.apply_mlm_corruption`) of
       those concatenated tokens.

    The windows are then laid out in rows: one per row, or, with ``packing``, as many as fit
    in ``max_tokens`` (:func:`pack_rows`). Packing draws nothing, so a packed and an unpacked
    run see the same tokens, masks and corruptions. Steps 2-4 are :meth:`crop` and
    :meth:`layout`, which the validation slice uses with a generator of its own.
    """

    def __init__(self, corpus: Corpus, cfg: TrainConfig, npmi: np.ndarray | None, rng: np.random.Generator):
        self.corpus, self.cfg, self.rng = corpus, cfg, rng
        if len(corpus) == 0:
            raise ValueError("the training corpus has no windows")
        n_kmers = cfg.max_tokens - 2
        self.overlapping = cfg.tokenization == "overlapping"
        self.max_bases = n_kmers + cfg.k - 1 if self.overlapping else n_kmers * cfg.k
        self.vocab = seq.vocab_size(cfg.k)
        self.causal = cfg.architecture == "clm"
        # resolved once; the causal model masks nothing
        self.masker = None if self.causal else Masker(cfg.masking, cfg.tokenization, cfg.k, cfg.masking_params, npmi)
        self.offsets = np.array(corpus.offsets)  # in memory: read per batch
        self.val_windows, self.train_windows = validation_split(
            len(corpus), cfg.val_fraction, cfg.val_max_windows, cfg.seed
        )
        self.n_train = self.train_windows.shape[0]

    def crop(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw 2: (start in ``corpus.bases``, length) of windows ``idx``, each cropped to
        ``max_tokens`` at an offset drawn from ``rng`` when longer."""
        starts, lengths = self.offsets[idx], self.offsets[idx + 1] - self.offsets[idx]
        excess = lengths - self.max_bases
        long = excess > 0
        if self.overlapping:
            offset = rng.integers(0, excess[long] + 1)
        else:
            offset = self.cfg.k * rng.integers(0, excess[long] // self.cfg.k + 1)
        starts[long] += offset
        return starts, np.minimum(lengths, self.max_bases)

    def windows(self) -> tuple[np.ndarray, np.ndarray]:
        """Draws 1-2: (start in ``corpus.bases``, length) of each cropped window."""
        idx = self.train_windows[self.rng.integers(0, self.n_train, size=self.cfg.batch_size)]
        return self.crop(idx, self.rng)

    def next(self) -> Batch:
        """Draw and lay out one micro-batch."""
        starts, lengths = self.windows()
        return self.layout(starts, lengths, self.rng)

    def layout(self, starts: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> Batch:
        """Draws 3-4 (from ``rng``) for the given windows, and their rows."""
        cfg = self.cfg
        flat_ids, tok_off = seq.tokenize_windows(self.corpus.bases, starts, lengths, cfg.k, cfg.tokenization)
        if self.causal:  # next-token prediction of every k-mer; nothing masked, nothing corrupted
            flat_mask = maskable(flat_ids)
            flat_inputs = flat_ids
        else:
            flat_mask = self.masker(flat_ids, tok_off, self.masker.uniforms(flat_ids.shape[0], rng))
            if cfg.architecture == "mlm":
                flat_inputs, _ = apply_mlm_corruption(flat_ids, flat_mask, self.vocab, rng)
            else:
                flat_inputs = flat_ids

        # lay the windows out in rows; each window's tokens go to (row, column + position)
        n_tok = np.diff(tok_off)
        rows = pack_rows(n_tok, cfg.max_tokens) if cfg.packing else [[w] for w in range(n_tok.shape[0])]
        row_of = np.empty(n_tok.shape[0], dtype=np.int64)
        col_of = np.empty(n_tok.shape[0], dtype=np.int64)
        seg_of = np.empty(n_tok.shape[0], dtype=np.int64)
        fill = np.zeros(len(rows), dtype=np.int64)
        for r, members in enumerate(rows):
            for s, w in enumerate(members, start=1):
                row_of[w], col_of[w], seg_of[w] = r, fill[r], s
                fill[r] += n_tok[w]
        window = np.repeat(np.arange(n_tok.shape[0]), n_tok)
        position = np.arange(flat_ids.shape[0]) - tok_off[:-1][window]
        r, c = row_of[window], col_of[window] + position
        shape = (len(rows), int(fill.max()))
        input_ids = np.full(shape, seq.PAD_ID, dtype=np.int64)
        labels = np.full(shape, seq.PAD_ID, dtype=np.int64)
        mask = np.zeros(shape, dtype=bool)
        segments = np.zeros(shape, dtype=np.int64)
        positions = np.zeros(shape, dtype=np.int64)
        input_ids[r, c], labels[r, c], mask[r, c] = flat_inputs, flat_ids, flat_mask
        segments[r, c], positions[r, c] = seg_of[window], position
        n_predicted = int(flat_mask.sum())
        return Batch(
            input_ids=input_ids,
            labels=labels,
            mask=mask,
            segments=segments,
            position_ids=positions,
            packed=any(len(m) > 1 for m in rows),
            n_windows=n_tok.shape[0],
            n_tokens=int(flat_ids.shape[0]),
            n_maskable=int((flat_ids >= seq.N_SPECIAL).sum()),
            n_masked=0 if self.causal else n_predicted,
            n_predicted=n_predicted,
        )


def batch_stream(batcher: Batcher, depth: int, pin: bool = False):
    """Micro-batches of a :class:`Batcher`, prepared ``depth`` ahead in a background thread
    (``depth`` 0: drawn inline); a context manager (the thread stops with the block).

    Yields ``(batch, tensors, rng_state)``: the :class:`Batch`, its tensors
    (:meth:`Batch.tensors`, page-locked if ``pin``) and the batcher generator's state right
    after that batch was drawn: the state a checkpoint must hold to resume with the next
    batch, however many batches the thread has prepared beyond it. The thread is the only
    user of the generator while the stream is open.
    """

    def draws():
        while True:
            batch = batcher.next()
            yield batch, batch.tensors(pin=pin), batcher.rng.bit_generator.state

    return contextlib.closing(prefetched(draws(), depth, name="dnalm-batches"))
