"""Evaluation protocols on frozen embeddings (DESIGN.md "Evaluation protocols").

Every protocol returns a *tidy* DataFrame, one row per number, with the columns
:data:`COLUMNS` = ``protocol, level, shots, repeat, metric, value``:

- ``protocol``: ``fewshot``, ``closed_world``, ``open_world`` or ``clustering``;
- ``level``: the label set the number is about (a taxonomic rank, a task label set), or "";
- ``shots``: examples per class for few-shot rows, NaN elsewhere;
- ``repeat``: the repeat index for few-shot rows, 0 elsewhere;
- ``metric`` / ``value``: metric name and its value.

The caller adds ``model`` and ``dataset`` columns and concatenates; :func:`summarize`
turns repeats into mean, std and n. All metrics are computed here and only here
(:func:`classification_metrics`), so every table uses one definition.

Learners and metrics are scikit-learn; everything random is seeded.
"""

from __future__ import annotations

import warnings
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

COLUMNS = ["protocol", "level", "shots", "repeat", "metric", "value"]
FEWSHOT_METRICS = ("accuracy", "macro_f1", "mcc")
CLOSED_WORLD_METRICS = ("accuracy", "macro_f1")
OPEN_WORLD_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


# --------------------------------------------------------------------------- helpers


def _tidy(rows: list[dict]) -> pd.DataFrame:
    """DataFrame with exactly :data:`COLUMNS` and stable dtypes (also when empty)."""
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"protocol": str, "level": str, "shots": float, "repeat": int, "metric": str, "value": float})


def _rows(protocol: str, level: str, metrics: Mapping[str, float], shots=np.nan, repeat: int = 0) -> list[dict]:
    return [
        {"protocol": protocol, "level": level, "shots": shots, "repeat": repeat, "metric": m, "value": float(v)}
        for m, v in metrics.items()
    ]


def _as_2d(emb, name: str) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {emb.shape}")
    return emb


def _check_pair(emb, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
    emb = _as_2d(emb, name)
    labels = np.asarray(labels)
    if labels.shape != (emb.shape[0],):
        raise ValueError(f"{name}: {emb.shape[0]} embeddings but labels of shape {labels.shape}")
    return emb, labels


def l2_normalize(emb) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); all-zero rows stay zero."""
    emb = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, np.float32(1e-12))


def classification_metrics(y_true, y_pred, names: Sequence[str]) -> dict[str, float]:
    """The named metrics of a prediction, in the order given.

    ``accuracy``; ``balanced_accuracy`` (mean recall over the classes of ``y_true``);
    ``macro_f1`` (unweighted mean F1 over the classes present in ``y_true``; a class never
    predicted scores 0); ``mcc`` (Matthews correlation, multi-class form).
    """
    from sklearn import metrics as skm

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = {}
    for name in names:
        if name == "accuracy":
            out[name] = skm.accuracy_score(y_true, y_pred)
        elif name == "balanced_accuracy":
            with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected
                warnings.simplefilter("ignore", UserWarning)
                out[name] = skm.balanced_accuracy_score(y_true, y_pred)
        elif name == "macro_f1":
            out[name] = skm.f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0)
        elif name == "mcc":
            out[name] = skm.matthews_corrcoef(y_true, y_pred)
        else:
            raise ValueError(f"unknown metric {name!r}")
    return out


def linear_probe(max_iter: int = 1000, seed: int = 0):
    """The default learner on frozen embeddings: StandardScaler + LogisticRegression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))


def _fit_predict(model, x_train, y_train, x_test) -> tuple[np.ndarray, int]:
    """Fit and predict; returns the prediction and how many ConvergenceWarnings were raised."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x_train, y_train)
    n_conv = 0
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            n_conv += 1
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model.predict(x_test), n_conv


# --------------------------------------------------------------------------- few-shot


def fewshot_rng(seed: int, shots: int, repeat: int) -> np.random.Generator:
    """The generator of one (K, repeat) draw: independent of every other draw."""
    return np.random.default_rng([int(seed), int(shots), int(repeat)])


def sample_per_class(y, shots: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``shots`` examples of each class of ``y``, drawn without replacement.

    Classes in sorted order, indices within a class in draw order. Raises ValueError when a
    class has fewer than ``shots`` examples.
    """
    y = np.asarray(y)
    picks = []
    for cls in np.unique(y):
        pool = np.flatnonzero(y == cls)
        if pool.shape[0] < shots:
            raise ValueError(f"class {cls!r} has {pool.shape[0]} examples, fewer than {shots}")
        picks.append(rng.choice(pool, size=shots, replace=False))
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def fewshot(
    emb_train,
    y_train,
    emb_test,
    y_test,
    shots: Sequence[int],
    n_repeats: int,
    seed: int,
    max_iter: int = 1000,
) -> pd.DataFrame:
    """GeneMask few-shot protocol with a linear probe on frozen embeddings.

    For each K in ``shots`` and each repeat r < ``n_repeats``: draw K examples per class
    from the train pool (generator :func:`fewshot_rng` ``(seed, K, r)``), fit
    :func:`linear_probe`, and score the whole fixed test set. A K larger than the smallest
    class of the pool is skipped with a warning. Metrics: accuracy, macro_f1, mcc;
    ``protocol="fewshot"``, ``level=""``.
    """
    x_tr, y_tr = _check_pair(emb_train, y_train, "emb_train")
    x_te, y_te = _check_pair(emb_test, y_test, "emb_test")
    if x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(f"train and test embeddings differ in width: {x_tr.shape[1]} vs {x_te.shape[1]}")
    classes, counts = np.unique(y_tr, return_counts=True)
    if classes.shape[0] < 2:
        raise ValueError("the few-shot train pool needs at least two classes")
    smallest = int(counts.min())
    rows, n_conv, n_fits = [], 0, 0
    for k in shots:
        k = int(k)
        if k < 1:
            raise ValueError(f"shots must be >= 1, got {k}")
        if k > smallest:
            warnings.warn(
                f"few-shot K={k} skipped: the smallest class of the train pool has only {smallest} examples",
                stacklevel=2,
            )
            continue
        for r in range(int(n_repeats)):
            idx = sample_per_class(y_tr, k, fewshot_rng(seed, k, r))
            pred, nc = _fit_predict(linear_probe(max_iter, seed), x_tr[idx], y_tr[idx], x_te)
            n_conv += nc
            n_fits += 1
            rows += _rows("fewshot", "", classification_metrics(y_te, pred, FEWSHOT_METRICS), shots=float(k), repeat=r)
    if n_conv:
        warnings.warn(
            f"logistic regression did not converge in {n_conv} of {n_fits} few-shot fits (max_iter={max_iter})",
            stacklevel=2,
        )
    return _tidy(rows)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof 1; NaN for a single repeat) and n of ``value`` over repeats.

    Groups by every column except ``repeat`` and ``value`` (so ``model`` and ``dataset``,
    when present, are kept); NaN keys (``shots``) form groups like any other value. Output:
    the group columns, then ``mean``, ``std``, ``n`` (non-NaN values counted).
    """
    missing = {"repeat", "value"} - set(df.columns)
    if missing:
        raise ValueError(f"summarize needs the columns {sorted(missing)}")
    keys = [c for c in df.columns if c not in ("repeat", "value")]
    grouped = df.groupby(keys, dropna=False, sort=False)["value"]
    out = grouped.agg(mean="mean", std="std", n="count").reset_index()
    out["n"] = out["n"].astype(int)
    return out


# --------------------------------------------------------------------------- taxonomy


def closed_world(emb_train, species_train, emb_test, species_test, max_iter: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Closed-world species classification: linear probe trained on train, scored on test.

    Metrics accuracy and macro_f1; ``protocol="closed_world"``, ``level="species"``.
    """
    x_tr, y_tr = _check_pair(emb_train, species_train, "emb_train")
    x_te, y_te = _check_pair(emb_test, species_test, "emb_test")
    pred, n_conv = _fit_predict(linear_probe(max_iter, seed), x_tr, y_tr, x_te)
    if n_conv:
        warnings.warn(f"closed-world logistic regression did not converge (max_iter={max_iter})", stacklevel=2)
    return _tidy(_rows("closed_world", "species", classification_metrics(y_te, pred, CLOSED_WORLD_METRICS)))


def nearest_neighbor(emb_ref, emb_query, block_size: int = 4096) -> np.ndarray:
    """Index into ``emb_ref`` of each query's nearest neighbour by cosine similarity.

    Rows are L2-normalised and compared with float32 matrix products, block by block over
    both queries and references, so memory stays at ``block_size**2`` similarities whatever
    the sizes. Ties go to the lowest reference index. Returns int64 ``(len(emb_query),)``.
    """
    ref = l2_normalize(_as_2d(emb_ref, "emb_ref"))
    query = l2_normalize(_as_2d(emb_query, "emb_query"))
    if ref.shape[0] == 0:
        raise ValueError("the reference set is empty")
    if ref.shape[1] != query.shape[1]:
        raise ValueError(f"reference and query embeddings differ in width: {ref.shape[1]} vs {query.shape[1]}")
    if block_size < 1:
        raise ValueError("block_size must be >= 1")
    out = np.zeros(query.shape[0], dtype=np.int64)
    for qs in range(0, query.shape[0], block_size):
        q = query[qs : qs + block_size]
        best = np.full(q.shape[0], -np.inf, dtype=np.float32)
        arg = np.zeros(q.shape[0], dtype=np.int64)
        rows = np.arange(q.shape[0])
        for rs in range(0, ref.shape[0], block_size):
            sims = q @ ref[rs : rs + block_size].T
            j = sims.argmax(axis=1)
            s = sims[rows, j]
            better = s > best  # strict: an earlier block keeps ties
            best[better] = s[better]
            arg[better] = j[better] + rs
        out[qs : qs + q.shape[0]] = arg
    return out


def chance_accuracy(y_ref, y_query) -> float:
    """Expected accuracy of predicting the label of a uniformly random reference item.

    ``sum_g q(g) r(g)`` with q, r the label frequencies of the query and reference sets:
    what 1-NN scores when embeddings carry no information about the labels.
    """
    ref_cls, ref_n = np.unique(np.asarray(y_ref), return_counts=True)
    q_cls, q_n = np.unique(np.asarray(y_query), return_counts=True)
    r = dict(zip(ref_cls.tolist(), (ref_n / ref_n.sum()).tolist()))
    return float(sum(qn / q_n.sum() * r.get(c, 0.0) for c, qn in zip(q_cls.tolist(), q_n)))


def open_world(emb_ref, genus_ref, emb_query, genus_query, block_size: int = 4096) -> pd.DataFrame:
    """Open-world genus classification of unseen species by cosine 1-NN against the reference.

    Metrics accuracy, balanced_accuracy, macro_f1, and ``chance_accuracy``
    (:func:`chance_accuracy`, the level a label-blind embedding reaches);
    ``protocol="open_world"``, ``level="genus"``.
    """
    x_ref, y_ref = _check_pair(emb_ref, genus_ref, "emb_ref")
    x_q, y_q = _check_pair(emb_query, genus_query, "emb_query")
    pred = y_ref[nearest_neighbor(x_ref, x_q, block_size)]
    values = classification_metrics(y_q, pred, OPEN_WORLD_METRICS)
    values["chance_accuracy"] = chance_accuracy(y_ref, y_q)
    return _tidy(_rows("open_world", "genus", values))


# --------------------------------------------------------------------------- clustering / probing


def _missing(labels: np.ndarray) -> np.ndarray:
    return np.asarray(pd.isna(labels) | (labels.astype(str) == ""), dtype=bool)


def clustering(
    emb,
    labels: Mapping[str, Sequence],
    method: str = "agglomerative",
    seed: int = 0,
    silhouette_sample: int = 10000,
) -> pd.DataFrame:
    """Cluster the embeddings and compare the clusters with each known label set.

    Features: L2-normalised rows, then standardised columns. For each label set (rows
    whose label is missing, NaN or "", are left out of that set): cluster into as many
    clusters as it has classes, with ``method`` ``"agglomerative"`` (Ward) or ``"kmeans"``
    (10 inits, ``random_state=seed``), and report ``ami`` and ``ari`` against the labels,
    plus ``silhouette`` of the true labels on the same features (cosine; on a seeded
    subsample of ``silhouette_sample`` rows when larger). A label set with fewer than two
    classes, or as many classes as rows, gives NaN values and a warning.
    ``protocol="clustering"``, ``level=<label set name>``.
    """
    from sklearn.cluster import AgglomerativeClustering, KMeans
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, silhouette_score
    from sklearn.preprocessing import StandardScaler

    if method not in ("agglomerative", "kmeans"):
        raise ValueError(f"unknown clustering method {method!r}; expected 'agglomerative' or 'kmeans'")
    x_all = _as_2d(emb, "emb")
    feats = StandardScaler().fit_transform(l2_normalize(x_all))
    rows = []
    for name, lab in labels.items():
        lab = np.asarray(lab, dtype=object)
        if lab.shape != (x_all.shape[0],):
            raise ValueError(f"label set {name!r} has shape {lab.shape}, expected ({x_all.shape[0]},)")
        keep = ~_missing(lab)
        x, y = feats[keep], lab[keep].astype(str)
        n_classes = np.unique(y).shape[0]
        if n_classes < 2 or n_classes >= y.shape[0]:
            warnings.warn(
                f"clustering: label set {name!r} has {n_classes} classes over {y.shape[0]} rows; skipped", stacklevel=2
            )
            rows += _rows("clustering", name, {"ami": np.nan, "ari": np.nan, "silhouette": np.nan})
            continue
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


def per_class_accuracy(y_true, y_pred, y_train=None) -> pd.DataFrame:
    """Accuracy (recall) per true class, for the class-imbalance bias analysis.

    Columns ``class``, ``support`` (test examples), ``train_count`` (examples in ``y_train``;
    0 if absent, NaN when ``y_train`` is not given) and ``accuracy``; one row per class of
    ``y_true``, sorted by class.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError("y_true and y_pred differ in shape")
    classes, inverse, support = np.unique(y_true, return_inverse=True, return_counts=True)
    correct = np.bincount(inverse, weights=(y_true == y_pred).astype(float), minlength=classes.shape[0])
    if y_train is None:
        train_count = np.full(classes.shape[0], np.nan)
    else:
        tc, tn = np.unique(np.asarray(y_train), return_counts=True)
        lookup = dict(zip(tc.tolist(), tn.tolist()))
        train_count = np.array([lookup.get(c, 0) for c in classes.tolist()], dtype=float)
    return pd.DataFrame(
        {"class": classes, "support": support, "train_count": train_count, "accuracy": correct / support}
    )
