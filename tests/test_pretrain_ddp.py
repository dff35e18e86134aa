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
from safetensors.torch import load_file, load_model

from conftest import write_random_corpus
from dnalm.corpus import load_corpus
from dnalm.train import Batcher, Dist, TrainConfig, build_model, config_hash, launch
from dnalm.validation import Validation

SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts")


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    return write_random_corpus(tmp_path_factory.mktemp("ddp") / "corpus.npz", 3, 100, 10, 120)


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


@pytest.mark.parametrize("arch", ["mlm", "clm"])
def test_two_process_run_trains_checkpoints_and_resumes(corpus_path, tmp_path, arch):
    cfg = TrainConfig(
        k=3, max_tokens=24, size={"layers": 1, "hidden": 16, "heads": 2}, steps=6, batch_size=4,
        warmup_steps=1, checkpoint_every=2, log_every=3, num_threads=2, device="cpu", architecture=arch,
    )  # fmt: skip
    out, metrics, ckpt = tmp_path / "model", tmp_path / "metrics.tsv", tmp_path / "ckpt"
    summary = launch(cfg, corpus_path, out, metrics, ckpt, nproc=2)
    assert summary["processes"] == 2 and summary["device"] == "cpu"
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    m = pd.read_csv(metrics, sep="\t")
    assert m["step"].tolist() == [3, 6] and np.isfinite(m["loss"]).all()
    # the validation slice is evaluated by both processes, half of its batches each
    assert np.isfinite(m["val_loss"]).all() and summary["final_val_loss"] == m["val_loss"].iloc[-1]
    # the checkpoint holds both ranks' generator states (different streams), under a hash
    # that includes the number of processes
    (last,) = [d for d in ckpt.iterdir() if d.name.startswith("ckpt-")]
    state = json.loads((last / "state.json").read_text())
    assert last.name == f"ckpt-00000006-{config_hash(cfg, corpus_path, world_size=2)[:12]}"
    assert len(state["numpy_rng"]) == 2 and state["numpy_rng"][0] != state["numpy_rng"][1]
    assert len(state["intervals"]) == 2
    assert len(torch.load(last / "rng.pt", weights_only=True)) == 2
    reference = load_file(str(out / "model.safetensors"))
    # ... and their sums are those of one process scoring every batch with the final weights
    module = build_model(cfg).eval()
    load_model(module, str(last / "model.safetensors"))
    validation = Validation(Batcher(load_corpus(corpus_path), cfg, None, np.random.default_rng(0)), cfg)
    assert len(validation.batches) == 2
    alone = validation.evaluate(module, lambda t: module(**t), Dist())
    assert alone["val_loss"] == pytest.approx(m["val_loss"].iloc[-1], rel=1e-6)
    assert alone["val_masked_acc"] == pytest.approx(m["val_masked_acc"].iloc[-1])

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
    # the last two checkpoints of an unfinished run are kept (a damaged newest one falls back)
    kept = sorted(d.name for d in ckpt2.iterdir() if d.name.startswith("ckpt-"))
    assert kept == [f"ckpt-0000000{s}-{last.name[14:]}" for s in (2, 4)]
    assert not out2.exists() and not metrics2.exists()

    # resumed by the ordinary launch: each rank restores its own generators and its own
    # unfinished metrics sums; the weights equal the uninterrupted run's, bit for bit
    launch(cfg, corpus_path, out2, metrics2, ckpt2, nproc=2)
    resumed = load_file(str(out2 / "model.safetensors"))
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    cols = ["step", "loss", "masked_acc", "mask_rate", "val_loss", "val_masked_acc", "lr"]
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


# a job's process that launches a two-process run (as scripts/pretrain.py does)
LAUNCHER = textwrap.dedent("""
    import json, sys
    from dnalm.distributed import launch
    from dnalm.train import TrainConfig

    a = json.loads(sys.argv[1])
    launch(TrainConfig.from_dict(a["cfg"]), a["corpus"], a["out"], a["metrics"], a["ckpt"], nproc=2)
    """)


def test_signals_stop_a_data_parallel_run_after_a_checkpoint(corpus_path, tmp_path):
    """SIGTERM to the job's process alone (it asks the workers through a stop file that rank 0
    reads; rank 1 learns it from rank 0), then SIGUSR1 to every process of the job at once
    (as SLURM's --signal does; torchrun forwards it too): each time both ranks stop after the
    same step, rank 0 writes that step's checkpoint, the job exits with status 75; the final
    rerun ends with the weights of an uninterrupted run."""
    import signal
    import time

    from dnalm.preemption import PREEMPTED_EXIT_CODE

    cfg = TrainConfig(
        k=3, max_tokens=24, size={"layers": 1, "hidden": 16, "heads": 2}, steps=240, batch_size=8,
        warmup_steps=1, checkpoint_every=30, log_every=20, num_threads=2, device="cpu",
    )  # fmt: skip
    launch(cfg, corpus_path, tmp_path / "ref", tmp_path / "ref.tsv", tmp_path / "ref_ckpt", nproc=2)
    reference = load_file(str(tmp_path / "ref" / "model.safetensors"))

    ckpt = tmp_path / "ckpt"
    args = {"cfg": cfg.to_dict(), "corpus": str(corpus_path), "out": str(tmp_path / "model"),
            "metrics": str(tmp_path / "metrics.tsv"), "ckpt": str(ckpt)}  # fmt: skip
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "PYTHONPATH": SCRIPTS}
    stopped_at = []
    for sig, whole_group in ((signal.SIGTERM, False), (signal.SIGUSR1, True)):
        before = max([int(d.name[5:13]) for d in ckpt.glob("ckpt-*")], default=0)
        proc = subprocess.Popen([sys.executable, str(launcher), json.dumps(args)], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.time() + 120
        while max([int(d.name[5:13]) for d in ckpt.glob("ckpt-*")], default=0) <= before:  # training again
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        if whole_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == PREEMPTED_EXIT_CODE, err[-3000:]
        marker = json.loads((ckpt / "preempted.json").read_text())
        step = marker["step"]
        assert before < step < 240
        assert marker["signal"] == (sig.name if whole_group else f"stop file {ckpt / 'stop-requested'}")
        assert f"ckpt-{step:08d}-" in marker["checkpoint"] and Path(marker["checkpoint"]).is_dir()
        assert max(int(d.name[5:13]) for d in ckpt.glob("ckpt-*")) == step
        assert not (tmp_path / "model").exists() and not (ckpt / "stop-requested").exists()
        stopped_at.append(step)
    assert stopped_at[0] < stopped_at[1]

    launch(cfg, corpus_path, tmp_path / "model", tmp_path / "metrics.tsv", ckpt, nproc=2)
    resumed = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    cols = ["step", "loss", "masked_acc", "mask_rate", "val_loss", "val_masked_acc", "lr"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "metrics.tsv", sep="\t")[cols],
                                  pd.read_csv(tmp_path / "ref.tsv", sep="\t")[cols])  # fmt: skip
