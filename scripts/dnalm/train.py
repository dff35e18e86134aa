"""Pretraining: one readable training loop for every architecture (MLM, MAE, CLM).

Read :func:`train` top to bottom:

1. setup: device (CUDA if present: bf16 autocast where supported, TF32 matmuls, SDPA
   attention; CPU otherwise, with ``num_threads`` threads and a cheaper dropout mask,
   :func:`dnalm.models.use_fast_dropout`; :mod:`dnalm.device`), data parallel when
   launched by ``torchrun`` (:mod:`dnalm.distributed`), seeds, corpus, NPMI table
   (GeneMask), model, AdamW, the validation slice (:mod:`dnalm.validation`);
2. resume from the newest valid checkpoint in ``checkpoint_dir`` with the same config hash
   (:mod:`dnalm.checkpoint`);
3. loop over optimizer steps: set the learning rate from the schedule, take ``grad_accum``
   micro-batches from the batch pipeline (:mod:`dnalm.batches`), forward, backward, clip,
   step; every ``log_every`` steps a metrics row (:mod:`dnalm.train_metrics`), every
   ``eval_interval`` steps and at the last one the validation loss on that row, every
   ``checkpoint_every`` steps a checkpoint, and one after the current step when SIGTERM or
   SIGUSR1 asks the run to stop (:mod:`dnalm.preemption`);
4. save the model + tokenizer + ``dnalm.json`` (with the validation summary and the scores
   of the no-model predictors, :mod:`dnalm.token_baselines`) into ``out_dir`` and the
   metrics TSV, both atomically.

Determinism: all data and masking randomness comes from one ``numpy.random.Generator`` per
process, seeded from ``(cfg.seed, rank)``; model init from torch's generator seeded with
``cfg.seed`` (the same on every rank), dropout from torch's generators re-seeded per rank.
Every generator's state is part of every checkpoint (the numpy state is the one right after
the last batch the loop consumed, not after the batches prefetched), so on CPU a run killed
at any moment and restarted ends with exactly the same weights as an uninterrupted run.
The validation slice has generators of its own, and its evaluation (eval mode: no dropout)
draws from none, so evaluating changes nothing in the trajectory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import preemption, seq
from .batches import Batch, Batcher, batch_stream, pack_rows  # noqa: F401  (Batch, pack_rows: re-exported)
from .checkpoint import config_hash, find_checkpoint, load_checkpoint, save_checkpoint, torch_rng_state
from .corpus import load_corpus
from .device import autocast, autocast_dtype, enable_tf32, resolve_device
from .distributed import Dist, launch  # noqa: F401  (launch: the pipeline's entry point)
from .embed import POOLINGS
from .io import atomic_dir, remove_stale_dirs, write_tsv
from .masking import STRATEGIES, load_npmi_table, resolve_masking_params
from .models import ARCHITECTURES, adamw, use_fast_dropout
from .models import build_model as _build_model
from .train_metrics import METRIC_COLUMNS, RunningMetrics, TensorBoardLog  # noqa: F401  (METRIC_COLUMNS: re-exported)
from .validation import Validation

# one logger for the training subsystem (checkpoint, distributed and preemption log here too)
log = logging.getLogger("dnalm.train")

SCHEDULES = ("cosine", "onecycle")


@dataclass
class TrainConfig:
    """Everything that defines a pretraining run (plain values; YAML/JSON friendly)."""

    architecture: str = "mlm"  # mlm | mae | clm (causal: no masking; masking must stay "random")
    masking: str = "random"  # random | genemask
    tokenization: str = "overlapping"  # overlapping | non-overlapping
    k: int = 6
    max_tokens: int = 128  # per training sequence incl. [CLS]/[SEP]; longer windows cropped
    max_position: int = 512  # size of the position table (>= max_tokens; inference length)
    size: dict = field(default_factory=lambda: {"layers": 2, "hidden": 64, "heads": 4})
    decoder_size: dict = field(default_factory=lambda: {"layers": 1, "hidden": 64, "heads": 4})
    # center_prob (None = 0.025 random / 0.0176 genemask), span, keep_fraction, min_keep, mask_ratio,
    # window (None = k); see dnalm.masking
    masking_params: dict = field(default_factory=dict)
    steps: int = 200  # optimizer steps
    batch_size: int = 32  # windows per micro-batch and process; a step sees batch_size * grad_accum * processes
    grad_accum: int = 1
    lr: float = 1e-3  # peak learning rate
    warmup_steps: int = 20
    weight_decay: float = 0.01  # on matrices only (not biases, LayerNorm, mask embedding)
    schedule: str = "cosine"  # cosine: linear warmup then cosine to 0; onecycle: torch OneCycleLR
    adam_betas: tuple = (0.9, 0.98)  # DNABERT's
    adam_eps: float = 1e-6
    grad_clip: float = 1.0
    packing: bool = True  # put several short windows in one row (block-diagonal attention)
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    num_threads: int | None = None  # torch CPU threads (None: torch's default)
    prefetch: int | None = None  # micro-batches prepared ahead in a thread (0: inline; None: 2 on CUDA, 0 on CPU)
    tensorboard: bool = False  # also write the metrics rows as TensorBoard event files (rank 0)
    # held-out validation slice (dnalm.corpus.validation_split): never trained on
    val_fraction: float = 0.05  # of the corpus windows (0: no validation)
    val_max_windows: int = 256  # at most this many windows
    eval_every: int | None = None  # steps, a multiple of log_every (0: never; None: ~10 per run, see eval_interval)
    pooling: str = "mean"  # sequence embedding: mean | cls | last (dnalm.embed.pool_weights); recorded in dnalm.json

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
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every", "val_max_windows"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(0.0 <= self.val_fraction <= 0.5, f"val_fraction must be in [0, 0.5], got {self.val_fraction}")
        check(
            self.eval_every is None or (self.eval_every >= 0 and self.eval_every % self.log_every == 0),
            f"eval_every must be 0 (never) or a multiple of log_every ({self.log_every}): validation values go "
            f"on metrics rows; got {self.eval_every}",
        )
        check(self.pooling in POOLINGS, f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        check(
            self.architecture != "clm" or self.masking == "random",
            f"architecture clm predicts the next token and masks nothing: masking {self.masking!r} does not apply "
            "(leave it at 'random')",
        )
        check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.prefetch is None or self.prefetch >= 0, f"prefetch must be >= 0, got {self.prefetch}")
        check(
            self.num_threads is None or self.num_threads >= 1, f"num_threads must be >= 1, got {self.num_threads}"
        )
        check(
            self.device == "auto" or re.fullmatch(r"cpu|cuda(:\d+)?", self.device) is not None,
            f"bad device {self.device!r} (auto, cpu, cuda or cuda:N)",
        )
        self.adam_betas = tuple(float(b) for b in self.adam_betas)
        self.packing = bool(self.packing)
        self.tensorboard = bool(self.tensorboard)
        self.masking_params = resolve_masking_params(self.masking, self.masking_params, self.k)

    @property
    def eval_interval(self) -> int:
        """Steps between validation evaluations (0: none): ``eval_every``, or by default
        about ten per run on logged rows, ``log_every * max(1, steps // (10 * log_every))``."""
        if self.eval_every is not None:
            return self.eval_every
        return self.log_every * max(1, self.steps // (10 * self.log_every))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
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
# schedule, optimizer, model, device
# ----------------------------------------------------------------------------------------


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
    """AdamW with weight decay on matrices only (:func:`dnalm.models.adamw`), fused (one
    kernel over all parameters, CPU and CUDA alike): on the CPU ~5x faster than the
    multi-tensor implementation and ~30x faster than the per-parameter loop."""
    return adamw(model, cfg.lr, cfg.weight_decay, betas=cfg.adam_betas, eps=cfg.adam_eps, fused=True)


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    """The training module (:class:`dnalm.models.BertMLM`, :class:`dnalm.models.BertMAE` or
    :class:`dnalm.models.GPTCLM`)."""
    return _build_model(cfg.architecture, cfg.size, cfg.decoder_size, seq.vocab_size(cfg.k), cfg.max_position)


def setup_device(cfg: TrainConfig, dist: Dist) -> torch.device:
    """Choose the device (the local rank's GPU in a data-parallel run) and set the
    process-wide torch switches (threads, TF32)."""
    device = resolve_device(cfg.device, dist.local_rank)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        enable_tf32(device)
    return device


def forward(net: torch.nn.Module, tensors: dict, device: torch.device, amp) -> dict:
    """The training module's output for one micro-batch (``tensors``: :meth:`Batch.tensors`):
    ``loss`` (mean over the predicted positions), ``logits_masked`` and ``labels_masked``
    there. Every architecture has this contract (:mod:`dnalm.models`), so a validation pass
    can reuse this function and :class:`RunningMetrics`."""
    inputs = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}
    with amp:
        return net(**inputs)


# ----------------------------------------------------------------------------------------
# the training loop
# ----------------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    corpus_path,
    out_dir,
    metrics_path,
    checkpoint_dir,
    npmi_path=None,
    step_callback: Callable[[int], None] | None = None,
    dist: Dist = Dist(),
    stop_file=None,
) -> dict:
    """Pretrain a model; returns the summary also written to ``out_dir/dnalm.json``.

    ``out_dir`` receives the model (``save_pretrained``, safetensors; MLM: the
    BertForMaskedLM, MAE: the encoder BertModel, CLM: the GPT2LMHeadModel), the tokenizer
    and ``dnalm.json``; ``metrics_path`` a TSV with :data:`METRIC_COLUMNS`, one row every
    ``log_every`` steps and one at the last step, with the validation loss on the rows of
    the steps it is evaluated at (see :mod:`dnalm.train_metrics`), and with ``cfg.tensorboard``
    the same rows as TensorBoard event files in ``tensorboard/`` next to it. ``npmi_path``
    (the NPMI TSV of ``dnalm.npmi``) is required for GeneMask masking. ``step_callback(step)``
    is called after every optimizer step (progress hooks, tests). ``dist``: this process's
    rank in a data-parallel run (see :func:`dnalm.distributed.launch`), whose launching
    process may ask it to stop by creating ``stop_file``.

    SIGTERM or SIGUSR1 during the loop: a checkpoint after the current step, then
    :class:`dnalm.preemption.Preempted` (exit status 75 when uncaught).
    """
    from tqdm import tqdm

    if not logging.getLogger().handlers:  # a bare script: make the resume messages visible
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO if dist.main else logging.WARNING)

    # --- setup ----------------------------------------------------------------------------
    device = setup_device(cfg, dist)
    if dist.enabled:
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    net = tensorboard = None
    try:
        corpus = load_corpus(corpus_path)
        npmi = _npmi_table(cfg, npmi_path)
        fingerprint = config_hash(cfg, corpus_path, npmi_path, dist.world_size)
        model = _init_model(cfg, device)
        rng = _seed_everything(cfg, dist, device)
        optimizer = make_optimizer(model, cfg)
        batcher = Batcher(corpus, cfg, npmi, rng)
        validation = Validation(batcher, cfg)
        metrics = RunningMetrics(device, dist, masking=cfg.architecture != "clm")
        start = _resume(cfg, checkpoint_dir, fingerprint, model, optimizer, rng, metrics, device, dist)
        if cfg.tensorboard and dist.main:
            tensorboard = TensorBoardLog(Path(metrics_path).parent / "tensorboard", resumed_at=start)
        net = model
        if dist.enabled:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        amp = autocast(device)
        rng_state = rng.bit_generator.state  # after the last consumed batch

        def checkpoint(step: int, rng_state: dict, keep: int) -> Path | None:
            """A checkpoint of every rank's state, written by rank 0 (all ranks call this);
            ``rng_state``: this rank's generator right after its last consumed batch."""
            numpy_states = dist.gather(rng_state)
            torch_states = dist.gather(torch_rng_state(device))
            extra = {"config": cfg.to_dict(), **metrics.state_dict()}
            path = None
            if dist.main:
                path = save_checkpoint(
                    checkpoint_dir, step, fingerprint, model, optimizer, numpy_states, torch_states, extra, keep
                )
            if dist.enabled:
                torch.distributed.barrier()
            return path

        # --- loop -------------------------------------------------------------------------------
        model.train()
        bar = tqdm(
            total=cfg.steps,
            initial=start,
            file=sys.stderr,
            mininterval=0.5 if sys.stderr.isatty() else 10.0,
            desc=f"{cfg.architecture}/{cfg.masking}",
            disable=not dist.main,
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        metrics.start_clock()
        with (
            batch_stream(batcher, _prefetch_depth(cfg, device), pin=device.type == "cuda") as batches,
            preemption.StopRequest(dist, stop_file) as stop,
        ):
            for step in range(start, cfg.steps):
                lr = lr_at(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr

                for micro in range(cfg.grad_accum):
                    batch, tensors, rng_state = next(batches)
                    # gradients are all-reduced across processes on the last micro-batch only
                    last = micro == cfg.grad_accum - 1
                    with net.no_sync() if (dist.enabled and not last) else contextlib.nullcontext():
                        out = forward(net, tensors, device, amp)
                        (out["loss"] / cfg.grad_accum).backward()
                    metrics.add(batch, out, cfg.grad_accum)

                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                metrics.end_step()
                done = step + 1

                if done % cfg.log_every == 0 or done == cfg.steps:
                    row = metrics.row(done, lr)
                    if validation.due(done):
                        scores = validation.evaluate(model, lambda t: forward(model, t, device, amp), dist)
                        metrics.add_validation(scores)
                    bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['masked_acc']:.3f}", refresh=False)
                    if tensorboard is not None:
                        tensorboard.write(row)
                signal_name = stop.requested()
                stopping = signal_name is not None and done < cfg.steps
                if done % cfg.checkpoint_every == 0 or done == cfg.steps or stopping:
                    path = checkpoint(done, rng_state, keep=1 if done == cfg.steps else 2)
                bar.update(1)
                if step_callback is not None:
                    step_callback(done)
                if stopping:
                    bar.close()
                    _stop(checkpoint_dir, done, path, signal_name, dist)
        bar.close()

        # --- final outputs --------------------------------------------------------------------
        summary = _summary(cfg, metrics, dist, device, fingerprint)
        if dist.main:
            summary["validation"] = validation.summary() if validation.enabled else None
            _save_final(model, cfg, summary, out_dir)
            write_tsv(metrics.table(), metrics_path)
            log.info("done: %s -> %s", _final_words(summary), out_dir)
        if dist.enabled:
            torch.distributed.barrier()
        return summary
    finally:
        if tensorboard is not None:
            tensorboard.close()
        if dist.enabled and torch.distributed.is_initialized():
            # Free DDP (its C++ Reducer holds a reference to the process group) while the
            # group is still registered, so that the group's last reference is dropped by
            # destroy_process_group, whose holders release the GIL. Dropped by the Reducer
            # instead, ProcessGroupGloo's destructor joins its worker threads with the GIL
            # held while a worker may need the GIL to free a finished collective's tensors:
            # a deadlock seen here about once in a few runs (pytorch/pytorch#56297).
            net = None
            gc.collect()
            torch.distributed.destroy_process_group()


def _npmi_table(cfg: TrainConfig, npmi_path) -> np.ndarray | None:
    if cfg.masking != "genemask":
        return None
    if npmi_path is None:
        raise ValueError("genemask masking needs npmi_path (the NPMI table of dnalm.npmi)")
    return load_npmi_table(npmi_path, cfg.k)


def _init_model(cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The training module on ``device``, initialised from ``cfg.seed`` (the same initial
    weights on every rank)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    if device.type == "cpu":
        use_fast_dropout(model)  # torch.bernoulli_ is single-threaded and slow on the CPU
    return model


def _seed_everything(cfg: TrainConfig, dist: Dist, device: torch.device) -> np.random.Generator:
    """Seed this rank's dropout (torch, CUDA) and return its generator of data and masking
    draws; every stream differs between ranks and follows from ``(cfg.seed, rank)``."""
    torch.manual_seed(int(np.random.SeedSequence([cfg.seed, dist.rank]).generate_state(1)[0]))
    if device.type == "cuda":
        torch.cuda.manual_seed(int(np.random.SeedSequence([cfg.seed, dist.rank, 1]).generate_state(1)[0]))
    return np.random.default_rng([cfg.seed, dist.rank])


def _resume(cfg, checkpoint_dir, fingerprint, model, optimizer, rng, metrics, device, dist) -> int:
    """Restore the newest valid checkpoint of this run, if any; returns the step to start at."""
    if dist.main:
        (Path(checkpoint_dir) / preemption.MARKER).unlink(missing_ok=True)
    found = find_checkpoint(checkpoint_dir, fingerprint, device, cleanup=dist.main)
    if found is None:
        log.info(
            "starting from scratch (%d steps, %s/%s, %s, k=%d, device %s%s, %d process(es))",
            cfg.steps,
            cfg.architecture,
            cfg.masking,
            cfg.tokenization,
            cfg.k,
            device,
            f", {autocast_dtype(device)} autocast" if autocast_dtype(device) else "",
            dist.world_size,
        )
        return 0
    load_checkpoint(found, model, optimizer, rng, device, dist.rank)
    # this rank's unfinished metrics interval (sums since the last row, and its wall time so
    # far, so that the next row's tokens_per_s counts only time spent training)
    metrics.load_state_dict(found.state)
    log.info("resumed from %s (step %d of %d)", found.path, found.step, cfg.steps)
    return found.step


def _prefetch_depth(cfg: TrainConfig, device: torch.device) -> int:
    """On the CPU the batch pipeline costs ~0.2 % of a step and a third busy thread only
    disturbs torch's threads; on a GPU, batches prepared ahead hide the host work."""
    return cfg.prefetch if cfg.prefetch is not None else (2 if device.type == "cuda" else 0)


def _stop(checkpoint_dir, step: int, path, signal_name: str, dist: Dist):
    """Leave the loop for a signal: the checkpoint of ``step`` is written."""
    stopped = preemption.Preempted(step, path, signal_name)
    if dist.main:
        preemption.write_marker(checkpoint_dir, step, path, signal_name)
        log.warning("%s", stopped)
    raise stopped


def _summary(cfg: TrainConfig, metrics: RunningMetrics, dist: Dist, device: torch.device, fingerprint: str) -> dict:
    """What ``dnalm.json`` records about the run."""
    return {
        "architecture": cfg.architecture,
        "masking": "none" if cfg.architecture == "clm" else cfg.masking,
        "tokenization": cfg.tokenization,
        "k": cfg.k,
        "max_tokens": cfg.max_tokens,
        "max_position": cfg.max_position,
        "steps": cfg.steps,
        "seed": cfg.seed,
        "final_loss": metrics.rows[-1]["loss"] if metrics.rows else None,
        **metrics.final_validation(),
        "mean_mask_rate": metrics.mean_mask_rate,
        "pooling": cfg.pooling,
        "val_fraction": cfg.val_fraction,
        "val_max_windows": cfg.val_max_windows,
        "eval_every": cfg.eval_interval,
        "validation": None,  # the main process adds it (dnalm.validation.Validation.summary)
        "masking_params": None if cfg.architecture == "clm" else cfg.masking_params,
        "size": cfg.size,
        "decoder_size": cfg.decoder_size if cfg.architecture == "mae" else None,
        "vocab_size": seq.vocab_size(cfg.k),
        "processes": dist.world_size,
        "device": device.type,
        "config_hash": fingerprint,
    }


def _final_words(summary: dict) -> str:
    """The end of a run in words (the log)."""
    words = [f"final loss {summary['final_loss']:.4f}"]
    if summary["final_val_loss"] is not None:
        words.append(f"validation loss {summary['final_val_loss']:.4f}, accuracy {summary['final_val_masked_acc']:.3f}")
        for name, scores in summary["validation"]["baselines"].items():
            if scores["accuracy"] is not None:
                words.append(f"{name} accuracy {scores['accuracy']:.3f}")
    if summary["mean_mask_rate"] is not None:
        words.append(f"mean mask rate {summary['mean_mask_rate']:.4f}")
    return ", ".join(words)


def _save_final(model, cfg: TrainConfig, summary: dict, out_dir) -> None:
    """Model + tokenizer + dnalm.json, written to a temporary directory renamed onto
    ``out_dir`` (leftovers of an earlier save that was killed are removed first)."""
    remove_stale_dirs(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.to("cpu").save_pretrained(tmp)
        seq.save_tokenizer(tmp, cfg.k, model_max_length=cfg.max_position)
        # plain write: the whole directory becomes visible atomically by the rename
        (tmp / "dnalm.json").write_text(json.dumps(summary, indent=2) + "\n")


def save_initial(cfg: TrainConfig, out_dir, corpus_path=None, npmi_path=None, extra: dict | None = None) -> dict:
    """Save the untrained control of a run: the model :func:`train` starts from (the same
    seeding and build, :func:`_init_model`; no step taken), in the same format
    (:func:`_save_final`), so that it is embedded and evaluated like the trained model.

    With ``corpus_path`` (and, for GeneMask, ``npmi_path``) the control is also scored on the
    run's validation slice, at the same masked positions as the trained model's evaluations
    (:class:`dnalm.validation.Validation`; its generators depend on ``cfg`` only): its
    ``final_val_loss`` is the validation loss of step 0. ``dnalm.json`` says ``steps: 0`` and
    carries ``extra`` (e.g. which model it is the control of). Returns that summary.
    """
    device = torch.device("cpu")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    model = _init_model(cfg, device)
    metrics = RunningMetrics(device, Dist(), masking=cfg.architecture != "clm")
    validation = None
    if corpus_path is not None:
        batcher = Batcher(load_corpus(corpus_path), cfg, _npmi_table(cfg, npmi_path), np.random.default_rng([cfg.seed, 0]))
        validation = Validation(batcher, cfg)
    fingerprint = config_hash(cfg, corpus_path, npmi_path) if corpus_path is not None else None
    summary = _summary(cfg, metrics, Dist(), device, fingerprint)
    summary.update(steps=0, mean_mask_rate=None)
    if validation is not None and validation.enabled:
        scores = validation.evaluate(model, lambda t: forward(model, t, device, autocast(device)), Dist())
        summary.update(final_val_loss=scores["val_loss"], final_val_masked_acc=scores["val_masked_acc"])
        summary["validation"] = validation.summary()
    summary.update(extra or {})
    _save_final(model, cfg, summary, out_dir)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Entry point of a ``torchrun`` worker: ``python -m dnalm.train <job.json>``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m dnalm.train JOB.json  (written by dnalm.distributed.launch)")
    job = json.loads(Path(argv[0]).read_text())
    cfg = TrainConfig.from_dict(job.pop("cfg"))
    train(cfg, **job, dist=Dist.from_env())


if __name__ == "__main__":
    main()
