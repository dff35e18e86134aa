"""Models and the training loop: MLM/MAE objectives, schedules, learning, determinism,
kill-and-resume, config-hash checks, metrics and the saved model/tokenizer."""

import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, load_model

from dnalm import seq
from dnalm.corpus import Corpus, save_corpus
from dnalm.models import BertMAE, bert_config, build_mlm, mlm_forward, pack_visible
from dnalm.train import METRIC_COLUMNS, Batcher, TrainConfig, build_model, lr_at, train

SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts")
PY = sys.executable
TINY = {"layers": 2, "hidden": 32, "heads": 2}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    """Homopolymer windows of a random base: masked k-mers are predictable from the other
    tokens of the same window, but not from k-mer frequencies alone."""
    rng = np.random.default_rng(0)
    wins = [np.full(int(rng.integers(30, 200)), rng.integers(0, 4), dtype=np.uint8) for _ in range(300)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.npz"
    save_corpus(path, Corpus.from_arrays(wins))
    return path


@pytest.fixture(scope="module")
def random_corpus_path(tmp_path_factory):
    rng = np.random.default_rng(1)
    wins = [rng.integers(0, 4, int(rng.integers(20, 300))).astype(np.uint8) for _ in range(200)]
    wins[3][5:9] = 4  # an N run -> [UNK] tokens
    path = tmp_path_factory.mktemp("rcorpus") / "corpus.npz"
    save_corpus(path, Corpus.from_arrays(wins))
    return path


def tiny(**kw) -> TrainConfig:
    d = dict(
        k=3,
        max_tokens=32,
        size=TINY,
        decoder_size={"layers": 1, "hidden": 32, "heads": 2},
        steps=10,
        batch_size=8,
        lr=3e-3,
        warmup_steps=3,
        log_every=5,
        checkpoint_every=5,
        num_threads=1,
    )
    d.update(kw)
    return TrainConfig(**d)


def run(cfg, corpus, tmp, name, **kw):
    tmp = Path(tmp)
    steps = []
    summary = train(
        cfg,
        corpus,
        tmp / f"{name}_model",
        tmp / f"{name}_metrics.tsv",
        tmp / f"{name}_ckpt",
        step_callback=steps.append,
        **kw,
    )
    return summary, steps


def weights(model_dir) -> dict:
    return load_file(str(Path(model_dir) / "model.safetensors"))


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------------------
# config and schedules
# ----------------------------------------------------------------------------------------


def test_config_from_dict_and_validation():
    cfg = TrainConfig.from_dict({"masking": "genemask", "steps": 7})
    assert cfg.steps == 7 and cfg.masking_params["center_prob"] == 0.0176 and cfg.masking_params["span"] == 11
    assert TrainConfig().masking_params["center_prob"] == 0.025
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # round-trips through plain values
    json.dumps(cfg.to_dict())
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="architecture"):
        TrainConfig(architecture="gpt")
    with pytest.raises(ValueError, match="max_position"):
        TrainConfig(max_tokens=600)
    with pytest.raises(ValueError, match="spam"):
        TrainConfig(masking_params={"spam": 1})


def test_lr_schedules_match_reference_implementations():
    from transformers import get_cosine_schedule_with_warmup

    p = torch.nn.Parameter(torch.zeros(1))
    cfg = TrainConfig(steps=50, warmup_steps=7, lr=2e-3, schedule="cosine")
    opt = torch.optim.SGD([p], lr=cfg.lr)
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps)
    for step in range(cfg.steps):
        assert lr_at(step, cfg) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        opt.step()
        sched.step()

    cfg = TrainConfig(steps=50, warmup_steps=7, lr=2e-3, schedule="onecycle")
    opt = torch.optim.SGD([p], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=cfg.warmup_steps / cfg.steps, cycle_momentum=False
    )
    for step in range(cfg.steps):
        assert lr_at(step, cfg) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        sched.step()


# ----------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------


def test_bert_config_from_size():
    c = bert_config({"layers": 3, "hidden": 48, "heads": 6}, 69, 100)
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (3, 48, 6, 192)
    assert c.hidden_dropout_prob == c.attention_probs_dropout_prob == 0.1
    assert (c.vocab_size, c.max_position_embeddings, c.pad_token_id) == (69, 100, seq.PAD_ID)
    assert c._attn_implementation == "sdpa"
    c = bert_config(
        {"layers": 1, "hidden": 8, "heads": 2, "intermediate": 5, "dropout": 0.0, "attention_dropout": 0.2}, 9, 9
    )
    assert (c.intermediate_size, c.hidden_dropout_prob, c.attention_probs_dropout_prob) == (5, 0.0, 0.2)
    with pytest.raises(ValueError, match="multiple"):
        bert_config({"layers": 1, "hidden": 10, "heads": 3}, 9, 9)
    with pytest.raises(ValueError, match="hiden"):
        bert_config({"layers": 1, "hiden": 8, "heads": 2}, 9, 9)


def test_grad_accum_equals_one_large_batch(random_corpus_path, tmp_path, monkeypatch):
    """Two accumulated micro-batches of 8 make the same update as one batch of the same 16
    sequences (MAE, dropout off, 3 masked tokens per sequence so the means agree); one
    micro-batch alone does not."""
    import dnalm.train as T

    rng = np.random.default_rng(0)
    ids = rng.integers(5, seq.vocab_size(3), size=(16, 12))
    ids[:, 0], ids[:, -1] = seq.CLS_ID, seq.SEP_ID
    mask = np.zeros(ids.shape, bool)
    mask[:, 2:5] = True
    served = []

    def fixed_next(self):
        n = self.cfg.batch_size
        start = sum(served) % 16
        served.append(n)
        rows = slice(start, start + n)
        return ids[rows], np.ones_like(ids[rows]), mask[rows]

    monkeypatch.setattr(T.Batcher, "next", fixed_next)
    # adam_eps >> |grad| turns the first AdamW step into plain SGD (update = lr/eps * grad),
    # so the update measures the gradient's size, not just its sign
    common = dict(
        architecture="mae",
        steps=1,
        warmup_steps=0,
        lr=1e4,
        adam_eps=1e4,
        weight_decay=0.0,
        checkpoint_every=100,
        size={**TINY, "dropout": 0.0},
        decoder_size={"layers": 1, "hidden": 16, "heads": 2, "dropout": 0.0},
    )
    run(tiny(batch_size=8, grad_accum=2, **common), random_corpus_path, tmp_path, "acc")
    run(tiny(batch_size=16, grad_accum=1, **common), random_corpus_path, tmp_path, "big")
    run(tiny(batch_size=8, grad_accum=1, **common), random_corpus_path, tmp_path, "half")
    assert served == [8, 8, 16, 8]
    a, b, h = weights(tmp_path / "acc_model"), weights(tmp_path / "big_model"), weights(tmp_path / "half_model")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert any(not torch.allclose(a[key], h[key], atol=1e-6) for key in a)


def test_mlm_forward_equals_full_head_loss():
    torch.manual_seed(0)
    V = seq.vocab_size(3)
    model = build_mlm(TINY, V, 64).eval()
    ids = torch.randint(5, V, (4, 20))
    attn = torch.ones_like(ids)
    attn[2, 15:] = 0
    mask = (torch.rand(ids.shape) < 0.3) & attn.bool()
    labels = torch.where(mask, ids, -100)
    corrupted = torch.where(mask, seq.MASK_ID, ids)
    with torch.no_grad():
        out = mlm_forward(model, corrupted, attn, mask, labels)
        full = model(input_ids=corrupted, attention_mask=attn, labels=labels)
    assert torch.allclose(out["loss"], full.loss, atol=1e-6)
    assert torch.allclose(out["logits_masked"], full.logits[mask], atol=1e-5)
    assert torch.equal(out["labels_masked"], ids[mask])


def _mae_batch(seed=0, V=seq.vocab_size(3)):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (3, 24), generator=g)
    ids[:, 0] = seq.CLS_ID
    attn = torch.ones_like(ids)
    lengths = [24, 17, 9]
    for row, n in enumerate(lengths):
        ids[row, n - 1] = seq.SEP_ID
        ids[row, n:] = seq.PAD_ID
        attn[row, n:] = 0
    mask = (torch.rand(ids.shape, generator=g) < 0.4) & (ids >= 5)
    return ids, attn, mask


def test_pack_visible_keeps_original_positions():
    ids, attn, mask = _mae_batch()
    packed, pos, pattn = pack_visible(ids, attn, mask)
    for row in range(ids.shape[0]):
        want = torch.nonzero(attn[row].bool() & ~mask[row]).flatten()
        n = want.numel()
        assert pattn[row].sum() == n and pattn[row, :n].all()
        assert torch.equal(pos[row, :n], want)
        assert torch.equal(packed[row, :n], ids[row, want])
        assert (packed[row, n:] == seq.PAD_ID).all()


def test_mae_encoder_sees_only_visible_tokens():
    torch.manual_seed(0)
    V = seq.vocab_size(3)
    model = BertMAE(TINY, {"layers": 1, "hidden": 16, "heads": 2}, V, 64).eval()
    ids, attn, mask = _mae_batch()
    other = torch.where(mask, torch.randint(5, V, ids.shape), ids)  # change masked ids only
    assert not torch.equal(other, ids)
    with torch.no_grad():
        h, pos, pattn = model.encode_visible(ids, attn, mask)
        h2, _, _ = model.encode_visible(other, attn, mask)
        out, out2 = model(ids, attn, mask), model(other, attn, mask)
        # reference: the encoder over the full row with masked keys hidden, ORIGINAL positions
        full = model.encoder(input_ids=ids, attention_mask=(attn.bool() & ~mask).long()).last_hidden_state
    for row in range(ids.shape[0]):
        n = int(pattn[row].sum())
        assert torch.equal(h[row, :n], h2[row, :n])
        assert torch.allclose(h[row, :n], full[row, pos[row, :n]], atol=1e-5)
    # nothing about the masked tokens reaches the predictions; loss is over masked positions
    assert torch.allclose(out["logits_masked"], out2["logits_masked"], atol=1e-6)
    assert torch.equal(out["labels_masked"], ids[mask])
    assert out["logits_masked"].shape == (int(mask.sum()), V)
    assert torch.allclose(out["loss"], F.cross_entropy(out["logits_masked"], ids[mask]), atol=1e-6)
    # padding does not leak across rows: each row alone gives the same predictions
    with torch.no_grad():
        start = 0
        for row in range(ids.shape[0]):
            n = int(attn[row].sum())
            alone = model(ids[row : row + 1, :n], attn[row : row + 1, :n], mask[row : row + 1, :n])
            m = int(mask[row].sum())
            assert torch.allclose(alone["logits_masked"], out["logits_masked"][start : start + m], atol=1e-5)
            start += m


def test_mae_gradients_only_from_masked_positions():
    """The head's bias gradient is exactly the mean of (softmax - one-hot) over the masked
    positions: no visible or padding position contributes to the loss."""
    torch.manual_seed(1)
    V = seq.vocab_size(3)
    model = BertMAE(TINY, {"layers": 1, "hidden": 16, "heads": 2}, V, 64).eval()
    ids, attn, mask = _mae_batch(seed=3)
    out = model(ids, attn, mask)
    out["loss"].backward()
    # head bias gradient = sum over predicted positions of (softmax - onehot): one row per masked token
    probs = out["logits_masked"].detach().softmax(-1)
    want = (probs - F.one_hot(ids[mask], V)).sum(0) / int(mask.sum())
    assert torch.allclose(model.head.bias.grad, want, atol=1e-6)


def test_mae_save_encoder_loads_with_automodel(tmp_path):
    from transformers import AutoModel

    torch.manual_seed(0)
    model = BertMAE(TINY, {"layers": 1, "hidden": 16, "heads": 2}, seq.vocab_size(3), 64).eval()
    model.save_encoder(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "BertModel"
    ids, attn, _ = _mae_batch()
    with torch.no_grad():
        assert torch.equal(
            loaded(input_ids=ids, attention_mask=attn).last_hidden_state,
            model.encoder(input_ids=ids, attention_mask=attn).last_hidden_state,
        )


# ----------------------------------------------------------------------------------------
# batches
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenization", ["overlapping", "non-overlapping"])
def test_batcher_crops_tokenizes_and_masks(random_corpus_path, tokenization):
    from dnalm.corpus import load_corpus

    corpus = load_corpus(random_corpus_path)
    k = 3
    cfg = tiny(tokenization=tokenization, k=k, max_tokens=20, batch_size=64)
    b = Batcher(corpus, cfg, None, np.random.default_rng(0))
    ids, attn, mask = b.next()
    assert ids.shape[0] == 64 and ids.shape[1] <= 20
    windows = [seq.decode(corpus[i]) for i in range(len(corpus))]
    for row in range(64):
        tok = ids[row][attn[row] == 1]
        assert tok[0] == seq.CLS_ID and tok[-1] == seq.SEP_ID
        n = len(tok) - 2
        # the tokens are the tokenization of some window's substring starting in frame
        stride = 1 if tokenization == "overlapping" else k
        kmers = [seq.id_to_kmer(t - 5, k) if t >= 5 else None for t in tok[1:-1]]
        assert any(
            all(km is None or w[s + j * stride : s + j * stride + k] == km for j, km in enumerate(kmers))
            and len(w) >= s + (n - 1) * stride + k
            for w in windows
            for s in range(0, max(1, len(w) - k + 1), stride)
        )
        assert not mask[row][ids[row] < 5].any()
    # long windows are cropped to max_tokens
    assert (attn.sum(1) == 20).sum() > 30
    # deterministic under the generator
    again = Batcher(corpus, cfg, None, np.random.default_rng(0)).next()
    assert all(np.array_equal(x, y) for x, y in zip((ids, attn, mask), again))


# ----------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch,tokenization,steps,limit",
    [("mlm", "overlapping", 150, 0.9), ("mae", "non-overlapping", 90, 0.9)],
)
def test_loss_decreases_below_the_no_context_floor(corpus_path, tmp_path, arch, tokenization, steps, limit):
    """Windows are repeats of one random base, so the 4 possible k-mers are equally likely
    a priori (loss floor ln 4 = 1.39 without context); a model reading the visible tokens
    gets close to 0."""
    cfg = tiny(
        architecture=arch,
        tokenization=tokenization,
        steps=steps,
        batch_size=16,
        log_every=10,
        checkpoint_every=1000,
        masking_params={"center_prob": 0.1, "mask_ratio": 0.3},
    )
    summary, _ = run(cfg, corpus_path, tmp_path, arch)
    m = pd.read_csv(tmp_path / f"{arch}_metrics.tsv", sep="\t")
    assert m["loss"].iloc[0] > 3.0
    assert m["loss"].iloc[-1] < limit < math.log(4)
    assert m["masked_acc"].iloc[-1] > 0.9
    assert summary["final_loss"] == pytest.approx(m["loss"].iloc[-1])


def test_same_seed_same_weights_different_seed_differs(random_corpus_path, tmp_path):
    cfg = tiny(architecture="mae", steps=8, checkpoint_every=100)
    run(cfg, random_corpus_path, tmp_path, "a")
    run(cfg, random_corpus_path, tmp_path, "b")
    run(tiny(architecture="mae", steps=8, checkpoint_every=100, seed=1), random_corpus_path, tmp_path, "c")
    a, b, c = (weights(tmp_path / f"{n}_model") for n in "abc")
    assert_same_weights(a, b)
    assert not torch.equal(a["embeddings.word_embeddings.weight"], c["embeddings.word_embeddings.weight"])


def test_metrics_file_and_mask_rate(random_corpus_path, tmp_path):
    k, p = 4, 0.1
    cfg = tiny(k=k, steps=23, max_tokens=64, batch_size=16, log_every=5, masking_params={"center_prob": p})
    summary, _ = run(cfg, random_corpus_path, tmp_path, "m")
    m = pd.read_csv(tmp_path / "m_metrics.tsv", sep="\t")
    assert list(m.columns) == METRIC_COLUMNS
    assert m["step"].tolist() == [5, 10, 15, 20, 23]
    assert (m["tokens_per_s"] > 0).all() and (m["peak_mem_mb"] > 10).all()
    assert m["lr"].tolist() == pytest.approx([lr_at(s - 1, cfg) for s in m["step"]])
    # expected rate: a token at maskable index i (of L) is covered by the centres i-1 .. i+2
    # (k=4: floor(3/2)=1 left, 2 right) that exist; typical L here is ~61 (windows cropped)
    L = 64 - 2
    cover = [sum(1 for c in range(i - 2, i + 2) if 0 <= c < L) for i in range(L)]
    expected = np.mean([1 - (1 - p) ** n for n in cover])
    assert abs(summary["mean_mask_rate"] - expected) < 0.03
    assert abs(m["mask_rate"].mean() - expected) < 0.03
    meta = json.loads((tmp_path / "m_model" / "dnalm.json").read_text())
    for key in (
        "architecture",
        "masking",
        "tokenization",
        "k",
        "max_tokens",
        "steps",
        "seed",
        "final_loss",
        "mean_mask_rate",
    ):
        assert key in meta
    assert meta["k"] == 4 and meta["steps"] == 23 and meta["final_loss"] == pytest.approx(m["loss"].iloc[-1])

    # non-overlapping random masking: the configured ratio
    cfg = tiny(tokenization="non-overlapping", steps=10, batch_size=32, masking_params={"mask_ratio": 0.3})
    summary, _ = run(cfg, random_corpus_path, tmp_path, "n")
    assert abs(summary["mean_mask_rate"] - 0.3) < 0.03


def test_genemask_training_uses_npmi_table(random_corpus_path, tmp_path):
    k = 3
    kmers = seq.all_kmers(k)
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "kmer": kmers,
            "n": k,
            "count": 10,
            "log_p": -4.0,
            "pmi": 0.0,
            "npmi": rng.uniform(-1, 1, len(kmers)),
            "rank": 1,
        }
    )
    npmi = tmp_path / "npmi.tsv"
    df.to_csv(npmi, sep="\t", index=False)
    cfg = tiny(masking="genemask", steps=6, masking_params={"center_prob": 0.05, "span": 5})
    summary, steps = run(cfg, random_corpus_path, tmp_path, "g", npmi_path=npmi)
    assert steps == list(range(1, 7)) and 0.05 < summary["mean_mask_rate"] < 0.4
    with pytest.raises(ValueError, match="npmi"):
        run(cfg, random_corpus_path, tmp_path, "g2")


def test_config_hash_mismatch_ignores_checkpoint(random_corpus_path, tmp_path, caplog):
    cfg = tiny(steps=10, checkpoint_every=5)
    run(cfg, random_corpus_path, tmp_path, "h")
    first = weights(tmp_path / "h_model")
    ckpts = [d.name for d in (tmp_path / "h_ckpt").iterdir()]
    assert len(ckpts) == 1 and ckpts[0].startswith("ckpt-00000010-")  # only the latest kept

    # same config: resumes at the end, trains nothing, same result
    _, steps = run(cfg, random_corpus_path, tmp_path, "h")
    assert steps == []
    assert_same_weights(first, weights(tmp_path / "h_model"))

    # changed config: the checkpoint is ignored (and says so), training restarts at step 1
    caplog.set_level(logging.INFO, logger="dnalm.train")
    _, steps = run(tiny(steps=10, checkpoint_every=5, lr=1e-3), random_corpus_path, tmp_path, "h")
    assert steps == list(range(1, 11))
    assert "ignoring checkpoint" in caplog.text and "config hash differs" in caplog.text
    assert not torch.equal(
        first["bert.embeddings.word_embeddings.weight"],
        weights(tmp_path / "h_model")["bert.embeddings.word_embeddings.weight"],
    )
    # ... and replaced by the new run's checkpoint
    assert len(list((tmp_path / "h_ckpt").iterdir())) == 1

    # a different corpus also changes the hash
    other = tmp_path / "other.npz"
    save_corpus(other, Corpus.from_arrays([np.arange(40, dtype=np.uint8) % 4]))
    _, steps = run(tiny(steps=10, checkpoint_every=5, lr=1e-3), other, tmp_path, "h")
    assert steps[0] == 1


DRIVER = textwrap.dedent("""
    import json, os, signal, sys, time
    sys.path.insert(0, {scripts!r})
    import torch
    torch.set_num_threads(1)
    from dnalm.train import TrainConfig, train

    args = json.loads(sys.argv[1])
    callback = None
    if args["mode"] == "slow":  # gives the parent time to kill us at an arbitrary step
        callback = lambda step: time.sleep(0.04)
    elif args["mode"] == "die_in_checkpoint":  # SIGKILL half-way through a checkpoint write
        real_save, calls = torch.save, []
        def dying_save(obj, f, *a, **kw):
            real_save(obj, f, *a, **kw)
            calls.append(str(f))
            if len(calls) == 3:  # optimizer.pt of this process's 2nd checkpoint
                os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
    train(TrainConfig.from_dict(args["cfg"]), args["corpus"], args["out"], args["metrics"], args["ckpt"],
          step_callback=callback)
    """)


def test_kill_and_resume_reaches_identical_weights(random_corpus_path, tmp_path):
    for arch in ("mlm", "mae"):
        cfg = tiny(architecture=arch, steps=50, checkpoint_every=10, log_every=5)
        # uninterrupted reference run
        run(cfg, random_corpus_path, tmp_path, f"ref_{arch}")

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(scripts=SCRIPTS))
    arch = "mae"
    cfg = tiny(architecture=arch, steps=50, checkpoint_every=10, log_every=5)
    ckpt = tmp_path / "kill_ckpt"
    args = {
        "cfg": cfg.to_dict(),
        "corpus": str(random_corpus_path),
        "out": str(tmp_path / "kill_model"),
        "metrics": str(tmp_path / "kill_metrics.tsv"),
        "ckpt": str(ckpt),
    }

    # 1. kill (SIGKILL) from outside at a random moment after the first checkpoint appears
    proc = subprocess.Popen([PY, str(driver), json.dumps({**args, "mode": "slow"})], stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not (ckpt.is_dir() and any(d.name.startswith("ckpt-") for d in ckpt.iterdir())):
        assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    time.sleep(np.random.default_rng().uniform(0, 0.15))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (tmp_path / "kill_model").exists()
    killed_at = [d.name for d in ckpt.iterdir() if d.name.startswith("ckpt-")]
    assert killed_at and all(int(n[5:13]) < 50 for n in killed_at)

    # 2. restart, and die half-way through writing a checkpoint: a temporary directory is left
    proc = subprocess.run(
        [PY, str(driver), json.dumps({**args, "mode": "die_in_checkpoint"})], stderr=subprocess.DEVNULL
    )
    assert proc.returncode == -signal.SIGKILL
    assert any(d.name.startswith(".tmp-ckpt-") for d in ckpt.iterdir())
    assert not (tmp_path / "kill_model").exists()

    # 3. restart again and finish: resumes from the last complete checkpoint
    _, steps = run(cfg, random_corpus_path, tmp_path, "kill")
    assert steps and steps[0] > 11 and steps[-1] == 50
    assert [d.name for d in ckpt.iterdir()] == [f"ckpt-00000050-{n[14:]}" for n in killed_at[:1]]

    assert_same_weights(weights(tmp_path / f"ref_{arch}_model"), weights(tmp_path / "kill_model"))
    ref_ckpt = next((tmp_path / f"ref_{arch}_ckpt").iterdir())
    assert_same_weights(
        load_file(str(ref_ckpt / "model.safetensors")), load_file(str(next(ckpt.iterdir()) / "model.safetensors"))
    )  # decoder too
    a = pd.read_csv(tmp_path / f"ref_{arch}_metrics.tsv", sep="\t")
    b = pd.read_csv(tmp_path / "kill_metrics.tsv", sep="\t")
    cols = ["step", "loss", "masked_acc", "mask_rate", "lr"]
    pd.testing.assert_frame_equal(a[cols], b[cols])

    # the same with MLM, resumed in-process from a mid-run checkpoint of a shorter-lived run
    cfg = tiny(architecture="mlm", steps=50, checkpoint_every=10, log_every=5)

    class Stop(Exception):
        pass

    def stop_at_27(step):
        if step == 27:
            raise Stop

    with pytest.raises(Stop):
        train(
            cfg,
            random_corpus_path,
            tmp_path / "s_model",
            tmp_path / "s.tsv",
            tmp_path / "s_ckpt",
            step_callback=stop_at_27,
        )
    _, steps = run(cfg, random_corpus_path, tmp_path, "s")
    assert steps[0] == 21
    assert_same_weights(weights(tmp_path / "ref_mlm_model"), weights(tmp_path / "s_model"))


ROUNDTRIP = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    out = {}
    for job in json.loads(sys.argv[1]):
        d, name = job["dir"], job["name"]
        tok = AutoTokenizer.from_pretrained(d)
        out[name + "_ids"] = tok(job["texts"], padding=True)["input_ids"]
        model = AutoModel.from_pretrained(d).eval()
        out[name + "_class"] = type(model).__name__
        ids, attn = torch.tensor(job["ids"]), torch.tensor(job["attn"])
        with torch.no_grad():
            np.save(d + "/hidden.npy", model(input_ids=ids, attention_mask=attn).last_hidden_state.numpy())
            if name == "mlm":  # the LM head was saved too
                mlm = AutoModelForMaskedLM.from_pretrained(d).eval()
                np.save(d + "/logits.npy", mlm(input_ids=ids, attention_mask=attn).logits.numpy())
    print(json.dumps(out))
    """)


def test_saved_model_and_tokenizer_load_in_fresh_process(random_corpus_path, tmp_path):
    jobs, modules = [], {}
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGTN"), int(n), p=[0.24, 0.24, 0.24, 0.24, 0.04])) for n in (30, 45, 61)]
    for arch, tok in (("mlm", "overlapping"), ("mae", "non-overlapping")):
        cfg = tiny(architecture=arch, tokenization=tok, k=4, steps=4)
        run(cfg, random_corpus_path, tmp_path, arch)
        model_dir = tmp_path / f"{arch}_model"
        assert sorted(os.listdir(model_dir)) == [
            "config.json",
            "dnalm.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
        ]
        # the training module rebuilt from its last checkpoint (independent of save_pretrained)
        module = build_model(cfg).eval()
        load_model(module, str(next((tmp_path / f"{arch}_ckpt").iterdir()) / "model.safetensors"))
        ids, attn = seq.pad_batch([seq.tokenize(s, 4, tok) for s in seqs])
        modules[arch] = (module, ids, attn)
        jobs.append(
            {
                "name": arch,
                "dir": str(model_dir),
                "texts": [seq.kmer_text(s, 4, tok) for s in seqs],
                "ids": ids.tolist(),
                "attn": attn.tolist(),
            }
        )

    proc = subprocess.run(
        [PY, "-c", ROUNDTRIP, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])

    for arch, (module, ids, attn) in modules.items():
        # the saved tokenizer agrees token for token with the fast numpy path ([UNK] for N)
        assert results[f"{arch}_ids"] == ids.tolist()
        assert results[f"{arch}_class"] == "BertModel"
        encoder = module.bert if arch == "mlm" else module.encoder
        with torch.no_grad():
            want = encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(attn)).last_hidden_state.numpy()
        np.testing.assert_allclose(np.load(tmp_path / f"{arch}_model" / "hidden.npy"), want, atol=1e-5)
    module, ids, attn = modules["mlm"]
    with torch.no_grad():
        want = module(input_ids=torch.tensor(ids), attention_mask=torch.tensor(attn)).logits.numpy()
    np.testing.assert_allclose(np.load(tmp_path / "mlm_model" / "logits.npy"), want, atol=1e-4)
