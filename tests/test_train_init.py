"""The untrained control of a model (dnalm.train.save_initial): exactly the weights a training
run starts from, saved like a trained model, scored on the same validation slice."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import write_random_corpus
from dnalm import embed
from dnalm.train import TrainConfig, build_model, lr_at, save_initial, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    return write_random_corpus(tmp_path_factory.mktemp("icorpus") / "corpus.npz", 3, 100, 20, 150)


def tiny(**kw) -> TrainConfig:
    d = {
        "k": 3, "max_tokens": 32, "size": {"layers": 2, "hidden": 32, "heads": 2},
        "decoder_size": {"layers": 1, "hidden": 32, "heads": 2}, "steps": 1, "warmup_steps": 1, "batch_size": 8,
        "lr": 3e-3, "log_every": 1, "checkpoint_every": 1, "num_threads": 1, "val_fraction": 0.1, "seed": 5,
    }  # fmt: skip
    d.update(kw)
    return TrainConfig(**d)


def weights(model_dir) -> dict:
    return load_file(str(Path(model_dir) / "model.safetensors"))


@pytest.mark.parametrize("arch", ["mlm", "mae", "clm"])
def test_control_is_the_state_training_starts_from(arch, corpus_path, tmp_path):
    cfg = tiny(architecture=arch, tokenization="non-overlapping" if arch == "mae" else "overlapping")
    summary = save_initial(cfg, tmp_path / "init", corpus_path, extra={"control_of": "m"})
    saved = weights(tmp_path / "init")

    # 1. torch.manual_seed(seed) + build_model, the recipe train() follows, saved directly
    torch.manual_seed(cfg.seed)
    build_model(cfg).save_pretrained(tmp_path / "direct")
    direct = weights(tmp_path / "direct")
    assert saved and direct.keys() == saved.keys()
    assert all(torch.equal(direct[k], saved[k]) for k in saved)

    # 2. a train() run whose only step has learning rate 0 (warmup) leaves its initial weights
    assert lr_at(0, cfg) == 0.0
    run_summary = train(cfg, corpus_path, tmp_path / "run", tmp_path / "m.tsv", tmp_path / "ckpt")
    trained = weights(tmp_path / "run")
    assert trained.keys() == saved.keys()
    assert all(torch.equal(trained[k], saved[k]) for k in saved)
    # the same validation slice and masks: the run's evaluation after that step is step 0's
    assert summary["final_val_loss"] == run_summary["final_val_loss"]
    assert summary["final_val_masked_acc"] == run_summary["final_val_masked_acc"]
    assert summary["validation"]["baselines"] == run_summary["validation"]["baselines"]
    assert summary["config_hash"] == run_summary["config_hash"]

    meta = json.loads((tmp_path / "init" / "dnalm.json").read_text())
    assert meta["steps"] == 0 and meta["final_loss"] is None and meta["control_of"] == "m"
    assert meta["architecture"] == arch and meta["mean_mask_rate"] is None
    # loadable and embeddable like a trained model
    model, loaded = embed.load_encoder(tmp_path / "init", device="cpu")
    vec = embed.embed_sequences(model, loaded, ["ACGTACGTTTGACA" * 3], batch_size=2)
    assert vec.shape == (1, 32) and np.isfinite(vec).all()


def test_control_weights_follow_the_seed_and_need_no_corpus(tmp_path):
    a = save_initial(tiny(seed=1), tmp_path / "a")
    save_initial(tiny(seed=1), tmp_path / "b")
    save_initial(tiny(seed=2), tmp_path / "c")
    wa, wb, wc = (weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert a["final_val_loss"] is None and a["validation"] is None and a["config_hash"] is None
