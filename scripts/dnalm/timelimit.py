"""Stop training shortly before the SLURM job's time limit, so that a retry resumes it.

Inside a SLURM job, :func:`stop_before_limit` asks SLURM how long the job has left
(``squeue -h -j $SLURM_JOB_ID -o %L``) and, ``margin_s`` seconds before the limit, sends
this process SIGUSR1: the training loop (or the launcher of data-parallel workers) finishes
its step, writes a checkpoint and exits with status 75 (:mod:`dnalm.preemption`); the
Snakemake retry of ``profiles/slurm`` submits the job again and it resumes from that
checkpoint.

Why not ``sbatch --signal=USR1@<seconds>``: SLURM sends that signal to every process of the
job's steps. Under snakemake-executor-plugin-slurm one of them is the Snakemake process that
runs the rule inside the job (``srun ... python -m snakemake``), which SIGUSR1 kills (it
installs no handler); the training process is orphaned, and SLURM ends the step when the
orphan exits or 60 s later, whichever comes first. The watchdog signals this process only, so
the training gets the whole margin and Snakemake records the job's exit status. (Plugin
support for SLURM's warning signal is snakemake-executor-plugin-slurm issue #242.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping

log = logging.getLogger("dnalm.timelimit")

#: what squeue prints for a job without a usable limit
NO_LIMIT = {"", "UNLIMITED", "NOT_SET", "INVALID", "N/A"}


def parse_time_left(text: str) -> int | None:
    """Seconds in squeue's ``%L`` (``[days-][hours:]minutes:seconds``); None for no limit."""
    text = text.strip()
    if text.upper() in NO_LIMIT:
        return None
    days, dash, clock = text.rpartition("-")
    try:
        parts = [int(p) for p in clock.split(":")]
        if not 1 <= len(parts) <= 3 or min(parts) < 0 or (dash and not days.isdigit()):
            raise ValueError
        seconds = 0
        for part in parts:
            seconds = 60 * seconds + part
        return seconds + 86400 * int(days or 0)
    except ValueError:
        raise ValueError(
            f"squeue printed {text!r} as the job's time left; expected [days-][hours:]minutes:seconds"
        ) from None


def time_left(job_id: str, run: Callable = subprocess.run) -> int | None:
    """Seconds until the time limit of SLURM job ``job_id`` (None: no limit, or squeue failed)."""
    cmd = ["squeue", "-h", "-j", str(job_id), "-o", "%L"]
    try:
        proc = run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("%s failed (%s): no stop before the time limit", " ".join(cmd), err)
        return None
    lines = proc.stdout.split()
    if proc.returncode != 0 or not lines:
        log.warning("%s failed (exit status %d: %s): no stop before the time limit", " ".join(cmd), proc.returncode,
                    proc.stderr.strip())  # fmt: skip
        return None
    return parse_time_left(lines[0])


@contextlib.contextmanager
def stop_before_limit(
    margin_s: float,
    env: Mapping[str, str] | None = None,
    query: Callable[[str], int | None] = time_left,
    poll_s: float = 0.5,
) -> Iterator[float | None]:
    """While open, inside a SLURM job with a time limit, send this process SIGUSR1
    ``margin_s`` seconds before the limit. Yields the seconds until then, or None when no
    signal will come (no SLURM job, no limit, ``margin_s`` <= 0, or not more time left than
    ``margin_s``: SLURM's SIGTERM at the limit then stops the run).

    While the block is open and the training loop is not listening, a SIGUSR1 is only logged
    (its default action would kill the process); the watchdog's own signal waits until the
    loop (or the data-parallel launcher) has installed its handler, checked every ``poll_s``
    seconds, so that it is never spent before training starts."""
    env = os.environ if env is None else env
    job_id = env.get("SLURM_JOB_ID")
    left = query(job_id) if job_id and margin_s > 0 else None
    if left is None:
        yield None
        return
    delay = left - margin_s
    if delay <= 0:
        log.warning(
            "SLURM job %s has %d s left, not more than stop_before_limit_s=%g: the run is stopped by SLURM "
            "at the limit (SIGTERM) instead", job_id, left, margin_s,
        )  # fmt: skip
        yield None
        return
    log.info("SLURM job %s: time limit in %d s; training checkpoints and stops %g s before it", job_id, left, margin_s)
    done = threading.Event()

    def absorb(signum, frame) -> None:
        log.warning("got %s outside the training loop: ignored", signal.Signals(signum).name)

    def watch() -> None:
        if done.wait(delay):
            return
        log.warning("SLURM job %s: %g s to the time limit: asking training to checkpoint and stop", job_id, margin_s)
        while signal.getsignal(signal.SIGUSR1) is absorb:  # training has not started (yet)
            if done.wait(poll_s):
                return
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGUSR1, absorb)
    watcher = threading.Thread(target=watch, name="dnalm-timelimit", daemon=True)
    watcher.start()
    try:
        yield delay
    finally:
        done.set()
        watcher.join()
        if previous is not None:
            signal.signal(signal.SIGUSR1, previous)
