"""The leaderboard figure: a heat map of :func:`dnalm.report.leaderboard` (one row per model,
one column per headline protocol), in the style of :mod:`dnalm.plots`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .figure_style import STYLE, _new_figure, _wrap_title, save_figure

#: how a row's kind is shown after its name (trained models: nothing)
KIND_TAGS = {"control": "untrained control", "external": "external", "baseline": "baseline"}


def _row_label(model: str, kind: str) -> str:
    tag = KIND_TAGS.get(kind)
    return f"{model} ({tag})" if tag else model


def plot_leaderboard(board: pd.DataFrame, columns: Sequence[tuple[str, str]], path: str | os.PathLike) -> Figure:
    """Heat map of the leaderboard ``board`` (``model``, ``kind``, ``<key>``, ``<key>_std``,
    ``<key>_n``, ``best_in``): ``columns`` gives (key, header) in order. Cells are coloured by
    the mean on a fixed 0-1 scale (accuracies and AMI) and read ``mean`` with ``± sd`` below
    when the protocol has repeats; the best cell of each column (``best_in``) is framed; a
    model without a protocol has an empty, hatched cell."""
    import matplotlib

    missing = [c for c in ["model", "kind", "best_in"] + [k for k, _ in columns] if c not in board.columns]
    if missing:
        raise ValueError(f"plot_leaderboard: the leaderboard lacks columns {missing}")
    if board.empty or not columns:
        raise ValueError("plot_leaderboard: nothing to draw (no models or no columns)")
    keys = [k for k, _ in columns]
    means = board[keys].to_numpy(dtype=float)
    stds = board[[f"{k}_std" for k in keys]].to_numpy(dtype=float)
    ns = board[[f"{k}_n" for k in keys]].to_numpy(dtype=float)
    n_rows, n_cols = means.shape
    with matplotlib.rc_context(STYLE):
        fig = _new_figure(2.0 + 1.35 * n_cols + 0.09 * max(len(_row_label(m, k)) for m, k in zip(board["model"],
                          board["kind"])), 1.6 + 0.48 * n_rows)  # fmt: skip
        ax = fig.subplots()
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#F2F2F2")
        image = ax.imshow(np.ma.masked_invalid(means), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        for i in range(n_rows):
            best = set(str(board["best_in"].iloc[i]).split(",")) if isinstance(board["best_in"].iloc[i], str) else set()
            for j, key in enumerate(keys):
                if not np.isfinite(means[i, j]):
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#CCCCCC",
                                           linewidth=0))  # fmt: skip
                    continue
                text = f"{means[i, j]:.3f}"
                if ns[i, j] > 1 and np.isfinite(stds[i, j]):
                    text += f"\n± {stds[i, j]:.3f}"
                dark = means[i, j] < 0.55  # viridis: light text on the dark half
                ax.text(j, i, text, ha="center", va="center", fontsize=8.5, color="white" if dark else "black",
                        fontweight="bold" if key in best else "normal")  # fmt: skip
                if key in best:
                    ax.add_patch(Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False, edgecolor="#D55E00",
                                           linewidth=2.2))  # fmt: skip
        ax.set_xticks(range(n_cols), [label for _, label in columns], rotation=25, ha="right")
        ax.set_yticks(range(n_rows), [_row_label(m, k) for m, k in zip(board["model"], board["kind"])])
        for label, kind in zip(ax.get_yticklabels(), board["kind"]):
            if kind in ("control", "baseline"):
                label.set_color("#555555")
        ax.grid(False)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        fig.colorbar(image, ax=ax, shrink=0.8, label="mean (accuracy or AMI)")
        fig.suptitle(_wrap_title("Leaderboard: mean ± s.d. over repeats; best of each column framed",
                                 fig.get_figwidth()))  # fmt: skip
    save_figure(fig, path)
    return fig
