"""Few-shot fine-tuning: the optional learner of the GeneMask few-shot protocol.

Instead of a logistic-regression probe on frozen embeddings (:func:`dnalm.evaluate.fewshot`),
the whole encoder is trained with a classification head on the K examples per class, with
a small learning rate for a few epochs, as GeneMask (and DNABERT) fine-tuned their models.
The head reads the same representation the frozen protocols use
(:func:`dnalm.embed.embed_sequences` with ``long="chunk"``, as the embed rule runs it): a
sequence longer than the model's training crop (``dnalm.json`` ``max_tokens``, or the
position table if smaller) is split into consecutive windows that each fit
(:func:`dnalm.embed.sequence_windows`), and its representation pools the last hidden layer
over the k-mer tokens of all its windows with the model's pooling (``dnalm.json``
``pooling``, default the mean; :func:`dnalm.embed.window_weights`); then dropout and a
linear layer. Gradients flow through every window. An external checkpoint
(:mod:`dnalm.external`) is fine-tuned the same way, on the windows of its own tokenizer.

Every (K, repeat) fit starts from the pretrained weights, draws the same examples as the
probe (:func:`dnalm.evaluate.fewshot_rng`), and is seeded (head initialisation, dropout,
batch order), so a rerun gives the same table on the same device. On a CUDA GPU that
supports bf16 the forward and backward passes run under bf16 autocast
(:func:`dnalm.device.autocast`; fp32 master weights; bf16 needs no loss scaling).
"""

from __future__ import annotations

import copy
import math
import os
import sys
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from . import embed
from . import evaluate as ev

DEFAULTS = {"lr": 5e-5, "epochs": 5, "batch_size": 32, "warmup_ratio": 0.1, "weight_decay": 0.01}


def _torch_seed(seed: int, shots: int, repeat: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(shots), int(repeat), 1]).generate_state(1)[0])


def _classifier(encoder, n_classes: int, dropout: float, pooling: str = "mean", feed=embed.OWN_FEED, hidden=None):
    import torch

    class SequenceClassifier(torch.nn.Module):
        """Encoder, pooling over the kept tokens of all windows of a sequence, dropout, head."""

        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.dropout = torch.nn.Dropout(dropout)
            self.head = torch.nn.Linear(int(hidden or embed.hidden_width(encoder)), n_classes)

        def pool(self, input_ids, attention_mask, owner, n_sequences: int):
            """``(n_sequences, hidden)``: window ``i`` belongs to sequence ``owner[i]``."""
            last = embed.forward_hidden(self.encoder, input_ids, attention_mask)
            weights = embed.window_weights(input_ids, attention_mask, pooling, feed.keep(input_ids))
            sums = last.new_zeros((n_sequences, last.shape[-1]), dtype=torch.float32)
            sums = sums.index_add(0, owner, (last.float() * weights[:, :, None]).sum(1))
            total = weights.new_zeros(n_sequences).index_add(0, owner, weights.sum(1))
            return sums / total[:, None]

        def forward(self, input_ids, attention_mask, owner, n_sequences: int):
            return self.head(self.dropout(self.pool(input_ids, attention_mask, owner, n_sequences)))

    return SequenceClassifier()


def _probe_width(encoder, tokens: list, feed) -> int:
    """Hidden width from one forward pass (for configs that name none)."""
    import torch

    device = next(encoder.parameters()).device
    ids, mask, _ = _batch(tokens, [0], device, feed)
    with torch.no_grad():
        return int(embed.forward_hidden(encoder, ids, mask).shape[-1])


def _load(model_dir, device: str):
    """``(encoder, windows, feed, meta)`` of a trained model's directory or of an external
    model's manifest folder; ``windows(sequences)`` gives each sequence's token windows."""
    from . import external

    if external.is_external(model_dir):
        encoder, feeder, meta = external.load(model_dir, device=device)
        return encoder, feeder.windows, feeder.feed(), meta
    encoder, meta = embed.load_encoder(model_dir, device=device)
    limit = embed.max_input_tokens(encoder, int(meta["max_tokens"]))
    k, tokenization = int(meta["k"]), meta["tokenization"]
    return encoder, lambda seqs: embed.sequence_windows(seqs, k, tokenization, limit), embed.OWN_FEED, meta


def _batch(windows: list[list[np.ndarray]], idx, device, feed=embed.OWN_FEED):
    """Padded windows of the sequences ``idx`` and, per window, its position in ``idx``."""
    import torch

    flat = [w for i in idx for w in windows[i]]
    owner = np.repeat(np.arange(len(idx)), [len(windows[i]) for i in idx])
    ids, mask = feed.pad(flat)
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device), torch.from_numpy(owner).to(device)


def train_classifier(
    encoder, tokens: list, y: np.ndarray, n_classes: int, settings: Mapping, torch_seed: int,
    pooling: str = "mean", feed=embed.OWN_FEED,
):
    """Fine-tune a copy of ``encoder`` plus a new head on ``tokens`` / class indices ``y``.

    ``tokens``: per sequence, its windows (a list of token arrays,
    :func:`dnalm.embed.sequence_windows`, or :meth:`dnalm.external.Feeder.windows`);
    ``pooling``: mean | cls | last over each sequence's windows; ``feed``: padding id and
    special tokens of the tokenizer (:class:`dnalm.embed.Feed`).

    AdamW (no weight decay on biases and LayerNorm weights), linear warm-up over
    ``warmup_ratio`` of the steps then linear decay to 0, gradient norm clipped at 1,
    ``epochs`` passes in shuffled batches of ``batch_size``. Returns the trained model.
    """
    import torch

    from .device import autocast
    from .models import adamw

    device = next(encoder.parameters()).device
    torch.manual_seed(torch_seed)
    generator = torch.Generator().manual_seed(torch_seed)
    dropout = float(getattr(encoder.config, "hidden_dropout_prob", 0.1))
    hidden = embed.hidden_width(encoder) or _probe_width(encoder, tokens, feed)
    model = _classifier(copy.deepcopy(encoder), n_classes, dropout, pooling, feed, hidden).to(device)
    model.train()
    optimizer = adamw(model, float(settings["lr"]), float(settings["weight_decay"]))
    batch_size = int(settings["batch_size"])
    per_epoch = math.ceil(len(tokens) / batch_size)
    total = max(per_epoch * int(settings["epochs"]), 1)
    warmup = int(round(float(settings["warmup_ratio"]) * total))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(total - warmup, 1))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    labels = torch.as_tensor(np.asarray(y, dtype=np.int64), device=device)
    amp = autocast(device)  # bf16 on GPUs that support it
    for _ in range(int(settings["epochs"])):
        perm = torch.randperm(len(tokens), generator=generator).numpy()
        for start in range(0, len(tokens), batch_size):
            idx = perm[start : start + batch_size]
            ids, mask, owner = _batch(tokens, idx, device, feed)
            with amp:
                logits = model(ids, mask, owner, len(idx))
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    return model


def predict(model, tokens: list, batch_size: int = 64, feed=embed.OWN_FEED) -> np.ndarray:
    """Class indices predicted for ``tokens`` (windows per sequence, as for
    :func:`train_classifier`; batches of similar length, inference mode)."""
    import torch

    from .device import autocast

    device = next(model.parameters()).device
    amp = autocast(device)
    out = np.zeros(len(tokens), dtype=np.int64)
    order = np.argsort([-sum(len(w) for w in ws) for ws in tokens], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(tokens), batch_size):
            idx = order[start : start + batch_size]
            ids, mask, owner = _batch(tokens, idx, device, feed)
            with amp:
                logits = model(ids, mask, owner, len(idx))
            out[idx] = logits.float().argmax(1).cpu().numpy()
    return out


def fewshot_finetune(
    model_dir: str | os.PathLike,
    train_sequences: Sequence[str],
    y_train,
    test_sequences: Sequence[str],
    y_test,
    shots: Sequence[int],
    n_repeats: int,
    seed: int,
    settings: Mapping | None = None,
    device: str = "auto",
    progress: bool = True,
    shots_scale: int = 1,
) -> pd.DataFrame:
    """GeneMask few-shot protocol with fine-tuning of the encoder saved in ``model_dir``.

    Same draws (``K * shots_scale`` per class), skipping rule, metrics and columns
    (:data:`dnalm.evaluate.FEWSHOT_COLUMNS`) as :func:`dnalm.evaluate.fewshot`;
    ``protocol="fewshot"``, ``level="finetune"``. ``settings``: ``lr``, ``epochs``,
    ``batch_size``, ``warmup_ratio``, ``weight_decay`` (defaults :data:`DEFAULTS`).
    Sequences are tokenised as for embeddings, and one longer than the training crop
    (``dnalm.json`` ``max_tokens``) is split into windows pooled together with the model's
    ``pooling``, as the embed rule does, so the probe and the fine-tuned learner see the same
    bases. ``model_dir`` may also be an external model's folder (its manifest,
    :mod:`dnalm.external`): its checkpoint is fine-tuned on its own tokenizer's windows.
    """
    from tqdm import tqdm

    settings = {**DEFAULTS, **(settings or {})}
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown fine-tuning setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    y_tr, y_te = np.asarray(y_train), np.asarray(y_test)
    if y_tr.shape != (len(train_sequences),) or y_te.shape != (len(test_sequences),):
        raise ValueError("one label per sequence is needed for train and test")
    classes, counts = np.unique(y_tr, return_counts=True)
    if classes.shape[0] < 2:
        raise ValueError("the few-shot train pool needs at least two classes")
    unseen = sorted(set(np.unique(y_te).tolist()) - set(classes.tolist()))
    if unseen:
        raise ValueError(f"test labels {unseen[:3]} do not occur in the train pool")
    plan = ev.fewshot_plan(shots, shots_scale, int(counts.min()))
    encoder, windows, feed, meta = _load(model_dir, device)
    pooling = meta.get("pooling", "mean")
    tok_train, tok_test = windows(list(train_sequences)), windows(list(test_sequences))
    y_idx = np.searchsorted(classes, y_tr)
    runs = [(shot, n, r) for shot, n in plan for r in range(int(n_repeats))]
    rows = []
    for shot, n, r in tqdm(runs, desc="fine-tuning", unit="fit", file=sys.stderr, disable=not progress):
        idx = ev.sample_per_class(y_tr, n, ev.fewshot_rng(seed, n, r))
        model = train_classifier(
            encoder, [tok_train[i] for i in idx], y_idx[idx], classes.shape[0], settings, _torch_seed(seed, n, r),
            pooling, feed,
        )
        pred = classes[predict(model, tok_test, feed=feed)]
        metrics = ev.classification_metrics(y_te, pred, ev.FEWSHOT_METRICS)
        rows += ev._rows("fewshot", "finetune", metrics, float(shot), r, per_class=n)
        del model
    return ev._tidy(rows, ev.FEWSHOT_COLUMNS)
