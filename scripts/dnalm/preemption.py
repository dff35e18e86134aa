"""Stopping a training run cleanly when the scheduler asks.

SLURM sends SIGTERM at a job's time limit, and in a SLURM job :mod:`dnalm.timelimit` sends
the training process SIGUSR1 some minutes before it (SLURM's own ``--signal`` would also
reach, and kill, the Snakemake process of the job); other schedulers send SIGTERM before they
preempt a job. While the
training loop runs, either signal only sets a flag (:class:`StopRequest`): the loop finishes
its optimizer step, writes a checkpoint, and the process exits with
:data:`PREEMPTED_EXIT_CODE` (:class:`Preempted`), so that a retry (Snakemake ``retries``, a
SLURM requeue) resumes from that checkpoint with the weights an uninterrupted run has.

Data-parallel runs: every worker installs the handlers, and the ranks agree once per step
(an all-reduce of the flags on a small gloo group, started one step ahead so it never waits)
so they all stop after the same step. The launching process (:func:`dnalm.distributed.launch`)
catches the signals too (:func:`forward_to_file`): it creates a stop file that rank 0 checks
every step, and ``torchrun`` forwards SIGTERM/SIGUSR1 to the workers itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

log = logging.getLogger("dnalm.train")

#: exit status of a run stopped by a signal after writing a checkpoint (EX_TEMPFAIL of
#: sysexits.h: "temporary failure, retry"); rerunning the job resumes it
PREEMPTED_EXIT_CODE = 75
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
#: in the checkpoint folder: written by rank 0 when it stops for a signal (step, checkpoint)
MARKER = "preempted.json"


class Preempted(SystemExit):
    """The run stopped on a signal after writing a checkpoint at ``step``; uncaught, the
    process exits with :data:`PREEMPTED_EXIT_CODE`."""

    def __init__(self, step: int, checkpoint, signal_name: str):
        super().__init__(PREEMPTED_EXIT_CODE)
        self.step, self.checkpoint, self.signal_name = step, str(checkpoint), signal_name

    def __str__(self) -> str:
        return (
            f"training stopped by {self.signal_name} after step {self.step}; checkpoint {self.checkpoint}; "
            f"exit status {PREEMPTED_EXIT_CODE}: rerun to resume"
        )


@contextlib.contextmanager
def _handlers(handler) -> Iterator[bool]:
    """Install ``handler`` for :data:`SIGNALS` while open (main thread only; elsewhere
    signals cannot be caught and nothing is installed). Yields whether it was installed."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield True
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class StopRequest:
    """While open, SIGTERM/SIGUSR1 ask the training loop to stop instead of killing it.

    :meth:`requested` (once per step, on every rank) returns the name of the signal that
    asked (any rank's; or the stop file's name, checked by rank 0) or None. In a
    data-parallel run the answer is the ranks' agreement started at the previous call, so a
    signal is acted on one step later, by every rank after the same step.
    """

    def __init__(self, dist, stop_file: str | Path | None = None):
        self.dist = dist
        self.stop_file = None if stop_file is None else Path(stop_file)
        self.signum = 0
        self._stack = contextlib.ExitStack()
        self._group = None
        self._pending = None  # (work, tensor) of the all-reduce started by the last call

    def _handler(self, signum, frame) -> None:
        self.signum = signum

    def __enter__(self) -> StopRequest:
        self._stack.enter_context(_handlers(self._handler))
        if self.dist.enabled:
            self._group = torch.distributed.new_group(backend="gloo")
            self._start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._pending is not None and exc_type is None:
            self._pending[0].wait()  # every rank ran the same collectives
        self._stack.close()

    def _local(self) -> list[int]:
        file_asks = self.dist.main and self.stop_file is not None and self.stop_file.exists()
        return [self.signum, int(file_asks)]

    def _start(self) -> None:
        flags = torch.tensor(self._local(), dtype=torch.int64)
        work = torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX, group=self._group, async_op=True)
        self._pending = (work, flags)

    def requested(self) -> str | None:
        if self.dist.enabled:
            work, flags = self._pending
            work.wait()
            signum, file_asks = flags.tolist()
            self._start()
        else:
            signum, file_asks = self._local()
        if signum:
            return signal.Signals(signum).name
        if file_asks:
            return f"stop file {self.stop_file}"
        return None


@contextlib.contextmanager
def forward_to_file(stop_file: str | Path) -> Iterator[None]:
    """While open, SIGTERM/SIGUSR1 create ``stop_file`` (read by rank 0 of the workers
    every step) instead of killing this process, which keeps waiting for its workers."""
    stop_file = Path(stop_file)

    def handler(signum, frame):
        log.warning("got %s: asking the training processes to checkpoint and stop", signal.Signals(signum).name)
        stop_file.touch()

    with _handlers(handler):
        yield


def write_marker(checkpoint_dir, step: int, checkpoint, signal_name: str) -> None:
    """Record that the run stopped for a signal (read by the launching process)."""
    info = {"step": step, "checkpoint": str(checkpoint), "signal": signal_name}
    (Path(checkpoint_dir) / MARKER).write_text(json.dumps(info) + "\n")


def read_marker(checkpoint_dir) -> Preempted | None:
    """The :class:`Preempted` a run's workers recorded, or None."""
    path = Path(checkpoint_dir) / MARKER
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    return Preempted(info["step"], info["checkpoint"], info["signal"])
