"""The held-out validation slice of pretraining (dnalm.validation): disjoint from the
training draws, fixed masks, evaluated without touching any training generator, equal to a
direct computation, identical after a resume; its rows in metrics.tsv and dnalm.json."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, load_model

from conftest import write_random_corpus
from dnalm import seq
from dnalm.batches import Batcher
from dnalm.checkpoint import config_hash
from dnalm.corpus import Corpus, load_corpus, save_corpus, validation_split
from dnalm.distributed import Dist
from dnalm.train import TrainConfig, build_model, train
from dnalm.validation import Validation, validation_table

TINY = {"layers": 2, "hidden": 32, "heads": 2}  # BERT's dropout 0.1: evaluation must not draw


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    return write_random_corpus(tmp_path_factory.mktemp("vcorpus") / "corpus.npz", 7, 120, 20, 150)


def tiny(**kw) -> TrainConfig:
    d = {
        "k": 3, "max_tokens": 32, "size": TINY, "decoder_size": {"layers": 1, "hidden": 32, "heads": 2}, "steps": 12,
        "batch_size": 8, "lr": 3e-3, "warmup_steps": 3, "log_every": 3, "checkpoint_every": 6, "num_threads": 1,
        "val_fraction": 0.1,
    }  # fmt: skip
    d.update(kw)
    return TrainConfig(**d)


def run(cfg, corpus, tmp, name, **kw):
    tmp = Path(tmp)
    summary = train(cfg, corpus, tmp / f"{name}_model", tmp / f"{name}_metrics.tsv", tmp / f"{name}_ckpt", **kw)
    return summary, pd.read_csv(tmp / f"{name}_metrics.tsv", sep="\t", float_precision="round_trip")


def same_weights(a_dir, b_dir) -> bool:
    a, b = load_file(str(Path(a_dir) / "model.safetensors")), load_file(str(Path(b_dir) / "model.safetensors"))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------
# the split
# ----------------------------------------------------------------------------------------


def test_validation_split_is_seeded_disjoint_and_capped():
    val, tr = validation_split(1000, 0.05, 256, seed=3)
    assert val.size == 50 and tr.size == 950
    assert np.intersect1d(val, tr).size == 0 and np.array_equal(np.sort(np.concatenate([val, tr])), np.arange(1000))
    again, _ = validation_split(1000, 0.05, 256, seed=3)
    other, _ = validation_split(1000, 0.05, 256, seed=4)
    assert np.array_equal(val, again) and not np.array_equal(val, other)
    # the same permutation whatever the size: a smaller slice is a prefix of a larger one's
    assert set(validation_split(1000, 0.02, 256, seed=3)[0]) < set(val)
    assert validation_split(100_000, 0.05, 256, seed=3)[0].size == 256  # capped
    assert validation_split(10, 0.01, 256, seed=3)[0].size == 1  # ceil
    assert validation_split(1, 0.5, 256, seed=3)[0].size == 0  # at least one window to train on
    assert validation_split(10, 0.0, 256, seed=3)[0].size == 0
    with pytest.raises(ValueError, match="fraction"):
        validation_split(10, 1.0, 256, seed=0)


def test_batcher_never_draws_the_validation_windows(corpus_path):
    """Every window drawn over many batches is a training window (each window is found by
    its start in the corpus: windows here are never cropped), all training windows are
    drawn, and the validation batches hold exactly the validation windows."""
    corpus = load_corpus(corpus_path)
    cfg = tiny(max_tokens=200, batch_size=16)
    batcher = Batcher(corpus, cfg, None, np.random.default_rng(0))
    assert batcher.val_windows.size == 12
    assert np.intersect1d(batcher.val_windows, batcher.train_windows).size == 0
    starts = np.concatenate([batcher.windows()[0] for _ in range(300)])
    drawn = np.searchsorted(corpus.offsets, starts)
    assert np.array_equal(corpus.offsets[drawn], starts)  # whole windows
    assert np.intersect1d(drawn, batcher.val_windows).size == 0
    assert set(drawn) == set(batcher.train_windows)

    val = Validation(batcher, cfg)
    tokens = [
        tuple(b.labels[r][b.segments[r] == s]) for b in val.batches
        for r in range(b.segments.shape[0]) for s in range(1, b.segments[r].max() + 1)
    ]  # fmt: skip
    want = [tuple(seq.tokenize_codes(np.asarray(corpus[int(i)]), 3, "overlapping")) for i in batcher.val_windows]
    assert sorted(tokens) == sorted(want)

    # no validation slice: draw i is window i, as before there was a slice
    full = Batcher(corpus, tiny(val_fraction=0.0, max_tokens=200), None, np.random.default_rng(1))
    idx = np.random.default_rng(1).integers(0, len(corpus), 8)
    assert np.array_equal(full.windows()[0], corpus.offsets[idx])
    assert full.val_windows.size == 0 and full.n_train == len(corpus)


def test_validation_masks_are_fixed_whatever_the_training_generator(corpus_path):
    corpus = load_corpus(corpus_path)
    cfg = tiny(masking_params={"center_prob": 0.1}, val_fraction=0.5)
    a = Validation(Batcher(corpus, cfg, None, np.random.default_rng(0)), cfg)
    b = Validation(Batcher(corpus, cfg, None, np.random.default_rng(99)), cfg)
    for x, y in zip(a.batches, b.batches, strict=True):
        for field in ("input_ids", "labels", "mask", "segments", "position_ids"):
            assert np.array_equal(getattr(x, field), getattr(y, field)), field
    assert sum(x.n_masked for x in a.batches) > 0
    # MLM corruption of the validation inputs: [MASK], random or unchanged at masked positions only
    for x in a.batches:
        assert np.array_equal(x.input_ids[~x.mask], x.labels[~x.mask])
    masked_inputs = np.concatenate([x.input_ids[x.mask] for x in a.batches])
    assert masked_inputs.size > 200 and 0.7 < (masked_inputs == seq.MASK_ID).mean() < 0.9


# ----------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["mlm", "mae", "clm"])
def test_evaluation_draws_nothing_and_restores_training_mode(corpus_path, arch):
    """Evaluating (dropout 0.1 in the model) leaves torch's generator, the training batch
    generator and the module's training mode as they were, and gives the same numbers twice."""
    from dnalm.train import forward

    corpus = load_corpus(corpus_path)
    cfg = tiny(architecture=arch)
    rng = np.random.default_rng(5)
    val = Validation(Batcher(corpus, cfg, None, rng), cfg)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    torch_state, numpy_state = torch.get_rng_state(), rng.bit_generator.state
    amp = torch.autocast("cpu", enabled=False)
    first = val.evaluate(model, lambda t: forward(model, t, torch.device("cpu"), amp), Dist())
    assert torch.equal(torch.get_rng_state(), torch_state) and rng.bit_generator.state == numpy_state
    assert model.training and all(m.training for m in model.modules())
    assert val.evaluate(model, lambda t: forward(model, t, torch.device("cpu"), amp), Dist()) == first
    assert math.log(seq.vocab_size(3)) - 0.5 < first["val_loss"] < math.log(seq.vocab_size(3)) + 0.5  # untrained


def test_validation_does_not_change_training_and_equals_a_direct_computation(corpus_path, tmp_path):
    """With or without evaluations the weights are bit-identical (dropout on: the evaluation
    runs in eval mode and draws from no generator). The last row's val_loss / val_masked_acc
    equal the cross-entropy and accuracy over every masked validation token of the saved
    model's full MLM head, computed directly."""
    cfg = tiny(architecture="mlm", eval_every=3)
    summary, m = run(cfg, corpus_path, tmp_path, "with")
    _, m0 = run(tiny(architecture="mlm", eval_every=0), corpus_path, tmp_path, "without")
    assert same_weights(tmp_path / "with_model", tmp_path / "without_model")
    assert m["step"].tolist() == [3, 6, 9, 12] and m["val_loss"].notna().all() and m0["val_loss"].isna().all()
    cols = ["step", "loss", "masked_acc", "mask_rate", "lr"]
    pd.testing.assert_frame_equal(m[cols], m0[cols])
    assert m["val_loss"].iloc[-1] < m["val_loss"].iloc[0]  # it learns something even here

    # direct: the saved BertForMaskedLM, every position through the full head, masked tokens scored
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_pretrained(tmp_path / "with_model").eval()
    batcher = Batcher(load_corpus(corpus_path), cfg, None, np.random.default_rng(0))
    loss, correct, n = 0.0, 0, 0
    for b in Validation(batcher, cfg).batches:
        with torch.no_grad():
            for r in range(b.input_ids.shape[0]):  # one window per forward: no packing needed
                for s in range(1, b.segments[r].max() + 1):
                    cols_ = b.segments[r] == s
                    ids = torch.tensor(b.input_ids[r][cols_])[None]
                    logits = mlm(input_ids=ids).logits[0]
                    target = torch.tensor(b.labels[r][cols_])
                    hit = torch.tensor(b.mask[r][cols_])
                    loss += F.cross_entropy(logits[hit], target[hit], reduction="sum").item()
                    correct += int((logits[hit].argmax(-1) == target[hit]).sum())
                    n += int(hit.sum())
    assert m["val_loss"].iloc[-1] == pytest.approx(loss / n, rel=1e-5)
    assert m["val_masked_acc"].iloc[-1] == pytest.approx(correct / n)
    assert summary["final_val_loss"] == m["val_loss"].iloc[-1]
    assert summary["final_val_masked_acc"] == m["val_masked_acc"].iloc[-1]
    assert summary["validation"]["predicted"] == n and summary["validation"]["windows"] == 12


def test_eval_every_default_and_cadence(corpus_path, tmp_path):
    assert tiny(steps=300, log_every=10).eval_interval == 30  # about ten per run, on logged rows
    assert tiny(steps=30, log_every=5).eval_interval == 5
    assert tiny(steps=30, log_every=5, eval_every=0).eval_interval == 0
    with pytest.raises(ValueError, match="multiple of log_every"):
        tiny(log_every=5, eval_every=7)
    with pytest.raises(ValueError, match="val_fraction"):
        tiny(val_fraction=0.9)
    with pytest.raises(ValueError, match="masks nothing"):
        tiny(architecture="clm", masking="genemask")
    # every 6 steps and at the last step (14), on rows every 3 steps; empty elsewhere
    _, m = run(tiny(steps=14, eval_every=6), corpus_path, tmp_path, "cad")
    assert m["step"].tolist() == [3, 6, 9, 12, 14]
    assert m["val_loss"].notna().tolist() == [False, True, False, True, True]
    assert m["val_masked_acc"].notna().tolist() == [False, True, False, True, True]


def test_config_hash_holds_the_split_not_the_cadence(corpus_path):
    base = config_hash(tiny(), corpus_path)
    assert config_hash(tiny(eval_every=6), corpus_path) == base  # which rows get a value only
    assert config_hash(tiny(pooling="last"), corpus_path) == base  # read at embedding time
    assert config_hash(tiny(val_fraction=0.2), corpus_path) != base  # other training windows
    assert config_hash(tiny(val_max_windows=5), corpus_path) != base


@pytest.mark.parametrize("arch", ["mae", "clm"])
def test_resume_keeps_weights_and_validation_rows_identical(corpus_path, tmp_path, arch):
    """Stopped after step 8 (checkpoint at 6) and resumed: the same weights and the same
    metrics rows, validation columns included, as an uninterrupted run."""
    cfg = tiny(architecture=arch, steps=12, checkpoint_every=6, log_every=2, eval_every=4)
    _, ref = run(cfg, corpus_path, tmp_path, "ref")

    class Stop(Exception):
        pass

    def stop_at_8(step):
        if step == 8:
            raise Stop

    with pytest.raises(Stop):
        run(cfg, corpus_path, tmp_path, "res", step_callback=stop_at_8)
    steps = []
    _, res = run(cfg, corpus_path, tmp_path, "res", step_callback=steps.append)
    assert steps == list(range(7, 13))
    assert same_weights(tmp_path / "ref_model", tmp_path / "res_model")
    cols = ["step", "loss", "masked_acc", "mask_rate", "val_loss", "val_masked_acc", "lr"]
    pd.testing.assert_frame_equal(ref[cols], res[cols])
    assert res["val_loss"].notna().sum() == 3  # steps 4, 8, 12
    meta = json.loads((tmp_path / "res_model" / "dnalm.json").read_text())
    assert meta == json.loads((tmp_path / "ref_model" / "dnalm.json").read_text())
    assert meta["final_val_loss"] == res["val_loss"].iloc[-1]


# ----------------------------------------------------------------------------------------
# what dnalm.json and the tidy table record
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["mlm", "clm"])
def test_summary_records_the_slice_the_mask_rate_and_the_baselines(corpus_path, tmp_path, arch):
    cfg = tiny(architecture=arch, masking_params={"center_prob": 0.1})
    summary, m = run(cfg, corpus_path, tmp_path, arch)
    meta = json.loads((tmp_path / f"{arch}_model" / "dnalm.json").read_text())
    val = meta["validation"]
    assert val["windows"] == 12 and val["predicted"] > 0 and val["tokens"] > val["predicted"]
    assert set(val["baselines"]) == {"unigram", "kmer_context"}
    for scores in val["baselines"].values():
        assert 0 <= scores["accuracy"] <= 1 and scores["cross_entropy"] > 0
    assert meta["pooling"] == "mean" and meta["eval_every"] == cfg.eval_interval
    if arch == "clm":
        assert meta["masking"] == "none" and val["mask_rate"] is None and meta["mean_mask_rate"] is None
        assert m["mask_rate"].isna().all() and val["objective"] == "next-token"
        # next-token targets: every k-mer token of the validation windows
        assert val["predicted"] == val["tokens"] - 2 * val["windows"]
    else:
        assert 0.1 < val["mask_rate"] < 0.5 and val["objective"] == "masked-token"
    table = validation_table(meta, arch)
    assert set(table["level"]) == {"model", "unigram", "kmer_context"}
    assert (table["protocol"] == "pretraining").all() and (table["model"] == arch).all()
    model_acc = table[(table["level"] == "model") & (table["metric"] == "accuracy")]["value"].item()
    assert model_acc == meta["final_val_masked_acc"]
    assert ("mask_rate" in set(table["metric"])) == (arch != "clm")

    # no slice: nothing evaluated, nothing to tabulate
    summary, m = run(tiny(architecture=arch, val_fraction=0.0), corpus_path, tmp_path, f"{arch}_none")
    assert summary["validation"] is None and summary["final_val_loss"] is None and m["val_loss"].isna().all()
    assert validation_table(summary, arch).empty


def test_clm_learns_next_tokens_of_homopolymers(tmp_path):
    """Windows repeat one random base: every k-mer after the first is its predecessor, so
    the causal model's held-out next-token accuracy nears 1 (the first k-mer of a window,
    1 in ~30, is a guess among 4)."""
    rng = np.random.default_rng(0)
    wins = [np.full(int(rng.integers(40, 200)), rng.integers(0, 4), dtype=np.uint8) for _ in range(200)]
    path = tmp_path / "homo.npz"
    save_corpus(path, Corpus.from_arrays(wins))
    cfg = tiny(architecture="clm", steps=60, batch_size=16, log_every=10, checkpoint_every=1000, lr=3e-3)
    summary, m = run(cfg, path, tmp_path, "homo")
    # a model that ignored the context could do no better than ln 4 (4 equally likely k-mers)
    assert m["loss"].iloc[0] > 3.0 and m["loss"].iloc[-1] < 0.6 < math.log(4) / 2
    assert summary["final_val_masked_acc"] > 0.9 and summary["final_val_loss"] < 0.6
    # the k-mer context predictor (the previous k-mer's last k-1 bases) gets these right too
    assert summary["validation"]["baselines"]["kmer_context"]["accuracy"] > 0.9
    # the saved model is the GPT2LMHeadModel: its own loss on a window agrees with the module's
    module = build_model(cfg).eval()
    load_model(module, str(next((tmp_path / "homo_ckpt").iterdir()) / "model.safetensors"))
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "homo_model").eval()
    ids = torch.tensor(seq.tokenize("C" * 20, 3, "overlapping"))[None]
    with torch.no_grad():
        ref = lm(input_ids=ids, labels=torch.where(ids >= seq.N_SPECIAL, ids, -100)).loss
        mine = module(ids, ids, ids >= seq.N_SPECIAL, torch.ones_like(ids), torch.arange(ids.shape[1])[None])["loss"]
    assert mine.item() == pytest.approx(ref.item(), rel=1e-5)
