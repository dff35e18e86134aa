"""Tables of the report: the tidy metrics table and its markdown summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

METRIC_COLUMNS = ["model", "dataset", "protocol", "level", "shots", "repeat", "metric", "value"]

#: metrics where a larger value means a better model (the only ones the summary bolds)
HIGHER_IS_BETTER = {"accuracy", "balanced_accuracy", "macro_f1", "mcc", "ami", "ari", "silhouette", "auc"}

#: column order of the summary tables (others follow, alphabetically)
METRIC_ORDER = ["accuracy", "balanced_accuracy", "macro_f1", "mcc", "chance_accuracy", "ami", "ari", "silhouette",
                "auc", "cos_same", "cos_random", "spearman_rho", "spearman_p"]
LEVEL_ORDER = ["order", "family", "genus", "species", "label", "motif"]


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
]
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
    elif protocol in ("clustering", "zero_shot_umap", "consistency", "bias"):
        block["column"] = block["metric"] + " " + block["level"].astype(str)
        block["_order"] = [
            (_rank(m, METRIC_ORDER), _rank(lv, LEVEL_ORDER), 0) for m, lv in zip(block["metric"], block["level"].astype(str))
        ]
    else:
        block["column"] = block["metric"]
        block["_order"] = [(_rank(m, METRIC_ORDER), (0, ""), 0) for m in block["metric"]]
    return block


def summary_markdown(
    metrics: pd.DataFrame, models: list[str] | None = None, shots_scale: dict[str, int] | None = None
) -> str:
    """A markdown report: one table per protocol and dataset, models as rows, the best value
    of each column in bold where larger is better (:data:`HIGHER_IS_BETTER`).

    ``shots_scale`` (task -> factor, evaluation.fewshot.shots_scale): a few-shot task drawn
    with a factor other than 1 says so under its name (the columns keep the nominal K)."""
    summary = summarize(metrics)
    if models is not None:
        summary = summary[summary["model"].isin(models)]
    lines = ["# dnalm-workflow results", ""]
    lines.append(
        "Values are mean ± standard deviation over repeats; in each column where larger is better "
        "the best model is in bold. `kmer` is the non-neural k-mer-spectrum baseline."
    )
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
            best = block.groupby("column")["mean"].max()
            n_rows = block["row"].nunique()
            for row, rows in block.groupby("row", sort=True):
                cells = []
                by_col = rows.set_index("column")
                for col in columns:
                    if col not in by_col.index:
                        cells.append("")
                        continue
                    r = by_col.loc[col]
                    text = _fmt(r["mean"], r["std"], int(r["n"]))
                    if n_rows > 1 and r["metric"] in HIGHER_IS_BETTER and np.isclose(r["mean"], best[col]):
                        text = f"**{text}**"
                    cells.append(text)
                lines.append(f"| {row} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


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
