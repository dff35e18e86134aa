"""How an embedding arranges known labels, with nothing trained on them: clustering compared
with each label set (Ward or k-means on the embedding; the BIOSCAN-5M zero-shot protocol,
UMAP then Ward), the consistency probe (same-group pairs against random pairs), the rows that
contain each motif, and 2-D maps.

Tables as :mod:`dnalm.evaluate` writes them (:data:`dnalm.evaluate.COLUMNS`). A row whose
label is missing (NaN, or an empty string as the barcode table reads it) is left out of that
label set, and the log counts it; each label set is evaluated as if those rows were absent.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .evaluate import _rows, _tidy, labelled, missing
from .vectors import as_2d, l2_normalize, pair_dots

_log = logging.getLogger("dnalm.structure")


def _label_rows(labels, n: int, name: str, max_points: int | None, seed: int, what: str):
    """``(row indices, labels as str)`` of the rows of a label set that have a label, or a
    seeded random subset of at most ``max_points`` of them (the same subset for every label
    set with the same labelled rows)."""
    if np.shape(labels) != (n,):
        raise ValueError(f"label set {name!r} has shape {np.shape(labels)}, expected ({n},)")
    lab = np.asarray(labels, dtype=object)
    keep = labelled(lab, f"{what}: rows without a {name!r} label")
    if max_points is not None and keep.shape[0] > max_points:
        pick = np.random.default_rng([int(seed), keep.shape[0]]).choice(keep.shape[0], size=int(max_points), replace=False)
        keep = keep[np.sort(pick)]
    return keep, lab[keep].astype(str)


def _enough_classes(y: np.ndarray, name: str, protocol: str) -> int:
    """The number of classes of ``y``, or 0 (with a warning) when clustering cannot be
    compared with them: fewer than two classes, or as many classes as rows."""
    n_classes = np.unique(y).shape[0]
    if n_classes < 2 or n_classes >= y.shape[0]:
        warnings.warn(
            f"{protocol}: label set {name!r} has {n_classes} classes over {y.shape[0]} rows; skipped", stacklevel=3
        )
        return 0
    return n_classes


def clustering(
    emb,
    labels: Mapping[str, Sequence],
    method: str = "agglomerative",
    seed: int = 0,
    silhouette_sample: int = 10000,
    max_points: int | None = None,
) -> pd.DataFrame:
    """Cluster the embeddings and compare the clusters with each known label set.

    For each label set, on the rows that have a label: features are the L2-normalised rows,
    then standardised columns; cluster into as many clusters as the set has classes, with
    ``method`` ``"agglomerative"`` (Ward) or ``"kmeans"`` (10 inits, ``random_state=seed``),
    and report ``ami`` and ``ari`` against the labels, plus ``silhouette`` of the true labels
    on the same features (cosine; on a seeded subsample of ``silhouette_sample`` rows when
    larger). A label set with fewer than two classes, or as many classes as rows, gives NaN
    values and a warning. ``protocol="clustering"``, ``level=<label set name>``.

    ``max_points``: cluster a seeded random subset of at most this many labelled rows (the
    same subset for label sets labelled on the same rows); Ward clustering needs memory
    quadratic in the rows.
    """
    from sklearn.cluster import AgglomerativeClustering, KMeans
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, silhouette_score
    from sklearn.preprocessing import StandardScaler

    if method not in ("agglomerative", "kmeans"):
        raise ValueError(f"unknown clustering method {method!r}; expected 'agglomerative' or 'kmeans'")
    x_all = as_2d(emb, "emb")
    n = x_all.shape[0]
    subsets = [_label_rows(lab, n, name, max_points, seed, "clustering") for name, lab in labels.items()]
    rows = []
    for name, (keep, y) in zip(labels, subsets):
        n_classes = _enough_classes(y, name, "clustering")
        if not n_classes:
            rows += _rows("clustering", name, {"ami": np.nan, "ari": np.nan, "silhouette": np.nan})
            continue
        x = StandardScaler().fit_transform(l2_normalize(x_all[keep]))
        if method == "agglomerative":
            model = AgglomerativeClustering(n_clusters=n_classes, linkage="ward")
        else:
            model = KMeans(n_clusters=n_classes, n_init=10, random_state=seed)
        pred = model.fit_predict(x)
        sample = silhouette_sample if y.shape[0] > silhouette_sample else None
        values = {
            "ami": adjusted_mutual_info_score(y, pred),
            "ari": adjusted_rand_score(y, pred),
            "silhouette": silhouette_score(x, y, metric="cosine", sample_size=sample, random_state=seed),
        }
        rows += _rows("clustering", name, values)
    return _tidy(rows)


#: modules whose lazily compiled numba kernels :func:`umap_embedding` caches on disk
_UMAP_KERNEL_MODULES = ("umap.distances", "umap.utils", "umap.layouts", "umap.umap_", "umap.sparse", "umap.spectral",
                        "pynndescent.distances", "pynndescent.utils", "pynndescent.pynndescent_",
                        "pynndescent.rp_trees", "pynndescent.sparse")


@functools.cache
def cache_umap_kernels() -> int:
    """Turn on numba's on-disk cache for UMAP's (and PyNNDescent's) kernels that compile on
    first call and are not compiled yet; return how many. Once per process: later calls
    return the first call's count.

    UMAP jit-compiles its layout, fuzzy-set and nearest-neighbour kernels without a cache, so
    each process that runs UMAP spends 7–16 s compiling them again (every clustering job of the
    workflow). With the cache the first process writes the machine code next to the library
    (``__pycache__``, or ``NUMBA_CACHE_DIR``) and later processes load it (~1 s). The compiled
    code is the same either way, so results do not change (tested). Kernels numba cannot
    cache, and a read-only library without ``NUMBA_CACHE_DIR``, just compile as before.
    numba keys each cached kernel on its own source file only: after upgrading umap-learn or
    pynndescent in place (not in a fresh environment), delete their ``__pycache__/*.nb[ic]``.
    """
    import importlib

    from numba.core.dispatcher import Dispatcher

    n = 0
    for name in _UMAP_KERNEL_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # a module a UMAP/PyNNDescent release does not have
            continue
        for obj in vars(module).values():
            if isinstance(obj, Dispatcher) and not obj.overloads:
                try:
                    obj.enable_caching()
                    n += 1
                except Exception as err:  # noqa: BLE001 - a kernel that cannot cache compiles as before
                    _log.debug("numba cache not enabled for %s.%s: %s", name, obj.__name__, err)
    return n


def umap_embedding(emb, dims: int = 50, neighbors: int = 30, seed: int = 0) -> np.ndarray:
    """UMAP of the rows to ``dims`` dimensions (cosine metric; ``min_dist`` 0, as UMAP's
    guide recommends for clustering and the published protocol uses), seeded and
    single-threaded, so deterministic.

    ``dims`` shrinks to ``n - 2`` and ``neighbors`` to ``n - 1`` for a small ``n`` (logged).
    UMAP's numba kernels compile on first use; :func:`cache_umap_kernels` keeps them on disk
    so only the first process on a machine pays for that (seconds; see BENCHMARKS.md).
    """
    import umap

    cache_umap_kernels()

    x = as_2d(emb, "emb")
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"UMAP needs at least 4 rows, got {n}")
    d, k = min(int(dims), n - 2), min(int(neighbors), n - 1)
    if (d, k) != (int(dims), int(neighbors)):
        _log.info("UMAP of %d rows: %d dimensions and %d neighbours (asked %d and %d)", n, d, k, dims, neighbors)
    started = time.perf_counter()
    with warnings.catch_warnings():  # "n_jobs overridden to 1 by setting random_state": wanted
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
        reducer = umap.UMAP(n_components=d, n_neighbors=k, min_dist=0.0, metric="cosine", random_state=int(seed),
                            n_jobs=1)
        out = reducer.fit_transform(x).astype(np.float64)
    _log.info("UMAP of %d x %d rows to %d dimensions: %.1f s", n, x.shape[1], d, time.perf_counter() - started)
    return out


def zero_shot_clustering(
    emb,
    labels: Mapping[str, Sequence],
    dims: int = 50,
    neighbors: int = 30,
    seed: int = 0,
    max_points: int | None = None,
) -> pd.DataFrame:
    """The BIOSCAN-5M zero-shot clustering protocol (Lowe et al. 2024, arXiv:2406.02465;
    Gharaee et al. 2024, arXiv:2406.12723), so that numbers can be set next to the published
    ones: for each label set, on the rows that have a label, :func:`umap_embedding` of the raw
    embeddings to ``dims`` dimensions (cosine; ``neighbors`` 30 and ``min_dist`` 0 as in the
    published protocol), agglomerative Ward clustering into as many clusters as true
    classes, and ``ami`` (the published metric) and ``ari`` against the labels. One UMAP serves every label set labelled on the same rows. ``max_points`` and
    degenerate label sets as in :func:`clustering`. ``protocol="zero_shot_umap"``,
    ``level=<label set name>``.
    """
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    x_all = as_2d(emb, "emb")
    n = x_all.shape[0]
    subsets = [_label_rows(lab, n, name, max_points, seed, "zero-shot clustering") for name, lab in labels.items()]
    reduced: dict[bytes, np.ndarray] = {}
    rows = []
    for name, (keep, y) in zip(labels, subsets):
        n_classes = _enough_classes(y, name, "zero-shot clustering")
        if not n_classes:
            rows += _rows("zero_shot_umap", name, {"ami": np.nan, "ari": np.nan})
            continue
        key = keep.tobytes()
        if key not in reduced:
            reduced[key] = umap_embedding(x_all[keep], dims=dims, neighbors=neighbors, seed=seed)
        pred = AgglomerativeClustering(n_clusters=n_classes, linkage="ward").fit_predict(reduced[key])
        rows += _rows("zero_shot_umap", name, {"ami": adjusted_mutual_info_score(y, pred),
                                               "ari": adjusted_rand_score(y, pred)})
    return _tidy(rows)


def groups_from_labels(labels) -> list[np.ndarray]:
    """Row indices of each class of ``labels`` (missing labels, NaN or "", left out)."""
    lab = np.asarray(labels, dtype=object)
    keep = np.flatnonzero(~missing(lab))
    values = lab[keep].astype(str)
    classes, inverse = np.unique(values, return_inverse=True)
    return [keep[inverse == i] for i in range(classes.shape[0])]


def _all_pairs(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(members.shape[0], k=1)
    return members[i], members[j]


def _same_group_pairs(groups: list[np.ndarray], max_pairs: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of distinct rows that share a group: all of them when there are at most
    ``max_pairs``, else ``max_pairs`` drawn with the same distribution (a group with
    probability proportional to its number of pairs, then two distinct members uniformly)."""
    sizes = np.array([g.shape[0] for g in groups], dtype=np.int64)
    n_pairs = sizes * (sizes - 1) // 2
    total = int(n_pairs.sum())
    if total <= max_pairs:
        parts = [_all_pairs(g) for g, p in zip(groups, n_pairs) if p > 0]
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])
    which = rng.choice(len(groups), size=max_pairs, p=n_pairs / total)
    first = rng.random(max_pairs)
    second = rng.random(max_pairs)
    size = sizes[which]
    a = np.floor(first * size).astype(np.int64)
    b = np.floor(second * (size - 1)).astype(np.int64)
    b += b >= a  # a distinct second member
    left = np.array([groups[w][k] for w, k in zip(which, a)], dtype=np.int64)
    right = np.array([groups[w][k] for w, k in zip(which, b)], dtype=np.int64)
    return left, right


def _random_pairs(n: int, max_pairs: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of distinct rows when there are at most ``max_pairs``, else that many
    drawn uniformly (with replacement) among them."""
    if n * (n - 1) // 2 <= max_pairs:
        return _all_pairs(np.arange(n))
    a = rng.integers(0, n, max_pairs)
    b = rng.integers(0, n - 1, max_pairs)
    b += b >= a
    return a, b


def consistency(
    emb, label_sets: Mapping[str, Sequence], max_pairs: int = 20000, seed: int = 0
) -> pd.DataFrame:
    """Consistency probe: do rows that share a group sit closer than random pairs?

    For each entry of ``label_sets`` (a label per row, missing allowed, or a list of index
    arrays of possibly overlapping groups such as "contains planted motif m"): cosine
    similarities of same-group pairs and of random pairs of distinct rows (each enumerated
    when there are at most ``max_pairs``, else sampled, seeded). A row whose label is
    missing is left out of that label set, random pairs included (counted in the log). Metrics:
    ``cos_same`` and ``cos_random`` (mean cosine similarities) and ``auc``, the probability
    that a same-group pair is more similar than a random pair (ties count one half; the
    ROC AUC of the similarity as a same-group detector, 0.5 when embeddings ignore the
    groups). A label set without same-group pairs is skipped with a warning.
    ``protocol="consistency"``, ``level=<name>``.
    """
    from sklearn.metrics import roc_auc_score

    x = l2_normalize(as_2d(emb, "emb"))
    n = x.shape[0]
    rows = []
    for name, spec in label_sets.items():
        if isinstance(spec, (list, tuple)) and (len(spec) == 0 or np.ndim(spec[0]) == 1):
            groups = [np.asarray(g, dtype=np.int64) for g in spec]
            if any(g.size and (g.min() < 0 or g.max() >= n) for g in groups):
                raise ValueError(f"consistency: group indices of {name!r} outside 0..{n - 1}")
            xs, n_rows = x, n
        else:
            if np.shape(spec) != (n,):
                raise ValueError(f"label set {name!r} has shape {np.shape(spec)}, expected ({n},)")
            keep = labelled(spec, f"consistency: rows without a {name!r} label")
            xs, n_rows = (x, n) if keep.shape[0] == n else (x[keep], keep.shape[0])
            groups = groups_from_labels(np.asarray(spec, dtype=object)[keep])
        rng = np.random.default_rng([int(seed), n_rows, len(groups)])
        a, b = _same_group_pairs(groups, max_pairs, rng)
        if a.shape[0] == 0 or n_rows < 2:
            warnings.warn(f"consistency: label set {name!r} has no pair of rows sharing a group; skipped", stacklevel=2)
            continue
        ra, rb = _random_pairs(n_rows, max_pairs, rng)
        same = pair_dots(xs, a, xs, b)
        rand = pair_dots(xs, ra, xs, rb)
        auc = roc_auc_score(np.r_[np.ones(same.shape[0]), np.zeros(rand.shape[0])], np.r_[same, rand])
        rows += _rows("consistency", name, {"auc": auc, "cos_same": same.mean(), "cos_random": rand.mean()})
    return _tidy(rows)


def motif_groups(sequences: Sequence[str], motifs: pd.DataFrame, mismatches: int = 1) -> dict[str, np.ndarray]:
    """Rows of ``sequences`` that contain each motif, on either strand.

    ``motifs`` has columns ``motif_id`` and ``consensus`` (IUPAC letters allowed). A
    sequence contains a motif when some window of the consensus length differs from the
    consensus (or its reverse complement) at no more than ``mismatches`` positions; a base
    other than ACGT never matches. Returns ``{motif_id: sorted row indices}``.
    """
    from . import seq as dseq
    from .motifs import IUPAC

    complement = str.maketrans("ACGTURYSWKMBDHVN", "TGCAAYRSWMKVHDBN")

    missing = {"motif_id", "consensus"} - set(motifs.columns)
    if missing:
        raise ValueError(f"motif table lacks column(s) {sorted(missing)}")
    codes = [dseq.encode(s) for s in sequences]
    lengths = np.array([c.shape[0] for c in codes], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(codes) if codes else np.zeros(0, dtype=np.uint8)
    out = {}
    for motif_id, consensus in zip(motifs["motif_id"].astype(str), motifs["consensus"].astype(str)):
        consensus = consensus.upper()
        width = len(consensus)
        hit = np.zeros(len(codes), dtype=bool)
        if width == 0 or flat.shape[0] < width:
            out[motif_id] = np.flatnonzero(hit)
            continue
        windows = np.lib.stride_tricks.sliding_window_view(flat, width)
        start = np.arange(windows.shape[0])
        owner = np.searchsorted(offsets, start, side="right") - 1
        inside = start + width <= offsets[owner + 1]
        for pattern in {consensus, consensus.translate(complement)[::-1]}:
            allowed = np.zeros((width, 5), dtype=bool)  # code 4 (not ACGT) never allowed
            for i, letter in enumerate(pattern):
                for base in IUPAC.get(letter, letter):
                    if base in dseq.ALPHABET:
                        allowed[i, dseq.ALPHABET.index(base)] = True
            bad = np.zeros(windows.shape[0], dtype=np.int64)
            for i in range(width):
                bad += ~allowed[i][windows[:, i]]
            hit[owner[(bad <= mismatches) & inside]] = True
        out[motif_id] = np.flatnonzero(hit)
    return out


def project_2d(emb, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """2-D coordinates of the embeddings for a map (float64 ``(n, 2)``).

    Features as in :func:`clustering` (L2-normalised rows, standardised columns); ``"pca"``
    (first two principal components) or ``"tsne"`` (cosine t-SNE, PCA initialisation,
    perplexity ``min(30, (n - 1) / 3)``, ``random_state=seed``).
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    x = as_2d(emb, "emb")
    if x.shape[0] < 4:
        raise ValueError(f"a 2-D map needs at least 4 rows, got {x.shape[0]}")
    feats = StandardScaler().fit_transform(l2_normalize(x))
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(feats).astype(np.float64)
    if method == "tsne":
        perplexity = min(30.0, (x.shape[0] - 1) / 3.0)
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", metric="cosine", random_state=seed)
        return tsne.fit_transform(feats).astype(np.float64)
    raise ValueError(f"unknown projection {method!r}; expected 'tsne' or 'pca'")
