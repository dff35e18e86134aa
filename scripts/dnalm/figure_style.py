"""The report's figure style: the Okabe–Ito colour-blind-safe palette, one colour and marker
per model (a control shares its model's colour, muted), the model order of every figure,
fonts, and the helpers every figure function of :mod:`dnalm.plots` and :mod:`dnalm.heatmap`
uses (a new figure, atomic saving, legends outside the data)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from .io import atomic_path

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
# order in which models get colours: strongest contrasts on white first, yellow last
MODEL_COLORS = [
    OKABE_ITO[c]
    for c in ("blue", "vermillion", "bluish_green", "orange", "reddish_purple", "sky_blue", "black", "yellow")
]
MARKERS = ["o", "^", "D", "v", "P", "X", "<", ">"]
BASELINE = "kmer"
ALIGN_BASELINE = "align"  # the alignment baseline: drawn among the models, placed before the k-mer baseline
BASELINE_COLOR = "#7F7F7F"
MUTED_COLOR = "#BBBBBB"

STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.title_fontsize": 10,
    "figure.titlesize": 13,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "svg.hashsalt": "dnalm",
    "svg.fonttype": "path",
}
METRIC_LABELS = {
    "accuracy": "accuracy (fraction correct)",
    "balanced_accuracy": "balanced accuracy (mean per-class recall)",
    "macro_f1": "macro-F1 (unweighted mean over classes)",
    "mcc": "Matthews correlation (−1 to 1)",
}
TAXONOMY_BARS = ("closed-world: species, seen (linear probe)", "open-world: genus, unseen species (1-NN)")
METRIC_NAMES = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1", "mcc": "MCC"}


# --------------------------------------------------------------------------- shared helpers


def _control_base(model: str) -> str | None:
    """The model whose untrained control ``model`` (``<model>@init``) is, else None."""
    from .config import control_of

    return control_of(model)


def model_style(models) -> dict[str, dict]:
    """Colour, marker and line style per model name.

    The baseline is dashed grey with square markers; the other models get Okabe–Ito
    colours in sorted-name order, so the same set of models looks the same in every figure.
    An untrained control (``<model>@init``) shown with its model takes the model's colour
    and marker, dotted.
    """
    styles = {}
    models = set(models)
    own = [m for m in models if m != BASELINE and _control_base(m) not in models]
    for i, m in enumerate(sorted(own)):
        styles[m] = {
            "color": MODEL_COLORS[i % len(MODEL_COLORS)],
            "marker": MARKERS[i % len(MARKERS)],
            "linestyle": "-" if i < len(MODEL_COLORS) else ":",
        }
    for m in models - set(own) - {BASELINE}:
        styles[m] = {**styles[_control_base(m)], "linestyle": ":"}
    if BASELINE in models:
        styles[BASELINE] = {"color": BASELINE_COLOR, "marker": "s", "linestyle": "--"}
    return styles


def model_order(models) -> list[str]:
    """Sorted model names, each untrained control right after its model, then the
    alignment baseline and the k-mer baseline last."""
    models = set(models)
    last = [m for m in (ALIGN_BASELINE, BASELINE) if m in models]
    rest = sorted((m for m in models if m not in last), key=lambda m: (_control_base(m) or m, m))
    return rest + last


def model_label(model: str) -> str:
    if model == BASELINE:
        return f"{model} (k-mer spectrum baseline)"
    return f"{model} (untrained control)" if _control_base(model) else model


def model_tick(model: str) -> str:
    return f"{model}\n(baseline)" if model == BASELINE else model


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Save ``fig`` atomically as PNG or SVG (by the extension of ``path``)."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise ValueError(f"{path}: figures are written as .png or .svg, not {fmt!r}")
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    import matplotlib

    with matplotlib.rc_context(STYLE), atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=150, metadata=metadata)


def _require(df: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}")


def _select(summary: pd.DataFrame, protocol: str, metric: str) -> pd.DataFrame:
    rows = summary["metric"] == metric
    if "protocol" in summary.columns:
        rows &= summary["protocol"] == protocol
    return summary[rows]


def _legend_columns(labels, width_in: float, fontsize: float = 10.0) -> int:
    """Columns of a legend below the panels that keep it inside a figure ``width_in`` wide
    (estimated text width: 0.55 em per character, plus 5 em of handle and column gap)."""
    em = fontsize / 72.0
    widths = [0.55 * em * len(str(label)) + 5.0 * em for label in labels]
    for ncols in range(len(labels), 1, -1):
        rows = [widths[i : i + ncols] for i in range(0, len(widths), ncols)]
        col_widths = [max(r[c] for r in rows if c < len(r)) for c in range(ncols)]
        if sum(col_widths) <= 0.95 * width_in:
            return ncols
    return 1


def _wrap_title(text: str, width_in: float, fontsize: float = 13.0) -> str:
    """``text`` broken into lines that fit a figure ``width_in`` wide (0.52 em per character)."""
    import textwrap

    return textwrap.fill(text, width=max(int(0.95 * width_in * 72.0 / (0.52 * fontsize)), 20))


def _legend_right(fig: Figure, handles, labels, title: str | None = None) -> None:
    fig.legend(handles, labels, loc="outside right center", title=title, frameon=False)


# --------------------------------------------------------------------------- few-shot
