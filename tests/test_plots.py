"""Tests of dnalm.plots: each figure is written as valid PNG and SVG and shows what it should."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from dnalm import evaluate as ev
from dnalm import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_outputs(draw, tmp_path, name):
    """Draw to .png and .svg; check both files; return the Figure of the PNG call."""
    png, svg = tmp_path / f"{name}.png", tmp_path / f"{name}.svg"
    fig = draw(png)
    draw(svg)
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>")
    assert len(text) > 10_000
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".{name}")) == []  # no temp files
    return fig


@pytest.fixture(scope="module")
def fewshot_summary():
    """A real pipeline table: evaluate.fewshot -> summarize, two tasks, two models + baseline."""
    rng = np.random.default_rng(0)
    parts = []
    for dataset, n_classes in [("Prom-core", 2), ("Splice-40", 3)]:
        y_tr, y_te = np.repeat(np.arange(n_classes), 40), np.repeat(np.arange(n_classes), 20)
        for model, signal in [("mlm-genemask", 1.0), ("mae-random", 0.6), ("kmer", 0.3)]:
            centres = rng.normal(size=(n_classes, 8)) * signal
            x_tr = centres[y_tr] + rng.normal(size=(len(y_tr), 8))
            x_te = centres[y_te] + rng.normal(size=(len(y_te), 8))
            df = ev.fewshot(x_tr, y_tr, x_te, y_te, shots=[5, 10, 30], n_repeats=3, seed=1)
            parts.append(df.assign(model=model, dataset=dataset))
    return ev.summarize(pd.concat(parts, ignore_index=True))


def test_plot_fewshot(tmp_path, fewshot_summary):
    fig = _check_outputs(lambda p: plots.plot_fewshot(fewshot_summary, p, metric="mcc"), tmp_path, "fewshot")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert sorted(ax.get_title() for ax in axes) == ["Prom-core", "Splice-40"]
    for ax in axes:
        assert ax.get_xscale() == "log"
        assert "shots" in ax.get_xlabel()
        lines = [ln for ln in ax.get_lines() if ln.get_linestyle() not in ("None", "")]  # not error-bar caps
        assert len(lines) == 3  # one curve per model
        dashed = [ln for ln in lines if ln.get_linestyle() == "--"]
        assert len(dashed) == 1 and to_hex(dashed[0].get_color()) == plots.BASELINE_COLOR.lower()
        # the curves are the summary means, in shot order
        sub = fewshot_summary[(fewshot_summary["dataset"] == ax.get_title()) & (fewshot_summary["metric"] == "mcc")]
        means = {m: g.sort_values("shots")["mean"].to_numpy() for m, g in sub.groupby("model")}
        drawn = [np.asarray(ln.get_ydata(), dtype=float) for ln in lines]
        assert any(np.allclose(d, means["kmer"]) for d in [np.asarray(dashed[0].get_ydata(), dtype=float)])
        assert all(any(np.allclose(d, v) for d in drawn) for v in means.values())
    assert "Matthews" in axes[0].get_ylabel()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[-1].startswith("kmer") and len(labels) == 3
    with pytest.raises(ValueError, match="no few-shot rows"):
        plots.plot_fewshot(fewshot_summary, tmp_path / "x.png", metric="auc")
    assert not (tmp_path / "x.png").exists()


def test_plot_taxonomy(tmp_path):
    rng = np.random.default_rng(1)
    parts = []
    y = np.repeat(np.arange(6), 10)  # 6 species, 2 per genus
    genus, species = y // 2, np.array([f"sp{i}" for i in y])
    seen = y % 2 == 0
    for model, signal in [("mae-genemask", 3.0), ("mlm-random", 1.0), ("kmer", 0.5)]:
        x = rng.normal(size=(60, 9))
        x[np.arange(60), y] += 4
        x[np.arange(60), 6 + genus] += signal
        cw = ev.closed_world(x[::2], species[::2], x[1::2], species[1::2])
        ow = ev.open_world(x[seen], genus[seen], x[~seen], genus[~seen])
        parts.append(pd.concat([cw, ow]).assign(model=model, dataset="demo-barcodes"))
    summary = ev.summarize(pd.concat(parts, ignore_index=True))
    fig = _check_outputs(lambda p: plots.plot_taxonomy(summary, p), tmp_path, "taxonomy")
    ax = fig.axes[0]
    assert ax.get_ylabel().startswith("accuracy")
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    expected = summary[(summary["metric"] == "accuracy")]["mean"].round(6).sort_values().tolist()
    assert heights == expected and len(heights) == 6  # 3 models x (closed, open)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[-1].startswith("kmer") and "baseline" in ticks[-1]
    chance = summary.loc[summary["metric"] == "chance_accuracy", "mean"].iloc[0]
    segs = [c for c in ax.collections if c.get_linestyle() and c.get_linestyle()[0][1] is not None]
    assert len(segs) == 1 and np.allclose(np.array(segs[0].get_segments())[:, :, 1], chance)
    # an explicit chance level wins; a table with only closed-world rows still draws
    fig = plots.plot_taxonomy(summary[summary["protocol"] == "closed_world"], tmp_path / "cw.png", chance=0.2)
    assert len(fig.axes[0].patches) == 3
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [plots.TAXONOMY_BARS[0]]  # no open-world entries
    with pytest.raises(ValueError):
        plots.plot_taxonomy(summary[summary["protocol"] == "fewshot"], tmp_path / "none.png")


def test_plot_training(tmp_path):
    rng = np.random.default_rng(2)
    curves = {}
    for model, n in [("mlm-genemask", 120), ("mae-random", 20)]:
        step = np.arange(n) * 10
        curves[model] = pd.DataFrame(
            {
                "step": step,
                "loss": 6 * np.exp(-step / 300) + 1 + rng.normal(0, 0.1, n),
                "masked_acc": np.linspace(0, 0.5, n),
                "mask_rate": 0.15 + rng.normal(0, 0.01, n),
            }
        )
    fig = _check_outputs(lambda p: plots.plot_training(curves, p), tmp_path, "training")
    loss_ax, acc_ax, rate_ax = fig.axes
    assert "loss" in loss_ax.get_title().lower() and "mask rate" in rate_ax.get_title().lower()
    assert "accuracy" in acc_ax.get_title().lower()
    assert "step" in loss_ax.get_xlabel() and "fraction" in rate_ax.get_ylabel()
    # long curve: faint raw + smoothed; short curve: raw with markers -> 3 lines per panel
    assert len(loss_ax.get_lines()) == 3 and len(rate_ax.get_lines()) == 3 and len(acc_ax.get_lines()) == 3
    raw = [ln for ln in rate_ax.get_lines() if len(ln.get_xdata()) == 20][0]
    np.testing.assert_allclose(raw.get_ydata(), curves["mae-random"]["mask_rate"])
    assert loss_ax.get_legend() is None  # no validation values: no training/validation key
    with pytest.raises(ValueError, match="mask_rate"):
        plots.plot_training({"m": curves["mae-random"].drop(columns="mask_rate")}, tmp_path / "bad.png")


def test_plot_training_validation_curves_and_causal_model(tmp_path):
    """Validation values (on some rows only) are drawn as their own line in the loss and
    accuracy panels, at their steps; a causal model (empty mask rate) has no mask-rate line."""
    step = np.arange(1, 11) * 10
    every_third = np.where(np.arange(10) % 3 == 2, 1.0, np.nan)
    curves = {
        "mlm": pd.DataFrame({"step": step, "loss": np.linspace(5, 2, 10), "masked_acc": np.linspace(0, 0.4, 10),
                             "mask_rate": 0.15, "val_loss": every_third * np.linspace(5.1, 2.2, 10),
                             "val_masked_acc": every_third * np.linspace(0, 0.35, 10)}),
        "gpt": pd.DataFrame({"step": step, "loss": np.linspace(4, 1, 10), "masked_acc": np.linspace(0.1, 0.5, 10),
                             "mask_rate": np.nan, "val_loss": np.nan, "val_masked_acc": np.nan}),
    }  # fmt: skip
    fig = _check_outputs(lambda p: plots.plot_training(curves, p), tmp_path, "training_val")
    loss_ax, acc_ax, rate_ax = fig.axes
    assert len(loss_ax.get_lines()) == 3 and len(acc_ax.get_lines()) == 3 and len(rate_ax.get_lines()) == 1
    (val_loss,) = [ln for ln in loss_ax.get_lines() if ln.get_linestyle() == ":"]
    np.testing.assert_allclose(val_loss.get_xdata(), [30, 60, 90])
    np.testing.assert_allclose(val_loss.get_ydata(), np.linspace(5.1, 2.2, 10)[[2, 5, 8]])
    (val_acc,) = [ln for ln in acc_ax.get_lines() if ln.get_linestyle() == ":"]
    np.testing.assert_allclose(val_acc.get_ydata(), np.linspace(0, 0.35, 10)[[2, 5, 8]])
    np.testing.assert_allclose(rate_ax.get_lines()[0].get_ydata(), 0.15)
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["training", "validation (held out)"]
    assert not rate_ax.texts  # a masking model has a mask rate
    only_causal = plots.plot_training({"gpt": curves["gpt"]}, tmp_path / "gpt.png")
    assert [t.get_text() for t in only_causal.axes[2].texts] == ["no masking (causal models)"]
    # the untrained control's scores start the validation curve at step 0 (a model without them: unchanged)
    start = {"mlm": {"val_loss": 8.3, "val_masked_acc": 0.0}, "gpt": {"val_loss": 9.0, "val_masked_acc": None}}
    fig = plots.plot_training(curves, tmp_path / "start.png", initial=start)
    (val_loss,) = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == ":"]
    np.testing.assert_allclose(val_loss.get_xdata(), [0, 30, 60, 90])
    np.testing.assert_allclose(val_loss.get_ydata(), [8.3, *np.linspace(5.1, 2.2, 10)[[2, 5, 8]]])
    (val_acc,) = [ln for ln in fig.axes[1].get_lines() if ln.get_linestyle() == ":"]
    np.testing.assert_allclose(val_acc.get_xdata(), [0, 30, 60, 90])
    assert fig.axes[0].get_legend().get_texts()[1].get_text() == "validation (held out; step 0: untrained)"


def test_plot_top_kmers(tmp_path):
    rng = np.random.default_rng(3)
    kmers = ["".join(rng.choice(list("ACGT"), 6)) for _ in range(40)]
    motifs = [""] * 40
    npmi = np.linspace(0.95, 0.2, 40)
    motifs[0], motifs[3], motifs[25] = "MOTIF_A", ["MOTIF_B", "MOTIF_C"], "MOTIF_D"  # 25 is outside the top 20
    table = pd.DataFrame({"kmer": kmers, "npmi": npmi, "count": rng.integers(101, 9000, 40), "motifs": motifs})
    table = table.sample(frac=1, random_state=0)  # the function sorts
    table.loc[table.index[5], "motifs"] = (
        np.nan if table.loc[table.index[5], "motifs"] == "" else table.loc[table.index[5], "motifs"]
    )
    fig = _check_outputs(lambda p: plots.plot_top_kmers(table, p, top_n=20), tmp_path, "kmers")
    ax = fig.axes[0]
    assert len(ax.patches) == 20
    bars = sorted(ax.patches, key=lambda b: -b.get_y())  # top of the plot first
    np.testing.assert_allclose([b.get_width() for b in bars], npmi[:20])
    highlighted = [i for i, b in enumerate(bars) if to_hex(b.get_facecolor()) == plots.OKABE_ITO["vermillion"].lower()]
    assert highlighted == [0, 3]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["MOTIF_A", "MOTIF_B, MOTIF_C"]
    assert "2 match" in ax.get_title()
    top_label = max(zip(ax.get_yticks(), ax.get_yticklabels()), key=lambda t: t[0])[1].get_text()
    assert top_label.startswith(kmers[0]) and "n=" in top_label


def test_plot_fewshot_fine_tuned_lines(tmp_path, fewshot_summary):
    tuned = fewshot_summary[fewshot_summary["model"] == "mlm-genemask"].assign(level="finetune")
    tuned = tuned.assign(mean=tuned["mean"] + 0.05)
    table = pd.concat([fewshot_summary, tuned], ignore_index=True)
    fig = plots.plot_fewshot(table, tmp_path / "f.png", metric="accuracy")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["mae-random", "mlm-genemask", "mlm-genemask (fine-tuned)", "kmer (k-mer spectrum baseline)"]
    assert "fine-tuned encoders and linear probes" in fig._suptitle.get_text()
    ax = [a for a in fig.axes if a.get_visible()][0]
    lines = [ln for ln in ax.get_lines() if ln.get_linestyle() not in ("None", "")]
    assert len(lines) == 4
    # lines are shifted a little sideways around each K (log-symmetric), never by more than 10 %
    xs = np.array([np.asarray(ln.get_xdata(), dtype=float) for ln in lines])
    shots = np.sort(fewshot_summary["shots"].unique())
    assert np.allclose(np.exp(np.log(xs).mean(axis=0)), shots) and (np.abs(xs / shots - 1) < 0.1).all()


def _per_class(rng):
    parts = []
    for model, slope in [("mlm-genemask", 0.3), ("kmer", 0.0)]:
        for protocol, level, n in [("closed_world", "species", 30), ("open_world", "genus", 12)]:
            count = rng.integers(1, 60, n)
            acc = np.clip(0.3 + slope * np.log(count) / 4 + rng.normal(0, 0.1, n), 0, 1)
            if model == "kmer" and protocol == "closed_world":
                acc = np.ones(n)  # constant: rho undefined
            parts.append(pd.DataFrame({"model": model, "dataset": "barcodes", "protocol": protocol, "level": level,
                                       "class": [f"c{i}" for i in range(n)], "train_count": count,
                                       "support": rng.integers(1, 8, n), "accuracy": acc}))
    return pd.concat(parts, ignore_index=True)


def test_plot_bias(tmp_path):
    from scipy.stats import spearmanr

    table = _per_class(np.random.default_rng(4))
    fig = _check_outputs(lambda p: plots.plot_bias(table, p), tmp_path, "bias")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4  # 2 protocols x 2 models
    titles = [ax.get_title() for ax in axes]
    assert titles[0].startswith("mlm-genemask") and titles[1].startswith("kmer")  # baseline last
    d = table[(table["model"] == "mlm-genemask") & (table["protocol"] == "closed_world")]
    rho = spearmanr(d["train_count"], d["accuracy"]).statistic
    assert f"ρ = {rho:+.2f}" in titles[0] and "30 classes" in titles[0]
    assert "undefined" in titles[1]
    for ax in axes:
        assert ax.get_xscale() == "log" and "log scale" in ax.get_xlabel()
        assert all(t.get_text() for t in ax.get_xticklabels())  # plain-number ticks, no empty minor labels
    offsets = axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(np.sort(offsets[:, 1]), np.sort(d["accuracy"]))
    assert "closed-world" in axes[0].get_ylabel() and "open-world" in axes[2].get_ylabel()
    with pytest.raises(ValueError, match="missing columns"):
        plots.plot_bias(table.drop(columns="support"), tmp_path / "bad.png")


def test_taxon_colors_and_embedding_map(tmp_path):
    labels = np.array(["Diptera"] * 30 + ["Hymenoptera"] * 20 + [f"o{i}" for i in range(10) for _ in range(2)])
    shown, colors = plots.taxon_colors(labels, top=7)
    assert list(colors)[:2] == ["Diptera", "Hymenoptera"] and len(colors) == 8 and colors["other"] == plots.MUTED_COLOR
    assert shown.count("other") == 10  # 5 of the 10 two-member orders do not make the top 7
    assert set(colors.values()) - {plots.MUTED_COLOR} <= set(plots.MODEL_COLORS)
    rng = np.random.default_rng(5)
    coords = {m: rng.normal(size=(len(labels), 2)) for m in ("kmer", "mae", "mlm")}
    fig = _check_outputs(lambda p: plots.plot_embedding_map(coords, labels, p, rank="order"), tmp_path, "map")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["mae", "mlm", "kmer (k-mer spectrum baseline)"]
    assert sum(len(c.get_offsets()) for c in axes[0].collections) == len(labels)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["Diptera", "Hymenoptera"] and legend[-1] == "other"
    with pytest.raises(ValueError, match="coordinates of shape"):
        plots.plot_embedding_map({"m": np.zeros((3, 2))}, labels, tmp_path / "bad.png")


def _outside_figure(fig) -> list[str]:
    """Texts (titles, labels, ticks, legends) whose drawn box leaves the figure: cut off in the PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the canvas savefig used: same layout, same renderer
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    bad = []
    artists = [fig._suptitle] + list(fig.legends)
    for ax in fig.axes:
        if ax.get_visible():
            artists += [ax.title, ax.xaxis.label, ax.yaxis.label] + ax.get_xticklabels() + ax.get_yticklabels()
    for a in artists:
        if a is None or not a.get_visible() or (hasattr(a, "get_text") and not a.get_text()):
            continue
        ext = a.get_window_extent(renderer)
        if ext.x0 < box.x0 - 1 or ext.x1 > box.x1 + 1 or ext.y0 < box.y0 - 1 or ext.y1 > box.y1 + 1:
            bad.append(a.get_text() if hasattr(a, "get_text") else type(a).__name__)
    return bad


def test_fewshot_figure_fits_long_titles_and_legends_and_marks_scaled_tasks(tmp_path, fewshot_summary):
    """One task, four series with long names: nothing is cut off; a fine-tuned line differs
    from its probe line in more than the label; a shots_scale task says what was drawn."""
    one = fewshot_summary[fewshot_summary["dataset"] == "Splice-40"]
    tuned = one[one["model"] == "mlm-genemask"].assign(level="finetune")
    table = pd.concat([one, tuned, one[one["model"] == "mae-random"].assign(model="mae-random-with-a-long-name")])
    fig = plots.plot_fewshot(table, tmp_path / "one.png", metric="accuracy", shots_scale={"Splice-40": 10})
    assert _outside_figure(fig) == []
    assert "\n" in fig._suptitle.get_text()  # wrapped, not cut
    ax = [a for a in fig.axes if a.get_visible()][0]
    assert ax.get_title() == "Splice-40 (10 K drawn per class)"
    assert [float(t) for t in ax.get_xticks()] == [5.0, 10.0, 30.0]  # the nominal K stays on the axis
    styles = {}
    for line in ax.get_lines():
        if line.get_linestyle() not in ("None", ""):
            styles[(to_hex(line.get_color()), line.get_linestyle(), to_hex(line.get_markerfacecolor()))] = True
    assert len(styles) == 5  # every series is its own style, also the fine-tuned one of the same model


@pytest.mark.parametrize("counts", [[4, 5, 4, 5], [6, 6, 6], [40, 41, 43, 44]])
def test_bias_axes_keep_two_labelled_ticks_on_narrow_ranges(tmp_path, counts):
    n = len(counts)
    table = pd.concat([
        pd.DataFrame({"model": "m", "dataset": "barcodes", "protocol": protocol, "level": level,
                      "class": [f"c{i}" for i in range(n)], "train_count": counts, "support": 2,
                      "accuracy": np.linspace(0.2, 0.9, n)})
        for protocol, level in [("closed_world", "species"), ("open_world", "genus")]
    ])
    fig = plots.plot_bias(table, tmp_path / "bias.png")
    for ax in [a for a in fig.axes if a.get_visible()]:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert len(ticks) >= 2, (counts, ticks, (lo, hi))
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert len(labels) >= 2
    assert _outside_figure(fig) == []


def test_untrained_controls_take_their_models_colour_dotted(tmp_path, fewshot_summary):
    models = ["genemask", "dnabert@init", "dnabert", "kmer", "orphan@init"]
    styles = plots.model_style(models)
    assert styles["dnabert@init"]["color"] == styles["dnabert"]["color"]
    assert styles["dnabert@init"]["marker"] == styles["dnabert"]["marker"]
    assert styles["dnabert@init"]["linestyle"] == ":" and styles["dnabert"]["linestyle"] == "-"
    # colours go to the models alone, so adding controls changes no model's colour
    assert {m: s["color"] for m, s in styles.items() if m in ("dnabert", "genemask")} == {
        m: s["color"] for m, s in plots.model_style(["genemask", "dnabert", "kmer"]).items() if m != "kmer"
    }
    assert styles["orphan@init"]["linestyle"] == "-"  # its model is not drawn: a colour of its own
    assert plots.model_order(models) == ["dnabert", "dnabert@init", "genemask", "orphan@init", "kmer"]
    assert plots.model_order(["kmer", "align", "b", "a"]) == ["a", "b", "align", "kmer"]
    assert plots.model_label("dnabert@init") == "dnabert@init (untrained control)"
    # in a figure: the control's line is dotted in its model's colour, labelled as a control
    table = fewshot_summary.copy()
    control = table[table["model"] == "mae-random"].assign(model="mlm-genemask@init")
    fig = plots.plot_fewshot(pd.concat([table, control]), tmp_path / "fs.png")
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels.index("mlm-genemask@init (untrained control)") == labels.index("mlm-genemask") + 1
    styles_in = plots.model_style(["mlm-genemask", "mlm-genemask@init", "mae-random", "kmer"])
    colour = styles_in["mlm-genemask"]["color"]
    drawn = {(to_hex(line.get_color()), line.get_linestyle()) for line in fig.axes[0].lines}
    assert (to_hex(colour), "-") in drawn and (to_hex(colour), ":") in drawn
