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
from safetensors.torch import load_file, load_model

from conftest import write_random_corpus
from dnalm import seq
from dnalm.corpus import Corpus, save_corpus
from dnalm.train import METRIC_COLUMNS, Batcher, TrainConfig, build_model, lr_at, train

SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts")
PY = sys.executable
TINY = {"layers": 2, "hidden": 32, "heads": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    def n_run(wins):
        wins[3][5:9] = 4  # an N run -> [UNK] tokens

    return write_random_corpus(tmp_path_factory.mktemp("rcorpus") / "corpus.npz", 1, 200, 20, 300, edit=n_run)


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


class Stop(Exception):
    pass


def stop_at(step):
    def callback(done):
        if done == step:
            raise Stop

    return callback


def ckpt_names(ckpt):
    return sorted(d.name for d in Path(ckpt).iterdir() if d.name.startswith("ckpt-"))


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


def test_nodes_and_tensorboard_config_keys(tmp_path):
    """`nodes` is a job setting (the pretrain rule's resources), `tensorboard` a training one;
    both are validated by the schema and reach their consumers."""
    import copy

    import yaml

    from dnalm.config import ConfigError, resolve_model, train_settings, validate_config

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config" / "config.yaml").read_text())
    config["training"].update(tensorboard=True)
    config["models"]["dnabert"].update(nodes=2)
    validate_config(config, root / "config" / "schema.yaml")
    resolved = resolve_model(config, "dnabert")
    assert resolved["nodes"] == 2 and "nodes" not in train_settings(resolved)
    assert TrainConfig.from_dict(train_settings(resolved)).tensorboard is True
    assert "nodes" not in resolve_model(config, "genemask")  # default: 1 (the rule's resource)
    for bad, key in (({"nodes": 0}, "nodes"), ({"tensorboard": "yes"}, "tensorboard")):
        broken = copy.deepcopy(config)
        broken["models"]["dnabert"].update(bad)
        with pytest.raises(ConfigError, match=f"models.dnabert.{key}"):
            validate_config(broken, root / "config" / "schema.yaml")


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


def test_device_and_precision_choice():
    from dnalm.device import autocast_dtype, resolve_device
    from dnalm.distributed import Dist

    assert resolve_device("auto", cuda_available=False) == torch.device("cpu")
    assert resolve_device("auto", cuda_available=True) == torch.device("cuda:0")
    local_rank = Dist(rank=3, local_rank=1, world_size=4).local_rank
    assert resolve_device("auto", local_rank, cuda_available=True) == torch.device("cuda:1")
    assert resolve_device("cuda:2", cuda_available=True) == torch.device("cuda:2")
    assert resolve_device("cpu", cuda_available=True) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda", cuda_available=False)
    # bf16 autocast on a GPU that has it; fp32 (+TF32) on older GPUs and on the CPU
    assert autocast_dtype(torch.device("cuda:0"), bf16_supported=True) == torch.bfloat16
    assert autocast_dtype(torch.device("cuda:0"), bf16_supported=False) is None
    assert autocast_dtype(torch.device("cpu"), bf16_supported=True) is None
    with pytest.raises(ValueError, match="bad device"):
        TrainConfig(device="gpu")


def test_data_parallel_launch_command_and_env(tmp_path):
    from dnalm.distributed import Dist, ddp_command

    cmd = ddp_command(tmp_path / "job.json", 4, python="/py")
    assert cmd == [
        "/py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m", "dnalm.train",
        str(tmp_path / "job.json"),
    ]  # fmt: skip
    with pytest.raises(ValueError, match=">= 2"):
        ddp_command("job.json", 1)
    d = Dist.from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (d.rank, d.local_rank, d.world_size, d.enabled, d.main) == (3, 1, 4, True, False)
    assert Dist.from_env({}) == Dist() and not Dist().enabled and Dist().main


FAKE_SCONTROL = """#!/bin/sh
# stands in for SLURM's scontrol: records its arguments, expands one known node list
echo "$@" >> "$(dirname "$0")/calls"
[ "$1 $2 $3" = "show hostnames gpu[07-08]" ] && printf 'gpu07\\ngpu08\\n'
"""


def test_multi_node_launch_command_from_the_slurm_environment(tmp_path):
    """Several nodes: srun starts one torchrun per node, meeting at a c10d rendezvous on the
    job's first node (scontrol show hostnames), at a port derived from the job id; one node
    stays --standalone, also inside a multi-node job."""
    from dnalm.distributed import ddp_command, launch, rendezvous_port

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    (bin_dir / "scontrol").chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "123456",
        "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_CPUS_PER_TASK": "16",
    }  # fmt: skip
    job = tmp_path / "job.json"
    cmd = ddp_command(job, 4, python="/py", nodes=2, env=env)
    assert cmd == [
        "srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--overlap", "--kill-on-bad-exit=1",
        "--cpus-per-task=16",
        "/py", "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d",
        "--rdzv-endpoint=gpu07:23456", "--rdzv-id=123456", "-m", "dnalm.train", str(job),
    ]  # fmt: skip
    assert (bin_dir / "calls").read_text() == "show hostnames gpu[07-08]\n"
    # SLURM_NNODES (older SLURM), one GPU per node, no --cpus-per-task
    env2 = {k: v for k, v in env.items() if k not in ("SLURM_JOB_NUM_NODES", "SLURM_CPUS_PER_TASK")}
    cmd = ddp_command(job, 1, python="/py", nodes=2, env={**env2, "SLURM_NNODES": "2"})
    assert cmd[:6] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--overlap", "--kill-on-bad-exit=1"]
    assert cmd[6] == "/py" and "--nproc-per-node=1" in cmd
    # one node: the standalone command, whatever the job has
    assert ddp_command(job, 4, python="/py", nodes=1, env=env) == ddp_command(job, 4, python="/py")
    # the port: deterministic, in 20000-29999, different for neighbouring jobs
    assert rendezvous_port("123456") == rendezvous_port(123456) == 23456
    assert len({rendezvous_port(j) for j in range(5000, 5100)}) == 100
    with pytest.raises(RuntimeError, match="nodes: 3 needs a SLURM job with 3 nodes, but this job has 2"):
        ddp_command(job, 4, nodes=3, env=env)
    with pytest.raises(RuntimeError, match="nodes: 2 needs a SLURM job with 2 nodes, but this job has 1"):
        ddp_command(job, 4, nodes=2, env={"PATH": env["PATH"]})
    with pytest.raises(ValueError, match=">= 2"):
        ddp_command(job, 1, nodes=1, env=env)
    # launch passes nodes through: outside SLURM a multi-node run fails before starting
    outside = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "environ", outside)
        with pytest.raises(RuntimeError, match="nodes: 2 needs a SLURM job"):
            launch(tiny(), tmp_path / "c.npz", tmp_path / "m", tmp_path / "m.tsv", tmp_path / "ck", nproc=1, nodes=2)


# ----------------------------------------------------------------------------------------
# batches
# ----------------------------------------------------------------------------------------


def unpack(batch):
    """The windows of a Batch: [(labels, inputs, mask)] in row-major order of the layout."""
    out = []
    for row in range(batch.segments.shape[0]):
        for s in range(1, int(batch.segments[row].max()) + 1):
            cols = batch.segments[row] == s
            assert np.array_equal(batch.position_ids[row][cols], np.arange(cols.sum()))  # restart per window
            assert np.ptp(np.flatnonzero(cols)) == cols.sum() - 1  # contiguous
            out.append((batch.labels[row][cols], batch.input_ids[row][cols], batch.mask[row][cols]))
        pad = batch.segments[row] == 0
        assert (batch.labels[row][pad] == seq.PAD_ID).all() and not batch.mask[row][pad].any()
    return out


@pytest.mark.parametrize("tokenization", ["overlapping", "non-overlapping"])
def test_batcher_crops_tokenizes_masks_and_packs(tokenization):
    rng = np.random.default_rng(5)
    lengths = np.where(np.arange(100) % 2, rng.integers(4, 30, 100), rng.integers(150, 260, 100))  # short and long
    wins = [rng.integers(0, 4, int(n)).astype(np.uint8) for n in lengths]
    wins[3][5:9] = 4  # an N run -> [UNK] tokens
    corpus = Corpus.from_arrays(wins)
    k = 3
    cfg = tiny(tokenization=tokenization, k=k, max_tokens=40, batch_size=64, packing=False)
    batch = Batcher(corpus, cfg, None, np.random.default_rng(0)).next()
    assert batch.input_ids.shape == (64, 40) and not batch.packed
    windows = [seq.decode(corpus[i]) for i in range(len(corpus))]
    stride = 1 if tokenization == "overlapping" else k
    unpacked = unpack(batch)
    for tok, inputs, mask in unpacked:
        assert tok[0] == seq.CLS_ID and tok[-1] == seq.SEP_ID
        n = len(tok) - 2
        # the tokens are the tokenization of some window's substring starting in frame
        kmers = [seq.id_to_kmer(t - 5, k) if t >= 5 else None for t in tok[1:-1]]
        assert any(
            all(km is None or w[s + j * stride : s + j * stride + k] == km for j, km in enumerate(kmers))
            and len(w) >= s + (n - 1) * stride + k
            for w in windows
            for s in range(0, max(1, len(w) - k + 1), stride)
        )
        assert not mask[tok < 5].any()
        # MLM corruption: only masked positions change, never into a special token
        assert np.array_equal(inputs[~mask], tok[~mask]) and (inputs[mask] >= 4).all()
    assert batch.n_windows == 64 and batch.n_tokens == sum(len(t) for t, _, _ in unpacked)
    assert batch.n_masked == sum(m.sum() for _, _, m in unpacked)
    assert batch.n_maskable == sum((t >= 5).sum() for t, _, _ in unpacked)
    # long windows are cropped to max_tokens
    assert sum(len(t) == 40 for t, _, _ in unpacked) > 20
    # deterministic under the generator
    again = Batcher(corpus, cfg, None, np.random.default_rng(0)).next()
    assert all(np.array_equal(getattr(batch, f), getattr(again, f)) for f in ("input_ids", "labels", "mask"))

    # packing draws nothing: the same windows, masks and corruption, in fewer rows
    packed = Batcher(corpus, tiny(**{**cfg.to_dict(), "packing": True}), None, np.random.default_rng(0)).next()
    assert packed.packed and packed.input_ids.shape[0] < 64 and packed.input_ids.shape[1] <= 40
    key = lambda w: tuple(np.concatenate(w).tolist())  # noqa: E731
    assert sorted(map(key, unpack(packed))) == sorted(map(key, unpacked))
    assert (packed.n_tokens, packed.n_masked, packed.n_maskable) == (batch.n_tokens, batch.n_masked, batch.n_maskable)
    assert (packed.segments > 0).sum() == batch.n_tokens


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
        return T.Batch(
            input_ids=ids[rows],
            labels=ids[rows],
            mask=mask[rows],
            segments=np.ones_like(ids[rows]),
            position_ids=np.broadcast_to(np.arange(ids.shape[1]), (n, ids.shape[1])).copy(),
            packed=False,
            n_windows=n,
            n_tokens=ids[rows].size,
            n_maskable=n * 10,
            n_masked=n * 3,
        )

    monkeypatch.setattr(T.Batcher, "next", fixed_next)
    # adam_eps >> |grad| turns the first AdamW step into plain SGD (update = lr/eps * grad),
    # so the update measures the gradient's size, not just its sign
    common = dict(
        architecture="mae",
        prefetch=0,  # ``served`` counts draws, none ahead
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


def test_prefetch_thread_changes_nothing(random_corpus_path, tmp_path):
    """Batches prepared ahead in a thread: the same weights as drawing them inline."""
    for prefetch in (0, 3):
        cfg = tiny(architecture="mlm", steps=6, prefetch=prefetch, checkpoint_every=100)
        run(cfg, random_corpus_path, tmp_path, f"p{prefetch}")
    assert_same_weights(weights(tmp_path / "p0_model"), weights(tmp_path / "p3_model"))


def test_batch_pipeline_error_reaches_the_loop(random_corpus_path, tmp_path, monkeypatch):
    import dnalm.train as T

    def broken(self):
        raise RuntimeError("broken batch")

    monkeypatch.setattr(T.Batcher, "next", broken)
    with pytest.raises(RuntimeError, match="broken batch"):
        run(tiny(steps=2), random_corpus_path, tmp_path, "broken")


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


def test_tensorboard_event_files_hold_the_metrics_rows(random_corpus_path, tmp_path):
    """training.tensorboard: every metrics row also as TensorBoard scalars next to the TSV,
    equal to its values (float32), also across a resume (the rows logged by the stopped run
    after its checkpoint are replaced); off by default; not part of the config hash."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dnalm.checkpoint import config_hash

    cfg = tiny(steps=30, checkpoint_every=10, log_every=5, tensorboard=True)
    without = tiny(steps=30, checkpoint_every=10, log_every=5)
    assert config_hash(cfg, random_corpus_path) == config_hash(without, random_corpus_path)
    with pytest.raises(Stop):  # rows 5 .. 25 logged, checkpoint at 20
        train(cfg, random_corpus_path, tmp_path / "tb_model", tmp_path / "tb_metrics.tsv", tmp_path / "tb_ckpt",
              step_callback=stop_at(27))  # fmt: skip
    time.sleep(1.1)  # a second event file (their names hold the time in seconds)
    run(cfg, random_corpus_path, tmp_path, "tb")
    events = tmp_path / "tensorboard"
    assert len(list(events.glob("events.out.tfevents.*"))) == 2
    acc = EventAccumulator(str(events))
    acc.Reload()
    m = pd.read_csv(tmp_path / "tb_metrics.tsv", sep="\t", float_precision="round_trip")
    assert m["step"].tolist() == [5, 10, 15, 20, 25, 30]
    for column in METRIC_COLUMNS[1:-1]:
        scalars = acc.Scalars(f"train/{column}")
        assert [e.step for e in scalars] == m["step"].tolist(), column
        assert [e.value for e in scalars] == m[column].astype(np.float32).tolist(), column
    assert "train/peak_gpu_mem_mb" not in acc.Tags()["scalars"]  # empty on the CPU

    run(tiny(steps=2), random_corpus_path, tmp_path / "off", "off")
    assert not (tmp_path / "off" / "tensorboard").exists()


@pytest.mark.parametrize("tokenization", ["overlapping", "non-overlapping"])
def test_genemask_training_uses_npmi_table(random_corpus_path, tmp_path, tokenization):
    from dnalm.corpus import load_corpus
    from dnalm.masking import load_npmi_table

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
    permuted = tmp_path / "npmi_permuted.tsv"  # the same values, given to other k-mers
    df.assign(npmi=rng.permutation(df["npmi"].to_numpy())).to_csv(permuted, sep="\t", index=False)
    params = {"center_prob": 0.05, "span": 5, "mask_ratio": 0.3}
    cfg = tiny(masking="genemask", tokenization=tokenization, steps=6, masking_params=params)
    summary, steps = run(cfg, random_corpus_path, tmp_path, "g", npmi_path=npmi)
    assert steps == list(range(1, 7)) and 0.05 < summary["mean_mask_rate"] < 0.4
    with pytest.raises(ValueError, match="npmi"):
        run(cfg, random_corpus_path, tmp_path, "g2")

    # the Batcher looks the NPMI up by k-mer content: with span 1 (overlapping) the masked
    # tokens are the best of their windows under the table in use, so a permuted table picks
    # other tokens from the same draws, and each table's picks score high under that table only
    one = tiny(masking="genemask", tokenization=tokenization, batch_size=64, masking_params={**params, "span": 1})
    corpus = load_corpus(random_corpus_path)
    tables = {name: load_npmi_table(path, k) for name, path in (("orig", npmi), ("perm", permuted))}
    masks, scores = {}, {}
    for name, table in tables.items():
        batcher = Batcher(corpus, one, table, np.random.default_rng(4))
        batches = [batcher.next() for _ in range(5)]
        masks[name] = np.concatenate([b.mask.ravel() for b in batches])
        masked = np.concatenate([b.labels[b.mask] for b in batches]) - seq.N_SPECIAL
        scores[name] = {t: float(tab[masked].mean()) for t, tab in tables.items()}
        everything = np.concatenate([b.labels[b.labels >= seq.N_SPECIAL] for b in batches]) - seq.N_SPECIAL
    assert masks["orig"].shape == masks["perm"].shape and masks["orig"].sum() > 100
    assert (masks["orig"] != masks["perm"]).sum() > 0.5 * masks["orig"].sum()
    baseline = float(tables["orig"][everything].mean())  # ~0: the tables' values are U(-1, 1)
    for name, other in (("orig", "perm"), ("perm", "orig")):
        assert scores[name][name] > baseline + 0.15  # the best candidates by this table (~+0.3)
        assert abs(scores[name][other] - baseline) < 0.1  # unrelated to the other table


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
    elif args["mode"] == "report":  # the same, saying which step has ended
        def callback(step):
            print(step, flush=True)
            time.sleep(0.04)
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
    # batches prepared ahead in a thread (not the CPU default): a checkpoint holds the
    # generator state after the last batch consumed, so the run still ends where the
    # reference run (no thread) ends
    cfg = tiny(architecture=arch, steps=50, checkpoint_every=10, log_every=5, prefetch=2)
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
    cols = ["step", "loss", "masked_acc", "mask_rate", "val_loss", "val_masked_acc", "lr"]
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


def test_sigterm_checkpoints_the_current_step_and_the_rerun_resumes_identically(random_corpus_path, tmp_path):
    """SIGTERM (as SLURM sends before a time limit) to a training process: it finishes the
    step, writes a checkpoint of that step, says so in preempted.json and exits with status
    75; a rerun resumes there and ends with the weights of an uninterrupted run."""
    from dnalm.preemption import PREEMPTED_EXIT_CODE

    cfg = tiny(architecture="mlm", steps=40, checkpoint_every=10, log_every=5)
    run(cfg, random_corpus_path, tmp_path, "ref")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(scripts=SCRIPTS))
    ckpt = tmp_path / "term_ckpt"
    args = {
        "cfg": cfg.to_dict(), "corpus": str(random_corpus_path), "out": str(tmp_path / "term_model"),
        "metrics": str(tmp_path / "term_metrics.tsv"), "ckpt": str(ckpt), "mode": "report",
    }  # fmt: skip
    proc = subprocess.Popen(
        [PY, str(driver), json.dumps(args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    reported = []
    while not reported or reported[-1] < 12:  # past the first checkpoint
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-3000:]
        reported.append(int(line))
    proc.send_signal(signal.SIGTERM)
    reported += [int(x) for x in proc.stdout.read().split()]
    err = proc.stderr.read()
    assert proc.wait() == PREEMPTED_EXIT_CODE, err[-3000:]
    stopped = reported[-1]
    assert 12 <= stopped < 40 and reported == list(range(1, stopped + 1))
    assert "training stopped by SIGTERM after step" in err
    # the checkpoint of the step the signal interrupted, and the regular one before it
    names = ckpt_names(ckpt)
    assert [int(n[5:13]) for n in names] == [10 * ((stopped - 1) // 10), stopped]
    assert json.loads((ckpt / "preempted.json").read_text())["step"] == stopped
    assert not (tmp_path / "term_model").exists()

    _, steps = run(cfg, random_corpus_path, tmp_path, "term")
    assert steps == list(range(stopped + 1, 41))
    assert not (ckpt / "preempted.json").exists()
    assert_same_weights(weights(tmp_path / "ref_model"), weights(tmp_path / "term_model"))
    cols = ["step", "loss", "masked_acc", "mask_rate", "val_loss", "val_masked_acc", "lr"]
    a, b = (pd.read_csv(tmp_path / f"{name}_metrics.tsv", sep="\t")[cols] for name in ("ref", "term"))
    pd.testing.assert_frame_equal(a, b)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(random_corpus_path, tmp_path, caplog):
    """A truncated model.safetensors in the newest checkpoint (e.g. a node failure while it
    was flushed): the run resumes from the checkpoint before, with a warning naming the
    damaged folder, and ends as an uninterrupted run does; with no readable checkpoint left
    it stops with an error naming the folders and the fix."""
    from dnalm.checkpoint import CheckpointError

    cfg = tiny(architecture="mae", steps=30, checkpoint_every=10, log_every=5)
    run(cfg, random_corpus_path, tmp_path, "ref")
    with pytest.raises(Stop):
        train(cfg, random_corpus_path, tmp_path / "d_model", tmp_path / "d_metrics.tsv", tmp_path / "d_ckpt",
              step_callback=stop_at(25))  # fmt: skip
    ckpt = tmp_path / "d_ckpt"
    names = ckpt_names(ckpt)
    assert [n[:13] for n in names] == ["ckpt-00000010", "ckpt-00000020"]  # the last two are kept
    weights_file = ckpt / names[1] / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[: weights_file.stat().st_size // 2])

    caplog.set_level(logging.INFO, logger="dnalm.train")
    _, steps = run(cfg, random_corpus_path, tmp_path, "d")
    assert steps == list(range(11, 31))
    assert "damaged checkpoint" in caplog.text and str(ckpt / names[1]) in caplog.text
    assert f"resuming from {ckpt / names[0]}" in caplog.text
    assert_same_weights(weights(tmp_path / "ref_model"), weights(tmp_path / "d_model"))
    assert ckpt_names(ckpt) == [names[1].replace("20", "30", 1)]  # a finished run keeps its last one

    # nothing readable: the error names every damaged folder and what to do
    with pytest.raises(Stop):
        train(cfg, random_corpus_path, tmp_path / "e_model", tmp_path / "e_metrics.tsv", tmp_path / "e_ckpt",
              step_callback=stop_at(25))  # fmt: skip
    first, second = (tmp_path / "e_ckpt" / n for n in ckpt_names(tmp_path / "e_ckpt"))
    (second / "model.safetensors").write_bytes(b"")
    (first / "optimizer.pt").unlink()
    with pytest.raises(CheckpointError) as err:
        run(cfg, random_corpus_path, tmp_path, "e")
    message = str(err.value)
    assert str(first) in message and str(second) in message and "optimizer.pt" in message
    assert "Delete the damaged checkpoint folder(s)" in message
    assert not (tmp_path / "e_model").exists()


def test_tokens_per_s_after_a_resume_counts_training_time_only(random_corpus_path, tmp_path):
    """checkpoint_every 5, log_every 10, stopped after step 6 and resumed: the row at step 10
    sums the tokens of steps 1-10, and its tokens_per_s divides them by the time those steps
    took (>= 1 s slept before the checkpoint), not by the time since the resume."""
    from dnalm.corpus import load_corpus

    cfg = tiny(steps=10, checkpoint_every=5, log_every=10)

    class Stop(Exception):
        pass

    def slow_then_stop(step):
        if step < 5:
            time.sleep(0.25)  # steps 1-4: 1 s of the interval passes before the checkpoint
        if step == 6:
            raise Stop

    t0 = time.perf_counter()
    with pytest.raises(Stop):
        train(cfg, random_corpus_path, tmp_path / "t_model", tmp_path / "t_metrics.tsv", tmp_path / "t_ckpt",
              step_callback=slow_then_stop)  # fmt: skip
    first_wall = time.perf_counter() - t0
    time.sleep(0.5)  # down time: counted by neither interpretation of the interval
    t0 = time.perf_counter()
    _, steps = run(cfg, random_corpus_path, tmp_path, "t")
    resumed_wall = time.perf_counter() - t0
    assert steps == [6, 7, 8, 9, 10]
    (row,) = pd.read_csv(tmp_path / "t_metrics.tsv", sep="\t").to_dict("records")
    assert row["step"] == 10
    # the interval's tokens, replayed from the run's generator (one micro-batch per step)
    batcher = Batcher(load_corpus(random_corpus_path), cfg, None, np.random.default_rng([cfg.seed, 0]))
    tokens = sum(batcher.next().n_tokens for _ in range(10))
    assert tokens / (first_wall + resumed_wall) <= row["tokens_per_s"] <= tokens / 1.0


def test_bench_train_quick_smoke(tmp_path):
    """benchmarks/bench_train.py --quick (tiny model, 3 steps, 1 round) runs and reports
    throughput for the Trainer and for dnalm, and the pipeline rate of every preset."""
    pytest.importorskip("accelerate")
    out = tmp_path / "bench.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"
    proc = subprocess.run(
        [PY, str(script), "--quick", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    tp = res["throughput"]
    assert {"trainer (HF Trainer, MLM)", "dnalm MLM", "dnalm MAE (barcodes, 50 % masked)"} <= tp.keys()
    clm = {"dnalm CLM (genome, overlapping 6-mers)", "dnalm CLM (barcodes, non-overlapping 6-mers)"}
    assert clm <= tp.keys() and all(tp[name]["best"] > 0 for name in clm)
    assert res["vs_mlm"]["dnalm MLM"]["median_of_rounds"] == 1.0
    for name in ("trainer (HF Trainer, MLM)", "dnalm MLM"):
        assert len(tp[name]["rounds"]) == 1 and tp[name]["best"] > 0 and math.isfinite(tp[name]["best"])
    assert res["speedup_vs_trainer"]["dnalm MLM"]["of_bests"] > 0
    from dnalm.config import PRESETS

    assert set(res["pipeline"]) == set(PRESETS) and all(r["tokens_per_s"] > 0 for r in res["pipeline"].values())


ROUNDTRIP = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

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
            if name == "clm":  # the causal LM with its head
                clm = AutoModelForCausalLM.from_pretrained(d).eval()
                np.save(d + "/logits.npy", clm(input_ids=ids, attention_mask=attn).logits.numpy())
    print(json.dumps(out))
    """)


def test_saved_model_and_tokenizer_load_in_fresh_process(random_corpus_path, tmp_path):
    jobs, modules = [], {}
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGTN"), int(n), p=[0.24, 0.24, 0.24, 0.24, 0.04])) for n in (30, 45, 61)]
    for arch, tok in (("mlm", "overlapping"), ("mae", "non-overlapping"), ("clm", "non-overlapping")):
        cfg = tiny(architecture=arch, tokenization=tok, k=4, steps=4)
        run(cfg, random_corpus_path, tmp_path, arch)
        model_dir = tmp_path / f"{arch}_model"
        assert sorted(os.listdir(model_dir)) == [
            "config.json",
            "dnalm.json",
            *(["generation_config.json"] if arch == "clm" else []),
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
        assert results[f"{arch}_class"] == ("GPT2Model" if arch == "clm" else "BertModel")
        encoder = module.encoder
        with torch.no_grad():
            want = encoder(input_ids=torch.tensor(ids), attention_mask=torch.tensor(attn)).last_hidden_state.numpy()
        np.testing.assert_allclose(np.load(tmp_path / f"{arch}_model" / "hidden.npy"), want, atol=1e-5)
    module, ids, attn = modules["mlm"]
    with torch.no_grad():
        want = module.mlm(input_ids=torch.tensor(ids), attention_mask=torch.tensor(attn)).logits.numpy()
    np.testing.assert_allclose(np.load(tmp_path / "mlm_model" / "logits.npy"), want, atol=1e-4)
    module, ids, attn = modules["clm"]
    with torch.no_grad():
        want = module.lm(input_ids=torch.tensor(ids), attention_mask=torch.tensor(attn)).logits.numpy()
    np.testing.assert_allclose(np.load(tmp_path / "clm_model" / "logits.npy"), want, atol=1e-4)
