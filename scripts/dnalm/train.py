"""Pretraining: one readable training loop for both architectures (MLM, MAE).

Read :func:`train` top to bottom; everything it needs is in this file or named imports:

1. setup: device (CUDA if present, bf16 autocast there; CPU otherwise), seeds, corpus,
   NPMI table (GeneMask), model, AdamW;
2. resume from the latest valid checkpoint in ``checkpoint_dir`` (same config hash);
3. loop over optimizer steps: set the learning rate from the schedule, draw
   ``grad_accum`` micro-batches (numpy: crop windows, tokenize, mask, corrupt/drop, pad),
   forward, backward, clip, step; every ``log_every`` steps a metrics row, every
   ``checkpoint_every`` steps a checkpoint;
4. save the encoder-bearing model + tokenizer + ``dnalm.json`` into ``out_dir`` and the
   metrics TSV, both atomically.

Determinism: all data and masking randomness comes from one ``numpy.random.Generator``
seeded with ``cfg.seed``; model init and dropout from torch's generator seeded the same.
Both generators' states are part of every checkpoint, so on CPU a run killed at any moment
and restarted ends with exactly the same weights as an uninterrupted run.

Checkpoint layout (``checkpoint_dir/ckpt-<step:08d>-<hash12>/``, written to a temporary
directory and renamed, only the latest kept):

* ``model.safetensors``: every weight of the training module (MLM: the BertForMaskedLM;
  MAE: encoder + projection + decoder + head), ``safetensors.torch.save_model``;
* ``optimizer.pt``: AdamW state dict, and ``rng.pt``: torch (and CUDA) RNG states, both
  loaded with ``torch.load(weights_only=True)``;
* ``state.json``: step, config hash, the config, the numpy bit-generator state, metrics
  rows so far and running sums.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from . import seq
from .corpus import Corpus, load_corpus
from .io import write_tsv
from .masking import STRATEGIES, apply_mlm_corruption, load_npmi_table, make_mask, resolve_masking_params
from .models import BertMAE, build_mlm, mlm_forward

log = logging.getLogger(__name__)

ARCHITECTURES = ("mlm", "mae")
SCHEDULES = ("cosine", "onecycle")
METRIC_COLUMNS = ["step", "loss", "masked_acc", "mask_rate", "lr", "tokens_per_s", "peak_mem_mb"]
# fields that do not change the trajectory of a run: left out of the config hash
_HASH_EXEMPT = ("checkpoint_every", "log_every", "num_threads")


@dataclass
class TrainConfig:
    """Everything that defines a pretraining run (plain values; YAML/JSON friendly)."""

    architecture: str = "mlm"  # mlm | mae
    masking: str = "random"  # random | genemask
    tokenization: str = "overlapping"  # overlapping | non-overlapping
    k: int = 6
    max_tokens: int = 128  # per training sequence incl. [CLS]/[SEP]; longer windows cropped
    max_position: int = 512  # size of the position table (>= max_tokens; inference length)
    size: dict = field(default_factory=lambda: {"layers": 2, "hidden": 64, "heads": 4})
    decoder_size: dict = field(default_factory=lambda: {"layers": 1, "hidden": 64, "heads": 4})
    # center_prob (None = 0.025 random / 0.0176 genemask), span, keep_fraction, min_keep, mask_ratio
    masking_params: dict = field(default_factory=dict)
    steps: int = 200  # optimizer steps
    batch_size: int = 32  # sequences per micro-batch; a step sees batch_size * grad_accum
    grad_accum: int = 1
    lr: float = 1e-3  # peak learning rate
    warmup_steps: int = 20
    weight_decay: float = 0.01  # on matrices only (not biases, LayerNorm, mask embedding)
    schedule: str = "cosine"  # cosine: linear warmup then cosine to 0; onecycle: torch OneCycleLR
    adam_betas: tuple = (0.9, 0.98)  # DNABERT's
    adam_eps: float = 1e-6
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    num_threads: int | None = None  # torch CPU threads (None: torch's default)

    def __post_init__(self):
        def check(ok, msg):
            if not ok:
                raise ValueError(msg)

        check(
            self.architecture in ARCHITECTURES,
            f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}",
        )
        check(self.masking in STRATEGIES, f"masking must be one of {STRATEGIES}, got {self.masking!r}")
        check(
            self.tokenization in seq.TOKENIZATIONS,
            f"tokenization must be one of {seq.TOKENIZATIONS}, got {self.tokenization!r}",
        )
        check(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        check(1 <= self.k <= 8, f"k must be in 1..8, got {self.k}")
        check(self.max_tokens >= 3, f"max_tokens must be >= 3, got {self.max_tokens}")
        check(
            self.max_position >= self.max_tokens,
            f"max_position ({self.max_position}) must be >= max_tokens ({self.max_tokens})",
        )
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(
            self.device == "auto" or re.fullmatch(r"cpu|cuda(:\d+)?", self.device) is not None,
            f"bad device {self.device!r}",
        )
        self.adam_betas = tuple(float(b) for b in self.adam_betas)
        self.masking_params = resolve_masking_params(self.masking, self.masking_params)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d


# ----------------------------------------------------------------------------------------
# small pieces the loop uses
# ----------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based).

    cosine: ``transformers.get_cosine_schedule_with_warmup`` (linear from 0 over
    ``warmup_steps``, then half a cosine down to 0 at ``steps``); onecycle: PyTorch's
    ``OneCycleLR`` (cosine from lr/25 up to lr over ``warmup_steps``, then cosine down to
    lr/25/1e4; div_factor 25, final_div_factor 1e4).
    """
    if cfg.schedule == "cosine":
        if step < cfg.warmup_steps:
            return cfg.lr * step / max(1, cfg.warmup_steps)
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    initial = cfg.lr / 25.0
    final = initial / 1e4
    phases = [(float(cfg.warmup_steps) - 1, initial, cfg.lr), (cfg.steps - 1, cfg.lr, final)]
    start = 0.0
    for i, (end, lo, hi) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            pct = (step - start) / (end - start) if end > start else 1.0
            return hi + (lo - hi) / 2.0 * (math.cos(math.pi * pct) + 1.0)
        start = end
    raise AssertionError("unreachable")


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (ndim >= 2) only: no decay on biases, LayerNorm
    weights or the MAE mask embedding (tied weights appear once)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps)


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    vocab = seq.vocab_size(cfg.k)
    if cfg.architecture == "mlm":
        return build_mlm(cfg.size, vocab, cfg.max_position)
    return BertMAE(cfg.size, cfg.decoder_size, vocab, cfg.max_position)


class Batcher:
    """Draws training batches from a corpus with the fast numpy path.

    Per batch (draws from ``rng`` in this order): ``batch_size`` window indices (uniform,
    with replacement); then per window a crop offset if it is longer than ``max_tokens``
    allow (overlapping: any base; non-overlapping: a multiple of k, keeping the reading
    frame of inference) and its mask (:func:`dnalm.masking.make_mask`).
    """

    def __init__(self, corpus: Corpus, cfg: TrainConfig, npmi: np.ndarray | None, rng: np.random.Generator):
        self.corpus, self.cfg, self.npmi, self.rng = corpus, cfg, npmi, rng
        n_kmers = cfg.max_tokens - 2
        self.overlapping = cfg.tokenization == "overlapping"
        self.max_bases = n_kmers + cfg.k - 1 if self.overlapping else n_kmers * cfg.k
        if len(corpus) == 0:
            raise ValueError("the training corpus has no windows")

    def sequence(self, i: int) -> np.ndarray:
        """Token ids of window i, cropped at a random offset to fit ``max_tokens``."""
        codes = self.corpus[i]
        excess = codes.shape[0] - self.max_bases
        if excess > 0:
            if self.overlapping:
                offset = int(self.rng.integers(0, excess + 1))
            else:
                offset = self.cfg.k * int(self.rng.integers(0, excess // self.cfg.k + 1))
            codes = codes[offset : offset + self.max_bases]
        return seq.tokenize_codes(np.asarray(codes), self.cfg.k, self.cfg.tokenization)

    def next(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask, mask)``: int64, int64, bool arrays (B, L)."""
        cfg = self.cfg
        tokens, masks = [], []
        for i in self.rng.integers(0, len(self.corpus), size=cfg.batch_size).tolist():
            ids = self.sequence(i)
            tokens.append(ids)
            masks.append(make_mask(ids, cfg.masking, cfg.tokenization, cfg.k, cfg.masking_params, self.npmi, self.rng))
        input_ids, attention = seq.pad_batch(tokens)
        mask = np.zeros(input_ids.shape, dtype=bool)
        for row, m in enumerate(masks):
            mask[row, : m.shape[0]] = m
        return input_ids, attention, mask


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def config_hash(cfg: TrainConfig, corpus_path, npmi_path=None) -> str:
    """sha256 over the config (minus logging/checkpoint cadence and thread count) and the
    contents of the corpus and NPMI files: what decides the trajectory of a run."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in _HASH_EXEMPT}
    d["corpus_sha256"] = file_sha256(corpus_path)
    d["npmi_sha256"] = file_sha256(npmi_path) if (npmi_path is not None and cfg.masking == "genemask") else None
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------

_CKPT_RE = re.compile(r"ckpt-(\d{8})-([0-9a-f]{12})")


def save_checkpoint(checkpoint_dir, step, fingerprint, model, optimizer, rng, extra: dict) -> Path:
    """Write a checkpoint atomically (temporary directory, then rename); drop older ones."""
    from safetensors.torch import save_model

    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"ckpt-{step:08d}-{fingerprint[:12]}"
    tmp = checkpoint_dir / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng_states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng_states["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng_states, tmp / "rng.pt")
    state = {"step": step, "config_hash": fingerprint, "numpy_rng": rng.bit_generator.state, **extra}
    (tmp / "state.json").write_text(json.dumps(state))
    if final.exists():  # only if an identical run wrote it already
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoint_dir.iterdir():
        if old != final and _CKPT_RE.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(checkpoint_dir, fingerprint: str) -> tuple[Path, dict] | None:
    """Latest checkpoint whose config hash matches; others are skipped with a log message.
    Leftover temporary directories of interrupted writes are removed."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return None
    for tmp in checkpoint_dir.glob(".tmp-ckpt-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    found = sorted((d for d in checkpoint_dir.iterdir() if _CKPT_RE.fullmatch(d.name)), reverse=True)
    for path in found:
        try:
            state = json.loads((path / "state.json").read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring checkpoint %s: unreadable state.json (%s)", path, exc)
            continue
        if state.get("config_hash") != fingerprint:
            log.warning(
                "ignoring checkpoint %s: its config hash differs from this run's (config or inputs changed)", path
            )
            continue
        return path, state
    return None


def load_checkpoint(path: Path, model, optimizer, rng: np.random.Generator, device: torch.device) -> None:
    """Restore weights, optimizer and RNG states in place (``weights_only`` loads only)."""
    from safetensors.torch import load_model

    load_model(model, str(path / "model.safetensors"), device=str(device))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    rng_states = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng_states["torch"])
    if "cuda" in rng_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng_states["cuda"])
    state = json.loads((path / "state.json").read_text())
    rng.bit_generator.state = state["numpy_rng"]


# ----------------------------------------------------------------------------------------
# the training loop
# ----------------------------------------------------------------------------------------


def _new_interval() -> dict:
    return {"loss": 0.0, "n_steps": 0, "correct": 0.0, "masked": 0, "maskable": 0, "tokens": 0}


def train(
    cfg: TrainConfig,
    corpus_path,
    out_dir,
    metrics_path,
    checkpoint_dir,
    npmi_path=None,
    step_callback: Callable[[int], None] | None = None,
) -> dict:
    """Pretrain a model; returns the summary also written to ``out_dir/dnalm.json``.

    ``out_dir`` receives the encoder-bearing model (``save_pretrained``, safetensors; MLM:
    the BertForMaskedLM, MAE: the encoder BertModel), the tokenizer and ``dnalm.json``;
    ``metrics_path`` a TSV with :data:`METRIC_COLUMNS`, one row every ``log_every`` steps
    and one at the last step (loss, masked_acc, mask_rate are means over the steps since
    the previous row; mask_rate = masked / maskable tokens). ``npmi_path`` (the NPMI TSV of
    ``dnalm.npmi``) is required for GeneMask masking. ``step_callback(step)`` is called after
    every optimizer step (progress hooks, tests).
    """
    from tqdm import tqdm

    if not logging.getLogger().handlers:  # a bare script: make the resume messages visible
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)

    # --- setup ----------------------------------------------------------------------------
    device = resolve_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls (fp32 parts outside autocast)
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )
    corpus = load_corpus(corpus_path)
    npmi = None
    if cfg.masking == "genemask":
        if npmi_path is None:
            raise ValueError("genemask masking needs npmi_path (the NPMI table of dnalm.npmi)")
        npmi = load_npmi_table(npmi_path, cfg.k)
    fingerprint = config_hash(cfg, corpus_path, npmi_path)
    vocab = seq.vocab_size(cfg.k)

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_model(cfg).to(device)
    optimizer = make_optimizer(model, cfg)
    batcher = Batcher(corpus, cfg, npmi, rng)

    # --- resume -----------------------------------------------------------------------------
    start, rows = 0, []
    interval = _new_interval()
    totals = {"masked": 0, "maskable": 0}
    found = find_checkpoint(checkpoint_dir, fingerprint)
    if found is not None:
        path, state = found
        load_checkpoint(path, model, optimizer, rng, device)
        start, rows, interval, totals = state["step"], state["rows"], state["interval"], state["totals"]
        log.info("resumed from %s (step %d of %d)", path, start, cfg.steps)
    else:
        log.info(
            "starting from scratch (%d steps, %s/%s, %s, k=%d, device %s)",
            cfg.steps,
            cfg.architecture,
            cfg.masking,
            cfg.tokenization,
            cfg.k,
            device,
        )
    # running sums live on the device (no host sync per step); float64 for exact resumes
    loss_sum = torch.tensor(interval["loss"], dtype=torch.float64, device=device)
    correct_sum = torch.tensor(interval["correct"], dtype=torch.float64, device=device)

    def interval_state() -> dict:
        return {**interval, "loss": loss_sum.item(), "correct": correct_sum.item()}

    # --- loop ---------------------------------------------------------------------------------
    model.train()
    interactive = sys.stderr.isatty()
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        file=sys.stderr,
        mininterval=0.5 if interactive else 10.0,
        desc=f"{cfg.architecture}/{cfg.masking}",
    )
    t_last = time.perf_counter()
    for step in range(start, cfg.steps):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr

        for _ in range(cfg.grad_accum):
            ids, attention, mask = batcher.next()
            interval["masked"] += int(mask.sum())
            interval["maskable"] += int((ids >= seq.N_SPECIAL).sum())
            interval["tokens"] += int(attention.sum())
            if cfg.architecture == "mlm":  # corrupt 80/10/10; the head runs on masked positions only
                corrupted, labels = apply_mlm_corruption(ids, mask, vocab, rng)
                objective, inputs = partial(mlm_forward, model), (corrupted, attention, mask, labels)
            else:  # MAE: the model drops the masked tokens from the encoder input itself
                objective, inputs = model, (ids, attention, mask)
            with autocast:
                out = objective(*(torch.from_numpy(a).to(device, non_blocking=True) for a in inputs))
            (out["loss"] / cfg.grad_accum).backward()
            loss_sum += out["loss"].detach().double() / cfg.grad_accum
            correct_sum += (out["logits_masked"].argmax(-1) == out["labels_masked"]).sum().double()

        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        interval["n_steps"] += 1
        done = step + 1

        if done % cfg.log_every == 0 or done == cfg.steps:
            now = time.perf_counter()
            iv = interval_state()
            row = {
                "step": done,
                "loss": iv["loss"] / iv["n_steps"],
                "masked_acc": iv["correct"] / max(1, iv["masked"]),
                "mask_rate": iv["masked"] / max(1, iv["maskable"]),
                "lr": lr,
                "tokens_per_s": iv["tokens"] / max(now - t_last, 1e-9),
                "peak_mem_mb": _peak_mem_mb(device),
            }
            rows.append(row)
            totals["masked"] += iv["masked"]
            totals["maskable"] += iv["maskable"]
            interval = _new_interval()
            loss_sum.zero_()
            correct_sum.zero_()
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['masked_acc']:.3f}", refresh=False)
            t_last = now

        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            save_checkpoint(
                checkpoint_dir,
                done,
                fingerprint,
                model,
                optimizer,
                rng,
                {"config": cfg.to_dict(), "rows": rows, "interval": interval_state(), "totals": totals},
            )
        bar.update(1)
        if step_callback is not None:
            step_callback(done)
    bar.close()

    # --- final outputs ------------------------------------------------------------------------
    summary = {
        "architecture": cfg.architecture,
        "masking": cfg.masking,
        "tokenization": cfg.tokenization,
        "k": cfg.k,
        "max_tokens": cfg.max_tokens,
        "max_position": cfg.max_position,
        "steps": cfg.steps,
        "seed": cfg.seed,
        "final_loss": rows[-1]["loss"] if rows else None,
        "mean_mask_rate": totals["masked"] / max(1, totals["maskable"]),
        "masking_params": cfg.masking_params,
        "size": cfg.size,
        "decoder_size": cfg.decoder_size if cfg.architecture == "mae" else None,
        "vocab_size": vocab,
        "config_hash": fingerprint,
    }
    _save_final(model, cfg, summary, out_dir)
    write_tsv(pd.DataFrame(rows, columns=METRIC_COLUMNS), metrics_path)
    log.info(
        "done: final loss %.4f, mean mask rate %.4f -> %s", summary["final_loss"], summary["mean_mask_rate"], out_dir
    )
    return summary


def _save_final(model, cfg: TrainConfig, summary: dict, out_dir) -> None:
    """Model + tokenizer + dnalm.json into a temporary directory renamed onto ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model = model.to("cpu")
        if cfg.architecture == "mlm":
            model.save_pretrained(str(tmp))
        else:
            model.save_encoder(tmp)
        seq.save_tokenizer(tmp, cfg.k, model_max_length=cfg.max_position)
        # plain write: the whole directory becomes visible atomically by the rename below
        (tmp / "dnalm.json").write_text(json.dumps(summary, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
