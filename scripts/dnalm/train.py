"""Pretraining: one readable training loop for both architectures (MLM, MAE).

Read :func:`train` top to bottom; everything it needs is in this file or named imports:

1. setup: device (CUDA if present: bf16 autocast, TF32 matmuls, SDPA attention; CPU
   otherwise, with ``num_threads`` threads and a cheaper dropout mask,
   :func:`dnalm.models.use_fast_dropout`), distributed data parallel when launched by
   ``torchrun`` (:func:`launch`), seeds, corpus, NPMI table (GeneMask), model, AdamW;
2. resume from the latest valid checkpoint in ``checkpoint_dir`` (same config hash);
3. loop over optimizer steps: set the learning rate from the schedule, take ``grad_accum``
   micro-batches from the batch pipeline (numpy: crop windows, tokenize, mask, corrupt,
   pack into rows; :class:`Batcher`; drawn inline on the CPU, prepared ``prefetch``
   batches ahead in a background thread on CUDA, :class:`BatchStream`), forward, backward,
   clip, step; every ``log_every`` steps a metrics row, every ``checkpoint_every`` steps a
   checkpoint;
4. save the encoder-bearing model + tokenizer + ``dnalm.json`` into ``out_dir`` and the
   metrics TSV, both atomically.

Determinism: all data and masking randomness comes from one ``numpy.random.Generator`` per
process, seeded from ``(cfg.seed, rank)``; model init from torch's generator seeded with
``cfg.seed`` (the same on every rank), dropout from torch's generators re-seeded per rank.
Every generator's state is part of every checkpoint (the numpy state is the one right after
the last batch the loop consumed, not after the batches prefetched), so on CPU a run killed
at any moment and restarted ends with exactly the same weights as an uninterrupted run.

Checkpoint layout (``checkpoint_dir/ckpt-<step:08d>-<hash12>/``, written to a temporary
directory and renamed, only the latest kept):

* ``model.safetensors``: every weight of the training module (MLM: the BertForMaskedLM;
  MAE: encoder + projection + decoder + head), ``safetensors.torch.save_model``;
* ``optimizer.pt``: AdamW state dict, and ``rng.pt``: torch (and CUDA) RNG states of every
  rank, both loaded with ``torch.load(weights_only=True)``;
* ``state.json``: step, config hash, the config, the numpy bit-generator state of every
  rank, metrics rows so far, every rank's sums since the last metrics row (with the wall
  time they took, so the first row after a resume reports true tokens/s) and running totals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import math
import os
import queue
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import pandas as pd
import torch

from . import seq
from .corpus import Corpus, load_corpus
from .io import atomic_path, write_tsv
from .masking import (
    STRATEGIES,
    apply_mlm_corruption,
    load_npmi_table,
    make_masks,
    resolve_masking_params,
    uniforms_per_token,
)
from .models import build_model as _build_model
from .models import use_fast_dropout

log = logging.getLogger(__name__)

ARCHITECTURES = ("mlm", "mae")
SCHEDULES = ("cosine", "onecycle")
METRIC_COLUMNS = [
    "step",
    "loss",
    "masked_acc",
    "mask_rate",
    "lr",
    "tokens_per_s",
    "peak_mem_mb",
    "peak_gpu_mem_mb",
]
# fields that do not change the trajectory of a run: left out of the config hash
_HASH_EXEMPT = ("checkpoint_every", "log_every", "num_threads", "prefetch")


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
        self.masking_params = resolve_masking_params(self.masking, self.masking_params, self.k)

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
# device, precision, processes
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run (``torchrun`` sets RANK, LOCAL_RANK and
    WORLD_SIZE); a plain run is rank 0 of 1."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Dist":
        env = os.environ if env is None else env
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, dist: Dist = Dist(), cuda_available: bool | None = None) -> torch.device:
    """``auto``: CUDA when available, else CPU. In a data-parallel run each process takes
    the GPU of its local rank (``cuda`` -> ``cuda:<local_rank>``)."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if name == "auto":
        name = "cuda" if cuda_available else "cpu"
    if name.startswith("cuda") and not cuda_available:
        raise RuntimeError(f"device {name!r} requested but CUDA is not available (set training.device: auto or cpu)")
    if name == "cuda":
        name = f"cuda:{dist.local_rank}"
    return torch.device(name)


def autocast_dtype(device: torch.device, bf16_supported: bool | None = None) -> torch.dtype | None:
    """Mixed precision of the forward pass: bf16 autocast on a CUDA device that supports it
    (Ampere and later); None (plain fp32, TF32 matmuls) on older GPUs and on the CPU, whose
    bf16 matmuls are emulated (slower than fp32) unless it has AMX/AVX512-BF16."""
    if device.type != "cuda":
        return None
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16_supported else None


def setup_device(cfg: TrainConfig, dist: Dist) -> tuple[torch.device, torch.dtype | None]:
    """Choose the device and precision and set the process-wide torch switches."""
    device = resolve_device(cfg.device, dist)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for the fp32 parts outside autocast
        torch.backends.cudnn.allow_tf32 = True
    return device, autocast_dtype(device)


def ddp_command(job_file, nproc: int, python: str = sys.executable) -> list[str]:
    """The ``torchrun`` command line that runs :func:`main` on ``nproc`` local processes."""
    if nproc < 2:
        raise ValueError(f"a data-parallel run needs >= 2 processes, got {nproc}")
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",  # single node, rendezvous on a free local port
        f"--nproc-per-node={nproc}",
        "-m",
        "dnalm.train",
        str(job_file),
    ]


def launch(
    cfg: TrainConfig,
    corpus_path,
    out_dir,
    metrics_path,
    checkpoint_dir,
    npmi_path=None,
    nproc: int = 1,
    python: str = sys.executable,
) -> dict:
    """Train in this process (``nproc`` <= 1) or with ``nproc`` data-parallel processes
    started by ``torchrun`` (one per GPU; on a CPU-only machine the processes share the
    cores, with ``num_threads // nproc`` threads each). Returns the run's summary."""
    if nproc <= 1:
        return train(cfg, corpus_path, out_dir, metrics_path, checkpoint_dir, npmi_path)
    if not torch.cuda.is_available():
        log.warning("%d data-parallel processes requested but CUDA is not available: running them on the CPU", nproc)
    threads = max(1, (cfg.num_threads or torch.get_num_threads()) // nproc)
    job = {
        "cfg": {**cfg.to_dict(), "num_threads": threads},
        "corpus_path": str(corpus_path),
        "out_dir": str(out_dir),
        "metrics_path": str(metrics_path),
        "checkpoint_dir": str(checkpoint_dir),
        "npmi_path": None if npmi_path is None else str(npmi_path),
    }
    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    job_file = Path(checkpoint_dir) / "ddp_job.json"
    with atomic_path(job_file) as tmp:
        tmp.write_text(json.dumps(job, indent=2))
    scripts_dir = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [scripts_dir, os.environ.get("PYTHONPATH")]))}
    env.setdefault("OMP_NUM_THREADS", str(threads))
    cmd = ddp_command(job_file, nproc, python)
    log.info("launching %d data-parallel processes: %s", nproc, " ".join(cmd))
    sys.stderr.flush()
    proc = subprocess.run(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"data-parallel training failed (torchrun exit status {proc.returncode}); see the log above")
    return json.loads((Path(out_dir) / "dnalm.json").read_text())


def main(argv: list[str] | None = None) -> None:
    """Entry point of a ``torchrun`` worker: ``python -m dnalm.train <job.json>``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m dnalm.train JOB.json  (written by dnalm.train.launch)")
    job = json.loads(Path(argv[0]).read_text())
    cfg = TrainConfig.from_dict(job.pop("cfg"))
    train(cfg, **job, dist=Dist.from_env())


# ----------------------------------------------------------------------------------------
# learning rate, optimizer, model
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
    """AdamW with weight decay on matrices (ndim >= 2) only: no decay on biases, LayerNorm
    weights or the MAE mask embedding (tied weights appear once; frozen ones not at all).
    The fused implementation (one kernel over all parameters, CPU and CUDA alike): on the
    CPU ~5x faster than the multi-tensor one and ~30x faster than the per-parameter loop."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps, fused=True)


def build_model(cfg: TrainConfig) -> torch.nn.Module:
    """The training module (:class:`dnalm.models.BertMLM` or :class:`dnalm.models.BertMAE`)."""
    return _build_model(cfg.architecture, cfg.size, cfg.decoder_size, seq.vocab_size(cfg.k), cfg.max_position)


# ----------------------------------------------------------------------------------------
# batches
# ----------------------------------------------------------------------------------------


@dataclass
class Batch:
    """One micro-batch: windows laid out in rows (several per row when packed).

    ``input_ids`` what the model reads (MLM: corrupted 80/10/10; MAE: the tokens);
    ``labels`` the original tokens; ``mask`` the positions to predict; ``segments`` 1, 2, ...
    for the windows of a row, 0 for padding; ``position_ids`` restart at 0 in every window.
    All (rows, width) arrays; ``packed`` says whether some row holds two windows or more.
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

    Draws from ``rng``, in this order, per micro-batch:

    1. ``rng.integers(0, n_windows, batch_size)``: the windows (uniform, with replacement);
    2. one ``rng.integers`` call over the windows longer than ``max_tokens`` allows, in batch
       order: their crop offsets (overlapping: any base; non-overlapping: a multiple of k,
       keeping the reading frame of inference);
    3. ``rng.random(n_tokens)`` (non-overlapping genemask: ``rng.random((n_tokens, 2))``):
       the uniforms of the batch's windows tokenized and concatenated, which is what
       :func:`dnalm.masking.make_mask` draws window after window
       (:func:`dnalm.masking.make_masks` computes the same masks at once);
    4. MLM only: the 80/10/10 corruption (:func:`dnalm.masking.apply_mlm_corruption`) of
       those concatenated tokens.

    The windows are then laid out in rows: one per row, or, with ``packing``, as many as fit
    in ``max_tokens`` (:func:`pack_rows`). Packing draws nothing, so a packed and an unpacked
    run see the same tokens, masks and corruptions.
    """

    def __init__(self, corpus: Corpus, cfg: TrainConfig, npmi: np.ndarray | None, rng: np.random.Generator):
        self.corpus, self.cfg, self.npmi, self.rng = corpus, cfg, npmi, rng
        if len(corpus) == 0:
            raise ValueError("the training corpus has no windows")
        n_kmers = cfg.max_tokens - 2
        self.overlapping = cfg.tokenization == "overlapping"
        self.max_bases = n_kmers + cfg.k - 1 if self.overlapping else n_kmers * cfg.k
        self.vocab = seq.vocab_size(cfg.k)
        self.masking_params = resolve_masking_params(cfg.masking, cfg.masking_params, cfg.k)
        self.uniforms = uniforms_per_token(cfg.masking, cfg.tokenization)
        self.offsets = np.array(corpus.offsets)  # in memory: read per batch
        self.n_windows = len(corpus)

    def windows(self) -> tuple[np.ndarray, np.ndarray]:
        """Draws 1-2: (start in ``corpus.bases``, length) of each cropped window."""
        cfg = self.cfg
        idx = self.rng.integers(0, self.n_windows, size=cfg.batch_size)
        starts, lengths = self.offsets[idx], self.offsets[idx + 1] - self.offsets[idx]
        excess = lengths - self.max_bases
        long = excess > 0
        if self.overlapping:
            offset = self.rng.integers(0, excess[long] + 1)
        else:
            offset = cfg.k * self.rng.integers(0, excess[long] // cfg.k + 1)
        starts[long] += offset
        return starts, np.minimum(lengths, self.max_bases)

    def next(self) -> Batch:
        cfg = self.cfg
        starts, lengths = self.windows()
        flat_ids, tok_off = seq.tokenize_windows(self.corpus.bases, starts, lengths, cfg.k, cfg.tokenization)
        n = flat_ids.shape[0]
        u = self.rng.random(n) if self.uniforms == 1 else self.rng.random((n, self.uniforms))
        flat_mask = make_masks(flat_ids, tok_off, cfg.masking, cfg.tokenization, cfg.k, self.masking_params, self.npmi, u)
        if cfg.architecture == "mlm":
            flat_inputs, _ = apply_mlm_corruption(flat_ids, flat_mask, self.vocab, self.rng)
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
            n_masked=int(flat_mask.sum()),
        )


class BatchStream:
    """Micro-batches of a :class:`Batcher`, prepared ``depth`` ahead in a background thread.

    Yields ``(batch, rng_state)`` where ``rng_state`` is the batcher generator's state right
    after that batch was drawn: the state a checkpoint must hold to resume with the next
    batch, however many batches the thread has prepared beyond it. ``depth`` 0 draws
    inline. The thread is the only user of the generator while the stream is open; use the
    stream as a context manager so that the thread stops with the loop.
    """

    def __init__(self, batcher: Batcher, depth: int, pin: bool = False):
        self.batcher, self.depth, self.pin = batcher, depth, pin
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _draw(self):
        batch = self.batcher.next()
        return batch, batch.tensors(pin=self.pin), self.batcher.rng.bit_generator.state

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                item = ("ok", self._draw())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # handed to the consumer, raised there
            self._queue.put(("error", exc))

    def __enter__(self) -> "BatchStream":
        if self.depth > 0:
            self._thread = threading.Thread(target=self._produce, name="dnalm-batches", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():  # unblock a producer waiting on a full queue
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                self._thread.join(timeout=0.05)

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        if self.depth == 0:
            return self._draw()
        kind, payload = self._queue.get()
        if kind == "error":
            raise payload
        return payload


# ----------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def config_hash(cfg: TrainConfig, corpus_path, npmi_path=None, world_size: int = 1) -> str:
    """sha256 over the config (minus logging/checkpoint cadence, threads and prefetch), the
    number of data-parallel processes and the contents of the corpus and NPMI files: what
    decides the trajectory of a run."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in _HASH_EXEMPT}
    d["corpus_sha256"] = file_sha256(corpus_path)
    d["npmi_sha256"] = file_sha256(npmi_path) if (npmi_path is not None and cfg.masking == "genemask") else None
    if world_size != 1:
        d["world_size"] = world_size
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


_CKPT_RE = re.compile(r"ckpt-(\d{8})-([0-9a-f]{12})")


def _torch_rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def save_checkpoint(checkpoint_dir, step, fingerprint, model, optimizer, numpy_states, torch_states, extra: dict) -> Path:
    """Write a checkpoint atomically (temporary directory, then rename); drop older ones.

    ``numpy_states``/``torch_states``: one entry per rank (bit-generator state dicts;
    ``{"torch": ByteTensor, "cuda": ByteTensor}``)."""
    from safetensors.torch import save_model

    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"ckpt-{step:08d}-{fingerprint[:12]}"
    tmp = checkpoint_dir / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save([{k: v.cpu() for k, v in s.items()} for s in torch_states], tmp / "rng.pt")
    state = {"step": step, "config_hash": fingerprint, "numpy_rng": list(numpy_states), **extra}
    (tmp / "state.json").write_text(json.dumps(state))
    if final.exists():  # only if an identical run wrote it already
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoint_dir.iterdir():
        if old != final and _CKPT_RE.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(checkpoint_dir, fingerprint: str, cleanup: bool = True) -> tuple[Path, dict] | None:
    """Latest checkpoint whose config hash matches; others are skipped with a log message.
    Leftover temporary directories of interrupted writes are removed (``cleanup``)."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return None
    if cleanup:
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


def load_checkpoint(path: Path, state: dict, model, optimizer, rng: np.random.Generator, device, rank: int = 0):
    """Restore weights, optimizer and this rank's RNG states in place (``weights_only`` loads)."""
    from safetensors.torch import load_model

    load_model(model, str(path / "model.safetensors"), device=str(device))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    torch_state = torch.load(path / "rng.pt", weights_only=True)[rank]
    torch.set_rng_state(torch_state["torch"])
    if "cuda" in torch_state and device.type == "cuda":
        torch.cuda.set_rng_state(torch_state["cuda"], device)
    rng.bit_generator.state = state["numpy_rng"][rank]


# ----------------------------------------------------------------------------------------
# the training loop
# ----------------------------------------------------------------------------------------


def _peak_mem_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _new_interval() -> dict:
    return {"loss": 0.0, "n_steps": 0, "correct": 0.0, "masked": 0, "maskable": 0, "tokens": 0}


def _gather(obj, dist: Dist) -> list:
    """``obj`` of every rank, in rank order (a one-element list in a plain run)."""
    if not dist.enabled:
        return [obj]
    out = [None] * dist.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def train(
    cfg: TrainConfig,
    corpus_path,
    out_dir,
    metrics_path,
    checkpoint_dir,
    npmi_path=None,
    step_callback: Callable[[int], None] | None = None,
    dist: Dist = Dist(),
) -> dict:
    """Pretrain a model; returns the summary also written to ``out_dir/dnalm.json``.

    ``out_dir`` receives the encoder-bearing model (``save_pretrained``, safetensors; MLM:
    the BertForMaskedLM, MAE: the encoder BertModel), the tokenizer and ``dnalm.json``;
    ``metrics_path`` a TSV with :data:`METRIC_COLUMNS`, one row every ``log_every`` steps
    and one at the last step (loss, masked_acc, mask_rate are means over the steps since
    the previous row, over all processes; mask_rate = masked / maskable tokens;
    tokens_per_s counts real tokens of all processes; peak_mem_mb is the peak resident
    memory of the (rank-0) process, peak_gpu_mem_mb the peak CUDA memory allocated on its
    GPU, empty on CPU). ``npmi_path`` (the NPMI TSV of ``dnalm.npmi``) is required for
    GeneMask masking. ``step_callback(step)`` is called after every optimizer step (progress
    hooks, tests). ``dist``: this process's rank in a data-parallel run (see :func:`launch`).
    """
    from tqdm import tqdm

    if not logging.getLogger().handlers:  # a bare script: make the resume messages visible
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    log.setLevel(logging.INFO if dist.main else logging.WARNING)

    # --- setup ----------------------------------------------------------------------------
    device, amp_dtype = setup_device(cfg, dist)
    if dist.enabled:
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        corpus = load_corpus(corpus_path)
        npmi = None
        if cfg.masking == "genemask":
            if npmi_path is None:
                raise ValueError("genemask masking needs npmi_path (the NPMI table of dnalm.npmi)")
            npmi = load_npmi_table(npmi_path, cfg.k)
        fingerprint = config_hash(cfg, corpus_path, npmi_path, dist.world_size)
        vocab = seq.vocab_size(cfg.k)

        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        model = build_model(cfg).to(device)
        if device.type == "cpu":
            use_fast_dropout(model)  # torch.bernoulli_ is single-threaded and slow on the CPU
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, dist.rank]).generate_state(1)[0]))  # dropout
        if device.type == "cuda":
            torch.cuda.manual_seed(int(np.random.SeedSequence([cfg.seed, dist.rank, 1]).generate_state(1)[0]))
        rng = np.random.default_rng([cfg.seed, dist.rank])  # data and masking
        optimizer = make_optimizer(model, cfg)
        batcher = Batcher(corpus, cfg, npmi, rng)

        # --- resume -------------------------------------------------------------------------
        start, rows = 0, []
        interval = _new_interval()
        interval_seconds = 0.0  # wall time of the current metrics interval before a resume
        totals = {"masked": 0, "maskable": 0}
        found = find_checkpoint(checkpoint_dir, fingerprint, cleanup=dist.main)
        if found is not None:
            path, state = found
            load_checkpoint(path, state, model, optimizer, rng, device, dist.rank)
            start, rows, totals = state["step"], state["rows"], state["totals"]
            # this rank's unfinished metrics interval (sums since the last row, and its wall
            # time so far, so that the next row's tokens_per_s counts only time spent training)
            interval = dict(state["intervals"][dist.rank])
            interval_seconds = interval.pop("seconds")
            log.info("resumed from %s (step %d of %d)", path, start, cfg.steps)
        else:
            log.info(
                "starting from scratch (%d steps, %s/%s, %s, k=%d, device %s%s, %d process(es))",
                cfg.steps,
                cfg.architecture,
                cfg.masking,
                cfg.tokenization,
                cfg.k,
                device,
                f", {amp_dtype} autocast" if amp_dtype else "",
                dist.world_size,
            )
        net = model
        if dist.enabled:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        autocast = (
            torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
        )
        # running sums live on the device (no host sync per step); float64 for exact resumes
        loss_sum = torch.tensor(interval["loss"], dtype=torch.float64, device=device)
        correct_sum = torch.tensor(interval["correct"], dtype=torch.float64, device=device)
        rng_state = rng.bit_generator.state  # after the last consumed batch

        def interval_state() -> dict:
            return {**interval, "loss": loss_sum.item(), "correct": correct_sum.item()}

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
        t_last = time.perf_counter() - interval_seconds
        # on the CPU the batch pipeline costs ~0.2 % of a step and a third busy thread only
        # disturbs torch's threads; on a GPU, batches prepared ahead hide the host work
        prefetch = cfg.prefetch if cfg.prefetch is not None else (2 if device.type == "cuda" else 0)
        with BatchStream(batcher, prefetch, pin=device.type == "cuda") as batches:
            for step in range(start, cfg.steps):
                lr = lr_at(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr

                for micro in range(cfg.grad_accum):
                    batch, tensors, rng_state = next(batches)
                    interval["masked"] += batch.n_masked
                    interval["maskable"] += batch.n_maskable
                    interval["tokens"] += batch.n_tokens
                    inputs = {
                        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                        for k, v in tensors.items()
                    }
                    # gradients are all-reduced across processes on the last micro-batch only
                    last = micro == cfg.grad_accum - 1
                    sync = net.no_sync() if (dist.enabled and not last) else contextlib.nullcontext()
                    with sync:
                        with autocast:
                            out = net(**inputs)
                        (out["loss"] / cfg.grad_accum).backward()
                    loss_sum += out["loss"].detach().double() / cfg.grad_accum
                    correct_sum += (out["logits_masked"].argmax(-1) == out["labels_masked"]).sum().double()

                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                interval["n_steps"] += 1
                done = step + 1

                if done % cfg.log_every == 0 or done == cfg.steps:
                    iv = interval_state()
                    if dist.enabled:  # sums over all processes (loss: mean of the processes' means)
                        keys = ("loss", "correct", "masked", "maskable", "tokens")
                        summed = torch.tensor([float(iv[k]) for k in keys], dtype=torch.float64, device=device)
                        torch.distributed.all_reduce(summed)
                        iv.update(dict(zip(keys, summed.tolist())))
                        iv["loss"] /= dist.world_size
                    now = time.perf_counter()
                    row = {
                        "step": done,
                        "loss": iv["loss"] / iv["n_steps"],
                        "masked_acc": iv["correct"] / max(1, iv["masked"]),
                        "mask_rate": iv["masked"] / max(1, iv["maskable"]),
                        "lr": lr,
                        "tokens_per_s": iv["tokens"] / max(now - t_last, 1e-9),
                        "peak_mem_mb": _peak_mem_mb(),
                        "peak_gpu_mem_mb": (
                            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
                        ),
                    }
                    rows.append(row)
                    totals["masked"] += int(iv["masked"])
                    totals["maskable"] += int(iv["maskable"])
                    interval = _new_interval()
                    loss_sum.zero_()
                    correct_sum.zero_()
                    bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['masked_acc']:.3f}", refresh=False)
                    t_last = now

                if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                    numpy_states = _gather(rng_state, dist)
                    torch_states = _gather(_torch_rng_state(device), dist)
                    intervals = _gather({**interval_state(), "seconds": time.perf_counter() - t_last}, dist)
                    if dist.main:
                        save_checkpoint(
                            checkpoint_dir,
                            done,
                            fingerprint,
                            model,
                            optimizer,
                            numpy_states,
                            torch_states,
                            {"config": cfg.to_dict(), "rows": rows, "intervals": intervals, "totals": totals},
                        )
                    if dist.enabled:
                        torch.distributed.barrier()
                bar.update(1)
                if step_callback is not None:
                    step_callback(done)
        bar.close()

        # --- final outputs --------------------------------------------------------------------
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
            "processes": dist.world_size,
            "device": device.type,
            "config_hash": fingerprint,
        }
        if dist.main:
            _save_final(model, cfg, summary, out_dir)
            write_tsv(pd.DataFrame(rows, columns=METRIC_COLUMNS), metrics_path)
            log.info(
                "done: final loss %.4f, mean mask rate %.4f -> %s",
                summary["final_loss"],
                summary["mean_mask_rate"],
                out_dir,
            )
        if dist.enabled:
            torch.distributed.barrier()
        return summary
    finally:
        if dist.enabled and torch.distributed.is_initialized():
            # Free DDP (its C++ Reducer holds a reference to the process group) while the
            # group is still registered, so that the group's last reference is dropped by
            # destroy_process_group, whose holders release the GIL. Dropped by the Reducer
            # instead, ProcessGroupGloo's destructor joins its worker threads with the GIL
            # held while a worker may need the GIL to free a finished collective's tensors:
            # a deadlock seen here about once in a few runs (pytorch/pytorch#56297).
            net = sync = None  # noqa: F841
            gc.collect()
            torch.distributed.destroy_process_group()


def _save_final(model, cfg: TrainConfig, summary: dict, out_dir) -> None:
    """Model + tokenizer + dnalm.json into a temporary directory renamed onto ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.to("cpu").save_pretrained(tmp)
        seq.save_tokenizer(tmp, cfg.k, model_max_length=cfg.max_position)
        # plain write: the whole directory becomes visible atomically by the rename below
        (tmp / "dnalm.json").write_text(json.dumps(summary, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


if __name__ == "__main__":
    main()
