"""Data-parallel pretraining through torchrun, exercised on the CPU (gloo backend): the
same code path a multi-GPU job takes (launch, per-rank data, gradient all-reduce, rank-0
checkpoints with every rank's RNG state, resume)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from dnalm.corpus import Corpus, save_corpus
from dnalm.train import TrainConfig, config_hash, launch

SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts")


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    rng = np.random.default_rng(3)
    wins = [rng.integers(0, 4, int(rng.integers(10, 120))).astype(np.uint8) for _ in range(100)]
    path = tmp_path_factory.mktemp("ddp") / "corpus.npz"
    save_corpus(path, Corpus.from_arrays(wins))
    return path


# a torchrun worker that trains like ``python -m dnalm.train`` but SIGKILLs itself (every
# rank) after optimizer step ``stop``: the run dies between two checkpoints
KILLED_WORKER = textwrap.dedent("""
    import json, os, signal, sys
    from dnalm.train import Dist, TrainConfig, train

    job = json.loads(open(sys.argv[1]).read())
    stop = int(sys.argv[2])

    def die(step):
        if step == stop:
            os.kill(os.getpid(), signal.SIGKILL)

    train(TrainConfig.from_dict(job.pop("cfg")), **job, step_callback=die, dist=Dist.from_env())
    """)


def test_two_process_run_trains_checkpoints_and_resumes(corpus_path, tmp_path):
    cfg = TrainConfig(
        k=3, max_tokens=24, size={"layers": 1, "hidden": 16, "heads": 2}, steps=6, batch_size=4,
        warmup_steps=1, checkpoint_every=2, log_every=3, num_threads=2, device="cpu",
    )  # fmt: skip
    out, metrics, ckpt = tmp_path / "model", tmp_path / "metrics.tsv", tmp_path / "ckpt"
    summary = launch(cfg, corpus_path, out, metrics, ckpt, nproc=2)
    assert summary["processes"] == 2 and summary["device"] == "cpu"
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    m = pd.read_csv(metrics, sep="\t")
    assert m["step"].tolist() == [3, 6] and np.isfinite(m["loss"]).all()
    # the checkpoint holds both ranks' generator states (different streams), under a hash
    # that includes the number of processes
    (last,) = [d for d in ckpt.iterdir() if d.name.startswith("ckpt-")]
    state = json.loads((last / "state.json").read_text())
    assert last.name == f"ckpt-00000006-{config_hash(cfg, corpus_path, world_size=2)[:12]}"
    assert len(state["numpy_rng"]) == 2 and state["numpy_rng"][0] != state["numpy_rng"][1]
    assert len(state["intervals"]) == 2
    assert len(torch.load(last / "rng.pt", weights_only=True)) == 2
    reference = load_file(str(out / "model.safetensors"))

    # the same run killed (both processes, SIGKILL) after step 5: its latest checkpoint is
    # step 4, half-way through the metrics interval 4-6 (checkpoint_every 2, log_every 3)
    out2, metrics2, ckpt2 = tmp_path / "model2", tmp_path / "metrics2.tsv", tmp_path / "ckpt2"
    ckpt2.mkdir()
    job = ckpt2 / "job.json"
    job.write_text(json.dumps({
        "cfg": {**cfg.to_dict(), "num_threads": 1}, "corpus_path": str(corpus_path), "out_dir": str(out2),
        "metrics_path": str(metrics2), "checkpoint_dir": str(ckpt2), "npmi_path": None,
    }))  # fmt: skip
    worker = tmp_path / "killed_worker.py"
    worker.write_text(KILLED_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(worker), str(job), "5"]
    env = {**os.environ, "PYTHONPATH": SCRIPTS, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert [d.name for d in ckpt2.iterdir() if d.name.startswith("ckpt-")] == [f"ckpt-00000004-{last.name[14:]}"]
    assert not out2.exists() and not metrics2.exists()

    # resumed by the ordinary launch: each rank restores its own generators and its own
    # unfinished metrics sums; the weights equal the uninterrupted run's, bit for bit
    launch(cfg, corpus_path, out2, metrics2, ckpt2, nproc=2)
    resumed = load_file(str(out2 / "model.safetensors"))
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    cols = ["step", "loss", "masked_acc", "mask_rate", "lr"]
    pd.testing.assert_frame_equal(pd.read_csv(metrics2, sep="\t")[cols], m[cols])


def test_failed_workers_fail_the_launch(tmp_path):
    """A torchrun exit status other than 0 raises (here a stand-in interpreter that fails)."""
    cfg = TrainConfig(k=3, max_tokens=24, steps=2, batch_size=2, device="cpu", num_threads=2)
    with pytest.raises(RuntimeError, match="data-parallel training failed"):
        launch(cfg, tmp_path / "c.npz", tmp_path / "m", tmp_path / "m.tsv", tmp_path / "ck", nproc=2, python="false")
    job = json.loads((tmp_path / "ck" / "ddp_job.json").read_text())
    assert job["cfg"]["num_threads"] == 1  # the threads are shared out between the processes
    assert TrainConfig.from_dict(job["cfg"]).steps == 2 and job["out_dir"] == str(tmp_path / "m")
    assert not (tmp_path / "m").exists()
