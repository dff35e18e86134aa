"""Report figures, in one style (:mod:`dnalm.figure_style`: the Okabe–Ito colour-blind-safe
palette, readable fonts, titles, labelled axes with units, legends outside the data).

Every function draws one figure, saves it atomically to ``path`` (the format follows the
extension: ``.png`` at 150 dpi or ``.svg``) and returns the ``Figure`` for inspection. Figures are built with the object-oriented
``matplotlib.figure.Figure`` API (Agg canvas), so nothing touches pyplot's global state and
no figure is left open. SVG output carries no date and a fixed hash salt, so reruns give
identical files.

Inputs are the tidy tables of :mod:`dnalm.evaluate` (after :func:`dnalm.evaluate.summarize`
plus ``model`` and ``dataset`` columns), training curves, and the annotated NPMI table.
The non-neural baseline is the model named :data:`BASELINE` and is always drawn dashed grey.
"""

from __future__ import annotations

import math
import os
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

from .figure_style import (  # noqa: F401  (names of the style, also used as plots.<name>)
    ALIGN_BASELINE,
    BASELINE,
    BASELINE_COLOR,
    MARKERS,
    METRIC_LABELS,
    METRIC_NAMES,
    MODEL_COLORS,
    MUTED_COLOR,
    OKABE_ITO,
    STYLE,
    TAXONOMY_BARS,
    _control_base,
    _legend_columns,
    _legend_right,
    _new_figure,
    _require,
    _select,
    _wrap_title,
    model_label,
    model_order,
    model_style,
    model_tick,
    save_figure,
)


def plot_fewshot(
    summary: pd.DataFrame, path: str | os.PathLike, metric: str = "accuracy", shots_scale: Mapping[str, int] | None = None
) -> Figure:
    """Few-shot learning curves: one panel per task (``dataset``), x = shots per class
    (log scale), y = mean ``metric`` with ±1 s.d. error bars over repeats, one line per model
    (and learner: fine-tuned rows, ``level="finetune"``, are their own line). Lines are
    shifted a few percent sideways around each K so that their error bars do not overlap.
    ``shots_scale`` (task -> factor, evaluation.fewshot.shots_scale): the x axis stays the
    nominal K and the panel title says how many examples per class were drawn.
    """
    import matplotlib

    _require(summary, ["model", "dataset", "shots", "metric", "mean", "std"], "plot_fewshot")
    df = _select(summary, "fewshot", metric)
    df = df[df["shots"].notna()]
    if df.empty:
        raise ValueError(f"plot_fewshot: no few-shot rows for metric {metric!r}")
    df = df.copy()
    learner = df["level"].astype(str) if "level" in df.columns else pd.Series("", index=df.index)
    tuned = learner == "finetune"
    df["series"] = np.where(tuned, df["model"].astype(str) + " (fine-tuned)", df["model"].astype(str))
    series_model = dict(zip(df["series"], df["model"]))
    datasets = sorted(df["dataset"].astype(str).unique())
    styles = model_style(df["model"])
    ncols = 2 if len(datasets) == 4 else min(len(datasets), 3)
    nrows = math.ceil(len(datasets) / ncols)
    ylabel = METRIC_LABELS.get(metric, metric)
    n_rep = df["n"].max() if "n" in df.columns else None

    with matplotlib.rc_context(STYLE):
        fig = _new_figure(max(4.3 * ncols, 7.0), 3.4 * nrows + 1.2)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        handles = {}
        for ax, ds in zip(axes.flat, datasets):
            sub = df[df["dataset"].astype(str) == ds]
            present = _series_order(sub["series"], series_model)
            for i, series in enumerate(present):
                m = sub[sub["series"] == series].sort_values("shots")
                st = styles[series_model[series]]
                dodge = 1.04 ** (i - (len(present) - 1) / 2)  # side by side: error bars stay readable
                fine_tuned = series != series_model[series]  # a model's fine-tuned line: dash-dot, open markers
                h = ax.errorbar(
                    m["shots"] * dodge,
                    m["mean"],
                    yerr=m["std"].fillna(0.0),
                    color=st["color"],
                    marker=st["marker"],
                    linestyle="-." if fine_tuned else st["linestyle"],
                    markerfacecolor="white" if fine_tuned else st["color"],
                    markersize=5,
                    linewidth=1.8,
                    capsize=3,
                    elinewidth=1,
                )
                handles.setdefault(series, h)
            shots = np.sort(sub["shots"].unique())
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(shots))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_locator(NullLocator())
            if len(shots) == 1:
                ax.set_xlim(shots[0] / 2, shots[0] * 2)
            scale = int((shots_scale or {}).get(ds, 1))
            ax.set_title(ds if scale == 1 else f"{ds} ({scale} K drawn per class)")
            ax.set_xlabel("K, shots per class (log scale)")
        for ax in axes[:, 0]:
            ax.set_ylabel(ylabel)
        for ax in axes.flat[len(datasets) :]:
            ax.set_visible(False)
        order = _series_order(handles, series_model)
        labels = [model_label(m) for m in order]
        fig.legend(
            [handles[m] for m in order],
            labels,
            title="model",
            loc="outside lower center",
            ncols=_legend_columns(labels, fig.get_figwidth()),
            frameon=False,
        )
        reps = f", mean ± s.d. over {int(n_rep)} repeats" if n_rep and n_rep > 1 else ""
        how = "fine-tuned encoders" if tuned.all() else "linear probe on frozen embeddings"
        if tuned.any() and not tuned.all():
            how = "fine-tuned encoders and linear probes"
        fig.suptitle(_wrap_title(f"Few-shot {METRIC_NAMES.get(metric, metric)}: {how}{reps}", fig.get_figwidth()))
    save_figure(fig, path)
    return fig


def _series_order(series, series_model: Mapping[str, str]) -> list[str]:
    """Series names in model order (baseline last), a model's probe before its fine-tuning."""
    rank = {m: i for i, m in enumerate(model_order(series_model[s] for s in set(series)))}
    return sorted(set(series), key=lambda s: (rank[series_model[s]], s))


# --------------------------------------------------------------------------- taxonomy


def plot_taxonomy(summary: pd.DataFrame, path: str | os.PathLike, chance=None) -> Figure:
    """Grouped bars per model: closed-world species accuracy (linear probe on seen species)
    and open-world genus accuracy (1-NN for unseen species), one panel per ``dataset``.

    The open-world chance level is drawn as a dashed segment over the open-world bars. It is
    taken from ``chance`` (a number, or a mapping dataset -> number; legend "chance level")
    or else from the ``open_world``/``chance_accuracy`` rows of ``summary`` when present
    (legend "label-blind 1-NN", see :func:`dnalm.evaluate.chance_accuracy`).
    """
    import matplotlib

    _require(summary, ["model", "protocol", "metric", "mean"], "plot_taxonomy")
    df = summary.copy()
    if "dataset" not in df.columns:
        df["dataset"] = ""
    df["dataset"] = df["dataset"].astype(str)
    closed = _select(df, "closed_world", "accuracy")
    opened = _select(df, "open_world", "accuracy")
    if closed.empty and opened.empty:
        raise ValueError("plot_taxonomy: no closed_world or open_world accuracy rows")
    datasets = sorted(set(closed["dataset"]) | set(opened["dataset"]))
    chance_rows = _select(df, "open_world", "chance_accuracy")
    bars = [(TAXONOMY_BARS[0], closed, OKABE_ITO["blue"]), (TAXONOMY_BARS[1], opened, OKABE_ITO["orange"])]
    width = 0.38

    with matplotlib.rc_context(STYLE):
        n_models = max(len(set(closed["model"]) | set(opened["model"])), 1)
        ncols = min(len(datasets), 2)
        nrows = math.ceil(len(datasets) / ncols)
        fig = _new_figure(max(1.1 * n_models + 1.5, 4.0) * ncols + 3.4, 4.0 * nrows + 0.6)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        chance_drawn = False
        for ax, ds in zip(axes.flat, datasets):
            models = model_order(
                set(closed.loc[closed["dataset"] == ds, "model"]) | set(opened.loc[opened["dataset"] == ds, "model"])
            )
            x = np.arange(len(models))
            for j, (_, rows, color) in enumerate(bars):
                per_model = rows[rows["dataset"] == ds].groupby("model")
                mean = per_model["mean"].mean().reindex(models).to_numpy(dtype=float)
                std = per_model["std"].mean().reindex(models).to_numpy(dtype=float) if "std" in df else mean * np.nan
                ok = np.isfinite(mean)
                err = np.nan_to_num(std[ok])
                xs = x[ok] + (j - 0.5) * width
                ax.bar(
                    xs,
                    mean[ok],
                    width,
                    color=color,
                    edgecolor="white",
                    linewidth=0.5,
                    yerr=err if err.any() else None,  # no error bars for single runs
                    error_kw={"elinewidth": 1, "capsize": 3},
                )
                for xi, v, e in zip(xs, mean[ok], err):
                    ax.text(xi, v + e + 0.015, f"{v:.2f}", ha="center", va="bottom", fontsize=9)
            level = _chance_for(chance, chance_rows, ds)
            if level is not None and (opened["dataset"] == ds).any():
                ax.hlines(
                    np.full(len(models), level),
                    x + 0.5 * width - width / 2,
                    x + 0.5 * width + width / 2,
                    colors="black",
                    linestyles="--",
                    linewidth=1.5,
                )
                chance_drawn = True
            long = max(map(len, models)) > 8
            ticks = [model_tick(m) for m in models]
            ax.set_xticks(x, ticks, rotation=20 if long else 0, ha="right" if long else "center")
            for label, m in zip(ax.get_xticklabels(), models):
                if m in (BASELINE, ALIGN_BASELINE) or _control_base(m):
                    label.set_color(BASELINE_COLOR)
            ax.set_ylim(0, 1.1)
            ax.set_xlim(-0.6, len(models) - 0.4)
            ax.grid(axis="x", visible=False)
            ax.set_title(ds if ds else "taxonomy")
            ax.set_xlabel("model")
        for ax in axes[:, 0]:
            ax.set_ylabel("accuracy (fraction correct)")
        for ax in axes.flat[len(datasets) :]:
            ax.set_visible(False)
        handles = [Patch(facecolor=c, label=lab) for lab, rows, c in bars if not rows.empty]
        if chance_drawn:
            label = "open-world chance level" if chance is not None else "open-world chance\n(label-blind 1-NN)"
            handles.append(Line2D([], [], color="black", linestyle="--", label=label))
        fig.legend(handles=handles, loc="outside right center", frameon=False)
        fig.suptitle("Taxonomic classification from frozen embeddings")
    save_figure(fig, path)
    return fig


def _chance_for(chance, chance_rows: pd.DataFrame, dataset: str) -> float | None:
    if chance is not None:
        value = chance.get(dataset) if isinstance(chance, Mapping) else chance
        return None if value is None else float(value)
    rows = chance_rows[chance_rows["dataset"] == dataset]["mean"]
    return float(rows.mean()) if len(rows) else None


# --------------------------------------------------------------------------- training


def _smooth(values: pd.Series) -> pd.Series:
    window = max(5, len(values) // 25)
    return values.rolling(window, min_periods=1, center=True).mean()


def plot_training(
    curves: Mapping[str, pd.DataFrame], path: str | os.PathLike, initial: Mapping[str, Mapping] | None = None
) -> Figure:
    """Training curves per model: loss, predicted-token accuracy and achieved mask rate
    against the step. ``initial`` (model -> ``val_loss``, ``val_masked_acc``): the validation
    scores of its untrained control, drawn as the validation curve's point at step 0.

    Each DataFrame has columns ``step, loss, mask_rate`` and optionally ``masked_acc``,
    ``val_loss``, ``val_masked_acc`` (``metrics.tsv`` of the pretraining rule). Training
    values are solid lines (with more than 50 logged points drawn faint under a centred
    rolling mean); held-out validation values, where a row has one, dotted with hollow
    markers in the model's colour. A causal model has no mask rate (empty column): no line
    in that panel.
    """
    import matplotlib
    from matplotlib.lines import Line2D

    if not curves:
        raise ValueError("plot_training: no curves given")
    for name, df in curves.items():
        _require(df, ["step", "loss", "mask_rate"], f"plot_training ({name})")
    styles = model_style(curves.keys())
    panels = [
        ("loss", "val_loss", "Loss on predicted tokens", "cross-entropy (nats per token)"),
        ("masked_acc", "val_masked_acc", "Accuracy on predicted tokens", "fraction predicted right"),
        ("mask_rate", None, "Achieved mask rate", "fraction of tokens masked"),
    ]

    with matplotlib.rc_context(STYLE):
        fig = _new_figure(15.0, 4.0)
        axes = fig.subplots(1, 3)
        handles = []
        for model in model_order(curves.keys()):
            df = curves[model].sort_values("step")
            st = styles[model]
            line = None
            for ax, (col, val_col, _, _) in zip(axes, panels):
                if col not in df.columns:
                    continue
                d = df[["step", col]].dropna()
                if len(d) == 0:
                    continue
                if len(d) > 50:
                    ax.plot(d["step"], d[col], color=st["color"], alpha=0.25, linewidth=0.8)
                    (drawn,) = ax.plot(
                        d["step"], _smooth(d[col]), color=st["color"], linestyle=st["linestyle"], linewidth=1.8
                    )
                else:
                    (drawn,) = ax.plot(
                        d["step"],
                        d[col],
                        color=st["color"],
                        linestyle=st["linestyle"],
                        marker=st["marker"],
                        markersize=4,
                        linewidth=1.8,
                    )
                line = drawn if line is None else line
                if val_col is not None and val_col in df.columns:
                    v = df[["step", val_col]].dropna()
                    start = (initial or {}).get(model, {}).get(val_col)
                    if len(v) and start is not None and np.isfinite(start):
                        v = pd.concat([pd.DataFrame({"step": [0], val_col: [start]}), v], ignore_index=True)
                    if len(v):
                        ax.plot(
                            v["step"], v[val_col], color=st["color"], linestyle=":", marker="o",
                            markerfacecolor="white", markersize=5, linewidth=1.4,
                        )  # fmt: skip
            if line is not None:
                handles.append((model, line))
        for ax, (_, _, title, ylabel) in zip(axes, panels):
            ax.set_title(title)
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(ylabel)
        axes[1].set_ylim(bottom=0)
        axes[2].set_ylim(bottom=0)
        if not axes[2].get_lines():
            axes[2].text(0.5, 0.5, "no masking (causal models)", ha="center", va="center", transform=axes[2].transAxes)
        if any("val_loss" in df.columns and df["val_loss"].notna().any() for df in curves.values()):
            kinds = [
                Line2D([], [], color="0.3", linewidth=1.8),
                Line2D([], [], color="0.3", linestyle=":", marker="o", markerfacecolor="white", linewidth=1.4),
            ]
            val_label = "validation (held out; step 0: untrained)" if initial else "validation (held out)"
            axes[0].legend(kinds, ["training", val_label], loc="best", frameon=False)
        _legend_right(fig, [h for _, h in handles], [m for m, _ in handles], title="model")
        fig.suptitle("Pretraining (masked tokens; next token for causal models)")
    save_figure(fig, path)
    return fig


# --------------------------------------------------------------------------- NPMI k-mers


def _motif_text(value) -> str:
    """Motif ids of one row as text ("" when the k-mer matches no motif)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float) and math.isnan(value):
        return ""
    text = str(value).strip()
    if text.lower() in ("", "nan", "none", "-", "."):
        return ""
    return ", ".join(part.strip() for part in text.split(",") if part.strip())


def plot_top_kmers(annotated: pd.DataFrame, path: str | os.PathLike, top_n: int = 20) -> Figure:
    """Horizontal bars of the ``top_n`` k-mers by NPMI (columns ``kmer, npmi, count, motifs``).

    Bars of k-mers that match a known motif (non-empty ``motifs``) are highlighted and
    labelled with the motif ids; the count of each k-mer is given next to it.
    """
    import matplotlib

    _require(annotated, ["kmer", "npmi", "count", "motifs"], "plot_top_kmers")
    if annotated.empty:
        raise ValueError("plot_top_kmers: empty table")
    top = annotated.sort_values(["npmi", "count"], ascending=[False, False], kind="stable").head(top_n)
    motifs = [_motif_text(v) for v in top["motifs"]]
    hit = np.array([bool(m) for m in motifs])
    n = len(top)
    y = np.arange(n)[::-1]  # highest NPMI on top
    colors = np.where(hit, OKABE_ITO["vermillion"], MUTED_COLOR)

    with matplotlib.rc_context(STYLE):
        fig = _new_figure(9.0, 0.3 * n + 1.6)
        ax = fig.subplots()
        npmi = top["npmi"].to_numpy(dtype=float)
        ax.barh(y, npmi, color=colors, height=0.75)
        span = max(npmi.max(), 0) - min(npmi.min(), 0)
        for yi, v, m in zip(y, npmi, motifs):
            if m:
                ax.text(max(v, 0) + 0.01 * span, yi, m, va="center", fontsize=9, color=OKABE_ITO["vermillion"])
        kw = int(top["kmer"].astype(str).str.len().max())
        cw = max(len(f"{int(c):,}") for c in top["count"])
        labels = [f"{k:<{kw}}  n={int(c):>{cw},}" for k, c in zip(top["kmer"].astype(str), top["count"])]
        ax.set_yticks(y, labels, fontfamily="monospace")
        ax.set_ylim(-0.6, n - 0.4)
        ax.set_xlim(min(npmi.min(), 0), max(npmi.max(), 0) + 0.25 * span + 1e-9)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("NPMI (normalised PMI, unitless; at most 1)")
        ax.set_ylabel("k-mer (corpus count)")
        ax.set_title(f"Top {n} k-mers by NPMI: {int(hit.sum())} match a known motif")
        fig.legend(
            handles=[
                Patch(facecolor=OKABE_ITO["vermillion"], label="matches a known motif (id shown)"),
                Patch(facecolor=MUTED_COLOR, label="no motif match"),
            ],
            loc="outside lower center",
            ncols=2,
            frameon=False,
        )
    save_figure(fig, path)
    return fig


# --------------------------------------------------------------------------- bias


def plot_bias(per_class: pd.DataFrame, path: str | os.PathLike) -> Figure:
    """Class-imbalance bias: per-class accuracy against the class's training count.

    ``per_class`` has columns ``model, protocol, level, class, train_count, support,
    accuracy`` (rule ``taxonomy``: closed-world species and open-world genus). One row of
    panels per (protocol, level), one column per model; x = training count (log scale),
    y = per-class accuracy, marker area proportional to the test support; each panel gives
    Spearman's rho (:func:`dnalm.evaluate.bias`), or "n/a" when accuracy is constant.
    """
    import matplotlib
    from scipy.stats import spearmanr

    _require(per_class, ["model", "protocol", "level", "class", "train_count", "support", "accuracy"], "plot_bias")
    if per_class.empty:
        raise ValueError("plot_bias: empty per-class table")
    df = per_class.copy()
    df["panel"] = df["protocol"].astype(str) + "|" + df["level"].astype(str)
    panels = list(dict.fromkeys(df.sort_values(["protocol", "level"])["panel"]))
    models = model_order(df["model"])
    styles = model_style(models)
    rows_text = {
        "closed_world|species": ("closed-world species\n(linear probe)", "training examples (log scale)"),
        "open_world|genus": ("open-world genus\n(1-NN)", "reference barcodes (log scale)"),
    }

    with matplotlib.rc_context(STYLE):
        fig = _new_figure(max(2.8 * len(models) + 0.8, 6.0), 2.9 * len(panels) + 0.8)
        axes = fig.subplots(len(panels), len(models), squeeze=False, sharey=True)
        for i, panel in enumerate(panels):
            what, xlabel = rows_text.get(panel, (panel.replace("|", " "), "training count (log scale)"))
            for j, model in enumerate(models):
                ax = axes[i, j]
                d = df[(df["panel"] == panel) & (df["model"] == model)]
                if d.empty:
                    ax.set_visible(False)
                    continue
                x = d["train_count"].to_numpy(dtype=float).clip(min=0.8)  # a class absent from training sits at 0.8
                size = 12 + 60 * d["support"].to_numpy(dtype=float) / max(float(df["support"].max()), 1.0)
                ax.scatter(x, d["accuracy"], s=size, color=styles[model]["color"], alpha=0.6, edgecolor="white",
                           linewidth=0.5, marker=styles[model]["marker"])
                _log_ticks(ax, x)
                acc, cnt = d["accuracy"].to_numpy(float), d["train_count"].to_numpy(float)
                if len(d) >= 3 and np.ptp(acc) > 0 and np.ptp(cnt) > 0:
                    rho = f"Spearman ρ = {spearmanr(cnt, acc).statistic:+.2f}"
                else:
                    rho = "ρ undefined (constant)"
                ax.set_ylim(-0.05, 1.05)
                ax.set_title(f"{model_label(model)}\n{rho}, {len(d)} classes", fontsize=10)
                ax.set_xlabel(xlabel, fontsize=9)
                if j == 0:
                    ax.set_ylabel(f"{what}\nper-class accuracy")
        fig.suptitle("Class-imbalance bias: are frequent classes classified better?")
        fig.supxlabel("one point per class; marker area proportional to the class's test examples", fontsize=9)
    save_figure(fig, path)
    return fig


def _log_ticks(ax, values) -> None:
    """Log x axis with plain-number ticks inside the data range: at 1-2-3-5 steps, at every
    integer mantissa when that gives fewer than three (a narrow range), and at the data
    values themselves when even that gives fewer than two, so that every panel has at least
    two labelled ticks."""
    lo, hi = float(np.min(values)), float(np.max(values))
    ax.set_xscale("log")
    left, right = lo / 1.4, hi * 1.4
    ticks = []
    for mantissas, enough in (((1, 2, 3, 5), 3), (tuple(range(1, 10)), 2)):
        ticks = [m * 10**e for e in range(-1, 9) for m in mantissas if left <= m * 10**e <= right]
        if len(ticks) >= enough:
            break
    if len(ticks) < 2:
        ticks = sorted({float(v) for v in np.asarray(values, dtype=float)})[:5] or [lo]
    if len(ticks) > 5:
        ticks = ticks[:: math.ceil(len(ticks) / 5)]
    ax.set_xlim(left, right)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())


# --------------------------------------------------------------------------- embedding map

OTHER = "other"


def taxon_colors(labels, top: int = 7) -> tuple[list[str], dict[str, str]]:
    """The ``top`` most frequent taxa (ties by name) get Okabe–Ito colours, the rest grey.

    Returns ``(display label per row, colour per display label)``; at most ``top`` + 1
    colours, so the palette stays colour-blind-safe.
    """
    values = pd.Series(np.asarray(labels, dtype=object)).astype(str)
    counts = values.value_counts()
    ordered = sorted(counts.index, key=lambda t: (-counts[t], t))[:top]
    shown = [v if v in ordered else OTHER for v in values]
    colors = {t: MODEL_COLORS[i] for i, t in enumerate(ordered)}
    if OTHER in shown:
        colors[OTHER] = MUTED_COLOR
    return shown, colors


def plot_embedding_map(
    coords: Mapping[str, np.ndarray], labels, path: str | os.PathLike, rank: str = "order", method: str = "t-SNE"
) -> Figure:
    """2-D maps of the same sequences embedded by each model, coloured by taxon.

    ``coords``: model -> ``(n, 2)`` coordinates (rows aligned with ``labels``, the taxon of
    each sequence at ``rank``). One panel per model; colours from :func:`taxon_colors`.
    """
    import matplotlib

    if not coords:
        raise ValueError("plot_embedding_map: no coordinates given")
    shown, colors = taxon_colors(labels)
    shown = np.asarray(shown, dtype=object)
    for model, xy in coords.items():
        if np.shape(xy) != (len(shown), 2):
            raise ValueError(f"plot_embedding_map: {model}: coordinates of shape {np.shape(xy)}, expected ({len(shown)}, 2)")
    models = model_order(coords)
    ncols = min(len(models), 3)
    nrows = math.ceil(len(models) / ncols)
    with matplotlib.rc_context(STYLE):
        fig = _new_figure(3.6 * ncols + 2.4, 3.5 * nrows + 0.6)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax, model in zip(axes.flat, models):
            xy = np.asarray(coords[model], dtype=float)
            for taxon in [t for t in colors if t == OTHER] + [t for t in colors if t != OTHER]:  # grey underneath
                sel = shown == taxon
                ax.scatter(xy[sel, 0], xy[sel, 1], s=9, color=colors[taxon], alpha=0.75, linewidth=0)
            ax.set_title(model_label(model), fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            ax.set_xlabel(f"{method} 1")
            ax.set_ylabel(f"{method} 2")
        for ax in axes.flat[len(models) :]:
            ax.set_visible(False)
        handles = [Line2D([], [], linestyle="", marker="o", markersize=7, color=c, label=t) for t, c in colors.items()]
        fig.legend(handles=handles, loc="outside right center", title=rank, frameon=False)
        fig.suptitle(f"{method} map of barcode embeddings, coloured by {rank} ({len(shown)} barcodes)")
    save_figure(fig, path)
    return fig
