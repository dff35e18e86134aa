"""Training checkpoints: write one atomically, keep the last two, resume from the newest
valid one.

Layout (``checkpoint_dir/ckpt-<step:08d>-<hash12>/``, written to a temporary directory and
renamed, :func:`dnalm.io.atomic_dir`):

* ``model.safetensors``: every weight of the training module (MLM: the BertForMaskedLM;
  MAE: encoder + projection + decoder + head), ``safetensors.torch.save_model``;
* ``optimizer.pt``: AdamW state dict, and ``rng.pt``: torch (and CUDA) RNG states of every
  rank, both loaded with ``torch.load(weights_only=True)``;
* ``state.json``: step, config hash, the config, the numpy bit-generator state of every
  rank, and what the caller adds (the training loop: its metrics state).

While a run trains, the newest two checkpoints of its trajectory are kept, so that a damaged
newest one (e.g. a truncated ``model.safetensors`` after a node failure) costs one
checkpoint interval, not the run: :func:`find_checkpoint` reads every file of a checkpoint
before choosing it and falls back to the previous one with a warning naming the damaged
folder. A finished run keeps only its last checkpoint (the saved model holds the same
weights).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .io import atomic_dir, file_digest

if TYPE_CHECKING:
    from .train import TrainConfig

log = logging.getLogger("dnalm.train")

#: config fields that do not change the trajectory of a run: left out of the config hash.
#: ``eval_every`` (like ``log_every``) only says which metrics rows carry a validation value
#: (the evaluation draws nothing and changes no weight), so a run resumed with another value
#: continues the same trajectory, its rows at the new cadence; ``pooling`` is read at
#: embedding time only. ``val_fraction`` and ``val_max_windows`` are hashed: they decide
#: which windows are trained on.
HASH_EXEMPT = ("checkpoint_every", "log_every", "num_threads", "prefetch", "tensorboard", "eval_every", "pooling")
_CKPT_RE = re.compile(r"ckpt-(\d{8})-([0-9a-f]{12})")
_STATE_KEYS = ("step", "config_hash", "numpy_rng")


class CheckpointError(RuntimeError):
    """No usable checkpoint although the run has some; the message names them and the fix."""


@dataclass
class Checkpoint:
    """A checkpoint read in full (:func:`find_checkpoint`), ready to restore."""

    path: Path
    state: dict  # state.json
    optimizer: dict  # the optimizer's state dict
    torch_rng: list  # per rank: {"torch": ByteTensor, "cuda": ByteTensor}

    @property
    def step(self) -> int:
        return int(self.state["step"])


def config_hash(cfg: TrainConfig, corpus_path, npmi_path=None, world_size: int = 1) -> str:
    """sha256 over the config (minus :data:`HASH_EXEMPT`), the number of data-parallel
    processes and the contents of the corpus and NPMI files: what decides the trajectory of
    a run. ``cfg``: a ``dnalm.train.TrainConfig``."""
    d = {k: v for k, v in cfg.to_dict().items() if k not in HASH_EXEMPT}
    d["corpus_sha256"] = file_digest(corpus_path)
    d["npmi_sha256"] = file_digest(npmi_path) if (npmi_path is not None and cfg.masking == "genemask") else None
    if world_size != 1:
        d["world_size"] = world_size
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def torch_rng_state(device: torch.device) -> dict:
    """This process's torch (and CUDA) generator states."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Checkpoint folders, newest step first."""
    if not checkpoint_dir.is_dir():
        return []
    return sorted((d for d in checkpoint_dir.iterdir() if _CKPT_RE.fullmatch(d.name)), reverse=True)


def save_checkpoint(
    checkpoint_dir, step, fingerprint, model, optimizer, numpy_states, torch_states, extra: dict, keep: int = 2
) -> Path:
    """Write a checkpoint atomically, then keep it and the newest ``keep - 1`` older ones of
    the same run (other runs' checkpoints and any newer ones, left by a trajectory this run
    has replaced, are removed).

    ``numpy_states``/``torch_states``: one entry per rank (bit-generator state dicts;
    ``{"torch": ByteTensor, "cuda": ByteTensor}``)."""
    from safetensors.torch import save_model

    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / f"ckpt-{step:08d}-{fingerprint[:12]}"
    with atomic_dir(final) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save([{k: v.cpu() for k, v in s.items()} for s in torch_states], tmp / "rng.pt")
        state = {"step": step, "config_hash": fingerprint, "numpy_rng": list(numpy_states), **extra}
        # plain write: the whole directory becomes visible atomically by the rename
        (tmp / "state.json").write_text(json.dumps(state))
    older = [d for d in _checkpoints(checkpoint_dir) if d != final]
    kept = [d for d in older if d.name.endswith(fingerprint[:12]) and int(d.name[5:13]) < step][: keep - 1]
    for old in older:
        if old not in kept:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(path: Path, device: torch.device) -> Checkpoint:
    """Read every file of a checkpoint (the weights only to check them); raises
    :class:`CheckpointError` naming the file and the problem."""
    from safetensors.torch import load_file

    try:
        state = json.loads((path / "state.json").read_text())
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"state.json lacks {missing}")
        load_file(str(path / "model.safetensors"))
        optimizer = torch.load(path / "optimizer.pt", map_location=device, weights_only=True)
        torch_rng = torch.load(path / "rng.pt", weights_only=True)
    except Exception as exc:  # truncated or missing files, bad JSON, unpickling errors, ...
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if len(torch_rng) != len(state["numpy_rng"]):
        raise CheckpointError(f"{path}: {len(torch_rng)} torch RNG states but {len(state['numpy_rng'])} numpy ones")
    return Checkpoint(path, state, optimizer, torch_rng)


def find_checkpoint(checkpoint_dir, fingerprint: str, device: torch.device | None = None, cleanup: bool = True):
    """The newest valid checkpoint of this run (config hash ``fingerprint``), or None when
    it has none.

    Checkpoints of other configs are skipped with a log message; a damaged one of this run
    (any file unreadable) is skipped with a warning naming its folder, and the previous one
    is tried. If the run has checkpoints but none is readable, :class:`CheckpointError`
    names them and the fix, rather than silently training from the start. ``cleanup``
    removes leftover temporary directories of interrupted writes (one process only)."""
    checkpoint_dir = Path(checkpoint_dir)
    device = torch.device("cpu") if device is None else device
    if cleanup and checkpoint_dir.is_dir():
        for tmp in checkpoint_dir.glob(".tmp-ckpt-*"):
            shutil.rmtree(tmp, ignore_errors=True)
    damaged: list[tuple[Path, CheckpointError]] = []
    for path in _checkpoints(checkpoint_dir):
        if not path.name.endswith(fingerprint[:12]):
            log.warning(
                "ignoring checkpoint %s: its config hash differs from this run's (config or inputs changed)", path
            )
            continue
        try:
            found = read_checkpoint(path, device)
        except CheckpointError as exc:
            log.warning("damaged checkpoint, trying the one before: %s", exc)
            damaged.append((path, exc))
            continue
        if found.state["config_hash"] != fingerprint:  # the same 12 first hex digits only
            log.warning("ignoring checkpoint %s: its config hash differs from this run's", path)
            continue
        if damaged:
            newer = ", ".join(str(p) for p, _ in damaged)
            log.warning("resuming from %s, not from the damaged newer checkpoint(s) %s", path, newer)
        return found
    if damaged:
        raise CheckpointError(
            f"no readable checkpoint of this run in {checkpoint_dir}: {'; '.join(str(e) for _, e in damaged)}. "
            f"Delete the damaged checkpoint folder(s) ({', '.join(str(p) for p, _ in damaged)}) to train this "
            "model from the start."
        )
    return None


def load_checkpoint(ckpt: Checkpoint, model, optimizer, rng: np.random.Generator, device, rank: int = 0) -> None:
    """Restore weights, optimizer and this rank's RNG states in place."""
    from safetensors.torch import load_model

    load_model(model, str(ckpt.path / "model.safetensors"), device=str(device))
    optimizer.load_state_dict(ckpt.optimizer)
    torch_state = ckpt.torch_rng[rank]
    torch.set_rng_state(torch_state["torch"])
    if "cuda" in torch_state and device.type == "cuda":
        torch.cuda.set_rng_state(torch_state["cuda"], device)
    rng.bit_generator.state = ckpt.state["numpy_rng"][rank]
