"""Config schema validation and model-preset resolution."""

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dnalm.config import PRESETS, ConfigError, resolve_model, train_settings, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"


@pytest.fixture
def demo():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_demo_config_is_valid_and_defaults_filled(demo):
    del demo["kmers"]["n_shards"]
    del demo["evaluation"]["clustering"]
    validate_config(demo, SCHEMA)
    assert demo["kmers"]["n_shards"] == 2
    assert demo["evaluation"]["clustering"]["method"] == "agglomerative"


def test_empty_config_gets_every_default():
    cfg = {}
    validate_config(cfg, SCHEMA)
    assert cfg["kmers"]["k_max"] == 6 and cfg["npmi"]["min_count"] == 10
    assert set(cfg["models"]) == {"dnabert", "genemask"}


@pytest.mark.parametrize(
    "mutate,key,words",
    [
        (lambda c: c["kmers"].update(k_max="six"), "kmers.k_max", "not of type 'integer'"),
        (lambda c: c["kmers"].update(k_max=13), "kmers.k_max", "maximum"),
        (lambda c: c["models"].update(foo={"preset": "gpt"}), "models.foo.preset", "unknown model preset 'gpt'"),
        (lambda c: c["models"]["dnabert"].update(architecture="gpt"), "models.dnabert.architecture", "'gpt' is not one of"),
        (lambda c: c["models"]["dnabert"].update(size={"layers": "two"}), "models.dnabert.size.layers", "not of type"),
        (lambda c: c["evaluation"]["fewshot"].update(shots=10), "evaluation.fewshot.shots", "not of type 'array'"),
        (lambda c: c["evaluation"]["fewshot"].update(n_repeat=3), "evaluation.fewshot", "n_repeat"),
        (lambda c: c.update(report={"models": ["nope"]}), "report.models", "unknown model name 'nope'"),
        (lambda c: c["models"].update(kmer={"preset": "dnabert"}), "models.kmer", "reserved"),
        (lambda c: c["models"].update({"bad name": {"preset": "dnabert"}}), "models", "does not match"),
    ],
)
def test_bad_config_names_the_key(demo, mutate, key, words):
    mutate(demo)
    with pytest.raises(ConfigError) as err:
        validate_config(demo, SCHEMA)
    msg = str(err.value)
    assert f"'{key}'" in msg and words in msg, msg


def test_resolve_model_layers_defaults_preset_entry(demo):
    demo["models"]["custom"] = {"preset": "genemask", "steps": 7, "masking_params": {"span": 9}}
    validate_config(demo, SCHEMA)
    r = resolve_model(demo, "custom")
    assert r["steps"] == 7  # entry wins
    assert r["masking_params"] == {"center_prob": 0.0176, "span": 9, "keep_fraction": 0.5, "min_keep": 5}
    assert r["size"] == demo["training"]["size"]  # training defaults
    assert r["seed"] == demo["seed"]
    assert "corpus" not in train_settings(r) and "preset" not in train_settings(r)
    for name, preset in PRESETS.items():
        assert {"architecture", "masking", "tokenization", "k", "corpus"} <= set(preset), name


def test_model_without_preset_must_be_explicit(demo):
    demo["models"]["bare"] = {"steps": 3}
    validate_config(demo, SCHEMA)
    with pytest.raises(ConfigError, match="models.bare.architecture"):
        resolve_model(demo, "bare")


def test_resolved_settings_are_accepted_by_trainconfig(demo):
    from dnalm import train

    validate_config(demo, SCHEMA)
    for name in demo["models"]:
        settings = train_settings(resolve_model(demo, name))
        settings.pop("threads", None)
        settings.pop("gpus", None)
        train.TrainConfig.from_dict(settings)


def test_every_preset_and_loop_option_resolves_to_a_train_config(demo):
    from dnalm import train

    demo["models"] = {name: {"preset": name} for name in PRESETS}
    demo["models"]["custom"] = {
        "architecture": "mae", "masking": "genemask", "tokenization": "overlapping", "k": 4, "corpus": "genome",
        "packing": False, "prefetch": 0, "grad_accum": 2, "gpus": 2, "threads": 4,
    }  # fmt: skip
    validate_config(demo, SCHEMA)
    for name in demo["models"]:
        cfg = train.TrainConfig.from_dict(train_settings(resolve_model(demo, name)))
        assert cfg.lr == demo["training"]["lr"] and cfg.size == demo["training"]["size"]
    custom = train.TrainConfig.from_dict(train_settings(resolve_model(demo, "custom")))
    assert (custom.packing, custom.prefetch, custom.grad_accum, custom.k) == (False, 0, 2, 4)
    assert resolve_model(demo, "barcodemae")["masking_params"] == {"mask_ratio": 0.5}
    demo["models"]["custom"]["prefetch"] = -1
    with pytest.raises(ConfigError, match="models.custom.prefetch"):
        validate_config(demo, SCHEMA)


# --------------------------------------------------------------------------- config-time checks


def _table():
    """A tiny barcode table: 2 genera x 4 species x 3 specimens, distinct barcodes."""
    rows = []
    for g in range(2):
        for s in range(4):
            for i in range(3):
                rows.append({"processid": f"P{g}{s}{i}", "genus": f"G{g}", "species": f"G{g} s{s}",
                             "dna_barcode": "ACGT" * 5 + "ACGT"[g] + "ACGT"[s] + "ACGT"[i]})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "which,fractions,key,words",
    [
        ("seen", {"train": 0.8, "val": 0.2}, "seen", "'test' is a required property"),
        ("seen", {"val": 0.5, "test": 0.5}, "seen", "'train' is a required property"),
        ("seen", {"train": 0.8, "test": 0}, "seen.test", "less than or equal to the minimum of 0"),
        ("unseen", {"val_unseen": 0.5, "test_unseen": 0.5}, "unseen", "'key_unseen' is a required property"),
        ("unseen", {"key_unseen": 1.0}, "unseen", "'test_unseen' is a required property"),
    ],
)
def test_split_fractions_without_a_required_split_fail_at_config_time(demo, which, fractions, key, words):
    from dnalm import barcodes

    demo.setdefault("data", {}).setdefault("barcodes", {})["splits"] = {which: fractions}
    with pytest.raises(ConfigError) as err:
        validate_config(demo, SCHEMA)
    msg = str(err.value)
    assert f"config key 'data.barcodes.splits.{key}'" in msg and words in msg, msg
    # the schema rejects exactly what the split builder (prepare_barcodes) would reject later
    with pytest.raises(ValueError, match="needs a fraction > 0"):
        barcodes.build_splits(_table(), seed=0, **{which: fractions})


def test_split_fractions_with_the_required_splits_are_valid(demo):
    from dnalm import barcodes

    splits = {"seen": {"train": 0.7, "test": 0.3}, "unseen": {"key_unseen": 0.5, "test_unseen": 0.5, "pretrain": 0.1}}
    demo.setdefault("data", {}).setdefault("barcodes", {})["splits"] = copy.deepcopy(splits)
    validate_config(demo, SCHEMA)
    assert demo["data"]["barcodes"]["splits"]["seen"] == splits["seen"]  # not mixed with the default
    split, _ = barcodes.build_splits(_table(), seed=0, unseen_fraction=0.5, **splits)
    assert {"train", "test"} <= set(split) and not {"val", "val_unseen"} & set(split)


@pytest.mark.parametrize(
    "training,model,key",
    [
        ({"device": "cuda", "gpus": 0}, {}, "training.device"),
        ({"device": "cuda"}, {}, "training.device"),  # gpus defaults to 0
        ({"device": "auto", "gpus": 0}, {"device": "cuda"}, "models.dnabert.device"),
        ({"device": "cuda", "gpus": 1}, {"gpus": 0}, "training.device"),
    ],
)
def test_cuda_without_gpus_fails_at_config_time(demo, training, model, key):
    demo["training"].pop("gpus", None)
    demo["training"].update(training)
    demo["models"]["dnabert"].update(model)
    validate_config(demo, SCHEMA)  # the schema alone cannot see the combination
    with pytest.raises(ConfigError) as err:
        resolve_model(demo, "dnabert")
    msg = str(err.value)
    assert msg.startswith(f"config key '{key}'") and "needs a GPU" in msg and "'dnabert'" in msg, msg
    gpus_key = "models.dnabert.gpus" if "gpus" in model else "training.gpus"
    assert f"'{gpus_key}' is 0" in msg, msg
    if model:  # the clash is in dnabert's entry only: genemask (training defaults) resolves
        assert resolve_model(demo, "genemask")["device"] == training["device"]
    else:
        with pytest.raises(ConfigError, match="'genemask' needs a GPU"):
            resolve_model(demo, "genemask")


def test_cuda_with_gpus_and_cpu_without_gpus_resolve(demo):
    demo["training"].update(device="cuda", gpus=1)
    demo["models"]["dnabert"].update(device="cpu", gpus=0)
    validate_config(demo, SCHEMA)
    assert resolve_model(demo, "genemask")["device"] == "cuda" and resolve_model(demo, "genemask")["gpus"] == 1
    assert resolve_model(demo, "dnabert")["device"] == "cpu"
    full = yaml.safe_load((ROOT / "config" / "full.yaml").read_text())
    merged = copy.deepcopy(demo)
    merged.update({k: v for k, v in full.items() if k not in ("data", "npmi")})
    validate_config(merged, SCHEMA)
    assert all(resolve_model(merged, m)["device"] == "cuda" for m in merged["models"])  # full.yaml: gpus 1


def test_workflow_rejects_cuda_without_gpus_before_any_job(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"training": {"device": "cuda", "gpus": 0}}))
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        [snakemake, "-n", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(ROOT / "config" / "config.yaml"), str(tmp_path / "bad.yaml")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Invalid configuration: config key 'training.device'" in out, out[-3000:]
    assert "Building DAG of jobs" not in out and not (tmp_path / "results").exists()
