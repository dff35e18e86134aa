"""Smoke test of benchmarks/bench_learning.py (``--quick``: tiny data, six steps), so that
the learning benchmark keeps running against the package's training, embedding and
evaluation code: one masked and one causal model, their untrained controls checked
against an independent rebuild of the initial weights, and the summary table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_learning", ROOT / "benchmarks" / "bench_learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_rows(bench, tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    out = work / "rows.tsv"
    for family in ("barcodebert", "barcodegpt"):
        bench.main(["--quick", "--family", family, "--seeds", "0", "--shots", "5", "--repeats", "2", "--work",
                    str(work), "--out", str(out), "--lock", "", "--keep"])
    return work, pd.read_csv(out, sep="\t")


def test_rows_and_controls(bench, quick_rows, capsys):
    work, rows = quick_rows
    assert list(rows["family"]) == ["barcodebert", "barcodegpt"]
    assert list(rows["architecture"]) == ["mlm", "clm"]
    for col in ("closed", "ctl_closed", "kmer_closed", "open", "ctl_open", "closed_fa", "ctl_closed_fa"):
        assert rows[col].between(0, 1).all(), col
    # few-shot columns for every simulated task, and the paired gain = model - control (per repeat, averaged)
    for task in ("prom", "splice", "enh"):
        gain = rows[f"fs_{task}_5"] - rows[f"ctl_fs_{task}_5"]
        assert np.allclose(rows[f"fs_{task}_5_gain"], gain, atol=2e-4)
    # the validation slice scores the model, its control and the no-model predictors
    assert (rows["val_loss"] < rows["ctl_val_loss"]).all()  # six steps at lr 5e-3 already move the loss
    assert rows[["unigram_val_acc", "kmer_context_val_acc"]].notna().all().all()

    from dnalm import train as T

    for row in rows.itertuples():
        train_settings, corpus_settings = bench.resolve(bench.quick_config(_config(bench)), row.family, {})
        train_settings["seed"] = int(row.seed)
        run = work / "runs" / f"{row.data}-{row.family}-{bench.digest([train_settings, corpus_settings])}"
        meta = json.loads((run / "control" / "dnalm.json").read_text())
        assert meta["steps"] == 0 and meta["architecture"] == row.architecture
        # the control holds exactly the weights training starts from (rebuilt here independently)
        cfg = T.TrainConfig.from_dict(train_settings)
        torch.manual_seed(cfg.seed)
        initial = T.build_model(cfg)
        from safetensors.torch import load_file

        saved = load_file(str(next((run / "control").glob("*.safetensors"))))
        trained = load_file(str(next((run / "model").glob("*.safetensors"))))
        ref = {k: v for k, v in _hf(initial).state_dict().items() if k in saved}
        assert ref and all(torch.equal(saved[k], v) for k, v in ref.items())
        assert any(not torch.equal(trained[k], saved[k]) for k in ref)

    bench.main(["--summary", "--out", str(work / "rows.tsv"), "--columns", "closed", "gain_closed"])
    printed = capsys.readouterr().out
    assert "barcodegpt" in printed and "gain_closed" in printed


def test_frame_average_is_frame_invariant(bench):
    """Averaged over the k frames, the spectrum of non-overlapping k-mers of s and of s with
    its first base dropped differ only by the k-mers at the two ends."""
    from dnalm import embed

    k = 3
    rng = np.random.default_rng(0)
    s = "".join(rng.choice(list("ACGT"), 3000))

    def nonoverlapping_counts(seqs):
        out = np.zeros((len(seqs), 4**k))
        idx = {"".join(w): i for i, w in enumerate(np.array(np.meshgrid(*[list("ACGT")] * k, indexing="ij")).reshape(k, -1).T)}
        for r, t in enumerate(seqs):
            for j in range(0, len(t) - k + 1, k):
                out[r, idx[t[j : j + k]]] += 1
        return out

    fa = bench.frame_averaged(nonoverlapping_counts, k)
    plain = nonoverlapping_counts([s, s[1:]])
    averaged = fa([s, s[1:]])
    assert np.abs(plain[0] - plain[1]).sum() > 100  # one frame apart: different tokens
    assert np.abs(averaged[0] - averaged[1]).sum() <= 2  # averaged: the same up to the ends
    assert embed  # the package module the benchmark embeds with is importable


def _config(bench):
    import yaml

    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def _hf(module):
    """The transformers model inside a training module (what save_pretrained writes)."""
    for name in ("mlm", "model", "lm", "encoder"):
        if hasattr(module, name) and hasattr(getattr(module, name), "save_pretrained"):
            return getattr(module, name)
    return module
