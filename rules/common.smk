# Config validation, shared names, path helpers and every input function of the workflow.
# Paths of the workflow's own files are relative to this file (workflow.current_basedir),
# never to the including workflow, so `module dnalm: snakefile: ".../Snakefile"` works.

import re
import sys
from pathlib import Path

WORKFLOW_DIR = Path(workflow.current_basedir).parent  # the repository root, also as a module
if str(WORKFLOW_DIR / "scripts") not in sys.path:
    sys.path.insert(0, str(WORKFLOW_DIR / "scripts"))

from dnalm import sources as _sources
from dnalm.config import BASELINE, ConfigError, resolve_model, train_settings, validate_config
from dnalm.input_checks import check_inputs
from dnalm.config import CONTROL_SUFFIX, control_models, control_name, control_of, external_models

from dnalm.simulate.defaults import DEFAULT_BARCODES, DEFAULT_GENOME


def R(path):
    """A path inside the results folder."""
    return str(Path(config["results"]) / path)


def task_file(split, task="{task}"):
    """A task table (train: the few-shot pool; test: the fixed test set)."""
    return R(f"data/tasks/{task}/{split}.tsv")


try:
    validate_config(config, WORKFLOW_DIR / "config" / "schema.yaml")
    # data: simulated or real (url / path) genome, barcodes and tasks; checks beyond the schema
    DATA = _sources.plan(config, DEFAULT_GENOME, DEFAULT_BARCODES)
    MODEL_SETTINGS = {name: resolve_model(config, name) for name in config["models"]}
    check_inputs(config, DATA, DEFAULT_GENOME, DEFAULT_BARCODES, prepared_task=lambda task: task_file("train", task))
except ConfigError as _err:
    raise WorkflowError(f"Invalid configuration: {_err}") from None


MODELS = list(config["models"])
EXTERNAL_MODELS = external_models(config)  # `pretrained:` entries (rules/external.smk): evaluated, never trained
TRAINED_MODELS = [m for m in MODELS if m not in EXTERNAL_MODELS]  # the models rule pretrain trains
# untrained controls (evaluation.controls): `<model>@init` for every model trained here
CONTROLS = control_models(config, TRAINED_MODELS)
ALL_MODELS = MODELS + CONTROLS + [BASELINE]  # the k-mer-spectrum baseline is evaluated as one more model
TASKS = list(config["evaluation"]["fewshot"]["tasks"])
SIM_TASKS = list(DATA.simulated_tasks)  # tasks the demo simulator writes (none for a real genome)
REAL_TASKS = list(DATA.tasks)  # tasks converted from real files (data.tasks)
SHARDS = [str(i) for i in range(config["kmers"]["n_shards"])]
ALIGN_BASELINE = "align"  # the alignment baseline (rules/align.smk): taxonomy tables only, no embeddings
TAXONOMY_MODELS = ALL_MODELS + ([ALIGN_BASELINE] if config["evaluation"]["align"]["enabled"] else [])
REPORT_MODELS = config["report"].get("models") or TAXONOMY_MODELS


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
# rules/data.smk never depend on where the data came from. A helper's default argument is
# the wildcard, for the rule that writes the file.
def genome_fasta():
    return R("data/genome.fa")


def genome_index():
    return R("data/genome.fa.fai")


def barcode_table():
    return R("data/barcodes.tsv")


def planted_motifs():
    """The simulator's planted motifs (motif_id, consensus, ...)."""
    return R("data/motifs.tsv")


def known_motifs():
    """Motif table of npmi.motifs: the simulator's planted motifs, a user TSV, or none (jaspar)."""
    source = config["npmi"]["motifs"]
    if source == "jaspar":
        return []
    return [planted_motifs()] if source == "planted" else [source]


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


# ---------------------------------------------------------------- derived files
def corpus_file(corpus="{corpus}"):
    """Training windows of a corpus (genome or barcodes) as base codes."""
    return R(f"corpus/{corpus}.npz")


def kmer_counts(corpus="{corpus}"):
    """Exact n-gram counts (n = 1..kmers.k_max) of a corpus: the whole genome or the barcode corpus."""
    return R(f"kmers/{corpus}/counts.npz")


def npmi_file(corpus="{corpus}"):
    """NPMI of every n-gram of a corpus (kmer, n, count, log_p, pmi, npmi, rank)."""
    return R(f"npmi/{corpus}.tsv")


def model_dir(model="{model}"):
    return R(f"models/{model}")


def control_dir(model="{model}"):
    """The saved untrained control of a model trained here (rule init_model)."""
    return model_dir(f"{model}{CONTROL_SUFFIX}")


def control_validation(model="{model}"):
    """Validation scores of a model's untrained control (step 0 of its run)."""
    return R(f"pretrain/{model}{CONTROL_SUFFIX}/validation.tsv")


def embeddings_file(model="{model}", dataset="{dataset}"):
    return R(f"embeddings/{model}/{dataset}.npz")


# ---------------------------------------------------------------- input functions
def model_settings(wildcards):
    """Explicit, fully resolved settings of one model (reaches the rule via params)."""
    return train_settings(MODEL_SETTINGS[wildcards.model])


def pretrain_inputs(wildcards):
    """The model's corpus and, for genemask masking, the NPMI table of that same corpus."""
    settings = MODEL_SETTINGS[wildcards.model]
    inputs = {"corpus": corpus_file(settings["corpus"])}
    if settings["masking"] == "genemask":
        inputs["npmi"] = npmi_file(settings["corpus"])
    return inputs


def pretrain_threads(wildcards):
    return MODEL_SETTINGS[wildcards.model].get("threads", 1)


def embed_inputs(wildcards):
    """Sequences of a dataset plus, for a neural model, its saved directory."""
    if wildcards.dataset == "barcodes":
        inputs = {"sequences": [barcode_table()]}
    else:
        inputs = {"sequences": [task_file("train", wildcards.dataset), task_file("test", wildcards.dataset)]}
    if wildcards.model != BASELINE:
        inputs["model"] = model_dir(wildcards.model)
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
    inputs = {"train": task_file("train", wildcards.task), "test": task_file("test", wildcards.task)}
    if finetunes(wildcards):
        inputs["model"] = model_dir(wildcards.model)
    else:
        inputs["embeddings"] = embeddings_file(wildcards.model, wildcards.task)
    return inputs


def fewshot_finetune_settings(wildcards):
    """Fine-tuning settings, or None for a probe (so they only matter where they are used)."""
    return dict(config["evaluation"]["fewshot"]["finetune_settings"]) if finetunes(wildcards) else None


def fewshot_gpus(wildcards):
    return min(1, model_gpus(wildcards.model)) if finetunes(wildcards) else 0


def eval_outputs():
    out = expand(R("eval/fewshot/{model}/{task}.tsv"), model=ALL_MODELS, task=TASKS)
    out += expand(R("eval/taxonomy/{model}.tsv"), model=TAXONOMY_MODELS)
    out += expand(R("eval/clustering/{model}.tsv"), model=ALL_MODELS)
    out += expand(R("eval/probing/{model}/{task}.tsv"), model=ALL_MODELS, task=TASKS)
    return out


def report_models(embedded=True):
    """Models shown in the figures that the workflow evaluates (report.models, default all);
    ``embedded=False`` also admits the alignment baseline (taxonomy tables, no embeddings)."""
    known = ALL_MODELS if embedded else TAXONOMY_MODELS
    return [m for m in REPORT_MODELS if m in known]


# ---------------------------------------------------------------- alignment baseline (rules/align.smk)
ALIGN = config["evaluation"]["align"]
ALIGN_PROTOCOLS = ["closed_world", "open_world"]
ALIGN_CHUNKS = [str(i) for i in range(ALIGN["chunks"])]


def align_splits():
    """Query and reference split of each protocol (evaluation.taxonomy)."""
    tax = config["evaluation"]["taxonomy"]
    return {
        "closed_world": {"query": tax["closed_test"], "reference": tax["closed_train"]},
        "open_world": {"query": tax["open_query"], "reference": tax["open_reference"]},
    }


def align_settings():
    """Search settings the align_chunk results depend on (dnalm.align.Settings; the thread
    count does not change them and comes from the job)."""
    return {key: ALIGN[key] for key in ("tool", "maxaccepts", "maxrejects", "min_identity")}


def training_metrics():
    return expand(R("pretrain/{model}/metrics.tsv"), model=TRAINED_MODELS)


# ---------------------------------------------------------------- untrained controls, leaderboard
# (kept apart from the model resolution above: controls are derived from the trained models)
def model_gpus(model):
    """GPUs of a model's jobs: its own `gpus`, a control's those of its model, else 0."""
    return MODEL_SETTINGS.get(control_of(model) or model, {}).get("gpus", 0)


def validation_tables():
    """Validation scores of every trained model (pretrain) and control (init_model)."""
    return expand(R("pretrain/{model}/validation.tsv"), model=TRAINED_MODELS + CONTROLS)


def model_kind(model):
    """trained | control | external | baseline (the leaderboard's provenance kinds)."""
    if model in (BASELINE, ALIGN_BASELINE):
        return "baseline"
    if model in CONTROLS:
        return "control"
    return "trained" if model in TRAINED_MODELS else "external"


def leaderboard_models():
    """Rows of the leaderboard: the models of the report (report.models, default all)."""
    return report_models(embedded=False)


def provenance_inputs():
    """The saved directory of every neural model of the leaderboard (its dnalm.json tells
    where it comes from)."""
    return {m: model_dir(m) for m in leaderboard_models() if model_kind(m) != "baseline"}


def baseline_provenance():
    """What each baseline is, in words (the leaderboard's provenance column)."""
    align = config["evaluation"]["align"]
    search = (
        "exhaustive"
        if align["maxaccepts"] == 0 and align["maxrejects"] == 0
        else (f"heuristic, maxaccepts {align['maxaccepts']}, maxrejects {align['maxrejects']}")
    )
    return {
        BASELINE: f"k-mer spectrum, k={config['baseline']['k']} (no model)",
        ALIGN_BASELINE: f"{align['tool']} --usearch_global, {search}: nearest reference by global alignment identity",
    }


def all_outputs():
    return [
        R("report/metrics.tsv"),
        R("report/summary.md"),
        R("report/leaderboard.tsv"),
        R("report/figures/leaderboard.png"),
        R("report/figures/fewshot.png"),
        R("report/figures/taxonomy.png"),
        R("report/figures/training.png"),
        R("report/figures/top_kmers.png"),
        R("report/figures/bias.png"),
        R("report/figures/embedding_map.png"),
        R("npmi/motif_recovery.tsv"),
    ]


# ---------------------------------------------------------------- external checkpoints
# A `models:` entry with `pretrained:` (dnalm.external) is evaluated, never trained: rule
# fetch_pretrained (rules/external.smk) resolves its folder or hub id and writes its
# manifest, model_dir(model)/dnalm.json, which embed and fewshot (fine-tuning) read in place
# of a trained model's directory.
def external_settings(wildcards):
    """The resolved entry of an external model (dnalm.external.resolve_entry): the fetch job's params."""
    return {k: v for k, v in MODEL_SETTINGS[wildcards.model].items() if k != "gpus"}


def external_inputs(wildcards):
    """The files of a local checkpoint folder (a changed file fetches it again); none for a hub id."""
    folder = MODEL_SETTINGS[wildcards.model]["path"]
    if folder is None:
        return []
    return sorted(str(p) for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))
