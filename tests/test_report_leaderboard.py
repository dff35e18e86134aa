"""Tests of the leaderboard, the gains over the untrained control and the gaps to the baselines
(dnalm.report), and of the pretraining section of the summary, on hand-computed tables."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from dnalm import heatmap, report


def _rows(model, dataset, protocol, level, metric, values, shots=np.nan, repeats=None):
    repeats = range(len(values)) if repeats is None else repeats
    return [
        {"model": model, "dataset": dataset, "protocol": protocol, "level": level, "shots": shots, "repeat": r,
         "metric": metric, "value": v}
        for r, v in zip(repeats, values)
    ]  # fmt: skip


KINDS = {"kmer": "baseline", "m@init": "control", "align": "baseline", "m": "trained"}


@pytest.fixture()
def metrics():
    rows = []
    # few-shot prom: K=50 is the largest K; draws listed out of order for the control (pairing by repeat)
    rows += _rows("m", "prom", "fewshot", "probe", "accuracy", [0.8, 0.9, 0.7], shots=50.0)
    rows += _rows("m@init", "prom", "fewshot", "probe", "accuracy", [0.7, 0.6, 0.8], shots=50.0, repeats=[2, 0, 1])
    rows += _rows("kmer", "prom", "fewshot", "probe", "accuracy", [0.7, 0.7, 0.9], shots=50.0)
    for model in ("m", "m@init", "kmer"):
        rows += _rows(model, "prom", "fewshot", "probe", "accuracy", [0.1, 0.1, 0.1], shots=10.0)  # not headline
        rows += _rows(model, "prom", "fewshot", "probe", "mcc", [0.5, 0.5, 0.5], shots=50.0)  # not headline
    for model, closed, opened, ami in [("m", 0.5, 0.4, 0.5), ("m@init", 0.8, 0.3, 0.2), ("kmer", 0.9, 0.6, 0.5),
                                       ("align", 0.95, 0.7, None)]:  # fmt: skip
        rows += _rows(model, "barcodes", "closed_world", "species", "accuracy", [closed])
        rows += _rows(model, "barcodes", "open_world", "genus", "accuracy", [opened])
        rows += _rows(model, "barcodes", "open_world", "genus", "chance_accuracy", [0.99])
        if ami is not None:
            rows += _rows(model, "barcodes", "zero_shot_umap", "genus", "ami", [ami])
            rows += _rows(model, "barcodes", "zero_shot_umap", "species", "ami", [0.0])
            rows += _rows(model, "barcodes", "clustering", "genus", "ami", [0.0])
    return report.collect([pd.DataFrame(rows)])


def test_headline_columns(metrics):
    cols = report.headline_columns(metrics)
    assert [c.key for c in cols] == [
        "fewshot_prom_K50_accuracy", "closed_world_species_accuracy", "open_world_genus_accuracy",
        "zero_shot_umap_genus_ami",
    ]  # fmt: skip
    assert [c.label for c in cols] == ["few-shot prom K=50", "closed-world species", "open-world genus",
                                       "zero-shot AMI genus"]  # fmt: skip
    # without the UMAP protocol: the plain clustering AMI at genus
    no_umap = report.headline_columns(metrics[metrics["protocol"] != "zero_shot_umap"])
    assert no_umap[-1].key == "clustering_genus_ami" and no_umap[-1].label == "clustering AMI genus"


def test_leaderboard_hand_computed(metrics):
    cols = report.headline_columns(metrics)
    board = report.leaderboard(metrics, cols, KINDS, {"m": "trained here", "kmer": "k=4"})
    assert board["model"].tolist() == ["m", "m@init", "kmer", "align"]  # model, its control, baselines
    assert board["kind"].tolist() == ["trained", "control", "baseline", "baseline"]
    b = board.set_index("model")
    few = "fewshot_prom_K50_accuracy"
    assert b.loc["m", few] == pytest.approx(0.8) and b.loc["m", f"{few}_std"] == pytest.approx(0.1)
    assert b.loc["m@init", few] == pytest.approx(0.7) and b.loc["m@init", f"{few}_std"] == pytest.approx(0.1)
    assert b.loc["kmer", few] == pytest.approx(2.3 / 3) and b.loc["kmer", f"{few}_std"] == pytest.approx(
        math.sqrt(((0.7 - 2.3 / 3) ** 2 * 2 + (0.9 - 2.3 / 3) ** 2) / 2)
    )
    assert b.loc["m", f"{few}_n"] == 3 and math.isnan(b.loc["align", few]) and b.loc["align", f"{few}_n"] == 0
    assert b.loc["align", "closed_world_species_accuracy"] == 0.95
    assert math.isnan(b.loc["align", "closed_world_species_accuracy_std"])  # run once: no spread
    assert b.loc["kmer", "open_world_genus_accuracy"] == 0.6  # chance_accuracy rows are not read
    # best per column; a tie marks both
    assert b.loc["m", "best_in"] == f"{few},zero_shot_umap_genus_ami"
    assert b.loc["kmer", "best_in"] == "zero_shot_umap_genus_ami"
    assert b.loc["align", "best_in"] == "closed_world_species_accuracy,open_world_genus_accuracy"
    assert b.loc["m@init", "best_in"] == ""
    assert b.loc["m", "provenance"] == "trained here" and b.loc["align", "provenance"] == ""

    md = report.leaderboard_markdown(board, cols)
    lines = md.splitlines()
    header = "| model | kind | few-shot prom K=50 | closed-world species | open-world genus | zero-shot AMI genus | provenance |"
    assert header in lines
    assert "| m | trained | **0.800 ± 0.100** | 0.500 | 0.400 | **0.500** | trained here |" in lines
    assert "| align | baseline |  | **0.950** | **0.700** |  |  |" in lines


def test_gains_are_paired_by_draw(metrics):
    cols = report.headline_columns(metrics)
    refs = report.references(KINDS)
    assert refs == {"m": ["m@init", "kmer", "align"]}
    table = report.gains(metrics, cols, list(KINDS), refs)
    g = table.set_index(["reference", "column"])
    few = "fewshot_prom_K50_accuracy"
    # m - control per draw: (0.8-0.6, 0.9-0.8, 0.7-0.7) = (0.2, 0.1, 0.0)
    assert g.loc[("m@init", few), "diff_mean"] == pytest.approx(0.1)
    assert g.loc[("m@init", few), "diff_std"] == pytest.approx(0.1)
    assert g.loc[("m@init", few), "n"] == 3
    # m - kmer per draw: (0.1, 0.2, -0.2); unpaired means would give the same mean but not this spread
    d = np.array([0.1, 0.2, -0.2])
    assert g.loc[("kmer", few), "diff_mean"] == pytest.approx(d.mean())
    assert g.loc[("kmer", few), "diff_std"] == pytest.approx(d.std(ddof=1))
    assert g.loc[("m@init", "closed_world_species_accuracy"), "diff_mean"] == pytest.approx(-0.3)
    assert math.isnan(g.loc[("m@init", "closed_world_species_accuracy"), "diff_std"])
    assert g.loc[("align", "open_world_genus_accuracy"), "diff_mean"] == pytest.approx(-0.3)
    assert g.loc[("m@init", "zero_shot_umap_genus_ami"), "diff_mean"] == pytest.approx(0.3)
    assert ("align", few) not in g.index and ("align", "zero_shot_umap_genus_ami") not in g.index
    assert set(table["model"]) == {"m"}  # controls and baselines are references, not rows

    md = report.gains_markdown(table, cols, KINDS)
    lines = md.splitlines()
    control = lines[lines.index("**Gain over its untrained control (`<model>@init`)**") + 2 :]
    assert control[0] == "| model | few-shot prom K=50 | closed-world species | open-world genus | zero-shot AMI genus |"
    assert control[2] == "| m | +0.100 ± 0.100 | -0.300 | +0.100 | +0.300 |"
    align = lines[lines.index("**Gap to the baseline `align`**") + 2 :]
    assert align[0] == "| model | closed-world species | open-world genus |"
    assert align[2] == "| m | -0.450 | -0.300 |"
    # the summary puts both first, before the protocol sections
    full = report.summary_markdown(metrics, comparison=report.comparison_markdown(
        report.leaderboard(metrics, cols, KINDS), table, cols, KINDS))  # fmt: skip
    titles = [line for line in full.splitlines() if line.startswith("## ")]
    assert titles[:3] == ["## Leaderboard", "## Gain over the untrained control and gap to the baselines",
                          "## Few-shot classification (K examples per class)"]  # fmt: skip


def test_a_model_with_two_learners_in_one_column_is_an_error(metrics):
    extra = pd.DataFrame(_rows("m", "prom", "fewshot", "finetune", "accuracy", [0.9, 0.9, 0.9], shots=50.0))
    both = report.collect([metrics, extra])
    with pytest.raises(ValueError, match="several learners"):
        report.leaderboard(both, report.headline_columns(both), KINDS)
    with pytest.raises(ValueError, match="unknown model kind"):
        report.leaderboard(metrics, report.headline_columns(metrics), {"m": "pretrained"})


def test_gains_of_an_external_model_have_no_control():
    kinds = {"ext": "external", "kmer": "baseline", "m": "trained", "m@init": "control"}
    assert report.references(kinds) == {"ext": ["kmer"], "m": ["m@init", "kmer"]}
    assert report.leaderboard_order(list(kinds), kinds) == ["ext", "m", "m@init", "kmer"]


def test_provenance(tmp_path):
    meta = {"steps": 300, "seed": 42, "config_hash": "abcdef0123456789ff"}
    assert report.provenance("m", "trained", meta) == "trained here: 300 steps, seed 42, config abcdef012345"
    assert report.provenance("m@init", "control", {"steps": 0}) == (
        "untrained: the initialisation of m (same seed, no step)"
    )
    assert report.provenance("x", "external", {"provenance": "hub:org/x@abc123"}) == "hub:org/x@abc123"
    assert report.provenance("x", "external", None) == "external"
    assert report.provenance("kmer", "baseline", None, {"kmer": "k-mer spectrum, k=4"}) == "k-mer spectrum, k=4"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "dnalm.json").write_text(json.dumps(meta))
    (tmp_path / "x").mkdir()  # no dnalm.json
    got = report.read_provenance({"m": "trained", "x": "external", "kmer": "baseline"},
                                 {"m": tmp_path / "m", "x": tmp_path / "x"}, {"kmer": "spectrum"})  # fmt: skip
    assert got == {"m": "trained here: 300 steps, seed 42, config abcdef012345", "x": "external", "kmer": "spectrum"}


def test_pretraining_section_ranks_nothing():
    rows = []
    for model, ce, acc in [("m", 2.0, 0.4), ("m@init", 8.3, 0.0), ("g", 5.0, 0.1)]:
        rows += _rows(model, "validation", "pretraining", "model", "cross_entropy", [ce])
        rows += _rows(model, "validation", "pretraining", "model", "accuracy", [acc])
        rows += _rows(model, "validation", "pretraining", "unigram", "accuracy", [0.05])
        rows += _rows(model, "validation", "pretraining", "model", "mask_rate", [0.15])
    md = report.summary_markdown(report.collect([pd.DataFrame(rows)]))
    assert "## Pretraining: the held-out validation slice after the last step" in md
    lines = md.splitlines()
    assert "| model | cross_entropy model | accuracy model | accuracy unigram | mask_rate model |" in lines
    assert "| m | 2.000 | 0.400 | 0.050 | 0.150 |" in lines and "| m@init | 8.300 | 0.000 | 0.050 | 0.150 |" in lines
    section = md.split("## Pretraining")[1].splitlines()
    assert "**validation**" in section
    assert not any("**" in line for line in section if line.startswith("|"))
    # elsewhere, a smaller-is-better metric bolds its smallest value
    assert report._is_best("cross_entropy", 2.0, pd.Series([2.0, 8.3]))
    assert not report._is_best("cross_entropy", 8.3, pd.Series([2.0, 8.3]))
    assert report._is_best("accuracy", 8.3, pd.Series([2.0, 8.3]))
    assert not report._is_best("mask_rate", 0.15, pd.Series([0.15]))


def test_leaderboard_figure(metrics, tmp_path):
    cols = report.headline_columns(metrics)
    board = report.leaderboard(metrics, cols, KINDS)
    fig = heatmap.plot_leaderboard(board, [(c.key, c.label) for c in cols], tmp_path / "lb.png")
    assert (tmp_path / "lb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["m", "m@init (untrained control)", "kmer (baseline)",
                                                             "align (baseline)"]  # fmt: skip
    texts = [t.get_text() for t in ax.texts]
    assert "0.800\n± 0.100" in texts and "0.950" in texts
    assert len(texts) == 4 * 4 - 2  # align: no few-shot, no AMI
    framed = [p for p in ax.patches if p.get_edgecolor()[:3] == pytest.approx((0xD5 / 255, 0x5E / 255, 0.0))]
    assert len(framed) == 5  # best: m (few-shot, AMI), kmer (AMI tie), align (closed, open)
    with pytest.raises(ValueError, match="lacks columns"):
        heatmap.plot_leaderboard(board.drop(columns="best_in"), [(c.key, c.label) for c in cols], tmp_path / "x.png")
