"""Tables of the report: the tidy metrics table and its markdown summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

METRIC_COLUMNS = ["model", "dataset", "protocol", "level", "shots", "repeat", "metric", "value"]


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
    if n > 1:
        return f"{mean:.3f} ± {std:.3f}"
    return f"{mean:.3f}"


def summary_markdown(metrics: pd.DataFrame, models: list[str] | None = None) -> str:
    """A markdown report: one table per protocol, models as rows, best value in bold."""
    summary = summarize(metrics)
    if models is not None:
        summary = summary[summary["model"].isin(models)]
    lines = ["# dnalm-workflow results", ""]
    lines.append("Values are mean ± standard deviation over repeats; the best model per column is in bold (chance levels are not scored). "
                 "`kmer` is the non-neural k-mer-spectrum baseline.")
    sections = [
        ("fewshot", "Few-shot classification (logistic-regression probe, K examples per class)"),
        ("closed_world", "Closed-world species classification (linear probe)"),
        ("open_world", "Open-world genus classification of unseen species (cosine 1-NN)"),
        ("clustering", "Clustering of barcode embeddings against the taxonomy"),
    ]
    for protocol, title in sections:
        part = summary[summary["protocol"] == protocol]
        if part.empty:
            continue
        lines += ["", f"## {title}", ""]
        for dataset, block in part.groupby("dataset", sort=True):
            block = block.copy()
            if protocol == "fewshot":
                block["column"] = block.apply(lambda r: f"{r['metric']} K={int(r['shots'])}", axis=1)
            elif protocol == "clustering":
                block["column"] = block["metric"] + " " + block["level"].astype(str)
            else:
                block["column"] = block["metric"]
            columns = list(dict.fromkeys(block.sort_values(["metric", "shots", "level"])["column"]))
            if protocol == "fewshot":
                columns = sorted(columns, key=lambda c: (c.split()[0], int(c.split("=")[1])))
            lines += [f"**{dataset}**", ""]
            lines.append("| model | " + " | ".join(columns) + " |")
            lines.append("|---|" + "---|" * len(columns))
            best = block.groupby("column")["mean"].max()
            for model, rows in block.groupby("model", sort=True):
                cells = []
                by_col = rows.set_index("column")
                for col in columns:
                    if col not in by_col.index:
                        cells.append("")
                        continue
                    r = by_col.loc[col]
                    text = _fmt(r["mean"], r["std"], int(r["n"]))
                    if (np.isclose(r["mean"], best[col]) and block["model"].nunique() > 1
                            and not col.startswith("chance")):
                        text = f"**{text}**"
                    cells.append(text)
                lines.append(f"| {model} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"
