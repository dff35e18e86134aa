"""The metrics of a training run: sums over the steps since the last row, one row every
``log_every`` steps (:class:`RunningMetrics`), written to ``metrics.tsv`` and, optionally, as
TensorBoard scalars (:class:`TensorBoardLog`).

A row's loss, masked_acc and mask_rate are means over the steps since the previous row, over
all processes (masked_acc = correct / predicted tokens; mask_rate = masked / maskable tokens,
empty for the causal model, which masks nothing: its loss and masked_acc are those of the
next-token prediction of every k-mer); val_loss and val_masked_acc are the same measures on
the held-out validation slice after the row's step (:mod:`dnalm.validation`), empty on rows
without an evaluation; tokens_per_s counts the real tokens of all processes over the wall
time those steps took (also across a resume: a checkpoint holds the time spent so far in the
unfinished interval; evaluations are not counted); peak_mem_mb is the peak resident memory
of the (rank-0) process, peak_gpu_mem_mb the peak CUDA memory allocated on its GPU (empty on
the CPU).
"""

from __future__ import annotations

import resource
import time

import pandas as pd
import torch

METRIC_COLUMNS = [
    "step",
    "loss",
    "masked_acc",
    "mask_rate",
    "val_loss",
    "val_masked_acc",
    "lr",
    "tokens_per_s",
    "peak_mem_mb",
    "peak_gpu_mem_mb",
]
_SUMMED = ("loss", "correct", "predicted", "masked", "maskable", "tokens")  # all-reduced over the processes


def _peak_mem_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class RunningMetrics:
    """Add micro-batches (:meth:`add`) and steps (:meth:`end_step`); :meth:`row` closes the
    interval into a metrics row. :meth:`state_dict` / :meth:`load_state_dict` carry the rows,
    the run's totals and the unfinished interval through a checkpoint.

    The loss and accuracy sums stay on the device (no host synchronisation per step), in
    float64 so that a resumed run adds exactly what an uninterrupted one does. ``masking``
    False (the causal model): rows and :attr:`mean_mask_rate` have no mask rate.
    """

    def __init__(self, device: torch.device, dist, masking: bool = True):
        self.device, self.dist, self.masking = device, dist, masking
        self.rows: list[dict] = []
        self.totals = {"masked": 0, "maskable": 0}
        self._reset()

    def _reset(self, interval: dict | None = None, seconds: float = 0.0) -> None:
        iv = interval or {
            "loss": 0.0, "n_steps": 0, "correct": 0.0, "predicted": 0, "masked": 0, "maskable": 0, "tokens": 0
        }  # fmt: skip
        self.n_steps, self.tokens = iv["n_steps"], iv["tokens"]
        self.predicted, self.masked, self.maskable = iv["predicted"], iv["masked"], iv["maskable"]
        self.loss = torch.tensor(iv["loss"], dtype=torch.float64, device=self.device)
        self.correct = torch.tensor(iv["correct"], dtype=torch.float64, device=self.device)
        self._seconds = seconds  # wall time of this interval before the clock (re)started
        self._t0 = time.perf_counter() - seconds

    def start_clock(self) -> None:
        """Time the interval from now on (plus what a checkpoint carried over)."""
        self._t0 = time.perf_counter() - self._seconds

    def add(self, batch, out: dict, grad_accum: int) -> None:
        """One micro-batch: its token counts (``batch``: a :class:`dnalm.batches.Batch`) and
        the training module's output (``loss``, and ``logits_masked``/``labels_masked`` at
        the predicted positions)."""
        self.predicted += batch.n_predicted
        self.masked += batch.n_masked
        self.maskable += batch.n_maskable
        self.tokens += batch.n_tokens
        self.loss += out["loss"].detach().double() / grad_accum
        self.correct += (out["logits_masked"].argmax(-1) == out["labels_masked"]).sum().double()

    def end_step(self) -> None:
        self.n_steps += 1

    def _interval(self) -> dict:
        return {
            "loss": self.loss.item(),
            "n_steps": self.n_steps,
            "correct": self.correct.item(),
            "predicted": self.predicted,
            "masked": self.masked,
            "maskable": self.maskable,
            "tokens": self.tokens,
        }

    def row(self, step: int, lr: float) -> dict:
        """Close the interval: its row (over all processes: a collective in a data-parallel
        run), appended to :attr:`rows`; the validation columns are None until the caller
        fills them in (:meth:`add_validation`)."""
        iv = self._interval()
        if self.dist.enabled:  # sums over all processes (loss: mean of the processes' means)
            summed = torch.tensor([float(iv[k]) for k in _SUMMED], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(summed)
            iv.update(dict(zip(_SUMMED, summed.tolist())))
            iv["loss"] /= self.dist.world_size
        now = time.perf_counter()
        row = {
            "step": step,
            "loss": iv["loss"] / iv["n_steps"],
            "masked_acc": iv["correct"] / max(1, iv["predicted"]),
            "mask_rate": iv["masked"] / max(1, iv["maskable"]) if self.masking else None,
            "val_loss": None,
            "val_masked_acc": None,
            "lr": lr,
            "tokens_per_s": iv["tokens"] / max(now - self._t0, 1e-9),
            "peak_mem_mb": _peak_mem_mb(),
            "peak_gpu_mem_mb": (
                torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None
            ),
        }
        self.rows.append(row)
        self.totals["masked"] += int(iv["masked"])
        self.totals["maskable"] += int(iv["maskable"])
        self._reset()
        self._t0 = now
        return row

    def add_validation(self, values: dict) -> None:
        """Put ``val_loss`` and ``val_masked_acc`` (:meth:`dnalm.validation.Validation.evaluate`)
        on the last row, and restart the interval's clock (the evaluation is not training
        time)."""
        self.rows[-1].update(values)
        self._t0 = time.perf_counter()

    def final_validation(self) -> dict:
        """``final_val_loss`` / ``final_val_masked_acc``: the last row's evaluation (None
        without one)."""
        last = next((r for r in reversed(self.rows) if r.get("val_loss") is not None), {})
        return {"final_val_loss": last.get("val_loss"), "final_val_masked_acc": last.get("val_masked_acc")}

    def state_dict(self) -> dict:
        """Rows, totals and every process's unfinished interval with the wall time it took
        so far (a collective in a data-parallel run: every rank calls it)."""
        mine = {**self._interval(), "seconds": time.perf_counter() - self._t0}
        return {"rows": self.rows, "totals": self.totals, "intervals": self.dist.gather(mine)}

    def load_state_dict(self, state: dict) -> None:
        """Restore from a checkpoint's state (this process's own interval)."""
        self.rows, self.totals = list(state["rows"]), dict(state["totals"])
        interval = dict(state["intervals"][self.dist.rank])
        self._reset(interval, interval.pop("seconds"))

    @property
    def mean_mask_rate(self) -> float | None:
        if not self.masking:
            return None
        return self.totals["masked"] / max(1, self.totals["maskable"])

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=METRIC_COLUMNS)


class TensorBoardLog:
    """Every metrics row also as TensorBoard scalars ``train/<column>`` at its step, in
    event files under ``log_dir`` (offline; ``tensorboard --logdir``). After a resume from
    step ``resumed_at``, the rows a killed run logged beyond its checkpoint are hidden
    (``purge_step``) and logged again as they come."""

    def __init__(self, log_dir, resumed_at: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ImportError(
                "training.tensorboard: true needs the tensorboard package (pip install tensorboard), "
                f"which cannot be imported here ({exc}); install it or set training.tensorboard: false"
            ) from exc
        self.writer = SummaryWriter(str(log_dir), purge_step=resumed_at + 1 if resumed_at else None)

    def write(self, row: dict) -> None:
        for column in METRIC_COLUMNS[1:]:
            if row[column] is not None:
                self.writer.add_scalar(f"train/{column}", row[column], row["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
