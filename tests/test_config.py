"""Config schema validation and model-preset resolution."""

import copy
from pathlib import Path

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
