"""Tests of dnalm.report: the tidy metrics table, its markdown summary and the HTML version."""

import numpy as np
import pandas as pd
import pytest

from dnalm import report


def _rows(model, dataset, protocol, level, metric, values, shots=np.nan):
    return [
        {"model": model, "dataset": dataset, "protocol": protocol, "level": level, "shots": shots, "repeat": r,
         "metric": metric, "value": v}
        for r, v in enumerate(values)
    ]


def _table(md: str, header_start: str) -> dict[str, list[str]]:
    """The cells of the markdown table whose header starts with ``header_start``: row label
    -> the other cells, stripped."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    out = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


@pytest.fixture()
def metrics():
    rows = []
    rows += _rows("genemask", "prom", "fewshot", "probe", "accuracy", [0.7, 0.8], shots=10.0)
    rows += _rows("genemask", "prom", "fewshot", "finetune", "accuracy", [0.9, 0.9], shots=10.0)
    rows += _rows("kmer", "prom", "fewshot", "probe", "accuracy", [0.6, 0.6], shots=10.0)
    rows += _rows("kmer", "prom", "fewshot", "probe", "accuracy", [0.65, 0.75], shots=100.0)
    rows += _rows("kmer", "prom", "fewshot", "probe", "mcc", [0.2, 0.3], shots=10.0)
    for model, acc, rho in [("genemask", 0.4, 0.5), ("kmer", 0.7, -0.1)]:
        rows += _rows(model, "barcodes", "open_world", "genus", "accuracy", [acc])
        rows += _rows(model, "barcodes", "open_world", "genus", "chance_accuracy", [0.05])
        rows += _rows(model, "barcodes", "bias", "genus", "spearman_rho", [rho])
        rows += _rows(model, "barcodes", "clustering", "species", "ami", [acc])
        rows += _rows(model, "barcodes", "clustering", "order", "ami", [acc / 2])
        rows += _rows(model, "barcodes", "consistency", "genus", "cos_random", [0.9])
        rows += _rows(model, "barcodes", "consistency", "genus", "auc", [acc + 0.2])
    return report.collect([pd.DataFrame(rows[i : i + 3]) for i in range(0, len(rows), 3)])


def test_collect_is_tidy_and_sorted(metrics):
    assert list(metrics.columns) == report.METRIC_COLUMNS
    assert metrics["protocol"].is_monotonic_increasing
    with pytest.raises(ValueError, match="lack column"):
        report.collect([metrics.drop(columns="level")])


def test_summary_markdown_values_order_and_bold(metrics):
    text = report.summary_markdown(metrics)
    lines = text.splitlines()
    # few-shot: one row per model and learner, columns by metric then K
    header = next(line for line in lines if line.startswith("| model | accuracy K=10"))
    assert header == "| model | accuracy K=10 | accuracy K=100 | mcc K=10 |"
    assert "| genemask (fine-tuned) | **0.900 ± 0.000** |  |  |" in lines
    assert "| genemask | 0.750 ± 0.071 |  |  |" in lines  # std with ddof 1
    assert "| kmer | 0.600 ± 0.000 | **0.700 ± 0.071** | **0.250 ± 0.071** |" in lines
    # open world: chance never bold; the better model bold
    assert "| genemask | 0.400 | 0.050 |" in lines and "| kmer | **0.700** | 0.050 |" in lines
    # ranks in taxonomic order; bias (signed, not a score) and cos_random never bold
    assert "| model | ami order | ami species |" in lines
    assert "| kmer | -0.100 |" in lines and "| genemask | 0.500 |" in lines
    assert "| kmer | **0.900** | 0.900 |" in lines  # consistency: auc bold, cos_random plain
    # sections appear in protocol order
    titles = [line for line in lines if line.startswith("## ")]
    assert [t.split()[1] for t in titles] == ["Few-shot", "Open-world", "Clustering", "Consistency", "Class-imbalance"]
    only_kmer = report.summary_markdown(metrics, models=["kmer"])
    rows = [line for line in only_kmer.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert rows and all(line.startswith("| kmer") for line in rows)
    assert not any("**" in line for line in rows)  # a single model: nothing to compare


def test_summary_html_renders_the_markdown_tables(metrics):
    md = report.summary_markdown(metrics)
    page = report.summary_html(md)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("<table>") == md.count("| model |")
    assert "<th>accuracy K=10</th>" in page and "<td><b>0.900 ± 0.000</b></td>" in page
    assert "<h2>Few-shot classification (K examples per class)</h2>" in page
    assert "<code>kmer</code>" in page and "|" not in page.split("<body>")[1].replace("</table>", "")
    assert report.summary_html("a < b & `x`").count("&lt; b &amp; <code>x</code>") == 1


def test_summary_cells_hand_computed():
    """Two models, cell by cell: mean ± sample std, bold best, chance level never bold, and a
    single model (``models=``) is not bolded against itself."""
    rows = (
        _rows("kmer", "prom", "fewshot", "probe", "accuracy", [0.8, 0.9], shots=10.0)
        + _rows("dnabert", "prom", "fewshot", "probe", "accuracy", [0.5, 0.7], shots=10.0)
        + _rows("kmer", "barcodes", "open_world", "genus", "accuracy", [0.6])
        + _rows("dnabert", "barcodes", "open_world", "genus", "accuracy", [0.3])
        + _rows("kmer", "barcodes", "open_world", "genus", "chance_accuracy", [0.04])
        + _rows("dnabert", "barcodes", "open_world", "genus", "chance_accuracy", [0.04])
    )
    metrics = report.collect([pd.DataFrame(rows)])
    md = report.summary_markdown(metrics)
    few = _table(md, "| model | accuracy K=10")
    assert few == {"dnabert": ["0.600 ± 0.141"], "kmer": ["**0.850 ± 0.071**"]}  # std of (0.8, 0.9): 0.0707
    assert _table(md, "| model | accuracy | chance_accuracy") == {
        "dnabert": ["0.300", "0.040"], "kmer": ["**0.600**", "0.040"]
    }
    alone = _table(report.summary_markdown(metrics, models=["dnabert"]), "| model | accuracy K=10")
    assert alone == {"dnabert": ["0.600 ± 0.141"]}


def test_summary_names_the_examples_drawn_under_a_scaled_task(metrics):
    """evaluation.fewshot.shots_scale: the columns keep the nominal K, the task says what was drawn."""
    rows = _rows("kmer", "splice-40", "fewshot", "probe", "accuracy", [0.5, 0.6], shots=10.0)
    both = report.collect([metrics, pd.DataFrame(rows)])
    md = report.summary_markdown(both, shots_scale={"splice-40": 10, "prom": 1})
    lines = md.splitlines()
    assert "**splice-40** (K is nominal: 10 K examples drawn per class)" in lines
    assert "**prom**" in lines  # factor 1: nothing added
    assert _table(md[md.index("**splice-40**"):], "| model | accuracy K=10") == {"kmer": ["0.550 ± 0.071"]}
    assert "drawn per class" not in report.summary_markdown(both)
