"""Tables of the report: the tidy metrics table, its markdown summary, the leaderboard (one
row per model, one column per headline protocol) and each model's gain over its untrained
control and gap to the baselines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

METRIC_COLUMNS = ["model", "dataset", "protocol", "level", "shots", "repeat", "metric", "value"]

#: metrics where a larger value means a better model (the only ones the summary bolds)
HIGHER_IS_BETTER = {"accuracy", "balanced_accuracy", "macro_f1", "mcc", "ami", "ari", "silhouette", "auc"}
#: metrics where a smaller value means a better model
LOWER_IS_BETTER = {"cross_entropy"}

#: column order of the summary tables (others follow, alphabetically)
METRIC_ORDER = ["cross_entropy", "accuracy", "balanced_accuracy", "macro_f1", "mcc", "chance_accuracy", "ami", "ari",
                "silhouette", "auc", "cos_same", "cos_random", "spearman_rho", "spearman_p", "mask_rate"]
LEVEL_ORDER = ["order", "family", "genus", "species", "label", "motif", "model", "unigram", "kmer_context"]


def _rank(value: str, order: list[str]) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), value)


#: summary sections: protocol, title
SECTIONS = [
    ("fewshot", "Few-shot classification (K examples per class)"),
    ("closed_world", "Closed-world species classification (linear probe on frozen embeddings)"),
    ("open_world", "Open-world genus classification of unseen species (cosine 1-NN)"),
    ("clustering", "Clustering against known labels (taxonomic ranks; task labels)"),
    ("zero_shot_umap", "Zero-shot clustering as BIOSCAN-5M reports it (UMAP to 50-d, cosine; Ward; AMI)"),
    ("consistency", "Consistency probe: pairs sharing a taxon, label or motif against random pairs"),
    ("bias", "Class-imbalance bias: Spearman correlation of per-class accuracy with training count"),
    ("pretraining", "Pretraining: the held-out validation slice after the last step"),
]
#: sections whose rows are not comparable with each other: no best value is bolded
NOT_RANKED = {"pretraining"}
NOTES = {
    "fewshot": "Learner: a logistic-regression probe on frozen, standardised embeddings; rows marked "
    "(fine-tuned) fine-tune the encoder with a classification head instead (evaluation.fewshot.finetune).",
    "clustering": "Clusters (as many as classes) compared with each label set: adjusted mutual information "
    "(`ami`), adjusted Rand index (`ari`); `silhouette` of the true labels (cosine).",
    "consistency": "`auc`: probability that a same-group pair is more similar (cosine) than a random pair "
    "(0.5: the embedding ignores the groups); `cos_same` / `cos_random`: mean similarities.",
    "bias": "`spearman_rho` > 0: classes frequent in training are classified better (species: closed-world "
    "probe, count in its training split; genus: open-world 1-NN, count in the reference split). Missing when "
    "per-class accuracy is constant (e.g. all 1).",
    "pretraining": "Cross-entropy (nats per predicted token; lower is better) and accuracy on the validation "
    "slice of each model's corpus, never trained on: masked tokens, or for causal models every next token. "
    "`model`: the model after its last step (an `@init` row: before its first step, the untrained control); "
    "`unigram` and `kmer_context`: predictors without a model at the same positions (token frequencies, and the "
    "token given its neighbouring bases, counted on the training windows); `mask_rate`: fraction of maskable "
    "tokens masked on the slice. Rows differ in k, tokenization and objective, so compare along a row and a "
    "model with its control, not down a column: nothing is bolded.",
}


def collect(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-job result tables into one tidy table with the standard columns."""
    df = pd.concat(frames, ignore_index=True)
    missing = [c for c in METRIC_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"result tables lack column(s) {missing}")
    df["level"] = df["level"].fillna("")
    return df[METRIC_COLUMNS].sort_values(
        ["protocol", "dataset", "model", "level", "shots", "repeat", "metric"], kind="stable"
    ).reset_index(drop=True)


def summarize(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and number of repeats of every metric (one definition:
    :func:`dnalm.evaluate.summarize`)."""
    from .evaluate import summarize as _summarize

    out = _summarize(metrics)
    out["std"] = out["std"].fillna(0.0)
    return out


def _fmt(mean: float, std: float, n: int) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if n > 1:
        return f"{mean:.3f} ± {std:.3f}"
    return f"{mean:.3f}"


def _columns(protocol: str, block: pd.DataFrame) -> pd.DataFrame:
    """Add ``row`` (table row label) and ``column`` (table column label) to a block."""
    block = block.copy()
    block["row"] = block["model"].astype(str)
    if protocol == "fewshot":
        tuned = block["level"].astype(str) == "finetune"
        block.loc[tuned, "row"] = block.loc[tuned, "model"].astype(str) + " (fine-tuned)"
        block["column"] = [f"{m} K={int(k)}" for m, k in zip(block["metric"], block["shots"])]
        block["_order"] = [(_rank(m, METRIC_ORDER), (0, ""), int(k)) for m, k in zip(block["metric"], block["shots"])]
    elif protocol in ("clustering", "zero_shot_umap", "consistency", "bias", "pretraining"):
        block["column"] = block["metric"] + " " + block["level"].astype(str)
        block["_order"] = [
            (_rank(m, METRIC_ORDER), _rank(lv, LEVEL_ORDER), 0) for m, lv in zip(block["metric"], block["level"].astype(str))
        ]
    else:
        block["column"] = block["metric"]
        block["_order"] = [(_rank(m, METRIC_ORDER), (0, ""), 0) for m in block["metric"]]
    return block


def _is_best(metric: str, value: float, column: pd.Series) -> bool:
    """Whether ``value`` is the best of ``column`` (largest, or smallest for
    :data:`LOWER_IS_BETTER`); False for metrics that rank nothing."""
    if metric in HIGHER_IS_BETTER:
        return bool(np.isclose(value, column.max()))
    if metric in LOWER_IS_BETTER:
        return bool(np.isclose(value, column.min()))
    return False


def summary_markdown(
    metrics: pd.DataFrame,
    models: list[str] | None = None,
    shots_scale: dict[str, int] | None = None,
    comparison: str | None = None,
) -> str:
    """A markdown report: one table per protocol and dataset, models as rows, the best value
    of each column in bold where larger is better (:data:`HIGHER_IS_BETTER`; smaller for
    :data:`LOWER_IS_BETTER`; never in the sections of :data:`NOT_RANKED`).

    ``shots_scale`` (task -> factor, evaluation.fewshot.shots_scale): a few-shot task drawn
    with a factor other than 1 says so under its name (the columns keep the nominal K).
    ``comparison``: markdown put before the protocol sections (the leaderboard and the gains,
    :func:`comparison_markdown`)."""
    summary = summarize(metrics)
    if models is not None:
        summary = summary[summary["model"].isin(models)]
    lines = ["# dnalm-workflow results", ""]
    lines.append(
        "Values are mean ± standard deviation over repeats; in each column where larger is better "
        "the best model is in bold. `kmer` is the non-neural k-mer-spectrum baseline, `align` the alignment "
        "baseline (nearest reference by identity), `<model>@init` the untrained control of `<model>`."
    )
    if comparison:
        lines += ["", comparison.rstrip("\n")]
    for protocol, title in SECTIONS:
        part = summary[summary["protocol"] == protocol]
        if part.empty:
            continue
        lines += ["", f"## {title}", ""]
        if protocol in NOTES:
            lines += [NOTES[protocol], ""]
        for dataset, block in part.groupby("dataset", sort=True):
            block = _columns(protocol, block)
            order = dict(zip(block["column"], block["_order"]))
            columns = sorted(order, key=order.get)
            scale = int((shots_scale or {}).get(dataset, 1)) if protocol == "fewshot" else 1
            drawn = f" (K is nominal: {scale} K examples drawn per class)" if scale != 1 else ""
            lines += [f"**{dataset}**{drawn}", ""]
            lines.append("| model | " + " | ".join(columns) + " |")
            lines.append("|---|" + "---|" * len(columns))
            by_column = dict(list(block.groupby("column")["mean"]))
            n_rows = block["row"].nunique() if protocol not in NOT_RANKED else 1
            for row, rows in block.groupby("row", sort=True):
                cells = []
                by_col = rows.set_index("column")
                for col in columns:
                    if col not in by_col.index:
                        cells.append("")
                        continue
                    r = by_col.loc[col]
                    text = _fmt(r["mean"], r["std"], int(r["n"]))
                    if n_rows > 1 and _is_best(r["metric"], r["mean"], by_column[col]):
                        text = f"**{text}**"
                    cells.append(text)
                lines.append(f"| {row} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- leaderboard and gains

#: provenance kinds of the leaderboard's rows, in row order
KINDS = ("trained", "control", "external", "baseline")


@dataclass(frozen=True)
class Headline:
    """One leaderboard column: the metric rows of one protocol it summarises. ``level`` None
    takes the model's learner, whichever it is (few-shot: ``probe`` or ``finetune``)."""

    key: str  # column name in leaderboard.tsv
    label: str  # column header in the summary and the figure
    protocol: str
    dataset: str
    level: str | None
    shots: float | None
    metric: str

    def values(self, metrics: pd.DataFrame, model: str) -> pd.Series:
        """The model's values of this column, indexed by repeat (NaN values dropped)."""
        rows = metrics[
            (metrics["model"] == model)
            & (metrics["protocol"] == self.protocol)
            & (metrics["dataset"] == self.dataset)
            & (metrics["metric"] == self.metric)
        ]
        if self.level is not None:
            rows = rows[rows["level"] == self.level]
        if self.shots is not None:
            rows = rows[np.isclose(rows["shots"].astype(float), self.shots)]
        rows = rows[rows["value"].notna()]
        if rows["level"].nunique() > 1:
            raise ValueError(
                f"{self.label}: model {model!r} has rows of several learners {sorted(rows['level'].unique())}"
            )
        if rows["repeat"].duplicated().any():
            raise ValueError(f"{self.label}: model {model!r} has two values for one repeat")
        return rows.set_index("repeat")["value"].sort_index()


#: the barcode protocols of the leaderboard: protocol, level, metric, header
HEADLINE_PROTOCOLS = [
    ("closed_world", "species", "accuracy", "closed-world species"),
    ("open_world", "genus", "accuracy", "open-world genus"),
    ("zero_shot_umap", "genus", "ami", "zero-shot AMI genus"),
]


def headline_columns(metrics: pd.DataFrame, fewshot_metric: str = "accuracy") -> list[Headline]:
    """The leaderboard's columns present in ``metrics``: few-shot ``fewshot_metric`` of each
    task at its largest K, closed-world species accuracy, open-world genus accuracy and the
    zero-shot clustering AMI at genus (the ``clustering`` protocol's when UMAP is off)."""
    columns = []
    few = metrics[(metrics["protocol"] == "fewshot") & (metrics["metric"] == fewshot_metric)]
    for task in sorted(few["dataset"].astype(str).unique()):
        k = float(few.loc[few["dataset"] == task, "shots"].max())
        columns.append(Headline(f"fewshot_{task}_K{k:g}_{fewshot_metric}", f"few-shot {task} K={k:g}",
                                "fewshot", task, None, k, fewshot_metric))  # fmt: skip
    protocols = list(HEADLINE_PROTOCOLS)
    if not (metrics["protocol"] == "zero_shot_umap").any():
        protocols[-1] = ("clustering", "genus", "ami", "clustering AMI genus")
    for protocol, level, metric, label in protocols:
        rows = metrics[(metrics["protocol"] == protocol) & (metrics["level"] == level) & (metrics["metric"] == metric)]
        datasets = sorted(rows["dataset"].astype(str).unique())
        for dataset in datasets:
            suffix = f"_{dataset}" if len(datasets) > 1 else ""
            columns.append(Headline(f"{protocol}_{level}_{metric}{suffix}", label + suffix.replace("_", " "),
                                    protocol, dataset, level, None, metric))  # fmt: skip
    return columns


def leaderboard_order(models: Sequence[str], kinds: Mapping[str, str]) -> list[str]:
    """Row order: trained and external models (as given), each followed by its untrained
    control; controls whose model is not listed; then the baselines."""
    from .config import control_name

    order = []
    for m in models:
        if kinds[m] in ("trained", "external"):
            order.append(m)
            if control_name(m) in models:
                order.append(control_name(m))
    order += [m for m in models if kinds[m] == "control" and m not in order]
    return order + [m for m in models if kinds[m] == "baseline"]


def leaderboard(
    metrics: pd.DataFrame,
    columns: Sequence[Headline],
    kinds: Mapping[str, str],
    provenance: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """One row per model of ``kinds`` (model -> one of :data:`KINDS`; :func:`leaderboard_order`):
    ``model``, ``kind``, per column ``<key>`` (mean over repeats), ``<key>_std`` (sample
    standard deviation, NaN for one value) and ``<key>_n``, then ``best_in`` (the keys of the
    columns where the model is best, ``,``-separated; ties all count) and ``provenance``."""
    unknown = sorted(set(kinds.values()) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown model kind(s) {unknown}; known: {list(KINDS)}")
    rows = []
    for model in leaderboard_order(list(kinds), kinds):
        row = {"model": model, "kind": kinds[model]}
        for col in columns:
            v = col.values(metrics, model)
            row[col.key] = v.mean() if len(v) else np.nan
            row[f"{col.key}_std"] = v.std(ddof=1) if len(v) > 1 else np.nan
            row[f"{col.key}_n"] = len(v)
        rows.append(row)
    board = pd.DataFrame(rows, columns=["model", "kind"] + [f"{c.key}{x}" for c in columns for x in ("", "_std", "_n")])
    best = {m: [] for m in board["model"]}
    for col in columns:
        means = board[col.key].astype(float)
        if means.notna().sum() < 2:
            continue
        for model, value in zip(board["model"], means):
            if np.isfinite(value) and _is_best(col.metric, value, means.dropna()):
                best[model].append(col.key)
    board["best_in"] = [",".join(best[m]) for m in board["model"]]
    board["provenance"] = [(provenance or {}).get(m, "") for m in board["model"]]
    return board


def provenance(model: str, kind: str, meta: Mapping | None = None, baselines: Mapping[str, str] | None = None) -> str:
    """Where a leaderboard row comes from: a baseline's description (``baselines``), else the
    ``provenance`` field of the model's ``dnalm.json`` (``meta``) when it has one, else for a
    model trained here its steps, seed and config hash, for a control the model it is the
    initialisation of, and ``external`` otherwise."""
    from .config import control_of

    if kind == "baseline":
        return (baselines or {}).get(model, "baseline")
    meta = meta or {}
    if meta.get("provenance"):
        return str(meta["provenance"])
    if kind == "trained":
        digest = str(meta.get("config_hash") or "")[:12]
        return f"trained here: {meta.get('steps')} steps, seed {meta.get('seed')}" + (f", config {digest}" if digest else "")
    if kind == "control":
        return f"untrained: the initialisation of {control_of(model)} (same seed, no step)"
    return "external"


def read_provenance(
    kinds: Mapping[str, str], model_dirs: Mapping[str, str], baselines: Mapping[str, str] | None = None
) -> dict[str, str]:
    """:func:`provenance` of every model of ``kinds``, reading ``dnalm.json`` in its directory
    (``model_dirs``; a directory without one gives the kind's default)."""
    import json
    from pathlib import Path

    out = {}
    for model, kind in kinds.items():
        path = Path(model_dirs[model]) / "dnalm.json" if model in model_dirs else None
        meta = json.loads(path.read_text()) if path is not None and path.is_file() else None
        out[model] = provenance(model, kind, meta, baselines)
    return out


def references(kinds: Mapping[str, str]) -> dict[str, list[str]]:
    """What each trained or external model is compared with: its untrained control (when
    evaluated) and every baseline."""
    from .config import control_name

    baselines = [m for m, k in kinds.items() if k == "baseline"]
    out = {}
    for model, kind in kinds.items():
        if kind in ("trained", "external"):
            own = [control_name(model)] if kinds.get(control_name(model)) == "control" else []
            out[model] = own + baselines
    return out


def gains(
    metrics: pd.DataFrame,
    columns: Sequence[Headline],
    models: Sequence[str],
    references: Mapping[str, Sequence[str]],
) -> pd.DataFrame:
    """Difference between each model and each of its references (model -> its untrained
    control and the baselines) in every column: ``model``, ``reference``, ``column`` (key),
    ``label``, ``metric``, ``diff_mean``, ``diff_std``, ``n``. Values are paired by repeat:
    few-shot draws are shared by every model of a run (:func:`dnalm.evaluate.fewshot_rng`), so
    the difference is taken per draw, then its mean and sample standard deviation (NaN for a
    protocol run once). A column either side lacks is left out."""
    rows = []
    for model in models:
        for ref in references.get(model, ()):
            for col in columns:
                a, b = col.values(metrics, model), col.values(metrics, ref)
                diff = (a - b).dropna()  # aligned on the repeat index
                if diff.empty:
                    continue
                rows.append({"model": model, "reference": ref, "column": col.key, "label": col.label,
                             "metric": col.metric, "diff_mean": diff.mean(),
                             "diff_std": diff.std(ddof=1) if len(diff) > 1 else np.nan, "n": len(diff)})  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "reference", "column", "label", "metric", "diff_mean", "diff_std", "n"])


def _cell(mean: float, std: float, n: int, signed: bool = False) -> str:
    if not np.isfinite(mean):
        return ""
    fmt = "+.3f" if signed else ".3f"
    return f"{mean:{fmt}} ± {std:.3f}" if n > 1 and np.isfinite(std) else f"{mean:{fmt}}"


def leaderboard_markdown(board: pd.DataFrame, columns: Sequence[Headline]) -> str:
    """The leaderboard as a markdown section: mean ± sd per cell, the best of each column in
    bold, the provenance last."""
    reps = sorted({int(n) for c in columns for n in board[f"{c.key}_n"] if n > 1})
    lines = [
        "## Leaderboard",
        "",
        "One row per model (kind: trained here, untrained control, external checkpoint, baseline), one "
        "column per protocol: few-shot accuracy at the largest K of each task, closed-world species accuracy "
        "(linear probe; the alignment baseline: nearest reference), open-world genus accuracy of unseen "
        "species (cosine 1-NN; alignment: nearest reference), zero-shot clustering AMI at genus. Mean ± "
        f"standard deviation over the repeats of a protocol ({', '.join(map(str, reps)) or 'none'}; no ± for "
        "protocols run once); the best of each column in bold. Also in `report/leaderboard.tsv`.",
        "",
        "| model | kind | " + " | ".join(c.label for c in columns) + " | provenance |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]
    for _, r in board.iterrows():
        best = set(str(r["best_in"]).split(",")) if isinstance(r["best_in"], str) else set()
        cells = []
        for c in columns:
            text = _cell(r[c.key], r[f"{c.key}_std"], int(r[f"{c.key}_n"]))
            cells.append(f"**{text}**" if text and c.key in best else text)
        lines.append(f"| {r['model']} | {r['kind']} | " + " | ".join(cells) + f" | {r['provenance']} |")
    return "\n".join(lines) + "\n"


def gains_markdown(table: pd.DataFrame, columns: Sequence[Headline], kinds: Mapping[str, str]) -> str:
    """Gains over the untrained control and gaps to each baseline (:func:`gains`) as markdown
    tables, one per kind of reference, models as rows."""
    if table.empty:
        return ""
    lines = [
        "## Gain over the untrained control and gap to the baselines",
        "",
        "Model minus reference in each leaderboard column (positive: the model is better). Few-shot: mean ± "
        "standard deviation of the per-draw difference over the shared draws (every model is probed on the "
        "same examples in each draw); other protocols run once: one difference, no spread.",
    ]
    groups = [("control", "Gain over its untrained control (`<model>@init`)")]
    groups += [(ref, f"Gap to the baseline `{ref}`") for ref in dict.fromkeys(table["reference"])
               if kinds.get(ref) == "baseline"]  # fmt: skip
    for ref, title in groups:
        part = table[table["reference"].map(kinds) == "control"] if ref == "control" else table[table["reference"] == ref]
        if part.empty:
            continue
        present = [c for c in columns if c.key in set(part["column"])]
        lines += ["", f"**{title}**", "", "| model | " + " | ".join(c.label for c in present) + " |",
                  "|---|" + "---|" * len(present)]  # fmt: skip
        for model, rows in part.groupby("model", sort=False):
            by_col = rows.set_index("column")
            cells = [_cell(by_col.loc[c.key, "diff_mean"], by_col.loc[c.key, "diff_std"], int(by_col.loc[c.key, "n"]),
                           signed=True) if c.key in by_col.index else "" for c in present]  # fmt: skip
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_markdown(board: pd.DataFrame, table: pd.DataFrame, columns: Sequence[Headline],
                        kinds: Mapping[str, str]) -> str:  # fmt: skip
    """The leaderboard and the gains, the sections :func:`summary_markdown` puts first."""
    return leaderboard_markdown(board, columns) + ("\n" + gains_markdown(table, columns, kinds)).rstrip("\n") + "\n"


def _inline(text: str) -> str:
    """Markdown inline code and bold of :func:`summary_markdown` lines, as escaped HTML."""
    import html
    import re

    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


SUMMARY_CSS = """
body { font-family: system-ui, sans-serif; font-size: 14px; color: #222; margin: 1em; }
table { border-collapse: collapse; margin: 0.4em 0 1.2em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef2f5; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #f8f9fa; }
.scroll { overflow-x: auto; }
code { background: #f1f1f1; padding: 0 3px; }
"""


def summary_html(markdown: str, title: str = "dnalm-workflow results") -> str:
    """The summary of :func:`summary_markdown` as a self-contained HTML page (headings,
    paragraphs and tables; what the Snakemake report can display, where markdown is only
    offered as a download)."""
    import html

    body, table = [], None
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if table is None:
                table = ["<div class='scroll'><table><thead><tr>"
                         + "".join(f"<th>{_inline(c)}</th>" for c in cells) + "</tr></thead><tbody>"]
            elif not all(set(c) <= {"-", ":"} for c in cells):
                table.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells) + "</tr>")
            continue
        if table is not None:
            body.append("".join(table) + "</tbody></table></div>")
            table = None
        if line.startswith("## "):
            body.append(f"<h2>{_inline(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{_inline(line[2:])}</h1>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{SUMMARY_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
