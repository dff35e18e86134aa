"""Tests of dnalm.evaluate: metrics, few-shot sampling and probes, closed/open world, bias,
the taxonomy table with missing ranks, task class checks, thread limits."""

import contextlib
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from dnalm import evaluate as ev
from dnalm import neighbors as nb


def _clusters(rng, n_classes, n_per_class, dim=16, spread=0.3, sep=5.0):
    centers = rng.normal(size=(n_classes, dim)) * sep
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centers[y] + rng.normal(size=(y.shape[0], dim)) * spread
    return x.astype(np.float32), y


def _value(df, metric, **where):
    rows = df[df["metric"] == metric]
    for col, val in where.items():
        rows = rows[rows[col] == val]
    assert len(rows) == 1, rows
    return float(rows["value"].iloc[0])


# --------------------------------------------------------------------------- metrics


def test_metrics_hand_computed():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    m = ev.classification_metrics(y_true, y_pred, ["accuracy", "balanced_accuracy", "macro_f1", "mcc"])
    assert list(m) == ["accuracy", "balanced_accuracy", "macro_f1", "mcc"]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    # per-class F1: class 0 P=1/2 R=1/2; class 1 P=2/3 R=1; class 2 P=1 R=1/2
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # Gorodkin's multi-class MCC from the confusion matrix
    c = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])  # rows true, cols predicted
    t, p, s, correct = c.sum(1), c.sum(0), c.sum(), np.trace(c)
    mcc = (correct * s - t @ p) / math.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    assert m["mcc"] == pytest.approx(mcc)


def test_binary_mcc_and_macro_f1_over_true_classes():
    y_true = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    y_pred = np.array([1, 0, 1, 0, 0, 1, 0, 1])
    tp, tn, fp, fn = 3, 3, 1, 1
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert ev.classification_metrics(y_true, y_pred, ["mcc"])["mcc"] == pytest.approx(mcc)
    # a predicted class absent from y_true does not enter the macro average
    m = ev.classification_metrics(["a", "a", "b"], ["a", "c", "b"], ["macro_f1", "balanced_accuracy"])
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    with pytest.raises(ValueError):
        ev.classification_metrics([0], [0], ["auc"])


def test_per_class_accuracy():
    df = ev.per_class_accuracy(
        ["a", "a", "b", "b", "b", "c"], ["a", "b", "b", "b", "a", "a"], y_train=["a"] * 5 + ["b"]
    )
    assert df["class"].tolist() == ["a", "b", "c"]
    assert df["support"].tolist() == [2, 3, 1]
    assert df["train_count"].tolist() == [5, 1, 0]
    np.testing.assert_allclose(df["accuracy"], [1 / 2, 2 / 3, 0])


# --------------------------------------------------------------------------- few-shot


def test_sample_per_class():
    y = np.array(["x"] * 12 + ["y"] * 7 + ["z"] * 30)
    idx = ev.sample_per_class(y, 5, ev.fewshot_rng(0, 5, 0))
    assert idx.shape == (15,) and np.unique(idx).shape == (15,)
    assert Counter_of(y[idx]) == {"x": 5, "y": 5, "z": 5}
    again = ev.sample_per_class(y, 5, ev.fewshot_rng(0, 5, 0))
    np.testing.assert_array_equal(idx, again)
    others = [ev.sample_per_class(y, 5, ev.fewshot_rng(0, 5, r)) for r in range(1, 4)]
    assert all(not np.array_equal(np.sort(idx), np.sort(o)) for o in others)
    assert not np.array_equal(idx, ev.sample_per_class(y, 5, ev.fewshot_rng(1, 5, 0)))
    with pytest.raises(ValueError, match="fewer than 8"):
        ev.sample_per_class(y, 8, ev.fewshot_rng(0, 8, 0))


def Counter_of(values):
    u, c = np.unique(values, return_counts=True)
    return dict(zip(u.tolist(), c.tolist()))


def test_fewshot_separable_data_and_skipping():
    rng = np.random.default_rng(0)
    x_tr, y_tr = _clusters(rng, 3, 60)
    x_te, y_te = _clusters(np.random.default_rng(0), 3, 30)  # same centres, new noise below
    x_te = x_te + np.random.default_rng(9).normal(size=x_te.shape).astype(np.float32) * 0.3
    labels = np.array(["prom", "enh", "splice"])
    with pytest.warns(UserWarning, match="K=100 skipped"):
        df = ev.fewshot(x_tr, labels[y_tr], x_te, labels[y_te], shots=[5, 20, 100], n_repeats=3, seed=7)
    assert list(df.columns) == ev.FEWSHOT_COLUMNS
    assert len(df) == 2 * 3 * 3
    assert set(df["protocol"]) == {"fewshot"} and set(df["level"]) == {"probe"}
    assert set(df["shots"]) == {5.0, 20.0} and set(df["repeat"]) == {0, 1, 2}
    assert (df["per_class"] == df["shots"]).all()  # no shots_scale: K drawn per class
    assert set(df["metric"]) == {"accuracy", "macro_f1", "mcc"}
    assert (df.loc[df["metric"] == "accuracy", "value"] >= 0.98).all()
    assert (df.loc[df["metric"] == "mcc", "value"] >= 0.97).all()


def test_fewshot_matches_direct_sklearn_fit_and_is_reproducible():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    x_tr, y_tr = _clusters(rng, 2, 80, spread=3.0, sep=1.0)  # overlapping: scores vary by draw
    x_te, y_te = _clusters(np.random.default_rng(1), 2, 50, spread=3.0, sep=1.0)
    x_te = x_te + rng.normal(size=x_te.shape).astype(np.float32)
    df = ev.fewshot(x_tr, y_tr, x_te, y_te, shots=[10], n_repeats=4, seed=3)
    for r in range(4):
        idx = ev.sample_per_class(y_tr, 10, np.random.default_rng([3, 10, r]))
        scaler = StandardScaler().fit(x_tr[idx])
        lr = LogisticRegression(max_iter=1000).fit(scaler.transform(x_tr[idx]), y_tr[idx])
        pred = lr.predict(scaler.transform(x_te))
        assert _value(df, "accuracy", repeat=r) == pytest.approx(accuracy_score(y_te, pred))
        assert _value(df, "macro_f1", repeat=r) == pytest.approx(f1_score(y_te, pred, average="macro"))
        assert _value(df, "mcc", repeat=r) == pytest.approx(matthews_corrcoef(y_te, pred))
    accs = df.loc[df["metric"] == "accuracy", "value"]
    assert accs.nunique() > 1  # repeats draw different shots
    pd.testing.assert_frame_equal(df, ev.fewshot(x_tr, y_tr, x_te, y_te, shots=[10], n_repeats=4, seed=3))


def test_fewshot_shots_scale_draws_k_times_scale_and_keeps_nominal_k(monkeypatch):
    """GeneMask's Splice-40 protocol: the file "K" holds 10 K per class, so shots_scale 10."""
    rng = np.random.default_rng(5)
    x_tr, y_tr = _clusters(rng, 3, 120, spread=2.0, sep=1.5)
    x_te, y_te = _clusters(np.random.default_rng(5), 3, 40, spread=2.0, sep=1.5)
    draws = []
    original = ev.sample_per_class
    monkeypatch.setattr(ev, "sample_per_class", lambda y, k, g: draws.append(original(y, k, g)) or draws[-1])
    with pytest.warns(UserWarning, match=r"K=20 \(200 per class with shots_scale 10\) skipped"):
        df = ev.fewshot(x_tr, y_tr, x_te, y_te, shots=[2, 10, 20], n_repeats=2, seed=4, shots_scale=10)
    monkeypatch.undo()
    assert list(df.columns) == ev.FEWSHOT_COLUMNS
    assert sorted(set(zip(df["shots"], df["per_class"]))) == [(2.0, 20), (10.0, 100)]  # nominal K, drawn
    assert [np.bincount(y_tr[d]).tolist() for d in draws] == [[20] * 3] * 2 + [[100] * 3] * 2
    # a scaled draw is the unscaled draw of K x scale: the same examples, the same scores
    plain = ev.fewshot(x_tr, y_tr, x_te, y_te, shots=[20, 100], n_repeats=2, seed=4)
    cols = ["repeat", "metric", "value", "per_class"]
    pd.testing.assert_frame_equal(df[cols].reset_index(drop=True), plain[cols].reset_index(drop=True))
    with pytest.raises(ValueError, match="shots_scale must be >= 1"):
        ev.fewshot(x_tr, y_tr, x_te, y_te, shots=[2], n_repeats=1, seed=0, shots_scale=0)


def test_fewshot_random_labels_at_chance():
    rng = np.random.default_rng(2)
    x_tr = rng.normal(size=(300, 12)).astype(np.float32)
    x_te = rng.normal(size=(400, 12)).astype(np.float32)
    y_tr, y_te = rng.integers(0, 2, 300), rng.integers(0, 2, 400)
    df = ev.fewshot(x_tr, y_tr, x_te, y_te, shots=[20], n_repeats=8, seed=0)
    acc = df.loc[df["metric"] == "accuracy", "value"].mean()
    mcc = df.loc[df["metric"] == "mcc", "value"].mean()
    assert 0.44 < acc < 0.56 and abs(mcc) < 0.1


def test_summarize_hand_computed():
    df = pd.DataFrame(
        {
            "model": ["m"] * 4,
            "protocol": ["fewshot"] * 3 + ["closed_world"],
            "level": ["", "", "", "species"],
            "shots": [10.0, 10.0, 10.0, np.nan],
            "repeat": [0, 1, 2, 0],
            "metric": ["accuracy"] * 4,
            "value": [0.5, 0.7, 0.9, 0.8],
        }
    )
    s = ev.summarize(df)
    assert list(s.columns) == ["model", "protocol", "level", "shots", "metric", "mean", "std", "n"]
    assert len(s) == 2
    few = s[s["protocol"] == "fewshot"].iloc[0]
    assert few["mean"] == pytest.approx(0.7) and few["std"] == pytest.approx(0.2) and few["n"] == 3
    cw = s[s["protocol"] == "closed_world"].iloc[0]
    assert math.isnan(cw["shots"]) and cw["mean"] == pytest.approx(0.8) and math.isnan(cw["std"]) and cw["n"] == 1


# --------------------------------------------------------------------------- taxonomy


def test_closed_world_planted_species():
    rng = np.random.default_rng(3)
    x, y = _clusters(rng, 6, 40, spread=0.5)
    species = np.array([f"sp{i}" for i in range(6)])[y]
    train = np.arange(len(y)) % 4 != 0
    df = ev.closed_world(x[train], species[train], x[~train], species[~train])
    assert list(df.columns) == ev.COLUMNS
    assert set(df["metric"]) == {"accuracy", "macro_f1"}
    assert set(df["protocol"]) == {"closed_world"} and set(df["level"]) == {"species"}
    assert _value(df, "accuracy") == 1.0 and _value(df, "macro_f1") == 1.0
    assert math.isnan(df["shots"].iloc[0]) and df["repeat"].iloc[0] == 0


def test_chance_accuracy_hand_computed():
    assert ev.chance_accuracy(["a", "a", "b", "c"], ["a", "b", "b", "d"]) == pytest.approx(0.25 * 0.5 + 0.5 * 0.25)


def _genus_species_data(rng, n_genera, species_per_genus, n_per_species, dim=24):
    genus_centres = rng.normal(size=(n_genera, dim)) * 4
    xs, genus, species = [], [], []
    for g in range(n_genera):
        for s in range(species_per_genus):
            centre = genus_centres[g] + rng.normal(size=dim) * 0.8
            xs.append(centre + rng.normal(size=(n_per_species, dim)) * 0.3)
            genus += [f"g{g}"] * n_per_species
            species += [f"g{g}s{s}"] * n_per_species
    return np.concatenate(xs).astype(np.float32), np.array(genus), np.array(species)


def test_open_world_planted_and_random():
    rng = np.random.default_rng(6)
    x, genus, species = _genus_species_data(rng, 8, 4, 15)
    unseen = np.isin(species, [f"g{g}s3" for g in range(8)])  # whole species held out
    df = ev.open_world(x[~unseen], genus[~unseen], x[unseen], genus[unseen], block_size=50)
    assert list(df.columns) == ev.COLUMNS
    assert set(df["metric"]) == {"accuracy", "balanced_accuracy", "macro_f1", "chance_accuracy"}
    assert set(df["protocol"]) == {"open_world"} and set(df["level"]) == {"genus"}
    assert _value(df, "accuracy") >= 0.95 and _value(df, "macro_f1") >= 0.95
    assert _value(df, "chance_accuracy") == pytest.approx(1 / 8)
    # labels independent of the embeddings: 1-NN accuracy is at the chance level
    x_ref = rng.normal(size=(1500, 16))
    x_q = rng.normal(size=(2000, 16))
    p = np.array([0.5, 0.2, 0.2, 0.1])
    g_ref, g_q = rng.choice(4, 1500, p=p), rng.choice(4, 2000, p=p)
    df = ev.open_world(x_ref, g_ref, x_q, g_q)
    chance = _value(df, "chance_accuracy")
    assert chance == pytest.approx((p**2).sum(), abs=0.03)
    assert abs(_value(df, "accuracy") - chance) < 0.04
    assert abs(_value(df, "balanced_accuracy") - 0.25) < 0.04


def test_open_and_closed_world_return_predictions():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(40, 6))
    y = np.array(["a", "b"] * 20)
    table, pred = ev.open_world(x[:30], y[:30], x[30:], y[30:], return_predictions=True)
    np.testing.assert_array_equal(pred, y[:30][nb.nearest_neighbor(x[:30], x[30:])])
    assert _value(table, "accuracy") == pytest.approx(np.mean(pred == y[30:]))
    table, pred = ev.closed_world(x[:30], y[:30], x[30:], y[30:], return_predictions=True)
    assert pred.shape == (10,) and _value(table, "accuracy") == pytest.approx(np.mean(pred == y[30:]))


def test_bias_spearman_against_scipy_and_by_hand():
    from scipy.stats import spearmanr

    y_train = list("aaaaabbbbccd")  # counts a5 b4 c2 d1
    y_true = np.array(list("aabbccdd"))
    y_pred = np.array(list("aabxcyzz"))  # accuracy a1 b.5 c.5 d0
    table, per_class = ev.bias(y_true, y_pred, y_train, "species")
    assert per_class["class"].tolist() == list("abcd")
    np.testing.assert_allclose(per_class["accuracy"], [1, 0.5, 0.5, 0])
    np.testing.assert_allclose(per_class["train_count"], [5, 4, 2, 1])
    # ranks: counts 4 3 2 1, accuracies 4 2.5 2.5 1 -> Pearson of the ranks
    rc, ra = np.array([4, 3, 2, 1.0]), np.array([4, 2.5, 2.5, 1])
    rho = np.corrcoef(rc, ra)[0, 1]
    assert _value(table, "spearman_rho") == pytest.approx(rho)
    assert _value(table, "spearman_rho") == pytest.approx(spearmanr([5, 4, 2, 1], [1, 0.5, 0.5, 0]).statistic)
    assert _value(table, "spearman_p") == pytest.approx(spearmanr([5, 4, 2, 1], [1, 0.5, 0.5, 0]).pvalue)
    assert set(table["level"]) == {"species"} and set(table["protocol"]) == {"bias"}
    with pytest.warns(UserWarning, match="undefined"):
        table, per_class = ev.bias(y_true, y_true, y_train, "species")  # all correct
    assert table.empty and (per_class["accuracy"] == 1).all()


def test_empty_results_keep_columns():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = ev.fewshot(np.zeros((4, 2)), [0, 0, 1, 1], np.zeros((2, 2)), [0, 1], shots=[5], n_repeats=2, seed=0)
    assert df.empty and list(df.columns) == ev.FEWSHOT_COLUMNS
    assert df.dtypes["per_class"] == np.int64 and df.dtypes["value"] == np.float64


# --------------------------------------------------------------------------- thread limits


@contextlib.contextmanager
def restored_threads():
    """Put back what ev.limit_threads changes: the BLAS/OpenMP pools and torch's thread
    count (so that no test leaks a thread cap into the rest of the session)."""
    import torch
    from threadpoolctl import threadpool_limits

    n_torch = torch.get_num_threads()
    try:
        with threadpool_limits(limits=None):  # records the current limits, restores them on exit
            yield
    finally:
        torch.set_num_threads(n_torch)


@pytest.fixture()
def restore_threads():
    with restored_threads():
        yield


def test_limit_threads(restore_threads):
    import torch
    from threadpoolctl import threadpool_info

    assert ev.limit_threads(1) == 1  # the count, for the functions that take threads=
    assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == 1


def _thread_state():
    import torch
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info()], torch.get_num_threads()


def test_restored_threads_undoes_limit_threads():
    before = _thread_state()
    target = 1 if max(before[0] + [before[1]]) > 1 else 2  # a cap that visibly changes something
    with restored_threads():
        ev.limit_threads(target)
        assert _thread_state() != before
    assert _thread_state() == before


# --------------------------------------------------------------------------- missing taxa


def test_missing_labels():
    got = ev.missing(np.array(["a", "", "  ", None, np.nan, "NA", "b"], dtype=object))
    assert got.tolist() == [False, True, True, True, True, False, False]  # "NA" is a name, not a gap
    assert ev.labelled(["x", "", "y"], "rows").tolist() == [0, 2]


def _barcode_table(tmp_path, seed=31):
    """A barcode table written and read back as the pipeline reads it (empty fields become
    ""), with planted embeddings: 8 genera x 4 species; some species and genus fields empty
    in every split; train/test share species, test_unseen holds the fourth species."""
    from dnalm import datasets

    rng = np.random.default_rng(seed)
    x, genus, species = _genus_species_data(rng, 8, 4, 24, dim=24)
    x = x + rng.normal(size=x.shape).astype(np.float32) * 1.2  # overlapping: accuracies vary by class
    n = x.shape[0]
    split = np.where(np.char.endswith(species.astype(str), "s3"), "test_unseen", np.where(np.arange(n) % 3 == 0, "test", "train"))
    table = pd.DataFrame({
        "processid": [f"P{i:04d}" for i in range(n)], "dna_barcode": "ACGT", "order": "o1", "family": "f1",
        "genus": genus, "species": species, "split": split,
    })
    gone = rng.random(n)
    table.loc[gone < 0.12, "species"] = ""
    table.loc[(gone > 0.12) & (gone < 0.22), "genus"] = ""
    table.loc[(gone > 0.22) & (gone < 0.25), ["genus", "species"]] = ""
    path = tmp_path / "barcodes.tsv"
    table.to_csv(path, sep="\t", index=False)
    return datasets.read_barcodes(path, columns=["processid", "genus", "species", "split"]), x


def _taxonomy(table, ids, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # bias may be undefined for a rank
        return ev.taxonomy(table, ids, x, seed=3)


def test_taxonomy_leaves_out_missing_ranks(tmp_path, caplog):
    """Empty genus/species fields are no class: each rank's metrics, bias and per-class rows
    equal those computed on the table without the rows lacking that rank."""
    table, x = _barcode_table(tmp_path)
    ids = table["processid"].to_numpy()
    assert (table["species"] == "").sum() > 10 and (table["genus"] == "").sum() > 10
    with caplog.at_level("INFO", logger="dnalm.evaluate"):
        metrics, per_class = _taxonomy(table, ids, x)
    assert "" not in set(per_class["class"])
    keys = ["protocol", "level", "metric"]
    for rank, protocols in (("species", {"closed_world", "bias"}), ("genus", {"open_world", "bias"})):
        sub_metrics, sub_classes = _taxonomy(table[table[rank] != ""], ids, x)
        level = {"species": ["species"], "genus": ["genus"]}[rank]
        pick = lambda df: df[df["protocol"].isin(protocols) & df["level"].isin(level)].sort_values(keys).reset_index(drop=True)  # noqa: E731
        assert len(pick(metrics)) >= 3
        pd.testing.assert_frame_equal(pick(metrics), pick(sub_metrics))
        pd.testing.assert_frame_equal(
            per_class[per_class["level"] == rank].reset_index(drop=True),
            sub_classes[sub_classes["level"] == rank].reset_index(drop=True),
        )
    # the log counts what was left out, per split and rank
    n_train = int(((table["split"] == "train") & (table["species"] == "")).sum())
    assert f"closed world: training rows without a species: {n_train} of {int((table['split'] == 'train').sum())} left out" in caplog.text
    n_ref = int(((table["split"] == "train") & (table["genus"] == "")).sum())
    assert f"open world: reference rows without a genus: {n_ref} of" in caplog.text
    assert "open world: query rows without a genus" in caplog.text


def test_open_world_never_predicts_a_missing_genus():
    """A reference without a genus is out of the search: even an exact copy of a query
    cannot lend it its (missing) label; NaN and "" alike."""
    rng = np.random.default_rng(32)
    x_ref = rng.normal(size=(50, 8))
    g_ref = np.array(["g1", "g2"] * 25, dtype=object)
    x_q = x_ref[:6] + 1e-3
    g_ref[:3] = ["", np.nan, None]
    table, pred = ev.open_world(x_ref, g_ref, x_q, np.array(["g1", "g2"] * 3), return_predictions=True)
    assert not ev.missing(pred).any()
    kept = ~ev.missing(g_ref)
    expected = ev.open_world(x_ref[kept], g_ref[kept].astype(str), x_q, np.array(["g1", "g2"] * 3))
    pd.testing.assert_frame_equal(table, expected)


def test_closed_world_leaves_out_missing_species_and_passes_threads(monkeypatch):
    from dnalm import probes

    rng = np.random.default_rng(33)
    x, y = _clusters(rng, 4, 30, spread=2.0, sep=1.0)
    species = np.array(["a", "b", "c", "d"], dtype=object)[y]
    species[::7] = ""
    species[3::11] = np.nan
    train = np.arange(len(y)) % 3 != 0
    full = ev.closed_world(x[train], species[train], x[~train], species[~train], seed=1)
    keep = ~ev.missing(species)
    sub = ev.closed_world(x[train & keep], species[train & keep].astype(str), x[~train & keep],
                          species[~train & keep].astype(str), seed=1)
    pd.testing.assert_frame_equal(full, sub)
    fitted = []
    original = probes.TorchProbe.fit
    monkeypatch.setattr(probes.TorchProbe, "fit", lambda self, *a: fitted.append(self) or original(self, *a))
    ev.closed_world(x[train & keep], species[train & keep], x[~train], species[~train], probe="torch",
                    torch_settings={"epochs": 1}, threads=1)
    assert fitted[0].threads == 1
    with pytest.raises(ValueError, match="at least two species"):
        ev.closed_world(x[:5], ["a", "", "", "", ""], x[5:9], ["a"] * 4)


def test_taxonomy_empty_split_names_the_table(tmp_path):
    from dnalm.io import InputError

    table, x = _barcode_table(tmp_path)
    with pytest.raises(InputError, match=r"barcodes\.tsv: split 'validation' has no barcodes"):
        ev.taxonomy(table, table["processid"].to_numpy(), x, closed_test="validation", table_path=tmp_path / "barcodes.tsv")


# --------------------------------------------------------------------------- rule scripts


def _run_rule_script(tmp_path, script, **namespace):
    """Run scripts/<script> as Snakemake would (a ``snakemake`` object in its globals), in a
    fresh process; returns (exit code, log text, stderr)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    log = tmp_path / f"{script}.log"
    spec = {"log": [str(log)], "threads": 1, "resources": {}, **namespace}
    code = (
        "import json, runpy, sys, types\n"
        "class IO(list):\n"
        "    def __init__(self, d):\n"
        "        super().__init__(d.values() if isinstance(d, dict) else d)\n"
        "        self.__dict__.update(d if isinstance(d, dict) else {})\n"
        "spec = json.loads(sys.argv[1])\n"
        "sm = types.SimpleNamespace(log=spec['log'], threads=spec['threads'], resources=spec['resources'],\n"
        "    input=IO(spec['input']), output=IO(spec['output']), params=types.SimpleNamespace(**spec['params']),\n"
        "    wildcards=types.SimpleNamespace(**spec['wildcards']))\n"
        f"runpy.run_path({str(root / 'scripts' / script)!r}, init_globals={{'snakemake': sm}})\n"
    )
    env = {"PYTHONPATH": str(root / "scripts"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env)
    return proc.returncode, log.read_text() if log.exists() else "", proc.stderr


def _task_files(tmp_path, train_labels, test_labels):
    paths = {}
    for name, labels in (("train", train_labels), ("test", test_labels)):
        path = tmp_path / f"{name}.tsv"
        pd.DataFrame({"id": [f"{name}{i}" for i in range(len(labels))], "sequence": "ACGTACGT", "label": labels}).to_csv(
            path, sep="\t", index=False
        )
        paths[name] = str(path)
    return paths


def test_check_classes_names_task_and_file(tmp_path):
    from dnalm.io import InputError

    ev.check_classes(["a", "b", "a"], "prom", "x.tsv")
    with pytest.raises(InputError, match=r"x\.tsv: task 'prom' has a single class \('a'\)"):
        ev.check_classes(["a", "a", ""], "prom", "x.tsv")
    with pytest.raises(InputError, match="no labelled row"):
        ev.check_classes(["", None], "prom", "x.tsv")


def test_fewshot_and_probing_rules_reject_a_single_class_task(tmp_path):
    """Before: few-shot failed without naming the task, probing wrote NaN with exit code 0."""
    files = _task_files(tmp_path, [1] * 6, [1] * 4)  # a task of one class
    wildcards = {"task": "onlyone", "model": "m"}
    rc, log, err = _run_rule_script(
        tmp_path, "fewshot.py", input={**files, "embeddings": str(tmp_path / "none.npz")},
        output=[str(tmp_path / "fewshot.tsv")], wildcards=wildcards,
        params={"finetune": None, "shots": [2], "n_repeats": 1, "seed": 0, "max_iter": 100, "shots_scale": 1},
    )
    assert rc != 0 and f"{files['train']}: task 'onlyone' has a single class (1)" in log + err
    assert not (tmp_path / "fewshot.tsv").exists()
    rc, log, err = _run_rule_script(
        tmp_path, "probing.py", input={"test": files["test"], "embeddings": str(tmp_path / "none.npz"), "motifs": []},
        output=[str(tmp_path / "probing.tsv")], wildcards=wildcards,
        params={"method": "agglomerative", "max_points": 100, "motif_source": "planted", "max_pairs": 100,
                "mismatches": 1, "max_motifs": 5, "seed": 0},
    )
    assert rc != 0 and f"{files['test']}: task 'onlyone' has a single class (1)" in log + err
    assert not (tmp_path / "probing.tsv").exists()


def test_taxonomy_rule_leaves_out_empty_taxa(tmp_path):
    """The thin rule script writes what dnalm.evaluate.taxonomy computes, with model and
    dataset columns; an empty genus or species is never a class in either table."""
    from dnalm import embed

    table, x = _barcode_table(tmp_path)
    embed.save_embeddings(tmp_path / "emb.npz", table["processid"], x)
    params = {"closed_train": "train", "closed_test": "test", "open_reference": "train", "open_query": "test_unseen",
              "max_iter": 1000, "probe": "sklearn", "torch_probe": {}, "seed": 3}
    rc, log, err = _run_rule_script(
        tmp_path, "taxonomy.py", input={"embeddings": str(tmp_path / "emb.npz"), "barcodes": str(tmp_path / "barcodes.tsv")},
        output={"metrics": str(tmp_path / "metrics.tsv"), "per_class": str(tmp_path / "per_class.tsv")},
        wildcards={"model": "m1"}, params=params,
    )
    assert rc == 0, err
    metrics = pd.read_csv(tmp_path / "metrics.tsv", sep="\t")
    per_class = pd.read_csv(tmp_path / "per_class.tsv", sep="\t", keep_default_na=False)
    assert set(metrics["model"]) == {"m1"} and set(metrics["dataset"]) == {"barcodes"}
    assert "" not in set(per_class["class"])
    expected, _ = _taxonomy(table, table["processid"].to_numpy(), x)
    np.testing.assert_allclose(metrics["value"], expected["value"], rtol=1e-12)
    assert "left out" in log
