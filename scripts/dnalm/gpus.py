"""GPU leases: every concurrently running GPU job on one machine gets its own devices.

Snakemake caps the sum of the ``gpu`` resource of running jobs (``--resources gpu=N``, set in
``profiles/default``) but has no notion of *which* GPU a job gets. A rule script calls
:func:`pin` before it touches CUDA; it

* inside a SLURM job (``SLURM_JOB_ID`` set) leaves ``CUDA_VISIBLE_DEVICES`` to the scheduler
  (it sets the variable for jobs that asked for GPUs; a job that asked for none is given an
  empty list so that it cannot use a GPU by accident);
* elsewhere leases ``n`` distinct devices from the pool (the ids in ``CUDA_VISIBLE_DEVICES``
  if the variable is set, else every GPU of the machine) and sets ``CUDA_VISIBLE_DEVICES`` to
  exactly those ids; a job that requests no GPU sees none (``CUDA_VISIBLE_DEVICES=""``).

A lease is an exclusive ``flock`` on one file per device in a lock folder shared by all jobs
of the machine (``$DNALM_GPU_LOCK_DIR``, default ``<tmp>/dnalm-gpu-locks``). The kernel drops
the lock when the process ends, however it ends (no stale leases after a crash or a kill).
A job that cannot get all its devices at once releases the ones it got and retries, so two
jobs that each want two GPUs cannot deadlock.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

VISIBLE = "CUDA_VISIBLE_DEVICES"
LOCK_DIR_ENV = "DNALM_GPU_LOCK_DIR"
SCHEDULER_ENV = "SLURM_JOB_ID"

_log = logging.getLogger("dnalm.gpus")


@dataclass
class Lease:
    """Devices held by this process until :meth:`release` (or until the process ends)."""

    devices: list[str]
    source: str  # "lease" | "scheduler" | "none"
    _fds: list[int] = field(default_factory=list, repr=False)

    def release(self) -> None:
        for fd in self._fds:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._fds = []

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def default_lock_dir(env: MutableMapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "dnalm-gpu-locks")


def detect_gpus(proc_dir: str | Path = "/proc/driver/nvidia/gpus", nvidia_smi: str | None = "nvidia-smi") -> int:
    """Number of NVIDIA GPUs of the machine, found without initialising CUDA in this process
    (CUDA reads ``CUDA_VISIBLE_DEVICES`` once, when it initialises)."""
    proc = Path(proc_dir)
    if proc.is_dir():
        return sum(1 for p in proc.iterdir() if p.is_dir())
    exe = shutil.which(nvidia_smi) if nvidia_smi else None
    if exe:
        try:
            out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return 0
        return sum(1 for line in out.splitlines() if line.startswith("GPU "))
    return 0


def device_pool(env: MutableMapping[str, str] | None = None, detect=detect_gpus) -> list[str]:
    """Device ids jobs may lease: those of ``CUDA_VISIBLE_DEVICES`` when it is set (the user
    restricted the run to them; ``""`` means none), else ``0..n-1`` for the machine's GPUs."""
    env = os.environ if env is None else env
    if VISIBLE in env:
        return [d.strip() for d in env[VISIBLE].split(",") if d.strip()]
    return [str(i) for i in range(detect())]


def _lock_path(lock_dir: Path, device: str) -> Path:
    return lock_dir / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"


def _open_lock(path: Path) -> int:
    """Open (or create, readable and writable by every user) a lock file. Opening an existing
    file without O_CREAT also works where another user created it in a sticky folder
    (Linux's fs.protected_regular refuses O_CREAT there)."""
    for flags in (os.O_RDWR, os.O_RDWR | os.O_CREAT | os.O_EXCL, os.O_RDWR):
        try:
            fd = os.open(path, flags, 0o666)
        except (FileNotFoundError, FileExistsError):  # gone / created meanwhile: next way
            continue
        except PermissionError as err:
            raise PermissionError(f"cannot open GPU lock file {path} ({err.strerror}); set {LOCK_DIR_ENV}") from None
        if flags & os.O_CREAT:
            try:
                os.fchmod(fd, 0o666)  # whatever the umask
            except OSError:
                pass
        return fd
    raise OSError(f"cannot open GPU lock file {path}")


def _try_lock(lock_dir: Path, device: str) -> int | None:
    """An fd holding the device's lock, or None when another process holds it."""
    fd = _open_lock(_lock_path(lock_dir, device))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    try:  # who holds it, for people reading the lock folder
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    return fd


def acquire(
    n: int,
    pool: Sequence[str],
    lock_dir: str | Path | None = None,
    timeout: float | None = None,
    poll: float = 0.5,
    log: logging.Logger | None = None,
) -> Lease:
    """Lease ``n`` distinct devices of ``pool``, waiting (up to ``timeout`` s; None: forever)
    while other processes hold them."""
    log = log or _log
    if n <= 0:
        return Lease([], "none")
    if n > len(pool):
        raise ValueError(f"cannot lease {n} GPU(s) from a pool of {len(pool)}: {list(pool)}")
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    if not lock_dir.is_dir():
        lock_dir.mkdir(parents=True, exist_ok=True)
        try:  # shared by every user's jobs, like /tmp
            os.chmod(lock_dir, 0o1777)
        except OSError:
            pass
    start = time.monotonic()
    announced = False
    while True:
        held: list[tuple[str, int]] = []
        for device in pool:
            fd = _try_lock(lock_dir, device)
            if fd is not None:
                held.append((device, fd))
                if len(held) == n:
                    return Lease([d for d, _ in held], "lease", [fd for _, fd in held])
        for _, fd in held:  # never hold some while waiting for more: no deadlock
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        waited = time.monotonic() - start
        if timeout is not None and waited >= timeout:
            raise TimeoutError(f"no {n} free GPU(s) of {list(pool)} within {timeout} s (locks in {lock_dir})")
        if not announced:
            log.info("waiting for %d free GPU(s) of %s (locks in %s)", n, list(pool), lock_dir)
            announced = True
        time.sleep(poll * (0.5 + random.random()))


def pin(
    n: int | None,
    env: MutableMapping[str, str] | None = None,
    lock_dir: str | Path | None = None,
    timeout: float | None = None,
    log: logging.Logger | None = None,
    detect=detect_gpus,
) -> Lease:
    """Restrict this process to ``n`` GPUs of its own by setting ``CUDA_VISIBLE_DEVICES``.

    Call it before anything initialises CUDA and keep the returned lease referenced for the
    lifetime of the job (its devices are free again when the process ends)."""
    env = os.environ if env is None else env
    log = log or _log
    n = int(n or 0)
    if SCHEDULER_ENV in env:
        why = "set by the scheduler"
        if n == 0 and VISIBLE not in env:
            env[VISIBLE], why = "", "no GPU requested"
        log.info("SLURM job %s: %s=%r (%s)", env[SCHEDULER_ENV], VISIBLE, env.get(VISIBLE), why)
        return Lease(_split(env.get(VISIBLE, "")), "scheduler")
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # ids as nvidia-smi numbers them
    pool = device_pool(env, detect) if n > 0 else []
    if n > 0 and not pool:
        log.warning("the job requests %d GPU(s) but none is visible: it runs on the CPU", n)
    elif n > len(pool):
        log.warning("the job requests %d GPU(s) but only %d are visible: it gets %d", n, len(pool), len(pool))
    lease = acquire(min(n, len(pool)), pool, lock_dir, timeout=timeout, log=log)
    env[VISIBLE] = ",".join(lease.devices)
    why = f"leased from {pool}" if lease.devices else ("no GPU requested" if n == 0 else "no GPU visible")
    log.info("%s=%r (%s)", VISIBLE, env[VISIBLE], why)
    return lease


def _split(value: str) -> list[str]:
    return [d.strip() for d in value.split(",") if d.strip()]
