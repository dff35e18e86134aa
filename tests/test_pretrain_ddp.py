"""Data-parallel pretraining through torchrun, exercised on the CPU (gloo backend): the
same code path a multi-GPU job takes (launch, per-rank data, gradient all-reduce, rank-0
checkpoints with every rank's RNG state, resume)."""

import json
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from dnalm.corpus import Corpus, save_corpus
from dnalm.train import TrainConfig, config_hash, launch


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    rng = np.random.default_rng(3)
    wins = [rng.integers(0, 4, int(rng.integers(10, 120))).astype(np.uint8) for _ in range(100)]
    path = tmp_path_factory.mktemp("ddp") / "corpus.npz"
    save_corpus(path, Corpus.from_arrays(wins))
    return path


def test_two_process_run_trains_checkpoints_and_resumes(corpus_path, tmp_path):
    cfg = TrainConfig(
        k=3, max_tokens=24, size={"layers": 1, "hidden": 16, "heads": 2}, steps=4, batch_size=4,
        warmup_steps=1, checkpoint_every=2, log_every=2, num_threads=2, device="cpu",
    )  # fmt: skip
    out, metrics, ckpt = tmp_path / "model", tmp_path / "metrics.tsv", tmp_path / "ckpt"
    summary = launch(cfg, corpus_path, out, metrics, ckpt, nproc=2)
    assert summary["processes"] == 2 and summary["device"] == "cpu"
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    m = pd.read_csv(metrics, sep="\t")
    assert m["step"].tolist() == [2, 4] and np.isfinite(m["loss"]).all()
    # the checkpoint holds both ranks' generator states (different streams), under a hash
    # that includes the number of processes
    (last,) = [d for d in ckpt.iterdir() if d.name.startswith("ckpt-")]
    state = json.loads((last / "state.json").read_text())
    assert last.name == f"ckpt-00000004-{config_hash(cfg, corpus_path, world_size=2)[:12]}"
    assert len(state["numpy_rng"]) == 2 and state["numpy_rng"][0] != state["numpy_rng"][1]
    assert len(torch.load(last / "rng.pt", weights_only=True)) == 2
    first = load_file(str(out / "model.safetensors"))

    # rerun: resumes at the end, trains nothing, writes the same model
    launch(cfg, corpus_path, out, metrics, ckpt, nproc=2)
    again = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert pd.read_csv(metrics, sep="\t").equals(m)


def test_failed_workers_fail_the_launch(tmp_path):
    """A torchrun exit status other than 0 raises (here a stand-in interpreter that fails)."""
    cfg = TrainConfig(k=3, max_tokens=24, steps=2, batch_size=2, device="cpu", num_threads=2)
    with pytest.raises(RuntimeError, match="data-parallel training failed"):
        launch(cfg, tmp_path / "c.npz", tmp_path / "m", tmp_path / "m.tsv", tmp_path / "ck", nproc=2, python="false")
    job = json.loads((tmp_path / "ck" / "ddp_job.json").read_text())
    assert job["cfg"]["num_threads"] == 1  # the threads are shared out between the processes
    assert TrainConfig.from_dict(job["cfg"]).steps == 2 and job["out_dir"] == str(tmp_path / "m")
    assert not (tmp_path / "m").exists()
