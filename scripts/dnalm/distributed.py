"""Data-parallel training: this process's rank (:class:`Dist`), and starting a run on one
node (``torchrun --standalone``) or on the nodes of a SLURM job (``srun torchrun`` with a
c10d rendezvous) from the job's process (:func:`launch`, :func:`ddp_command`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import preemption
from .io import atomic_path

if TYPE_CHECKING:
    from .train import TrainConfig

log = logging.getLogger("dnalm.train")

#: signals torchrun forwards to its workers (its default list, plus SLURM's early warning)
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
STOP_FILE = "stop-requested"


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run (``torchrun`` sets RANK, LOCAL_RANK and
    WORLD_SIZE); a plain run is rank 0 of 1."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Dist:
        env = os.environ if env is None else env
        return cls(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj) -> list:
        """``obj`` of every rank, in rank order (a one-element list in a plain run); a
        collective: every rank calls it."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out


# ----------------------------------------------------------------------------------------
# the command line
# ----------------------------------------------------------------------------------------


def slurm_nodes(env: Mapping[str, str]) -> int:
    """Nodes of the SLURM job this process runs in (1 outside SLURM)."""
    return int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)


def slurm_head_node(env: Mapping[str, str]) -> str:
    """First host of the job's node list (``scontrol show hostnames $SLURM_JOB_NODELIST``)."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise RuntimeError("a multi-node run needs SLURM_JOB_NODELIST (is this a SLURM job?)")
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True, env=dict(env)
    ).stdout.split()
    if not out:
        raise RuntimeError(f"scontrol show hostnames {nodelist!r} listed no host")
    return out[0]


def gpus_per_node(resources: Mapping) -> int:
    """GPUs per node of a pretraining job (rule resources): its ``gpu`` resource, or, in a
    multi-node job, which asks for them per node as ``gres: gpu:N`` (``gpu:type:N``) because
    the plugin's ``gpu`` means the whole job's (``sbatch --gpus``), the N of ``gres``."""
    n = int(resources.get("gpu", 0) or 0)
    if n:
        return n
    for item in str(resources.get("gres", "") or "").split(","):
        name, *rest = item.strip().split(":")
        if name == "gpu":
            return int(rest[-1]) if rest and rest[-1].isdigit() else 1
    return 0


def rendezvous_port(job_id: str | int) -> int:
    """A port in 20000-29999 derived from the SLURM job id: the same for every node of the
    job (and for a requeued job), different for jobs that may share a head node, and below
    Linux's ephemeral range (32768-60999)."""
    return 20000 + int(job_id) % 10000


def ddp_command(
    job_file, nproc: int, python: str = sys.executable, nodes: int = 1, env: Mapping[str, str] | None = None
) -> list[str]:
    """The command line that runs ``python -m dnalm.train <job_file>`` on ``nproc``
    processes per node.

    One node: ``torchrun --standalone`` (rendezvous on a free local port). Several nodes
    (``nodes`` > 1, inside a SLURM job of that many nodes, ``env`` defaulting to this
    process's environment): ``srun`` starts one ``torchrun`` per node, which meet at the
    c10d rendezvous on the job's first node, at :func:`rendezvous_port`, under the job id.
    ``srun --overlap``: this process runs in a job step of its own (the Snakemake job's
    ``srun -n1``), which holds CPUs of the first node; without it the new step waits for them
    forever.
    """
    if nodes < 1 or nproc < 1 or nodes * nproc < 2:
        raise ValueError(f"a data-parallel run needs >= 2 processes, got {nodes} node(s) x {nproc}")
    torchrun = [python, "-m", "torch.distributed.run"]
    worker = ["-m", "dnalm.train", str(job_file)]
    if nodes == 1:
        return [*torchrun, "--standalone", f"--nproc-per-node={nproc}", *worker]
    env = os.environ if env is None else env
    have = slurm_nodes(env)
    if have != nodes:
        raise RuntimeError(
            f"nodes: {nodes} needs a SLURM job with {nodes} nodes, but this job has {have} "
            "(SLURM_JOB_NUM_NODES); request them with the job's `nodes` resource"
        )
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job_id:
        raise RuntimeError("a multi-node run needs SLURM_JOB_ID (is this a SLURM job?)")
    srun = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--overlap", "--kill-on-bad-exit=1"]
    if env.get("SLURM_CPUS_PER_TASK"):  # srun does not inherit sbatch's --cpus-per-task
        srun.append(f"--cpus-per-task={env['SLURM_CPUS_PER_TASK']}")
    return [
        *srun,
        *torchrun,
        f"--nnodes={nodes}",
        f"--nproc-per-node={nproc}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={slurm_head_node(env)}:{rendezvous_port(job_id)}",
        f"--rdzv-id={job_id}",
        *worker,
    ]


# ----------------------------------------------------------------------------------------
# launching
# ----------------------------------------------------------------------------------------


def launch(
    cfg: TrainConfig,
    corpus_path,
    out_dir,
    metrics_path,
    checkpoint_dir,
    npmi_path=None,
    nproc: int = 1,
    python: str = sys.executable,
    nodes: int = 1,
) -> dict:
    """Train in this process (one process in all), or with ``nproc`` data-parallel
    processes per node on ``nodes`` nodes started by ``torchrun`` (one per GPU; on a
    CPU-only machine the processes share the cores, with ``num_threads // nproc`` threads
    each). Returns the run's summary.

    A SIGTERM/SIGUSR1 to this process (or to the workers) stops the workers after their
    current step with a checkpoint; this process then raises
    :class:`dnalm.preemption.Preempted` (exit status 75 when uncaught).
    """
    from .train import train

    nproc = max(1, nproc)  # a CPU-only node runs one process
    if nproc * nodes <= 1:
        return train(cfg, corpus_path, out_dir, metrics_path, checkpoint_dir, npmi_path)
    if not torch.cuda.is_available():
        log.warning("%d data-parallel processes requested but CUDA is not available: running them on the CPU", nproc)
    threads = max(1, (cfg.num_threads or torch.get_num_threads()) // nproc)
    checkpoint_dir = Path(checkpoint_dir)
    stop_file = checkpoint_dir / STOP_FILE
    job = {
        "cfg": {**cfg.to_dict(), "num_threads": threads},
        "corpus_path": str(corpus_path),
        "out_dir": str(out_dir),
        "metrics_path": str(metrics_path),
        "checkpoint_dir": str(checkpoint_dir),
        "npmi_path": None if npmi_path is None else str(npmi_path),
        "stop_file": str(stop_file),
    }
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    job_file = checkpoint_dir / "ddp_job.json"
    with atomic_path(job_file) as tmp:
        tmp.write_text(json.dumps(job, indent=2))
    for stale in (stop_file, checkpoint_dir / preemption.MARKER):
        stale.unlink(missing_ok=True)
    scripts_dir = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [scripts_dir, os.environ.get("PYTHONPATH")]))}
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env.setdefault("PET_SIGNALS_TO_HANDLE", TORCHRUN_SIGNALS)  # torchrun's --signals-to-handle
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "300")  # seconds the workers get to checkpoint
    cmd = ddp_command(job_file, nproc, python, nodes)
    log.info("launching %d x %d data-parallel processes: %s", nodes, nproc, " ".join(cmd))
    sys.stderr.flush()
    with preemption.forward_to_file(stop_file):
        proc = subprocess.run(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr)
    stop_file.unlink(missing_ok=True)
    if proc.returncode != 0:
        stopped = preemption.read_marker(checkpoint_dir)
        if stopped is not None:
            log.warning("%s", stopped)
            raise stopped
        raise RuntimeError(f"data-parallel training failed (torchrun exit status {proc.returncode}); see the log above")
    return json.loads((Path(out_dir) / "dnalm.json").read_text())
