"""Config validation (JSON schema with defaults), checks across keys, and model presets.

``rules/common.smk`` calls :func:`validate_config` (schema, defaults, checks across keys),
:func:`resolve_model` (one ``models:`` entry as the explicit training config that reaches
the pretraining rule through ``params:``) and :func:`dnalm.input_checks.check_inputs` (what
the data sources can deliver: split names, few-shot pools, local files) before any job is scheduled, so a
bad config fails at once with a message that names the offending key.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import yaml

BASELINE = "kmer"  # reserved model name of the k-mer-spectrum baseline
ALIGN_BASELINE = "align"  # reserved model name of the alignment baseline (rules/align.smk)
RESERVED_MODELS = {BASELINE: "the k-mer baseline", ALIGN_BASELINE: "the alignment baseline"}
CONTROL_SUFFIX = "@init"  # model `<name>@init`: the untrained control of model `<name>` (evaluation.controls)

#: Published model recipes, scaled down by the config's ``training`` block.
#: Masking parameters: docs/design.md#masking; a model entry may override any key.
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

#: Split names a real barcode table may carry (BIOSCAN-5M's published splits).

#: Config keys that name barcode splits (each a string or a list of strings).
SPLIT_KEYS = (
    "evaluation.taxonomy.closed_train",
    "evaluation.taxonomy.closed_test",
    "evaluation.taxonomy.open_reference",
    "evaluation.taxonomy.open_query",
    "evaluation.clustering.split",
    "report.embedding_map.split",
    "embedding.barcode_splits",
    "corpus.barcodes.splits",
)


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


def _yaml_number(text: str, integer: bool) -> str | None:
    """How to write the number that ``text`` spells so that YAML reads a number, or None
    when ``text`` is no number. PyYAML (YAML 1.1) reads ``1e-3`` as a string: a float
    needs a decimal point and, in exponent form, a signed exponent (``1.0e-3``)."""
    try:
        value = float(text.strip().replace("_", ""))
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    if integer and value.is_integer():
        return str(int(value))
    if "e" not in text.lower():
        return repr(value)
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = mantissa.rstrip("0")
    return f"{mantissa}0e{int(exponent):+d}" if mantissa.endswith(".") else f"{mantissa}e{int(exponent):+d}"


def _type_hint(err) -> str:
    """For a number-typed key given a string that spells a number: how to write it."""
    expected = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
    if not isinstance(err.instance, str) or not {"number", "integer"} & set(expected):
        return ""
    return _number_advice(err.instance, integer="number" not in expected)


def _number_advice(text: str, integer: bool) -> str:
    """'; YAML read ... write ...' for text that spells a number, else ''."""
    spelled = _yaml_number(text, integer)
    if spelled is None:
        return ""
    if "e" not in text.lower():
        why = "without quotes"
    elif integer:
        why = "an integer written out; YAML reads 1e3 as text"
    else:
        why = "YAML needs a decimal point and a signed exponent, e.g. 1.0e-3, not 1e-3"
    return f"; YAML read {text!r} as text, not a number: write {spelled} ({why})"


def _get(config: dict, dotted: str):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _check_across_keys(config: dict) -> None:
    """Checks the schema cannot express: keys that constrain each other."""
    genome = _get(config, "corpus.genome") or {}
    if genome.get("min_len", 0) > genome.get("max_len", math.inf):
        raise ConfigError(
            f"config key 'corpus.genome.min_len': {genome['min_len']} is larger than corpus.genome.max_len "
            f"({genome['max_len']}); training windows are drawn with lengths min_len..max_len"
        )
    motif_k, k_max = _get(config, "npmi.motif_k"), _get(config, "kmers.k_max")
    if motif_k is not None and k_max is not None and motif_k > k_max:
        raise ConfigError(
            f"config key 'npmi.motif_k': {motif_k} is larger than kmers.k_max ({k_max}), so the NPMI table has "
            f"no {motif_k}-mers to compare with the known motifs; lower npmi.motif_k or raise kmers.k_max"
        )


@functools.lru_cache(maxsize=4)
def _load_schema(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text())


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Validate ``config`` in place against the YAML/JSON schema, filling defaults, then
    check the keys that constrain each other.

    Raises :class:`ConfigError` naming the dotted key of the first error, e.g.
    ``config key 'kmers.k_max': 'six' is not of type 'integer'``.
    """
    _check_control_names(config)
    schema = _load_schema(str(schema_path))
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
        if err.validator == "type":
            msg += _type_hint(err)
        msg += _external_key_hint(config, err)
        raise ConfigError(f"config key '{key}': {msg}")
    for name in config.get("models", {}):
        if name in RESERVED_MODELS:
            raise ConfigError(f"config key 'models.{name}': the name {name!r} is reserved for {RESERVED_MODELS[name]}")
    for name in config.get("report", {}).get("models", []) or []:
        if name not in RESERVED_MODELS and name not in config.get("models", {}):
            base = control_of(name)
            if base is not None and base in config.get("models", {}) and not config["evaluation"]["controls"]:
                raise ConfigError(
                    f"config key 'report.models': {name!r} is the untrained control of model {base!r}, but "
                    "evaluation.controls is false, so it is not evaluated; set evaluation.controls: true or drop it"
                )
            if base is None or base not in config.get("models", {}):
                raise ConfigError(
                    f"config key 'report.models': unknown model name {name!r}; defined models: "
                    f"{sorted(config.get('models', {}))} (plus {sorted(RESERVED_MODELS)} and the untrained controls "
                    f"'<model>{CONTROL_SUFFIX}')"
                )
    _check_across_keys(config)
    return config


# --------------------------------------------------------------------------- untrained controls


def control_name(model: str) -> str:
    """The name of the untrained control of ``model`` (``<model>@init``)."""
    return f"{model}{CONTROL_SUFFIX}"


def control_of(name: str) -> str | None:
    """The model whose untrained control ``name`` is, or None when ``name`` is no control."""
    return name[: -len(CONTROL_SUFFIX)] if name.endswith(CONTROL_SUFFIX) and len(name) > len(CONTROL_SUFFIX) else None


def control_models(config: dict, trained) -> list[str]:
    """The untrained controls the workflow evaluates: one per trained model (``trained``;
    not the baselines) when ``evaluation.controls`` is on, else none."""
    return [control_name(m) for m in trained] if config["evaluation"]["controls"] else []


def _check_control_names(config: dict) -> None:
    """``<name>@init`` is the control of model ``<name>``: no model entry may take such a name
    (checked before the schema, whose name pattern would only say it does not match)."""
    for name in config.get("models") or {}:
        if isinstance(name, str) and CONTROL_SUFFIX in name:
            base = control_of(name)
            whose = f"model {base!r}" if base else "a model"
            raise ConfigError(
                f"config key 'models.{name}': names ending in {CONTROL_SUFFIX!r} are reserved for the untrained "
                f"control of {whose} (evaluation.controls); model names use letters, digits, '_' and '-'"
            )


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
    (``seed`` comes from the top-level config unless the entry sets one). An external
    checkpoint (``pretrained:``) is never trained: :func:`resolve_external`.
    """
    if name not in config["models"]:
        raise ConfigError(f"config key 'models': unknown model name {name!r}; defined: {sorted(config['models'])}")
    entry = config["models"][name] or {}
    if is_external_entry(entry):
        return resolve_external(config, name)
    preset = entry.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(
            f"config key 'models.{name}.preset': unknown model preset {preset!r}; known presets: {sorted(PRESETS)}"
        )
    resolved = deep_merge(config.get("training", {}), PRESETS.get(preset, {}))
    resolved = deep_merge(resolved, {k: v for k, v in entry.items() if k != "preset"})
    resolved.setdefault("seed", config.get("seed", 0))
    for key in ("architecture", "masking", "tokenization", "k", "corpus"):
        if key not in resolved:
            raise ConfigError(f"config key 'models.{name}.{key}': required (set it or choose a preset)")
    _check_device(config, name, entry, resolved)
    _check_sizes(name, entry, resolved)
    _check_token_k(config, name, entry, resolved)
    _check_eval_every(name, entry, resolved)
    _check_window_and_masking(name, entry, resolved)
    return resolved


# --------------------------------------------------------------------------- external checkpoints

#: Keys of an external model entry (``pretrained:``); every other key implies training.
EXTERNAL_KEYS = (
    "pretrained", "revision", "tokenizer", "k", "tokenization", "pooling", "max_tokens", "trust_remote_code",
    "dtype", "gpus",
)


def is_external_entry(entry) -> bool:
    """Whether a ``models:`` entry names a published checkpoint (``pretrained:``)."""
    return isinstance(entry, Mapping) and entry.get("pretrained") is not None


def external_models(config: dict) -> list[str]:
    """Names of the external models (evaluated, never trained), in config order."""
    return [name for name, entry in (config.get("models") or {}).items() if is_external_entry(entry)]


def _external_key_hint(config: dict, err) -> str:
    """For an unknown key in a model entry: which keys apply to external models and which
    to models trained here (a schema error alone only says the key was unexpected)."""
    path = list(err.absolute_path)
    if err.validator != "additionalProperties" or len(path) != 2 or path[0] != "models":
        return ""
    entry = (config.get("models") or {}).get(path[1])
    if is_external_entry(entry):
        extra = sorted(set(entry) - set(EXTERNAL_KEYS))
        return (
            f"; model {path[1]!r} is an external checkpoint (pretrained: {entry['pretrained']!r}), evaluated as "
            f"published and never trained here, so training keys {extra} do not apply; its keys: "
            f"{list(EXTERNAL_KEYS)} (or drop 'pretrained' to train this model)"
        )
    own = sorted(set(entry or {}) & (set(EXTERNAL_KEYS) - {"k", "tokenization", "pooling", "max_tokens", "gpus"}))
    if own:
        return f"; {own} apply to external checkpoints only (an entry with pretrained: <folder or hub id>)"
    return ""


def resolve_external(config: dict, name: str) -> dict:
    """The settings of external model ``name`` (an entry with ``pretrained:``), not merged
    with the training defaults (:func:`dnalm.external.resolve_entry`: checks what can be
    checked offline; a hub id without ``revision`` gets a warning). Raises
    :class:`ConfigError` naming the key."""
    from . import external

    try:
        return external.resolve_entry(name, config["models"][name])
    except external.ExternalModelError as err:
        key, _, problem = str(err).partition(": ")
        raise ConfigError(f"config key '{key}': {problem}") from None


def _source_key(name: str, entry: dict, key: str, subkeys=()) -> str:
    """The config key a resolved setting came from: the model entry's or ``training.<key>``
    (presets set no sizes, k only with the preset itself)."""
    own = entry.get(key)
    if own is not None and (not subkeys or (isinstance(own, dict) and set(subkeys) & set(own))):
        return f"models.{name}.{key}"
    return f"training.{key}"


def _check_sizes(name: str, entry: dict, resolved: dict) -> None:
    """Each transformer needs ``layers``, ``hidden`` and ``heads``, with ``hidden`` a
    multiple of ``heads`` (the decoder only counts for the masked autoencoder)."""
    subs = ("size", "decoder_size") if resolved.get("architecture") == "mae" else ("size",)
    for sub in subs:
        size = resolved.get(sub)
        if size is None:  # dnalm.train.TrainConfig's default size
            continue
        missing = sorted({"layers", "hidden", "heads"} - set(size))
        if missing:
            raise ConfigError(
                f"config key '{_source_key(name, entry, sub)}': model {name!r} lacks {missing} in its {sub} "
                f"(merged from training.{sub} and models.{name}.{sub}: {size})"
            )
        hidden, heads = size["hidden"], size["heads"]
        if hidden % heads:
            key = _source_key(name, entry, sub, ("hidden", "heads"))
            raise ConfigError(
                f"config key '{key}': hidden {hidden} is not a multiple of heads {heads} for model {name!r} "
                f"(each attention head gets hidden / heads dimensions); e.g. hidden "
                f"{max(1, round(hidden / heads)) * heads} or a heads that divides {hidden}"
            )


def _check_token_k(config: dict, name: str, entry: dict, resolved: dict) -> None:
    """GeneMask masking ranks the model's k-mers by NPMI: the table must hold them."""
    k_max = _get(config, "kmers.k_max")
    if resolved.get("masking") == "genemask" and k_max is not None and resolved["k"] > k_max:
        key = f"models.{name}.k" if "k" in entry else (f"models.{name}.preset" if "preset" in entry else "training.k")
        raise ConfigError(
            f"config key '{key}': model {name!r} masks {resolved['k']}-mer tokens by NPMI, but kmers.k_max is "
            f"{k_max}, so the NPMI table has no {resolved['k']}-mers; raise kmers.k_max to {resolved['k']}"
        )


def _check_eval_every(name: str, entry: dict, resolved: dict) -> None:
    """Validation values go on the rows of metrics.tsv: ``eval_every`` (0: never) must be a
    multiple of ``log_every`` (dnalm.train.TrainConfig checks it again, at job time)."""
    every, log_every = resolved.get("eval_every"), resolved.get("log_every", 10)
    if every is None or every == 0 or not log_every or every % log_every == 0:
        return
    key = f"models.{name}.eval_every" if "eval_every" in entry else "training.eval_every"
    log_key = f"models.{name}.log_every" if "log_every" in entry else "training.log_every"
    below, above = (every // log_every) * log_every, (every // log_every + 1) * log_every
    raise ConfigError(
        f"config key '{key}': eval_every {every} of model {name!r} is not a multiple of its log_every "
        f"{log_every} ('{log_key}'); validation values are written on the logged rows: use e.g. "
        f"{above if below == 0 else f'{below} or {above}'}, or 0 (never)"
    )


def _setting_key(name: str, entry: dict, key: str) -> str:
    """The config key a resolved setting came from: the entry, its preset, or ``training``."""
    if key in entry:
        return f"models.{name}.{key}"
    if key in PRESETS.get(entry.get("preset"), {}):
        return f"models.{name}.preset"
    return f"training.{key}"


def _check_window_and_masking(name: str, entry: dict, resolved: dict) -> None:
    """Two settings dnalm.train.TrainConfig would refuse only when the job starts: a training
    window longer than the position table, and a causal model asked to mask."""
    tokens, positions = resolved.get("max_tokens"), resolved.get("max_position")
    if tokens is not None and positions is not None and positions < tokens:
        raise ConfigError(
            f"config key '{_setting_key(name, entry, 'max_position')}': max_position {positions} of model "
            f"{name!r} is shorter than its training window, max_tokens {tokens} "
            f"('{_setting_key(name, entry, 'max_tokens')}'); the position table needs one row per token: "
            f"raise max_position to at least {tokens}"
        )
    if resolved.get("architecture") == "clm" and resolved.get("masking", "random") != "random":
        raise ConfigError(
            f"config key '{_setting_key(name, entry, 'masking')}': model {name!r} is a causal model "
            f"(architecture clm), which predicts the next token and masks nothing: masking "
            f"{resolved['masking']!r} does not apply; leave masking at 'random' (the default)"
        )


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
