"""Tests of dnalm.evaluate: metrics, few-shot sampling and probes, 1-NN, clustering."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

from dnalm import evaluate as ev


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


@pytest.mark.parametrize("block_size", [1, 7, 64, 4096])
def test_nearest_neighbor_vs_brute_force(block_size):
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(257, 8)) + 0.3
    query = rng.normal(size=(103, 8)) + 0.3
    expected = cdist(query, ref, metric="cosine").argmin(axis=1)
    got = ev.nearest_neighbor(ref, query, block_size=block_size)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_nearest_neighbor_scale_invariant_and_ties():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(12, 4))
    ref[10] = ref[3] * 2.5  # same direction as row 3, in another block
    query = np.stack([ref[3] * 0.1, ref[7] * 40.0])
    np.testing.assert_array_equal(ev.nearest_neighbor(ref, query, block_size=4), [3, 7])
    with pytest.raises(ValueError):
        ev.nearest_neighbor(ref, rng.normal(size=(2, 5)))


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


# --------------------------------------------------------------------------- clustering


@pytest.mark.parametrize("method", ["agglomerative", "kmeans"])
def test_clustering_planted_hierarchy(method):
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(7)
    x, genus, species = _genus_species_data(rng, 3, 3, 12)
    x = x + 10.0  # an offset common to all rows (mean-pooled embeddings are anisotropic)
    shuffled = rng.permutation(genus)
    with_missing = genus.astype(object)
    with_missing[::5] = None
    df = ev.clustering(
        x, {"genus": genus, "species": species, "shuffled": shuffled, "partial": with_missing}, method=method, seed=0
    )
    assert list(df.columns) == ev.COLUMNS
    assert set(df["protocol"]) == {"clustering"}
    assert df["level"].unique().tolist() == ["genus", "species", "shuffled", "partial"]
    for level in ("genus", "species", "partial"):
        assert _value(df, "ami", level=level) > 0.9 and _value(df, "ari", level=level) > 0.85
    assert abs(_value(df, "ari", level="shuffled")) < 0.1 and abs(_value(df, "ami", level="shuffled")) < 0.1
    assert _value(df, "silhouette", level="genus") > 0.3 > _value(df, "silhouette", level="shuffled")
    # silhouette is computed on L2-normalised then standardised features, cosine distance
    norm = x / np.linalg.norm(x, axis=1, keepdims=True)
    feats = StandardScaler().fit_transform(norm)
    assert _value(df, "silhouette", level="genus") == pytest.approx(
        silhouette_score(feats, genus, metric="cosine"), abs=1e-5
    )


def test_clustering_degenerate_label_set_and_bad_method():
    x = np.random.default_rng(8).normal(size=(20, 4))
    with pytest.warns(UserWarning, match="skipped"):
        df = ev.clustering(x, {"one": ["a"] * 20})
    assert df["value"].isna().all() and len(df) == 3
    with pytest.raises(ValueError):
        ev.clustering(x, {"a": [0, 1] * 10}, method="dbscan")
    with pytest.raises(ValueError):
        ev.clustering(x, {"a": [0, 1] * 5})


def test_empty_results_keep_columns():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = ev.fewshot(np.zeros((4, 2)), [0, 0, 1, 1], np.zeros((2, 2)), [0, 1], shots=[5], n_repeats=2, seed=0)
    assert df.empty and list(df.columns) == ev.FEWSHOT_COLUMNS
    assert df.dtypes["per_class"] == np.int64 and df.dtypes["value"] == np.float64
