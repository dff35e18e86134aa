"""Config validation (JSON schema with defaults) and model-preset resolution.

``rules/common.smk`` calls :func:`validate_config` before any job is scheduled, so a bad
config fails at once with a message that names the offending key, and
:func:`resolve_model` to turn one ``models:`` entry into the explicit training config that
reaches the pretraining rule through ``params:``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

BASELINE = "kmer"  # reserved model name of the k-mer-spectrum baseline

#: Published model recipes, scaled down by the config's ``training`` block.
#: Masking parameters follow DESIGN.md; a model entry may override any key.
PRESETS: dict[str, dict] = {
    # DNABERT: overlapping 6-mers, random 6-token spans around centres with p=0.025
    "dnabert": {
        "architecture": "mlm", "masking": "random", "tokenization": "overlapping", "k": 6,
        "corpus": "genome", "masking_params": {"center_prob": 0.025},
    },
    # GeneMask: overlapping 6-mers, NPMI-guided spans (p=0.0176, span 11, keep top 50%)
    "genemask": {
        "architecture": "mlm", "masking": "genemask", "tokenization": "overlapping", "k": 6,
        "corpus": "genome",
        "masking_params": {"center_prob": 0.0176, "span": 11, "keep_fraction": 0.5, "min_keep": 5},
    },
    # BarcodeBERT: non-overlapping 6-mers of COI barcodes, i.i.d. masking at 50%
    "barcodebert": {
        "architecture": "mlm", "masking": "random", "tokenization": "non-overlapping", "k": 6,
        "corpus": "barcodes", "masking_params": {"mask_ratio": 0.5},
    },
    # BarcodeMAE: the same tokens, masked autoencoder (encoder sees visible tokens only)
    "barcodemae": {
        "architecture": "mae", "masking": "random", "tokenization": "non-overlapping", "k": 6,
        "corpus": "barcodes", "masking_params": {"mask_ratio": 0.5},
    },
    # MAE + GeneMask: the masked autoencoder with NPMI-guided token choice
    "mae_genemask": {
        "architecture": "mae", "masking": "genemask", "tokenization": "non-overlapping", "k": 6,
        "corpus": "barcodes", "masking_params": {"mask_ratio": 0.5, "keep_fraction": 0.5},
    },
    # GPT-2-style causal LM on barcodes (BarcodeMAE's causal comparison): next-token loss
    # over non-overlapping 6-mers, the tokens BarcodeBERT/MAE read
    "barcodegpt": {
        "architecture": "clm", "masking": "random", "tokenization": "non-overlapping", "k": 6,
        "corpus": "barcodes",
    },
    # GPT-2-style causal LM on the genome: overlapping 6-mers (the next token adds one base)
    "dnagpt": {
        "architecture": "clm", "masking": "random", "tokenization": "overlapping", "k": 6,
        "corpus": "genome",
    },
}

#: Keys of a resolved model entry that are not training-loop settings.
MODEL_ONLY_KEYS = ("preset", "corpus", "threads", "gpus", "nodes")


class ConfigError(ValueError):
    """The config does not match the schema; the message names the key."""


def _key_path(path) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _with_defaults(validator_class):
    """Extend a jsonschema validator so that it fills in ``default`` values."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema and prop not in instance:
                    instance[prop] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Validate ``config`` in place against the YAML/JSON schema, filling defaults.

    Raises :class:`ConfigError` naming the dotted key of the first error, e.g.
    ``config key 'kmers.k_max': 'six' is not of type 'integer'``.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    Validator = _with_defaults(jsonschema.Draft202012Validator)
    errors = sorted(Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = jsonschema.exceptions.best_match(errors) or errors[0]
        key = _key_path(err.absolute_path)
        msg = err.message
        if err.validator == "additionalProperties":
            msg = f"unknown key(s): {msg}"
        if err.validator == "enum" and err.absolute_path and "preset" in str(err.absolute_path[-1]):
            msg = f"unknown model preset {err.instance!r}; known presets: {sorted(PRESETS)}"
        raise ConfigError(f"config key '{key}': {msg}")
    for name in config.get("models", {}):
        if name == BASELINE:
            raise ConfigError(f"config key 'models.{name}': the name {BASELINE!r} is reserved for the k-mer baseline")
    for name in config.get("report", {}).get("models", []) or []:
        if name != BASELINE and name not in config.get("models", {}):
            raise ConfigError(
                f"config key 'report.models': unknown model name {name!r}; defined models: "
                f"{sorted(config.get('models', {}))} (plus {BASELINE!r})"
            )
    return config


def deep_merge(base: dict, override: dict) -> dict:
    """Recursively merge ``override`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_model(config: dict, name: str) -> dict:
    """The explicit settings of model ``name``: training defaults < preset < entry.

    Returns a plain dict with ``corpus`` plus every key of ``dnalm.train.TrainConfig``
    (``seed`` comes from the top-level config unless the entry sets one).
    """
    if name not in config["models"]:
        raise ConfigError(f"config key 'models': unknown model name {name!r}; defined: {sorted(config['models'])}")
    entry = config["models"][name] or {}
    preset = entry.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"config key 'models.{name}.preset': unknown model preset {preset!r}; known presets: {sorted(PRESETS)}")
    resolved = deep_merge(config.get("training", {}), PRESETS.get(preset, {}))
    resolved = deep_merge(resolved, {k: v for k, v in entry.items() if k != "preset"})
    resolved.setdefault("seed", config.get("seed", 0))
    for key in ("architecture", "masking", "tokenization", "k", "corpus"):
        if key not in resolved:
            raise ConfigError(f"config key 'models.{name}.{key}': required (set it or choose a preset)")
    _check_device(config, name, entry, resolved)
    return resolved


def _check_device(config: dict, name: str, entry: dict, resolved: dict) -> None:
    """``device: cuda`` needs ``gpus`` >= 1: a job whose ``gpu`` resource is 0 sees no GPU
    (dnalm.gpus hides every device from it), so it could only fail once it has started."""
    device = str(resolved.get("device", "auto"))
    gpus = resolved.get("gpus", 0)
    if device.startswith("cuda") and gpus < 1:
        key = f"models.{name}.device" if "device" in entry else "training.device"
        gpus_key = f"models.{name}.gpus" if "gpus" in entry else "training.gpus"
        raise ConfigError(
            f"config key '{key}': device {device!r} for model {name!r} needs a GPU, but its "
            f"'{gpus_key}' is {gpus}, so its jobs hold no GPU and can never see one; set "
            f"'{gpus_key}' to 1 (or more), or the device to 'auto' (GPU when the job holds one) or 'cpu'"
        )


def train_settings(resolved: dict) -> dict:
    """The part of a resolved model entry that ``TrainConfig.from_dict`` takes."""
    return {k: v for k, v in resolved.items() if k not in MODEL_ONLY_KEYS}
