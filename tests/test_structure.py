"""Tests of dnalm.structure: clustering against label sets (Ward, k-means, zero-shot UMAP +
Ward), the consistency probe, motif groups and 2-D maps; against scikit-learn/scipy, planted
structure and by hand; missing labels are left out as if the rows were absent."""

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from dnalm import evaluate as ev
from dnalm import structure as st


def _value(df, metric, **where):
    rows = df[df["metric"] == metric]
    for col, val in where.items():
        rows = rows[rows[col] == val]
    assert len(rows) == 1, rows
    return float(rows["value"].iloc[0])


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
    df = st.clustering(
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
        df = st.clustering(x, {"one": ["a"] * 20})
    assert df["value"].isna().all() and len(df) == 3
    with pytest.raises(ValueError):
        st.clustering(x, {"a": [0, 1] * 10}, method="dbscan")
    with pytest.raises(ValueError):
        st.clustering(x, {"a": [0, 1] * 5})


def test_clustering_max_points_uses_one_seeded_subset():
    rng = np.random.default_rng(16)
    x = np.repeat(rng.normal(size=(4, 6)) * 5, 50, axis=0) + rng.normal(size=(200, 6))
    labels = np.repeat(list("abcd"), 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = st.clustering(x, {"t": labels}, max_points=None)
        sub = st.clustering(x, {"t": labels}, max_points=80, seed=2)
    assert _value(sub, "ami") > 0.9 and _value(full, "ami") > 0.9
    pd.testing.assert_frame_equal(sub, st.clustering(x, {"t": labels}, max_points=80, seed=2))
    assert not math.isclose(_value(sub, "silhouette"), _value(full, "silhouette"), rel_tol=1e-9)


# --------------------------------------------------------------------------- consistency


def test_consistency_hand_computed():
    x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    labels = np.array(["a", "a", "b", "b"])
    df = st.consistency(x, {"taxon": labels}, max_pairs=100)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = unit @ unit.T
    same = [cos[0, 1], cos[2, 3]]
    rand = [cos[i, j] for i, j in itertools.combinations(range(4), 2)]  # all 6 pairs
    assert _value(df, "cos_same") == pytest.approx(np.mean(same))
    assert _value(df, "cos_random") == pytest.approx(np.mean(rand))
    # AUC = P(same > random) + 0.5 P(tie), over all 2 x 6 comparisons
    wins = sum((s > r) + 0.5 * (s == r) for s in same for r in rand)
    assert _value(df, "auc") == pytest.approx(wins / 12)
    assert set(df["protocol"]) == {"consistency"} and list(df.columns) == ev.COLUMNS


def test_consistency_overlapping_groups_sampling_and_skips():
    rng = np.random.default_rng(14)
    x = rng.normal(size=(200, 8))
    x[:50] += 3.0  # rows 0..49 share a direction
    groups = [np.arange(50), np.arange(30, 60), np.array([199])]  # overlapping; a singleton
    a = st.consistency(x, {"motif": groups, "missing": [None] * 100 + ["x", "y"] * 50}, max_pairs=500, seed=3)
    b = st.consistency(x, {"motif": groups, "missing": [None] * 100 + ["x", "y"] * 50}, max_pairs=500, seed=3)
    pd.testing.assert_frame_equal(a, b)  # sampled (1,225 + 435 pairs > 500), seeded
    assert _value(a, "auc", level="motif") > 0.9
    assert abs(_value(a, "auc", level="missing") - 0.5) < 0.1
    pairs = st._same_group_pairs(groups, 500, np.random.default_rng(0))
    assert (pairs[0] != pairs[1]).all()
    shared = [any(i in g and j in g for g in groups) for i, j in zip(*pairs)]
    assert all(shared)
    with pytest.warns(UserWarning, match="no pair"):
        df = st.consistency(x, {"alone": [np.array([1]), np.array([2])]})
    assert df.empty
    with pytest.raises(ValueError, match="outside"):
        st.consistency(x, {"bad": [np.array([0, 200])]})


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
    hits = st.motif_groups(seqs, motifs, mismatches=1)
    assert hits["tata"].tolist() == [0, 1]
    assert hits["box"].tolist() == [3, 4]
    assert hits["iupac"].tolist() == [5]
    exact = st.motif_groups(seqs, motifs, mismatches=0)
    assert exact["tata"].tolist() == [0] and exact["box"].tolist() == [] and exact["iupac"].tolist() == [5]
    with pytest.raises(ValueError, match="consensus"):
        st.motif_groups(seqs, pd.DataFrame({"motif_id": ["x"]}))


# --------------------------------------------------------------------------- maps


def test_project_2d_pca_matches_sklearn_and_tsne_is_seeded():
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(15)
    x = rng.normal(size=(60, 10)) + np.repeat(rng.normal(size=(3, 10)) * 4, 20, axis=0)
    feats = StandardScaler().fit_transform(x / np.linalg.norm(x, axis=1, keepdims=True))
    np.testing.assert_allclose(
        np.abs(st.project_2d(x, "pca")), np.abs(PCA(2).fit_transform(feats)), rtol=1e-4, atol=1e-5
    )
    a, b = st.project_2d(x, "tsne", seed=1), st.project_2d(x, "tsne", seed=1)
    assert a.shape == (60, 2) and np.allclose(a, b)
    with pytest.raises(ValueError):
        st.project_2d(x, "umap")


# --------------------------------------------------------------------------- zero-shot UMAP + Ward


def _planted(rng, n_classes=6, n_per_class=40, dim=32):
    """Well-separated classes on top of a large common offset (mean-pooled embeddings are
    anisotropic), distinct in angle: cosine UMAP must separate them."""
    centres = rng.normal(size=(n_classes, dim)) * 3.0
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = 10.0 + centres[y] + rng.normal(size=(y.shape[0], dim)) * 0.3
    return x.astype(np.float32), np.array([f"c{i}" for i in range(n_classes)])[y]


def test_zero_shot_umap_planted_and_random_labels():
    rng = np.random.default_rng(41)
    x, y = _planted(rng)
    shuffled = rng.permutation(y)
    df = st.zero_shot_clustering(x, {"planted": y, "random": shuffled}, dims=10, neighbors=15, seed=1)
    assert list(df.columns) == ev.COLUMNS
    assert set(df["protocol"]) == {"zero_shot_umap"} and df["level"].unique().tolist() == ["planted", "random"]
    assert _value(df, "ami", level="planted") > 0.97 and _value(df, "ari", level="planted") > 0.95
    assert abs(_value(df, "ami", level="random")) < 0.05 and abs(_value(df, "ari", level="random")) < 0.05
    # seeded and single-threaded: the same table again, and the UMAP coordinates themselves
    pd.testing.assert_frame_equal(df, st.zero_shot_clustering(x, {"planted": y, "random": shuffled}, dims=10,
                                                              neighbors=15, seed=1))
    a, b = st.umap_embedding(x, dims=10, neighbors=15, seed=1), st.umap_embedding(x, dims=10, neighbors=15, seed=1)
    assert a.shape == (240, 10)
    np.testing.assert_array_equal(a, b)


def test_zero_shot_umap_is_ward_on_the_umap_coordinates():
    """The protocol by hand: UMAP (cosine, 50 dims, min_dist 0) of the raw rows, Ward into as
    many clusters as classes, AMI from scikit-learn."""
    import umap
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import adjusted_mutual_info_score

    rng = np.random.default_rng(42)
    x, y = _planted(rng, n_classes=4, n_per_class=30, dim=16)
    y = np.where(rng.random(y.shape[0]) < 0.3, rng.permutation(y), y)  # noisy labels: AMI well below 1
    df = st.zero_shot_clustering(x, {"t": y}, dims=50, neighbors=30, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coords = umap.UMAP(n_components=50, n_neighbors=30, min_dist=0.0, metric="cosine", random_state=3,
                           n_jobs=1).fit_transform(x)
    pred = AgglomerativeClustering(n_clusters=4, linkage="ward").fit_predict(coords.astype(np.float64))
    assert _value(df, "ami") == pytest.approx(adjusted_mutual_info_score(y, pred), abs=1e-12)
    assert 0.2 < _value(df, "ami") < 0.9


def test_zero_shot_umap_degenerate_and_small_sets():
    x = np.random.default_rng(43).normal(size=(30, 8))
    with pytest.warns(UserWarning, match="skipped"):
        df = st.zero_shot_clustering(x, {"one": ["a"] * 30})
    assert df["value"].isna().all() and len(df) == 2
    df = st.zero_shot_clustering(x, {"two": ["a", "b"] * 15}, dims=50, neighbors=30)  # 30 rows: 28 dims, 29 neighbours
    assert df["value"].notna().all()
    with pytest.raises(ValueError, match="at least 4 rows"):
        st.umap_embedding(x[:3])


# --------------------------------------------------------------------------- missing labels


def test_missing_labels_are_left_out_as_if_absent():
    """Rows without a label at a rank (NaN, None, "") are no class: clustering, zero-shot
    clustering and the consistency probe of that rank equal a run on the labelled rows, and
    the other ranks still use every row."""
    rng = np.random.default_rng(44)
    x, genus, species = _genus_species_data(rng, 4, 3, 10)
    genus = genus.astype(object)
    genus[::6] = ""
    genus[1::9] = np.nan
    genus[2::11] = None
    keep = ~ev.missing(genus)
    assert 30 < (~keep).sum() < 50  # of 120
    labels = {"genus": genus, "species": species}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no skipped label set
        for run in (lambda x, lab: st.clustering(x, lab, seed=2),
                    lambda x, lab: st.zero_shot_clustering(x, lab, dims=8, neighbors=10, seed=2),
                    lambda x, lab: st.consistency(x, lab, max_pairs=300, seed=2)):
            both = run(x, labels)
            sub = run(x[keep], {"genus": genus[keep].astype(str)})
            alone = run(x, {"species": species})
            pd.testing.assert_frame_equal(both[both["level"] == "genus"].reset_index(drop=True), sub)
            pd.testing.assert_frame_equal(both[both["level"] == "species"].reset_index(drop=True), alone)
    assert _value(st.clustering(x, labels), "ami", level="genus") > 0.9


def test_missing_labels_are_counted_in_the_log(caplog):
    x = np.random.default_rng(45).normal(size=(40, 6))
    lab = np.array(["a", "b", "", "c"] * 10, dtype=object)
    with caplog.at_level("INFO", logger="dnalm.evaluate"):
        st.clustering(x, {"genus": lab})
    assert "clustering: rows without a 'genus' label: 10 of 40 left out" in caplog.text


_UMAP_KERNEL_IN_A_PROCESS = """
import json
import numpy as np
import umap.distances
from dnalm import structure as st
n = st.cache_umap_kernels()
x, y = np.random.default_rng(5).normal(size=(2, 16)).astype(np.float32)
print(json.dumps({"enabled": n, "cosine": float(umap.distances.cosine(x, y))}))
"""


def test_umap_kernels_are_cached_on_disk_and_give_the_same_values():
    """With the cache on, a process that calls a UMAP kernel finds it in (or writes it to)
    numba's cache next to UMAP, where it runs; a second process loads it (nothing written) and
    gets exactly the same value, the cosine distance by hand. (A whole UMAP fit the same way
    costs ~10 s more of compiling.)"""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import umap.distances

    cache = Path(umap.distances.__file__).parent / "__pycache__"
    env = dict(os.environ, PYTHONPATH=str(Path(st.__file__).parents[1]))
    env.pop("NUMBA_CACHE_DIR", None)

    def run():
        proc = subprocess.run([sys.executable, "-c", _UMAP_KERNEL_IN_A_PROCESS], env=env, capture_output=True,
                              text=True, check=True)
        return json.loads(proc.stdout.splitlines()[-1]), {p: p.stat().st_mtime_ns for p in cache.glob("*.nb[ic]")}

    if not os.access(cache.parent, os.W_OK):
        pytest.skip(f"{cache.parent} is read-only: numba would cache under NUMBA_CACHE_DIR or the user cache")
    first, written = run()
    assert first["enabled"] >= 10  # UMAP's lazily compiled kernels
    assert any(p.name.startswith("distances.cosine-") and p.suffix == ".nbi" for p in written), sorted(written)
    second, after = run()
    assert after == written  # loaded, not compiled again
    x, y = np.random.default_rng(5).normal(size=(2, 16)).astype(np.float32)
    by_hand = 1.0 - float(np.dot(x, y)) / (np.linalg.norm(x) * np.linalg.norm(y))
    assert second["cosine"] == first["cosine"] == pytest.approx(by_hand, rel=1e-5)
