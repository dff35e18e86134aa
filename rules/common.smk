# Config validation, shared names and every input function of the workflow.

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from dnalm.config import BASELINE, ConfigError, resolve_model, train_settings, validate_config  # noqa: E402
from dnalm import simulate as _sim  # noqa: E402
from dnalm import sources as _sources  # noqa: E402

try:
    validate_config(config, Path(workflow.basedir) / "config" / "schema.yaml")
    # data: simulated or real (url / path) genome, barcodes and tasks; checks beyond the schema
    DATA = _sources.plan(config, _sim.DEFAULT_GENOME, _sim.DEFAULT_BARCODES)
    MODEL_SETTINGS = {name: resolve_model(config, name) for name in config["models"]}
except ConfigError as _err:
    raise WorkflowError(f"Invalid configuration: {_err}") from None


def R(path):
    """A path inside the results folder."""
    return str(Path(config["results"]) / path)


MODELS = list(config["models"])
ALL_MODELS = MODELS + [BASELINE]  # the k-mer-spectrum baseline is evaluated as one more model
TASKS = list(config["evaluation"]["fewshot"]["tasks"])
SIM_TASKS = list(DATA.simulated_tasks)  # tasks the demo simulator writes (none for a real genome)
REAL_TASKS = list(DATA.tasks)  # tasks converted from real files (data.tasks)
SHARDS = [str(i) for i in range(config["kmers"]["n_shards"])]
DATASETS = TASKS + ["barcodes"]
REPORT_MODELS = config["report"].get("models") or ALL_MODELS


def _alternatives(names):
    """A wildcard regex matching exactly ``names`` (never matching when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    model=_alternatives(ALL_MODELS),
    task=_alternatives(SIM_TASKS + REAL_TASKS),
    dataset=_alternatives(SIM_TASKS + REAL_TASKS + ["barcodes"]),
    shard=r"\d+",
    corpus="genome|barcodes",


# ---------------------------------------------------------------- data locations
# Every source (simulated, downloaded or local) ends up in these files, so the stages after
# rules/data.smk never depend on where the data came from.
def genome_fasta():
    return R("data/genome.fa")


def task_table(split):
    return R(f"data/tasks/{{task}}/{split}.tsv")


def barcode_table():
    return R("data/barcodes.tsv")


def known_motifs():
    """Motif table of npmi.motifs: the simulator's planted motifs, a user TSV, or none (jaspar)."""
    source = config["npmi"]["motifs"]
    if source == "jaspar":
        return []
    if source == "planted":
        if DATA.genome is not None:
            raise WorkflowError(
                "Invalid configuration: config key 'npmi.motifs': 'planted' needs the simulated "
                "genome; use 'jaspar' or the path of a motif TSV (motif_id, consensus)"
            )
        return [R("data/motifs.tsv")]
    return [source]


def DL(path):
    """A path inside the download folder (data.download.dir)."""
    return str(Path(DATA.download_dir) / path)


def source_file(source):
    """Where a real source's file is on disk (its download or the user's path)."""
    return DATA.local(source)


def local_checksums(source):
    """Checksums still to verify when ``source`` is read (a download was verified already)."""
    return {} if source.is_download else dict(source.checksums)


def task_sources(wildcards):
    return {role: source_file(DATA.tasks[wildcards.task][role]) for role in ("train", "test")}


# ---------------------------------------------------------------- input functions
def model_settings(wildcards):
    """Explicit, fully resolved settings of one model (reaches the rule via params)."""
    return train_settings(MODEL_SETTINGS[wildcards.model])


def pretrain_inputs(wildcards):
    """The model's corpus and, for genemask masking, the NPMI table of that same corpus:
    the genome's (npmi/npmi.tsv) or the barcode corpus's (npmi/barcodes/npmi.tsv)."""
    settings = MODEL_SETTINGS[wildcards.model]
    inputs = {"corpus": R(f"corpus/{settings['corpus']}.npz")}
    if settings["masking"] == "genemask":
        corpus = settings["corpus"]
        inputs["npmi"] = R("npmi/npmi.tsv") if corpus == "genome" else R(f"npmi/{corpus}/npmi.tsv")
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
    used.add(config["report"]["embedding_map"]["split"])
    return sorted(used | set(config["embedding"]["barcode_splits"]))


def finetunes(wildcards):
    """Whether the few-shot job of this model fine-tunes its encoder (never the baseline)."""
    return config["evaluation"]["fewshot"]["finetune"] and wildcards.model != BASELINE


def fewshot_inputs(wildcards):
    """Task tables plus frozen embeddings (probe) or the saved model (fine-tuning)."""
    inputs = {"train": R(f"data/tasks/{wildcards.task}/train.tsv"), "test": R(f"data/tasks/{wildcards.task}/test.tsv")}
    if finetunes(wildcards):
        inputs["model"] = R(f"models/{wildcards.model}")
    else:
        inputs["embeddings"] = R(f"embeddings/{wildcards.model}/{wildcards.task}.npz")
    return inputs


def fewshot_finetune_settings(wildcards):
    """Fine-tuning settings, or None for a probe (so they only matter where they are used)."""
    return dict(config["evaluation"]["fewshot"]["finetune_settings"]) if finetunes(wildcards) else None


def fewshot_gpus(wildcards):
    return min(1, MODEL_SETTINGS[wildcards.model].get("gpus", 0)) if finetunes(wildcards) else 0


def eval_outputs():
    out = expand(R("eval/fewshot/{model}/{task}.tsv"), model=ALL_MODELS, task=TASKS)
    out += expand(R("eval/taxonomy/{model}.tsv"), model=ALL_MODELS)
    out += expand(R("eval/clustering/{model}.tsv"), model=ALL_MODELS)
    out += expand(R("eval/probing/{model}/{task}.tsv"), model=ALL_MODELS, task=TASKS)
    return out


def report_models():
    """Models shown in the figures that the workflow evaluates (report.models, default all)."""
    return [m for m in REPORT_MODELS if m in ALL_MODELS]


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
        R("report/figures/bias.png"),
        R("report/figures/embedding_map.png"),
        R("npmi/motif_recovery.tsv"),
    ]
