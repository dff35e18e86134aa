"""End-to-end: the whole DAG on a reduced demo config, through the snakemake CLI.

One workflow run (module fixture) in a temporary working directory; the tests then read its
outputs and check them against the simulator's ground truth, and probe the DAG with dry runs.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
pytestmark = pytest.mark.e2e

#: rules whose jobs may rerun after a few-shot setting changes
EVAL_AND_REPORT = {"fewshot", "collect_metrics", "plot_fewshot", "plot_taxonomy", "plot_leaderboard", "all"}


def reduced_config() -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["corpus"]["genome"].update(n_windows=600)
    cfg["training"].update(steps=20, checkpoint_every=10, log_every=5, warmup_steps=4, threads=1)
    # one genome model, GeneMask (its NPMI masking needs the whole k-mer -> NPMI chain); the
    # dnabert preset (random span masking) runs through a workflow in test_report_html
    cfg["models"] = {
        "genemask": {"preset": "genemask"},
        "barcodemae": {"preset": "barcodemae"},
        "barcodegpt": cfg["models"]["barcodegpt"],  # causal LM, as in the demo
    }
    cfg["evaluation"]["controls"] = True  # every model also untrained, as <name>@init
    cfg["evaluation"]["align"] = {"enabled": True}
    # two of the three tasks: every few-shot path runs; per model one embed, fewshot and probing job less
    cfg["evaluation"]["fewshot"].update(tasks=["prom", "splice"], shots=[10, 50], n_repeats=2, max_iter=300)
    return cfg


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1200) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    cmd = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def write_config(workdir: Path, cfg: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def dry_run_rules(proc: subprocess.CompletedProcess) -> list[str]:
    """Rule names of the jobs a dry run would execute."""
    text = proc.stdout + proc.stderr
    return re.findall(r"^(?:local)?rule (\w+):", text, flags=re.M)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e")
    cfg = reduced_config()
    write_config(workdir, cfg)
    snakemake(workdir, "--cores", "2")
    return workdir, cfg


def test_planted_motifs_rank_near_the_top_of_the_npmi_table(run):
    workdir, cfg = run
    table = pd.read_csv(workdir / "results/npmi/genome.tsv", sep="\t", keep_default_na=False)
    motifs = pd.read_csv(workdir / "results/data/motifs.tsv", sep="\t")
    six = table[table["n"] == 6].sort_values("rank")
    assert six["rank"].tolist() == list(range(1, len(six) + 1))
    top = six.head(50)["kmer"].tolist()

    def revcomp(s):
        return s.translate(str.maketrans("ACGT", "TGCA"))[::-1]

    # independent of dnalm.motifs: substring test written out here
    recovered = [m for m in motifs["consensus"] if any(k in m or k in revcomp(m) for k in top)]
    assert len(recovered) >= 0.75 * len(motifs), f"only {len(recovered)}/{len(motifs)} motifs in the top 50 6-mers"
    from_motifs = [k for k in six.head(20)["kmer"] if any(k in m or k in revcomp(m) for m in motifs["consensus"])]
    assert len(from_motifs) >= 10, six.head(20)
    # the workflow's own motif comparison agrees
    rec = pd.read_csv(workdir / "results/npmi/motif_recovery.tsv", sep="\t")
    row = rec[(rec["top"] == 50) & (rec["n"] == 6)].iloc[0]
    assert row["n_motifs_recovered"] == len(recovered)


def test_kmer_baseline_open_world_genus_accuracy_well_above_chance(run):
    workdir, _ = run
    tax = pd.read_csv(workdir / "results/eval/taxonomy/kmer.tsv", sep="\t")
    acc = tax.query("protocol == 'open_world' and metric == 'accuracy'")["value"].item()
    barcodes = pd.read_csv(workdir / "results/data/barcodes.tsv", sep="\t")
    query = barcodes[barcodes["split"] == "test_unseen"]
    majority = query["genus"].value_counts(normalize=True).iloc[0]
    uniform = 1.0 / barcodes.loc[barcodes["split"] == "train", "genus"].nunique()
    assert acc > max(3 * majority, 3 * uniform, 0.3), (acc, majority, uniform)


def controls(cfg) -> list[str]:
    return [f"{m}@init" for m in cfg["models"]]


def test_metrics_table_covers_every_model_and_protocol(run):
    workdir, cfg = run
    metrics = pd.read_csv(workdir / "results/report/metrics.tsv", sep="\t")
    assert list(metrics.columns) == ["model", "dataset", "protocol", "level", "shots", "repeat", "metric", "value"]
    embedded = set(cfg["models"]) | set(controls(cfg)) | {"kmer"}
    models = embedded | {"align"}
    assert set(metrics["model"]) == models
    # the alignment baseline has taxonomy and bias rows only; every other model every protocol
    assert set(metrics.loc[metrics["model"] == "align", "protocol"]) == {"closed_world", "open_world", "bias"}
    for protocol in ("fewshot", "closed_world", "open_world", "clustering", "zero_shot_umap", "consistency"):
        assert set(metrics.loc[metrics["protocol"] == protocol, "model"]) >= embedded, protocol
    # pretraining validation: every trained model and its control, with the no-model predictors
    pre = metrics[metrics["protocol"] == "pretraining"]
    assert set(pre["model"]) == set(cfg["models"]) | set(controls(cfg))
    assert set(pre["level"]) == {"model", "unigram", "kmer_context"}
    few = metrics[metrics["protocol"] == "fewshot"]
    assert set(few["dataset"]) == set(cfg["evaluation"]["fewshot"]["tasks"])
    assert set(few["shots"]) == {10, 50}
    assert set(few["repeat"]) == {0, 1}
    assert {"closed_world", "open_world", "clustering"} <= set(metrics["protocol"])
    assert metrics["value"].notna().all()
    summary = (workdir / "results/report/summary.md").read_text()
    for model in models:
        assert f"| {model} |" in summary


def test_trained_models_and_training_metrics(run):
    workdir, cfg = run
    for model in cfg["models"]:
        mdir = workdir / "results/models" / model
        assert (mdir / "model.safetensors").stat().st_size > 10_000
        assert (mdir / "config.json").exists() and (mdir / "dnalm.json").exists()
        curve = pd.read_csv(workdir / "results/pretrain" / model / "metrics.tsv", sep="\t")
        assert curve["step"].max() == cfg["training"]["steps"]
        if cfg["models"][model]["preset"] == "barcodegpt":  # causal: nothing masked
            assert curve["mask_rate"].isna().all()
        else:
            assert curve["mask_rate"].between(0.01, 0.9).all()
        assert (workdir / "results/benchmarks/pretrain" / f"{model}.tsv").exists()
        assert (workdir / "results/logs/pretrain" / f"{model}.log").stat().st_size > 0
    # logs and benchmarks are named after their rule (and wildcards)
    for log in ("genome_corpus.log", "barcode_corpus.log", "npmi_table/genome.log", "count_kmers/0.log"):
        assert (workdir / "results/logs" / log).stat().st_size > 0, log
    assert (workdir / "results/npmi/barcodes.tsv").exists() == any(
        m.get("preset") == "mae_genemask" for m in cfg["models"].values()
    )


def test_training_and_validation_loss_fall_for_every_model(run):
    """Issue 11: between the first and the last logged step; and every model ends below its
    untrained control's validation loss (the same slice and masked positions)."""
    workdir, cfg = run
    for model in cfg["models"]:
        curve = pd.read_csv(workdir / "results/pretrain" / model / "metrics.tsv", sep="\t")
        loss = curve["loss"].to_numpy()
        val = curve["val_loss"].dropna().to_numpy()
        assert len(val) >= 2, (model, curve)
        assert loss[-1] < loss[0], (model, curve[["step", "loss"]])
        assert val[-1] < val[0], (model, curve[["step", "val_loss"]])
        scores = {}
        for name in (model, f"{model}@init"):
            table = pd.read_csv(workdir / "results/pretrain" / name / "validation.tsv", sep="\t")
            scores[name] = table.query("level == 'model' and metric == 'cross_entropy'")["value"].item()
        assert scores[model] == pytest.approx(val[-1])
        assert scores[model] < scores[f"{model}@init"], scores


def test_untrained_controls_are_the_initial_weights(run):
    import json

    from safetensors.torch import load_file

    workdir, cfg = run
    for model in cfg["models"]:
        trained, control = (workdir / "results/models" / name for name in (model, f"{model}@init"))
        meta = json.loads((control / "dnalm.json").read_text())
        assert meta["steps"] == 0 and meta["control_of"] == model and meta["final_loss"] is None
        trained_meta = json.loads((trained / "dnalm.json").read_text())
        for key in ("architecture", "tokenization", "k", "size", "seed", "config_hash", "pooling"):
            assert meta[key] == trained_meta[key], key
        a, b = load_file(str(trained / "model.safetensors")), load_file(str(control / "model.safetensors"))
        assert a.keys() == b.keys() and not all((a[k] == b[k]).all() for k in a)
        assert (workdir / "results/embeddings" / f"{model}@init" / "barcodes.npz").exists()


def test_alignment_genus_accuracy_well_above_chance(run):
    workdir, _ = run
    tax = pd.read_csv(workdir / "results/eval/taxonomy/align.tsv", sep="\t")
    opened = tax.query("protocol == 'open_world'").set_index("metric")["value"]
    barcodes = pd.read_csv(workdir / "results/data/barcodes.tsv", sep="\t")
    query = barcodes[barcodes["split"] == "test_unseen"]
    majority = query["genus"].value_counts(normalize=True).iloc[0]
    assert opened["accuracy"] > max(3 * opened["chance_accuracy"], 3 * majority, 0.3), opened
    closed = tax.query("protocol == 'closed_world' and metric == 'accuracy'")["value"].item()
    assert closed > 0.9


def test_leaderboard_and_gains(run):
    import json

    workdir, cfg = run
    board = pd.read_csv(workdir / "results/report/leaderboard.tsv", sep="\t", keep_default_na=False,
                        na_values=[""])  # fmt: skip
    expected = []
    for model in cfg["models"]:
        expected += [model, f"{model}@init"]
    assert board["model"].tolist() == expected + ["kmer", "align"]
    kinds = dict(zip(board["model"], board["kind"]))
    assert {kinds[m] for m in cfg["models"]} == {"trained"} and {kinds[m] for m in controls(cfg)} == {"control"}
    assert kinds["kmer"] == kinds["align"] == "baseline"
    k = max(cfg["evaluation"]["fewshot"]["shots"])
    few = [f"fewshot_{t}_K{k}_accuracy" for t in cfg["evaluation"]["fewshot"]["tasks"]]
    taxonomy = ["closed_world_species_accuracy", "open_world_genus_accuracy"]
    assert set(few + taxonomy + ["zero_shot_umap_genus_ami"]) <= set(board.columns)
    b = board.set_index("model")
    n_repeats = cfg["evaluation"]["fewshot"]["n_repeats"]
    assert (b.loc[expected + ["kmer"], [f"{c}_n" for c in few]] == n_repeats).all().all()
    assert b.loc[expected + ["kmer", "align"], taxonomy].notna().all().all()
    assert b.loc["align", few].isna().all()
    # the leaderboard agrees with the metrics table
    metrics = pd.read_csv(workdir / "results/report/metrics.tsv", sep="\t")
    rows = metrics.query(f"model == 'genemask@init' and protocol == 'fewshot' and dataset == 'prom' and shots == {k} "
                         "and metric == 'accuracy'")  # fmt: skip
    assert b.loc["genemask@init", f"fewshot_prom_K{k}_accuracy"] == pytest.approx(rows["value"].mean())
    # every column has a best model
    for col in few + taxonomy:
        assert sum(col in str(v).split(",") for v in b["best_in"]) >= 1, col
    digest = json.loads((workdir / "results/models/genemask/dnalm.json").read_text())["config_hash"][:12]
    assert digest in b.loc["genemask", "provenance"]
    assert "initialisation of genemask" in b.loc["genemask@init", "provenance"]
    assert "vsearch" in b.loc["align", "provenance"] and "k=4" in b.loc["kmer", "provenance"]
    # gains: each model against its control and both baselines, few-shot paired over the draws
    gains = pd.read_csv(workdir / "results/report/gains.tsv", sep="\t")
    for model in cfg["models"]:
        mine = gains[gains["model"] == model]
        assert set(mine["reference"]) == {f"{model}@init", "kmer", "align"}
        fs = mine[(mine["reference"] == f"{model}@init") & mine["column"].isin(few)]
        assert len(fs) == len(few) and (fs["n"] == n_repeats).all()
        assert set(mine.loc[mine["reference"] == "align", "column"]) == set(taxonomy)
    summary = (workdir / "results/report/summary.md").read_text()
    assert summary.index("## Leaderboard") < summary.index("## Gain over the untrained control") < summary.index(
        "## Few-shot"
    )
    assert "## Pretraining" in summary


def test_every_figure_is_a_non_empty_image(run):
    workdir, _ = run
    figures = sorted((workdir / "results/report/figures").iterdir())
    assert {p.name for p in figures} >= {"fewshot.png", "taxonomy.png", "training.png", "top_kmers.png",
                                         "leaderboard.png"}  # fmt: skip
    for fig in figures:
        data = fig.read_bytes()
        if fig.suffix == ".png":
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, fig
        else:
            assert fig.suffix == ".svg" and b"<svg" in data[:2000], fig


def test_second_dry_run_has_nothing_to_do(run):
    workdir, _ = run
    proc = snakemake(workdir, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert dry_run_rules(proc) == []


def test_changing_a_fewshot_parameter_reruns_only_evaluation_and_report(run):
    workdir, cfg = run
    changed = copy.deepcopy(cfg)
    changed["evaluation"]["fewshot"]["shots"] = [10, 20]
    # a dry run against the same outputs and metadata with the changed config
    (workdir / "config-changed.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    proc = snakemake(workdir, "-n", "--configfile", str(workdir / "config-changed.yaml"))
    rules = dry_run_rules(proc)
    assert "fewshot" in rules, proc.stdout
    assert set(rules) <= EVAL_AND_REPORT, sorted(set(rules) - EVAL_AND_REPORT)
    n_fewshot = rules.count("fewshot")
    assert n_fewshot == (2 * len(cfg["models"]) + 1) * len(cfg["evaluation"]["fewshot"]["tasks"])  # + controls, kmer


@pytest.mark.parametrize(
    "mutate,key",
    [
        (lambda c: c["kmers"].update(k_max="six"), "kmers.k_max"),
        (lambda c: c["models"].update(bigbird={"preset": "bigbird"}), "models.bigbird.preset"),
        (lambda c: c["evaluation"]["fewshot"].update(n_repeats=2.5), "evaluation.fewshot.n_repeats"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, mutate, key):
    cfg = reduced_config()
    mutate(cfg)
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, "--cores", "1", check=False, timeout=120)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"'{key}'" in out, out
    assert not (tmp_path / "results").exists()
