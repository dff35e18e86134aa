"""Tests of the probing side of dnalm.evaluate: exact int8 1-NN, consistency probe, bias,
motif scanning, 2-D maps, subsampled clustering; against scikit-learn/scipy and by hand."""

import contextlib
import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from dnalm import evaluate as ev


def _brute_nn(ref, query):
    """float64 cosine 1-NN of the float32 unit rows; ties to the lowest index."""
    r = ev.l2_normalize(ref).astype(np.float64)
    q = ev.l2_normalize(query).astype(np.float64)
    return (q @ r.T).argmax(axis=1)


@contextlib.contextmanager
def restored_threads():
    """Put back what ev.limit_threads changes: the BLAS/OpenMP pools, torch's thread count
    and ev._THREADS (so that no test leaks a thread cap into the rest of the session)."""
    import torch
    from threadpoolctl import threadpool_limits

    saved, n_torch = ev._THREADS, torch.get_num_threads()
    try:
        with threadpool_limits(limits=None):  # records the current limits, restores them on exit
            yield
    finally:
        ev._THREADS = saved
        torch.set_num_threads(n_torch)


@pytest.fixture()
def restore_threads():
    with restored_threads():
        yield


# --------------------------------------------------------------------------- 1-NN, int8 path


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["isotropic", "anisotropic", "clustered"])
@pytest.mark.parametrize("block_size", [1, 37, 4096])
def test_int8_nearest_neighbor_is_exact(kind, block_size, threads, restore_threads):
    """Exact against a float64 brute force with one worker thread and with two (the int8
    products of the next blocks then run concurrently with the screening)."""
    ev.limit_threads(threads)
    rng = np.random.default_rng(len(kind) * 100 + block_size)
    n_ref, n_q, dim = {1: (300, 40, 24), 37: (1500, 200, 64), 4096: (3000, 500, 64)}[block_size]
    if kind == "isotropic":
        ref, query = rng.normal(size=(n_ref, dim)), rng.normal(size=(n_q, dim))
    elif kind == "anisotropic":  # mean-pooled embeddings: a big common component
        common = rng.normal(size=dim) * 4
        ref, query = common + rng.normal(size=(n_ref, dim)), common + rng.normal(size=(n_q, dim))
    else:  # tight clusters: many references within the int8 error of the best
        centres = rng.normal(size=(20, dim))
        ref = centres[rng.integers(0, 20, n_ref)] + rng.normal(size=(n_ref, dim)) * 0.05
        query = centres[rng.integers(0, 20, n_q)] + rng.normal(size=(n_q, dim)) * 0.05
    stats = {}
    got = ev.nearest_neighbor(ref, query, block_size=block_size, method="int8", stats=stats)
    assert stats["method"] == "int8" and stats["rescored"] >= n_q and stats["workers"] == threads
    np.testing.assert_array_equal(got, _brute_nn(ref, query))
    # the float32 path agrees up to float32 rounding (near-ties may resolve either way)
    f32 = ev.nearest_neighbor(ref, query, block_size=block_size, method="float32")
    sims = ev.l2_normalize(query).astype(np.float64) @ ev.l2_normalize(ref).astype(np.float64).T
    rows = np.arange(n_q)
    assert (f32 == got).mean() > 0.98
    np.testing.assert_allclose(sims[rows, f32], sims[rows, got], atol=2e-6)


def test_int8_nearest_neighbor_ties_zero_rows_and_sklearn():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(11)
    ref = rng.normal(size=(500, 16)).astype(np.float32) + 1.0
    ref[400] = ref[7] * 3.0  # same direction as row 7, later and in another block: 7 wins
    ref[450] = 0.0  # an all-zero reference: similarity 0 to everything
    query = rng.normal(size=(60, 16)).astype(np.float32) + 1.0
    query[0] = ref[7] * 0.5
    query[1] = 0.0  # an all-zero query: every similarity 0, the answer is reference 0
    got = ev.nearest_neighbor(ref, query, block_size=64, method="int8")
    assert got[0] == 7 and got[1] == 0
    fit = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(np.delete(ref, 450, axis=0))
    idx = fit.kneighbors(query[2:], return_distance=False)[:, 0]
    idx = idx + (idx >= 450)  # back to indices with the zero row
    np.testing.assert_array_equal(got[2:], idx)


def test_nearest_neighbor_method_choice():
    rng = np.random.default_rng(12)
    ref, query = rng.normal(size=(50, 8)), rng.normal(size=(5, 8))
    stats = {}
    ev.nearest_neighbor(ref, query, stats=stats)
    assert stats == {"method": "float32"}  # small: the plain path
    with pytest.raises(ValueError, match="unknown nearest-neighbour method"):
        ev.nearest_neighbor(ref, query, method="faiss")


def test_nearest_neighbor_auto_switches_to_int8_above_the_threshold(monkeypatch):
    rng = np.random.default_rng(17)
    ref, query = rng.normal(size=(200, 8)), rng.normal(size=(30, 8))
    work = 30 * 200 * 8
    monkeypatch.setattr(ev, "INT8_MIN_WORK", work)  # exactly at the threshold: still float32
    stats = {}
    ev.nearest_neighbor(ref, query, stats=stats)
    assert stats["method"] == "float32"
    monkeypatch.setattr(ev, "INT8_MIN_WORK", 0)
    stats = {}
    got = ev.nearest_neighbor(ref, query, block_size=64, stats=stats)
    assert stats["method"] == "int8" and stats["blocks"] >= 4  # the int8 path ran
    np.testing.assert_array_equal(got, _brute_nn(ref, query))


def test_open_and_closed_world_return_predictions():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(40, 6))
    y = np.array(["a", "b"] * 20)
    table, pred = ev.open_world(x[:30], y[:30], x[30:], y[30:], return_predictions=True)
    np.testing.assert_array_equal(pred, y[:30][ev.nearest_neighbor(x[:30], x[30:])])
    assert _metric(table, "accuracy") == pytest.approx(np.mean(pred == y[30:]))
    table, pred = ev.closed_world(x[:30], y[:30], x[30:], y[30:], return_predictions=True)
    assert pred.shape == (10,) and _metric(table, "accuracy") == pytest.approx(np.mean(pred == y[30:]))


def _metric(df, metric, **where):
    rows = df[df["metric"] == metric]
    for col, val in where.items():
        rows = rows[rows[col] == val]
    assert len(rows) == 1, rows
    return float(rows["value"].iloc[0])


# --------------------------------------------------------------------------- consistency


def test_consistency_hand_computed():
    x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    labels = np.array(["a", "a", "b", "b"])
    df = ev.consistency(x, {"taxon": labels}, max_pairs=100)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = unit @ unit.T
    same = [cos[0, 1], cos[2, 3]]
    rand = [cos[i, j] for i, j in itertools.combinations(range(4), 2)]  # all 6 pairs
    assert _metric(df, "cos_same") == pytest.approx(np.mean(same))
    assert _metric(df, "cos_random") == pytest.approx(np.mean(rand))
    # AUC = P(same > random) + 0.5 P(tie), over all 2 x 6 comparisons
    wins = sum((s > r) + 0.5 * (s == r) for s in same for r in rand)
    assert _metric(df, "auc") == pytest.approx(wins / 12)
    assert set(df["protocol"]) == {"consistency"} and list(df.columns) == ev.COLUMNS


def test_consistency_overlapping_groups_sampling_and_skips():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(200, 8))
    x[:50] += 3.0  # rows 0..49 share a direction
    groups = [np.arange(50), np.arange(30, 60), np.array([199])]  # overlapping; a singleton
    a = ev.consistency(x, {"motif": groups, "missing": [None] * 100 + ["x", "y"] * 50}, max_pairs=500, seed=3)
    b = ev.consistency(x, {"motif": groups, "missing": [None] * 100 + ["x", "y"] * 50}, max_pairs=500, seed=3)
    pd.testing.assert_frame_equal(a, b)  # sampled (1,225 + 435 pairs > 500), seeded
    assert _metric(a, "auc", level="motif") > 0.9
    assert abs(_metric(a, "auc", level="missing") - 0.5) < 0.1
    pairs = ev._same_group_pairs(groups, 500, np.random.default_rng(0))
    assert (pairs[0] != pairs[1]).all()
    shared = [any(i in g and j in g for g in groups) for i, j in zip(*pairs)]
    assert all(shared)
    with pytest.warns(UserWarning, match="no pair"):
        df = ev.consistency(x, {"alone": [np.array([1]), np.array([2])]})
    assert df.empty
    with pytest.raises(ValueError, match="outside"):
        ev.consistency(x, {"bad": [np.array([0, 200])]})


# --------------------------------------------------------------------------- bias


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
    assert _metric(table, "spearman_rho") == pytest.approx(rho)
    assert _metric(table, "spearman_rho") == pytest.approx(spearmanr([5, 4, 2, 1], [1, 0.5, 0.5, 0]).statistic)
    assert _metric(table, "spearman_p") == pytest.approx(spearmanr([5, 4, 2, 1], [1, 0.5, 0.5, 0]).pvalue)
    assert set(table["level"]) == {"species"} and set(table["protocol"]) == {"bias"}
    with pytest.warns(UserWarning, match="undefined"):
        table, per_class = ev.bias(y_true, y_true, y_train, "species")  # all correct
    assert table.empty and (per_class["accuracy"] == 1).all()


# --------------------------------------------------------------------------- motifs


def test_motif_groups_strands_mismatches_iupac_and_boundaries():
    motifs = pd.DataFrame({"motif_id": ["tata", "box", "iupac"], "consensus": ["TATAAAAG", "GGATCC", "CANNTG"]})
    seqs = [
        "ccTATAAAAGcc",  # exact, lowercase flank
        "CTTTTCTAGG",  # reverse complement of TATAAAAG (CTTTTATA) with one mismatch
        "TATAAAAG"[:5],  # too short
        "GGATCA",  # 1 mismatch from GGATCC
        "GGNTCC",  # N is a mismatch
        "TTTCAGCTGTT",  # CAGCTG matches CANNTG
        "GGATC",  # with the next sequence it would spell GGATCC: must not match across
        "CAAA",
    ]
    hits = ev.motif_groups(seqs, motifs, mismatches=1)
    assert hits["tata"].tolist() == [0, 1]
    assert hits["box"].tolist() == [3, 4]
    assert hits["iupac"].tolist() == [5]
    exact = ev.motif_groups(seqs, motifs, mismatches=0)
    assert exact["tata"].tolist() == [0] and exact["box"].tolist() == [] and exact["iupac"].tolist() == [5]
    with pytest.raises(ValueError, match="consensus"):
        ev.motif_groups(seqs, pd.DataFrame({"motif_id": ["x"]}))


# --------------------------------------------------------------------------- maps and clustering


def test_project_2d_pca_matches_sklearn_and_tsne_is_seeded():
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(15)
    x = rng.normal(size=(60, 10)) + np.repeat(rng.normal(size=(3, 10)) * 4, 20, axis=0)
    feats = StandardScaler().fit_transform(x / np.linalg.norm(x, axis=1, keepdims=True))
    np.testing.assert_allclose(
        np.abs(ev.project_2d(x, "pca")), np.abs(PCA(2).fit_transform(feats)), rtol=1e-4, atol=1e-5
    )
    a, b = ev.project_2d(x, "tsne", seed=1), ev.project_2d(x, "tsne", seed=1)
    assert a.shape == (60, 2) and np.allclose(a, b)
    with pytest.raises(ValueError):
        ev.project_2d(x, "umap")


def test_clustering_max_points_uses_one_seeded_subset():
    rng = np.random.default_rng(16)
    x = np.repeat(rng.normal(size=(4, 6)) * 5, 50, axis=0) + rng.normal(size=(200, 6))
    labels = np.repeat(list("abcd"), 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = ev.clustering(x, {"t": labels}, max_points=None)
        sub = ev.clustering(x, {"t": labels}, max_points=80, seed=2)
    assert _metric(sub, "ami") > 0.9 and _metric(full, "ami") > 0.9
    pd.testing.assert_frame_equal(sub, ev.clustering(x, {"t": labels}, max_points=80, seed=2))
    assert not math.isclose(_metric(sub, "silhouette"), _metric(full, "silhouette"), rel_tol=1e-9)


def test_limit_threads(restore_threads):
    import torch
    from threadpoolctl import threadpool_info

    ev.limit_threads(1)
    assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert ev._THREADS == 1 and torch.get_num_threads() == 1


def _thread_state():
    import torch
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info()], torch.get_num_threads(), ev._THREADS


def test_restored_threads_undoes_limit_threads():
    before = _thread_state()
    target = 1 if max(before[0] + [before[1]]) > 1 else 2  # a cap that visibly changes something
    with restored_threads():
        ev.limit_threads(target)
        assert _thread_state() != before
    assert _thread_state() == before
