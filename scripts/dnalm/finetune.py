"""Few-shot fine-tuning: the optional learner of the GeneMask few-shot protocol.

Instead of a logistic-regression probe on frozen embeddings (:func:`dnalm.evaluate.fewshot`),
the whole encoder is trained with a classification head on the K examples per class, with
a small learning rate for a few epochs, as GeneMask (and DNABERT) fine-tuned their models.
The head reads the same representation the frozen protocols use: the mean of the last
hidden layer over the k-mer tokens (:func:`dnalm.embed.pooling_mask`), then dropout and a
linear layer.

Every (K, repeat) fit starts from the pretrained weights, draws the same examples as the
probe (:func:`dnalm.evaluate.fewshot_rng`), and is seeded (head initialisation, dropout,
batch order), so a rerun gives the same table on the same device. On CUDA the forward and
backward passes run under bf16 autocast (fp32 master weights; bf16 needs no loss scaling).
"""

from __future__ import annotations

import copy
import math
import os
import sys
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import embed
from . import evaluate as ev
from . import seq as dseq

DEFAULTS = {"lr": 5e-5, "epochs": 5, "batch_size": 32, "warmup_ratio": 0.1, "weight_decay": 0.01}


def _torch_seed(seed: int, shots: int, repeat: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(shots), int(repeat), 1]).generate_state(1)[0])


def _classifier(encoder, n_classes: int, dropout: float):
    import torch

    class SequenceClassifier(torch.nn.Module):
        """Encoder, mean over k-mer tokens of the last layer, dropout, linear head."""

        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.dropout = torch.nn.Dropout(dropout)
            self.head = torch.nn.Linear(int(encoder.config.hidden_size), n_classes)

        def forward(self, input_ids, attention_mask):
            last = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            weights = embed.pooling_mask(input_ids, attention_mask)
            pooled = (last.float() * weights[:, :, None]).sum(1) / weights.sum(1, keepdim=True)
            return self.head(self.dropout(pooled))

    return SequenceClassifier()


def _batch(tokens: list[np.ndarray], idx, device):
    import torch

    ids, mask = dseq.pad_batch([tokens[i] for i in idx])
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def train_classifier(
    encoder, tokens: list[np.ndarray], y: np.ndarray, n_classes: int, settings: Mapping, torch_seed: int
):
    """Fine-tune a copy of ``encoder`` plus a new head on ``tokens`` / class indices ``y``.

    AdamW (no weight decay on biases and LayerNorm weights), linear warm-up over
    ``warmup_ratio`` of the steps then linear decay to 0, gradient norm clipped at 1,
    ``epochs`` passes in shuffled batches of ``batch_size``. Returns the trained model.
    """
    import torch

    device = next(encoder.parameters()).device
    torch.manual_seed(torch_seed)
    generator = torch.Generator().manual_seed(torch_seed)
    dropout = float(getattr(encoder.config, "hidden_dropout_prob", 0.1))
    model = _classifier(copy.deepcopy(encoder), n_classes, dropout).to(device)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(settings["weight_decay"])}, {"params": no_decay, "weight_decay": 0.0}],
        lr=float(settings["lr"]),
    )
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
    use_bf16 = device.type == "cuda"
    for _ in range(int(settings["epochs"])):
        perm = torch.randperm(len(tokens), generator=generator).numpy()
        for start in range(0, len(tokens), batch_size):
            idx = perm[start : start + batch_size]
            ids, mask = _batch(tokens, idx, device)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(ids, mask)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    return model


def predict(model, tokens: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """Class indices predicted for ``tokens`` (batches of similar length, inference mode)."""
    import torch

    device = next(model.parameters()).device
    out = np.zeros(len(tokens), dtype=np.int64)
    order = np.argsort([-len(t) for t in tokens], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(tokens), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = _batch(tokens, idx, device)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(ids, mask)
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
) -> pd.DataFrame:
    """GeneMask few-shot protocol with fine-tuning of the encoder saved in ``model_dir``.

    Same draws, skipping rule and metrics as :func:`dnalm.evaluate.fewshot`;
    ``protocol="fewshot"``, ``level="finetune"``. ``settings``: ``lr``, ``epochs``,
    ``batch_size``, ``warmup_ratio``, ``weight_decay`` (defaults :data:`DEFAULTS`).
    Sequences are tokenised as for embeddings and truncated to the model's position table.
    """
    import warnings

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
    encoder, meta = embed.load_encoder(model_dir, device=device)
    limit = embed.max_input_tokens(encoder)
    k, tokenization = int(meta["k"]), meta["tokenization"]
    tok_train = embed.tokenize_for_model(train_sequences, k, tokenization, limit)
    tok_test = embed.tokenize_for_model(test_sequences, k, tokenization, limit)
    y_idx = np.searchsorted(classes, y_tr)
    runs = []
    for shot in shots:
        shot = int(shot)
        if shot < 1:
            raise ValueError(f"shots must be >= 1, got {shot}")
        if shot > int(counts.min()):
            warnings.warn(
                f"few-shot K={shot} skipped: the smallest class of the train pool has only {int(counts.min())} examples",
                stacklevel=2,
            )
            continue
        runs += [(shot, r) for r in range(int(n_repeats))]
    rows = []
    for shot, r in tqdm(runs, desc="fine-tuning", unit="fit", file=sys.stderr, disable=not progress):
        idx = ev.sample_per_class(y_tr, shot, ev.fewshot_rng(seed, shot, r))
        model = train_classifier(
            encoder, [tok_train[i] for i in idx], y_idx[idx], classes.shape[0], settings, _torch_seed(seed, shot, r)
        )
        pred = classes[predict(model, tok_test)]
        rows += ev._rows("fewshot", "finetune", ev.classification_metrics(y_te, pred, ev.FEWSHOT_METRICS), float(shot), r)
        del model
    return ev._tidy(rows)
