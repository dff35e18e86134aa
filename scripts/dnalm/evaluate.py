"""Evaluation protocols on frozen embeddings: few-shot probes, closed-world species and
open-world genus classification with their class-imbalance bias, the whole taxonomy table of
a barcode embedding, and the one tidy table format they all return (docs/design.md).

Every protocol returns a *tidy* DataFrame, one row per number, with the columns
:data:`COLUMNS` = ``protocol, level, shots, repeat, metric, value``:

- ``protocol``: ``fewshot``, ``closed_world``, ``open_world``, ``clustering``,
  ``zero_shot_umap``, ``consistency`` or ``bias``;
- ``level``: the label set the number is about (a taxonomic rank, ``label`` for a task's
  classes, ``motif`` for planted-motif sharing), or, for few-shot rows, the learner
  (``probe``: logistic regression on frozen embeddings; ``finetune``: fine-tuned encoder);
- ``shots``: K, the nominal examples per class, for few-shot rows, NaN elsewhere (few-shot
  tables add ``per_class``, the examples actually drawn per class: K times the task's
  ``shots_scale``, see :func:`fewshot`);
- ``repeat``: the repeat index for few-shot rows, 0 elsewhere;
- ``metric`` / ``value``: metric name and its value.

The caller adds ``model`` and ``dataset`` columns and concatenates; :func:`summarize`
turns repeats into mean, std and n. All metrics are computed here and only here
(:func:`classification_metrics`), so every table uses one definition. A missing label (NaN,
or an empty string as the barcode table reads it) is never a class: the row is left out of
that label's metrics, and the log counts it (:func:`labelled`).

The learners live in :mod:`dnalm.probes`, the exact 1-NN search in :mod:`dnalm.neighbors`,
the clustering and consistency probes in :mod:`dnalm.structure`. Learners and metrics are
scikit-learn; everything random is seeded.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .io import InputError
from .neighbors import nearest_neighbor
from .probes import TORCH_PROBE_DEFAULTS, TorchProbe, choose_probe, fit_predict, linear_probe
from .vectors import check_pair

_log = logging.getLogger("dnalm.evaluate")
COLUMNS = ["protocol", "level", "shots", "repeat", "metric", "value"]
FEWSHOT_COLUMNS = COLUMNS + ["per_class"]
FEWSHOT_METRICS = ("accuracy", "macro_f1", "mcc")
CLOSED_WORLD_METRICS = ("accuracy", "macro_f1")
OPEN_WORLD_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


# --------------------------------------------------------------------------- helpers


def limit_threads(n: int) -> int:
    """Cap the OpenMP/BLAS thread pools (scikit-learn, numpy) and torch's pool at ``n`` for
    this process and return ``n``; functions that start threads of their own take the count
    as a ``threads`` argument. Rule scripts call it with ``snakemake.threads``: Snakemake
    sets ``OMP_NUM_THREADS`` only for shell commands, and OpenMP threads that outnumber the
    free cores spin and can make a job several times slower (t-SNE: 5x on a loaded 2-core
    machine).
    """
    import torch
    from threadpoolctl import threadpool_limits

    n = max(int(n), 1)
    threadpool_limits(limits=n)
    torch.set_num_threads(n)
    return n


def _tidy(rows: list[dict], columns: list[str] = COLUMNS) -> pd.DataFrame:
    """DataFrame with exactly ``columns`` (:data:`COLUMNS`, or :data:`FEWSHOT_COLUMNS`) and
    stable dtypes (also when empty)."""
    df = pd.DataFrame(rows, columns=columns)
    dtypes = {"protocol": str, "level": str, "shots": float, "repeat": int, "metric": str, "value": float}
    if "per_class" in columns:
        dtypes["per_class"] = int
    return df.astype(dtypes)


def _rows(protocol: str, level: str, metrics: Mapping[str, float], shots=np.nan, repeat: int = 0, **extra) -> list[dict]:
    return [
        {"protocol": protocol, "level": level, "shots": shots, "repeat": repeat, "metric": m, "value": float(v), **extra}
        for m, v in metrics.items()
    ]


def missing(labels) -> np.ndarray:
    """Boolean mask of the missing labels: NaN/None, or a string that is empty or blank."""
    s = pd.Series(np.asarray(labels, dtype=object))
    return (s.isna() | (s.astype(str).str.strip() == "")).to_numpy(dtype=bool)


def labelled(labels, what: str) -> np.ndarray:
    """Indices of the rows of ``labels`` that have a label; logs how many do not (``what``
    names the rows and the rank, e.g. "closed world: test barcodes without a species")."""
    gone = missing(labels)
    if gone.any():
        _log.info("%s: %d of %d left out", what, int(gone.sum()), gone.shape[0])
    return np.flatnonzero(~gone)


def check_classes(labels, task: str, path) -> None:
    """InputError naming ``path`` and ``task`` when ``labels`` hold fewer than two classes
    (few-shot learning and probing compare classes; one class gives no result)."""
    classes = pd.unique(pd.Series(np.asarray(labels, dtype=object))[~missing(labels)])
    if classes.shape[0] < 2:
        found = f"a single class ({classes[0]!r})" if classes.shape[0] else "no labelled row"
        raise InputError(path, f"task {task!r} has {found}; few-shot learning and probing need at least two classes")


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


def fewshot_plan(shots: Sequence[int], shots_scale: int, smallest: int) -> list[tuple[int, int]]:
    """``(K, examples drawn per class)`` of each K in ``shots`` that the pool allows.

    Draws ``K * shots_scale`` per class (``shots_scale`` 1: K; GeneMask's Splice-40 files
    hold 10 K per class for their "K", so the full config sets 10 there). A K whose draw
    exceeds ``smallest`` (the smallest class of the train pool) is skipped with a warning.
    """
    scale = int(shots_scale)
    if scale < 1:
        raise ValueError(f"shots_scale must be >= 1, got {shots_scale}")
    plan = []
    for k in shots:
        k = int(k)
        if k < 1:
            raise ValueError(f"shots must be >= 1, got {k}")
        n = k * scale
        if n > smallest:
            drawn = f" ({n} per class with shots_scale {scale})" if scale != 1 else ""
            warnings.warn(
                f"few-shot K={k}{drawn} skipped: the smallest class of the train pool has only {smallest} examples",
                stacklevel=3,
            )
            continue
        plan.append((k, n))
    return plan


def fewshot(
    emb_train,
    y_train,
    emb_test,
    y_test,
    shots: Sequence[int],
    n_repeats: int,
    seed: int,
    max_iter: int = 1000,
    shots_scale: int = 1,
) -> pd.DataFrame:
    """GeneMask few-shot protocol with a linear probe on frozen embeddings.

    For each K in ``shots`` and each repeat r < ``n_repeats``: draw ``n = K * shots_scale``
    examples per class from the train pool (generator :func:`fewshot_rng` ``(seed, n, r)``),
    fit :func:`linear_probe`, and score the whole fixed test set. A K whose draw is larger
    than the smallest class of the pool is skipped with a warning (:func:`fewshot_plan`).
    Metrics: accuracy, macro_f1, mcc; ``protocol="fewshot"``, ``level="probe"`` (the learner;
    fine-tuning, :func:`dnalm.finetune.fewshot_finetune`, writes ``level="finetune"`` with
    the same draws). Columns :data:`FEWSHOT_COLUMNS`: ``shots`` is the nominal K and
    ``per_class`` the examples drawn per class (they differ only where ``shots_scale`` > 1).
    """
    x_tr, y_tr = check_pair(emb_train, y_train, "emb_train")
    x_te, y_te = check_pair(emb_test, y_test, "emb_test")
    if x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(f"train and test embeddings differ in width: {x_tr.shape[1]} vs {x_te.shape[1]}")
    classes, counts = np.unique(y_tr, return_counts=True)
    if classes.shape[0] < 2:
        raise ValueError("the few-shot train pool needs at least two classes")
    rows, n_conv, n_fits = [], 0, 0
    for k, n in fewshot_plan(shots, shots_scale, int(counts.min())):
        for r in range(int(n_repeats)):
            idx = sample_per_class(y_tr, n, fewshot_rng(seed, n, r))
            pred, nc = fit_predict(linear_probe(max_iter, seed), x_tr[idx], y_tr[idx], x_te)
            n_conv += nc
            n_fits += 1
            metrics = classification_metrics(y_te, pred, FEWSHOT_METRICS)
            rows += _rows("fewshot", "probe", metrics, shots=float(k), repeat=r, per_class=n)
    if n_conv:
        warnings.warn(
            f"logistic regression did not converge in {n_conv} of {n_fits} few-shot fits (max_iter={max_iter})",
            stacklevel=2,
        )
    return _tidy(rows, FEWSHOT_COLUMNS)


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


def closed_world(
    emb_train,
    species_train,
    emb_test,
    species_test,
    max_iter: int = 1000,
    seed: int = 0,
    return_predictions: bool = False,
    probe: str = "auto",
    torch_settings: Mapping | None = None,
    threads: int | None = None,
):
    """Closed-world species classification: linear probe trained on train, scored on test.

    ``probe``: ``"sklearn"`` (:func:`dnalm.probes.linear_probe`, lbfgs with ``max_iter``),
    ``"torch"`` (:class:`dnalm.probes.TorchProbe`, the same model and objective fitted by
    minibatch Adam on ``threads`` CPU threads; ``torch_settings``: ``epochs``,
    ``batch_size``, ``lr``, defaults :data:`dnalm.probes.TORCH_PROBE_DEFAULTS`) or
    ``"auto"`` (torch above :data:`dnalm.probes.TORCH_PROBE_MIN_CELLS` training rows x
    species, :func:`dnalm.probes.choose_probe`; BIOSCAN-5M's 289k x ~8k is far above).
    Rows without a species (:func:`missing`) are neither trained on nor scored (counted in
    the log). Metrics accuracy and macro_f1; ``protocol="closed_world"``,
    ``level="species"``. With ``return_predictions=True`` returns ``(table, predicted
    species of every test row)`` (for :func:`bias`, which leaves out the same rows).
    """
    x_tr, y_tr = check_pair(emb_train, species_train, "emb_train")
    x_te, y_te = check_pair(emb_test, species_test, "emb_test")
    train = labelled(y_tr, "closed world: training rows without a species")
    test = labelled(y_te, "closed world: test rows without a species")
    if train.shape[0] < x_tr.shape[0]:
        x_tr, y_tr = x_tr[train], y_tr[train]
    n_species = np.unique(y_tr).shape[0]
    if n_species < 2 or test.shape[0] == 0:
        raise ValueError(f"closed world: {n_species} species among the training rows and {test.shape[0]} labelled "
                         "test rows; the probe needs at least two species and one labelled test row")
    chosen = choose_probe(x_tr.shape[0], n_species, probe)
    if chosen == "torch":
        settings = {**TORCH_PROBE_DEFAULTS, **(torch_settings or {})}
        unknown = set(settings) - set(TORCH_PROBE_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown torch probe setting(s) {sorted(unknown)}; known: {sorted(TORCH_PROBE_DEFAULTS)}")
        started = time.perf_counter()
        model = TorchProbe(seed=seed, threads=threads, **settings).fit(x_tr, y_tr)
        pred = model.predict(x_te)
        _log.info("closed world: %d train x %d species, torch probe on %s (%s), %.1f s, final loss %.4f",
                  x_tr.shape[0], n_species, model.device_, settings, time.perf_counter() - started, model.loss_curve_[-1])
    else:
        _log.info("closed world: %d train x %d species, scikit-learn probe", x_tr.shape[0], n_species)
        pred, n_conv = fit_predict(linear_probe(max_iter, seed), x_tr, y_tr, x_te)
        if n_conv:
            warnings.warn(f"closed-world logistic regression did not converge (max_iter={max_iter})", stacklevel=2)
    values = classification_metrics(y_te[test], pred[test], CLOSED_WORLD_METRICS)
    table = _tidy(_rows("closed_world", "species", values))
    return (table, pred) if return_predictions else table


def chance_accuracy(y_ref, y_query) -> float:
    """Expected accuracy of predicting the label of a uniformly random reference item.

    ``sum_g q(g) r(g)`` with q, r the label frequencies of the query and reference sets:
    what 1-NN scores when embeddings carry no information about the labels.
    """
    ref_cls, ref_n = np.unique(np.asarray(y_ref), return_counts=True)
    q_cls, q_n = np.unique(np.asarray(y_query), return_counts=True)
    r = dict(zip(ref_cls.tolist(), (ref_n / ref_n.sum()).tolist()))
    return float(sum(qn / q_n.sum() * r.get(c, 0.0) for c, qn in zip(q_cls.tolist(), q_n)))


def open_world(
    emb_ref,
    genus_ref,
    emb_query,
    genus_query,
    block_size: int = 4096,
    return_predictions: bool = False,
    threads: int | None = None,
):
    """Open-world genus classification of unseen species by cosine 1-NN against the reference
    (:func:`dnalm.neighbors.nearest_neighbor`, exact, on ``threads`` CPU threads).

    References without a genus (:func:`missing`) are left out of the search, queries without
    one are not scored (both counted in the log). Metrics accuracy, balanced_accuracy,
    macro_f1, and ``chance_accuracy`` (:func:`chance_accuracy`, the level a label-blind
    embedding reaches); ``protocol="open_world"``, ``level="genus"``. With
    ``return_predictions=True`` returns ``(table, predicted genus of every query)``.
    """
    x_ref, y_ref = check_pair(emb_ref, genus_ref, "emb_ref")
    x_q, y_q = check_pair(emb_query, genus_query, "emb_query")
    ref = labelled(y_ref, "open world: reference rows without a genus")
    query = labelled(y_q, "open world: query rows without a genus")
    if ref.shape[0] < x_ref.shape[0]:
        x_ref, y_ref = x_ref[ref], y_ref[ref]
    if ref.shape[0] == 0 or query.shape[0] == 0:
        raise ValueError(f"open world: {ref.shape[0]} reference and {query.shape[0]} query rows have a genus; "
                         "1-NN needs at least one of each")
    pred = y_ref[nearest_neighbor(x_ref, x_q, block_size, threads=threads)]
    values = classification_metrics(y_q[query], pred[query], OPEN_WORLD_METRICS)
    values["chance_accuracy"] = chance_accuracy(y_ref, y_q[query])
    table = _tidy(_rows("open_world", "genus", values))
    return (table, pred) if return_predictions else table


def per_class_accuracy(y_true, y_pred, y_train=None) -> pd.DataFrame:
    """Accuracy (recall) per true class, for the class-imbalance bias analysis.

    Columns ``class``, ``support`` (test examples), ``train_count`` (examples in ``y_train``;
    0 if absent, NaN when ``y_train`` is not given) and ``accuracy``; one row per class of
    ``y_true``, sorted by class. Rows of ``y_true`` and entries of ``y_train`` without a
    label (:func:`missing`) are left out: a missing label is no class.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError("y_true and y_pred differ in shape")
    keep = ~missing(y_true)
    if not keep.all():
        y_true, y_pred = y_true[keep], y_pred[keep]
    classes, inverse, support = np.unique(y_true, return_inverse=True, return_counts=True)
    correct = np.bincount(inverse, weights=(y_true == y_pred).astype(float), minlength=classes.shape[0])
    if y_train is None:
        train_count = np.full(classes.shape[0], np.nan)
    else:
        y_train = np.asarray(y_train)
        tc, tn = np.unique(y_train[~missing(y_train)], return_counts=True)
        lookup = dict(zip(tc.tolist(), tn.tolist()))
        train_count = np.array([lookup.get(c, 0) for c in classes.tolist()], dtype=float)
    return pd.DataFrame(
        {"class": classes, "support": support, "train_count": train_count, "accuracy": correct / support}
    )


def bias(y_true, y_pred, y_train, level: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Class-imbalance bias: does a class's accuracy follow its frequency in training?

    Per class of ``y_true``: accuracy (recall) and its count in ``y_train`` (the probe's
    training set, or the 1-NN reference set), :func:`per_class_accuracy`. Returns
    ``(table, per_class)``: ``table`` holds ``spearman_rho`` (rank correlation of per-class
    accuracy with the training count; ties get average ranks) and ``spearman_p`` (two-sided
    p-value), ``protocol="bias"``, ``level=level``. When either quantity is constant over
    the classes (e.g. every class perfectly classified) the correlation is undefined: the
    table is empty and a warning says why.
    """
    from scipy.stats import spearmanr

    per_class = per_class_accuracy(y_true, y_pred, y_train)
    acc, count = per_class["accuracy"].to_numpy(), per_class["train_count"].to_numpy()
    if per_class.shape[0] < 3 or np.ptp(acc) == 0 or np.ptp(count) == 0:
        warnings.warn(
            f"bias ({level}): rank correlation undefined over {per_class.shape[0]} classes "
            f"(accuracy {'constant' if np.ptp(acc) == 0 else 'varies'}, training counts "
            f"{'constant' if np.ptp(count) == 0 else 'vary'})",
            stacklevel=2,
        )
        return _tidy([]), per_class
    res = spearmanr(count, acc)
    return _tidy(_rows("bias", level, {"spearman_rho": res.statistic, "spearman_p": res.pvalue})), per_class




def taxonomy(
    table: pd.DataFrame,
    ids,
    vectors,
    closed_train: str = "train",
    closed_test: str = "test",
    open_reference: str = "train",
    open_query: str = "test_unseen",
    max_iter: int = 1000,
    seed: int = 0,
    probe: str = "auto",
    torch_settings: Mapping | None = None,
    threads: int | None = None,
    table_path="barcodes",
    embeddings_path="embeddings",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The BIOSCAN-5M taxonomy protocols of one barcode embedding, as the taxonomy rule writes them.

    ``table``: the barcode table (``processid``, ``genus``, ``species``, ``split``); ``ids``
    and ``vectors``: the embedding of each processid. Closed world (:func:`closed_world`):
    species probe trained on split ``closed_train``, scored on ``closed_test``; open world
    (:func:`open_world`): genus of the ``open_query`` barcodes by 1-NN among
    ``open_reference``; and the bias of each (:func:`bias`). A barcode without a species
    (genus) is left out of the species (genus) metrics only. Returns ``(metrics,
    per_class)``: the tidy metrics table, and the per-class accuracies with ``protocol`` and
    ``level`` columns. An empty split raises :class:`~dnalm.io.InputError` naming
    ``table_path``.
    """
    from .datasets import align

    def split(name):
        rows = table[table["split"] == name]
        if rows.empty:
            raise InputError(table_path, f"split {name!r} has no barcodes")
        return align(rows["processid"], ids, vectors, embeddings_path), rows

    x_tr, tr = split(closed_train)
    x_te, te = split(closed_test)
    closed, species_pred = closed_world(  # logs which probe, where, how long
        x_tr, tr["species"].to_numpy(), x_te, te["species"].to_numpy(), max_iter=max_iter, seed=seed,
        return_predictions=True, probe=probe, torch_settings=torch_settings, threads=threads,
    )
    del x_tr, x_te  # BIOSCAN-5M: GBs of embeddings
    closed_bias, closed_classes = bias(te["species"].to_numpy(), species_pred, tr["species"].to_numpy(), "species")
    x_ref, ref = split(open_reference)
    x_q, q = split(open_query)
    opened, genus_pred = open_world(
        x_ref, ref["genus"].to_numpy(), x_q, q["genus"].to_numpy(), return_predictions=True, threads=threads
    )
    open_bias, open_classes = bias(q["genus"].to_numpy(), genus_pred, ref["genus"].to_numpy(), "genus")
    metrics = pd.concat([closed, opened, closed_bias, open_bias], ignore_index=True)
    per_class = pd.concat(
        [closed_classes.assign(protocol="closed_world", level="species"),
         open_classes.assign(protocol="open_world", level="genus")],
        ignore_index=True,
    )
    return metrics, per_class
