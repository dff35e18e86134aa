"""Held-out validation during pretraining: a fixed slice of the corpus, never trained on,
scored with the model's own objective at fixed masks (:class:`Validation`).

The slice is :func:`dnalm.corpus.validation_split` of the corpus (``val_fraction`` of its
windows, at most ``val_max_windows``, chosen by a generator of its own), which the
:class:`dnalm.batches.Batcher` never draws. Its batches are built once, when training
starts: the same crop, tokenization, masking and (MLM) 80/10/10 corruption as training
batches, drawn from ``np.random.default_rng([seed, VALIDATION_STREAM, 1])``, so every
evaluation of a run (and of a resumed run) scores the same tokens at the same masked
positions, and no training generator is touched.

:meth:`Validation.evaluate` runs the model in eval mode (no dropout) under
``torch.no_grad()``: ``val_loss`` is the cross-entropy per predicted token (masked tokens;
for the causal model, every k-mer predicted from the tokens before it) and
``val_masked_acc`` the fraction predicted right, over the whole slice. In a data-parallel
run every process scores every ``world_size``-th batch and the sums are all-reduced.

:meth:`Validation.summary` adds what the report needs to read those numbers: the slice's
size, the mask rate achieved on it, and the scores of two predictors that read no model at
the same positions (:mod:`dnalm.token_baselines`): the corpus unigram and a k-mer context
predictor, both counted on training windows only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from .corpus import VALIDATION_STREAM, Corpus

if TYPE_CHECKING:
    from .batches import Batch, Batcher
    from .distributed import Dist
    from .train import TrainConfig

#: columns of the tidy validation table (the report's metric columns)
TABLE_COLUMNS = ["model", "dataset", "protocol", "level", "shots", "repeat", "metric", "value"]


class Validation:
    """The validation slice of a run: its batches (built once) and their evaluation.

    ``batcher``: the run's :class:`dnalm.batches.Batcher` (its :attr:`val_windows` are the
    slice; its :meth:`~dnalm.batches.Batcher.crop` and :meth:`~dnalm.batches.Batcher.layout`
    build the batches, ``cfg.batch_size`` windows each, in window order).
    """

    def __init__(self, batcher: Batcher, cfg: TrainConfig):
        self.cfg = cfg
        self.windows = batcher.val_windows
        self.train_windows = batcher.train_windows
        self.corpus: Corpus = batcher.corpus
        rng = np.random.default_rng([cfg.seed, VALIDATION_STREAM, 1])
        self.batches: list[Batch] = []
        for lo in range(0, self.windows.shape[0], cfg.batch_size):
            starts, lengths = batcher.crop(self.windows[lo : lo + cfg.batch_size], rng)
            self.batches.append(batcher.layout(starts, lengths, rng))
        self.tensors = [b.tensors() for b in self.batches]

    @property
    def enabled(self) -> bool:
        return len(self.batches) > 0

    def due(self, step: int) -> bool:
        """Whether the run evaluates after optimizer step ``step`` (1-based): every
        ``cfg.eval_interval`` steps and at the last step, unless disabled."""
        interval = self.cfg.eval_interval
        return self.enabled and interval > 0 and (step % interval == 0 or step == self.cfg.steps)

    def evaluate(self, model: torch.nn.Module, forward: Callable[[dict], dict], dist: Dist) -> dict:
        """``{"val_loss", "val_masked_acc"}`` of ``model`` (``forward(tensors)``: its output
        for a batch's tensors, see :func:`dnalm.train.forward`) over the slice. ``model``
        is put in eval mode for the evaluation and back in its previous mode after it; a
        collective in a data-parallel run (every rank calls it)."""
        device = next(model.parameters()).device
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, correct, n
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for i, tensors in enumerate(self.tensors):
                    if i % dist.world_size != dist.rank:
                        continue
                    out = forward(tensors)
                    n = out["labels_masked"].numel()
                    sums[0] += out["loss"].double() * n
                    sums[1] += (out["logits_masked"].argmax(-1) == out["labels_masked"]).sum().double()
                    sums[2] += n
        finally:
            model.train(was_training)
        if dist.enabled:
            torch.distributed.all_reduce(sums)
        loss, correct, n = sums.tolist()
        return {"val_loss": loss / n if n else None, "val_masked_acc": correct / n if n else None}

    def summary(self) -> dict:
        """The slice (windows, tokens, predicted positions, mask rate achieved: None for the
        causal model) and the scores of the no-model predictors at the same positions
        (:func:`dnalm.token_baselines.score`: ``unigram``, ``kmer_context``), as
        ``dnalm.json`` records them."""
        from .token_baselines import TokenCounts, score

        cfg = self.cfg
        n_maskable = sum(b.n_maskable for b in self.batches)
        n_masked = sum(b.n_masked for b in self.batches)
        causal = cfg.architecture == "clm"
        counts = TokenCounts.from_corpus(self.corpus, self.train_windows, cfg.k, cfg.tokenization, cfg.seed)
        return {
            "windows": int(self.windows.shape[0]),
            "tokens": int(sum(b.n_tokens for b in self.batches)),
            "predicted": int(sum(b.n_predicted for b in self.batches)),
            "mask_rate": None if causal else n_masked / max(1, n_maskable),
            "objective": "next-token" if causal else "masked-token",
            "training_bases_counted": counts.bases,
            "baselines": score(self.batches, counts, causal=causal),
        }


def validation_table(summary: dict, model: str) -> pd.DataFrame:
    """The validation numbers of a run's summary (``dnalm.json``) as tidy rows with the
    report's metric columns: protocol ``pretraining``, dataset ``validation``, level the
    predictor (``model``, ``unigram``, ``kmer_context``), metrics ``accuracy`` and
    ``cross_entropy``, plus the model's ``mask_rate`` on the slice (masking models only).
    Empty when the run had no validation slice."""
    val = summary.get("validation")
    rows = []
    if val:
        predictors = {"model": {"accuracy": summary.get("final_val_masked_acc"),
                                "cross_entropy": summary.get("final_val_loss")}}  # fmt: skip
        predictors.update(val["baselines"])
        for level, scores in predictors.items():
            for metric in ("accuracy", "cross_entropy"):
                rows.append((level, metric, scores.get(metric)))
        if val.get("mask_rate") is not None:
            rows.append(("model", "mask_rate", val["mask_rate"]))
    return pd.DataFrame(
        [(model, "validation", "pretraining", level, np.nan, 0, metric, value) for level, metric, value in rows],
        columns=TABLE_COLUMNS,
    )
