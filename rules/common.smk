# Config validation, shared names and every input function of the workflow.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from dnalm.config import BASELINE, ConfigError, resolve_model, train_settings, validate_config  # noqa: E402
from dnalm import simulate as _sim  # noqa: E402

try:
    validate_config(config, Path(workflow.basedir) / "config" / "schema.yaml")
    for _group, _defaults in (("genome", _sim.DEFAULT_GENOME), ("barcodes", _sim.DEFAULT_BARCODES)):
        _unknown = sorted(set(config["data"][_group]) - set(_defaults))
        if _unknown:
            raise ConfigError(
                f"config key 'data.{_group}': unknown simulation parameter(s) {_unknown}; "
                f"known: {sorted(_defaults)}"
            )
    MODEL_SETTINGS = {name: resolve_model(config, name) for name in config["models"]}
except ConfigError as _err:
    raise WorkflowError(f"Invalid configuration: {_err}") from None


def R(path):
    """A path inside the results folder."""
    return str(Path(config["results"]) / path)


MODELS = list(config["models"])
ALL_MODELS = MODELS + [BASELINE]  # the k-mer-spectrum baseline is evaluated as one more model
TASKS = list(config["evaluation"]["fewshot"]["tasks"])
SIM_TASKS = ["prom", "splice", "enh"]  # tasks the demo simulator writes
SHARDS = [str(i) for i in range(config["kmers"]["n_shards"])]
DATASETS = TASKS + ["barcodes"]
REPORT_MODELS = config["report"].get("models") or ALL_MODELS


wildcard_constraints:
    model="|".join(ALL_MODELS),
    task="|".join(SIM_TASKS),
    dataset="|".join(SIM_TASKS + ["barcodes"]),
    shard=r"\d+",
    corpus="genome|barcodes",


# ---------------------------------------------------------------- data locations
def genome_fasta():
    return R("data/genome.fa")


def task_table(split):
    return R(f"data/tasks/{{task}}/{split}.tsv")


def barcode_table():
    return R("data/barcodes.tsv")


# ---------------------------------------------------------------- input functions
def model_settings(wildcards):
    """Explicit, fully resolved settings of one model (reaches the rule via params)."""
    return train_settings(MODEL_SETTINGS[wildcards.model])


def pretrain_inputs(wildcards):
    settings = MODEL_SETTINGS[wildcards.model]
    inputs = {"corpus": R(f"corpus/{settings['corpus']}.npz")}
    if settings["masking"] == "genemask":
        inputs["npmi"] = R("npmi/npmi.tsv")
    return inputs


def pretrain_threads(wildcards):
    return MODEL_SETTINGS[wildcards.model].get("threads", 1)


def embed_inputs(wildcards):
    """Sequences of a dataset plus, for a neural model, its saved directory."""
    if wildcards.dataset == "barcodes":
        inputs = {"sequences": [barcode_table()]}
    else:
        inputs = {
            "sequences": [
                R(f"data/tasks/{wildcards.dataset}/train.tsv"),
                R(f"data/tasks/{wildcards.dataset}/test.tsv"),
            ]
        }
    if wildcards.model != BASELINE:
        inputs["model"] = R(f"models/{wildcards.model}")
    return inputs


def embed_params(wildcards):
    """Embedding settings that matter for this (model, dataset) pair only."""
    params = {"batch_size": config["embedding"]["batch_size"]}
    if wildcards.model == BASELINE:
        params["baseline_k"] = config["baseline"]["k"]
    if wildcards.dataset == "barcodes":
        params["splits"] = barcode_splits()
    return params


def barcode_splits():
    """Barcode splits to embed: the configured ones plus every split an evaluation reads."""
    tax = config["evaluation"]["taxonomy"]
    used = {tax["closed_train"], tax["closed_test"], tax["open_reference"], tax["open_query"]}
    used.add(config["evaluation"]["clustering"]["split"])
    return sorted(used | set(config["embedding"]["barcode_splits"]))


def eval_outputs():
    out = expand(R("eval/fewshot/{model}/{task}.tsv"), model=ALL_MODELS, task=TASKS)
    out += expand(R("eval/taxonomy/{model}.tsv"), model=ALL_MODELS)
    out += expand(R("eval/clustering/{model}.tsv"), model=ALL_MODELS)
    return out


def training_metrics():
    return expand(R("pretrain/{model}/metrics.tsv"), model=MODELS)


def all_outputs():
    return [
        R("report/metrics.tsv"),
        R("report/summary.md"),
        R("report/figures/fewshot.png"),
        R("report/figures/taxonomy.png"),
        R("report/figures/training.png"),
        R("report/figures/top_kmers.png"),
        R("npmi/motif_recovery.tsv"),
    ]
