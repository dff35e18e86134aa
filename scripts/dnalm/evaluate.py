"""Evaluation protocols on frozen embeddings (DESIGN.md "Evaluation protocols").

Every protocol returns a *tidy* DataFrame, one row per number, with the columns
:data:`COLUMNS` = ``protocol, level, shots, repeat, metric, value``:

- ``protocol``: ``fewshot``, ``closed_world``, ``open_world``, ``clustering``,
  ``consistency`` or ``bias``;
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
(:func:`classification_metrics`), so every table uses one definition.

Learners and metrics are scikit-learn; everything random is seeded.
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

_log = logging.getLogger("dnalm.evaluate")
COLUMNS = ["protocol", "level", "shots", "repeat", "metric", "value"]
FEWSHOT_COLUMNS = COLUMNS + ["per_class"]
FEWSHOT_METRICS = ("accuracy", "macro_f1", "mcc")
CLOSED_WORLD_METRICS = ("accuracy", "macro_f1")
OPEN_WORLD_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


# --------------------------------------------------------------------------- helpers


def limit_threads(n: int) -> None:
    """Cap the OpenMP/BLAS thread pools (scikit-learn, numpy, torch) at ``n`` for this
    process. Rule scripts call it with ``snakemake.threads``: Snakemake sets
    ``OMP_NUM_THREADS`` only for shell commands, and OpenMP threads that outnumber the free
    cores spin and can make a job several times slower (t-SNE: 5x on a loaded 2-core machine).
    """
    from threadpoolctl import threadpool_limits

    global _THREADS
    _THREADS = max(int(n), 1)
    threadpool_limits(limits=_THREADS)
    if "torch" in sys.modules:  # torch's own pool; imported later, torch gets the cap where used
        sys.modules["torch"].set_num_threads(_THREADS)


_THREADS: int | None = None  # set by limit_threads


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
    norms = np.sqrt(np.einsum("ij,ij->i", emb, emb, dtype=np.float64)).astype(np.float32)[:, None]
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


#: ``n_train x n_classes`` above which ``closed_world(probe="auto")`` uses :class:`TorchProbe`:
#: scikit-learn's lbfgs holds several float64 arrays of that size (2e7 cells: ~0.5 GB)
TORCH_PROBE_MIN_CELLS = 2e7
TORCH_PROBE_DEFAULTS = {"epochs": 30, "batch_size": 4096, "lr": 0.01}


class TorchProbe:
    """Softmax (multinomial logistic) regression in torch: :func:`linear_probe` at any size.

    The same model and objective as :func:`linear_probe` (scikit-learn's ``LogisticRegression``
    with ``C``, lbfgs, multinomial, behind a ``StandardScaler``): features standardised with
    the training mean and standard deviation (a constant column is left unscaled), logits
    ``x W + b``, loss ``mean cross-entropy + ||W||^2 / (2 C n)`` (the intercept is not
    penalised), so both minimise one function. Instead of full-batch lbfgs over an
    ``n x classes`` probability matrix (tens of GB at BIOSCAN-5M scale) it takes Adam steps
    (the L2 term as Adam's coupled weight decay on ``W``) on shuffled minibatches of ``batch_size`` rows (memory: the data, ``W`` and one
    ``batch_size x classes`` block; smaller batches when the training set has fewer than
    :attr:`MIN_BATCHES` of them), ``epochs`` passes with the learning rate decayed from
    ``lr`` to 0 along a cosine; weights start at zero. Rows are standardised batch by batch,
    so the data are not copied.

    Deterministic: the batch order comes from a generator seeded with ``seed``, and a rerun
    with the same thread count gives the same weights on CPU. ``device="auto"``: CUDA when
    this process sees a GPU, else CPU (threads capped by :func:`limit_threads`).
    After :meth:`fit`: ``classes_``, ``coef_`` ``(classes, dim)`` and ``intercept_`` in the
    standardised space (as scikit-learn's pipeline holds them), ``loss_curve_`` (each
    epoch's mean minibatch objective) and ``device_``.
    """

    MIN_BATCHES = 20  # optimizer steps per epoch at least (batches shrink for small sets)

    def __init__(self, C: float = 1.0, epochs: int = 30, batch_size: int = 4096, lr: float = 0.01,
                 seed: int = 0, device: str = "auto"):
        if C <= 0 or epochs < 1 or batch_size < 1 or lr <= 0:
            raise ValueError("TorchProbe needs C > 0, epochs >= 1, batch_size >= 1 and lr > 0")
        self.C, self.epochs, self.batch_size, self.lr = float(C), int(epochs), int(batch_size), float(lr)
        self.seed, self.device = int(seed), device

    def _device(self):
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def fit(self, x, y) -> "TorchProbe":
        import torch

        x, y = _check_pair(x, y, "x")
        if _THREADS is not None:
            torch.set_num_threads(_THREADS)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        n, dim = x.shape
        n_classes = self.classes_.shape[0]
        if n_classes < 2:
            raise ValueError("the probe needs at least two classes")
        dev = self.device_ = self._device()
        self._mean, std = _column_stats(x)
        self._scale = np.where(std < 10 * np.finfo(np.float64).eps, 1.0, std)  # as StandardScaler
        data = torch.from_numpy(np.ascontiguousarray(x)).to(dev)  # no copy on CPU
        target = torch.from_numpy(y_idx.astype(np.int64)).to(dev)
        mean = torch.from_numpy(self._mean.astype(np.float32)).to(dev)
        inv_scale = torch.from_numpy((1.0 / self._scale).astype(np.float32)).to(dev)
        weight = torch.zeros((dim, n_classes), device=dev, requires_grad=True)
        bias = torch.zeros(n_classes, device=dev, requires_grad=True)
        l2 = 1.0 / (self.C * n)
        # Adam's (coupled) weight decay adds l2 * W to the gradient: the gradient of the L2 term,
        # so the objective is scikit-learn's (AdamW's decoupled decay would minimise another one)
        optimizer = torch.optim.Adam([{"params": [weight], "weight_decay": l2}, {"params": [bias]}], lr=self.lr)
        batch = min(self.batch_size, -(-n // self.MIN_BATCHES))  # small sets: still MIN_BATCHES steps an epoch
        total = -(-n // batch) * self.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
        generator = torch.Generator().manual_seed(self.seed)
        self.loss_curve_ = []
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=generator).to(dev)
            ce_sum = torch.zeros((), dtype=torch.float64, device=dev)  # on the device: no sync per step
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                logits = torch.addmm(bias, (data[idx] - mean) * inv_scale, weight)
                ce = torch.nn.functional.cross_entropy(logits, target[idx])
                optimizer.zero_grad(set_to_none=True)
                ce.backward()
                optimizer.step()
                scheduler.step()
                ce_sum += ce.detach().double() * idx.shape[0]
            with torch.no_grad():
                self.loss_curve_.append(float(ce_sum) / n + 0.5 * l2 * float(weight.double().square().sum()))
        self.coef_ = weight.detach().T.cpu().numpy().astype(np.float64)
        self.intercept_ = bias.detach().cpu().numpy().astype(np.float64)
        self._weight, self._bias, self._mean_t, self._inv_t = weight.detach(), bias.detach(), mean, inv_scale
        return self

    def _logits(self, x):
        """``(start, logits of rows start..start+batch_size)`` for the rows of ``x``."""
        import torch

        x = _as_2d(x, "x")
        with torch.no_grad():
            for start in range(0, x.shape[0], self.batch_size):
                part = torch.from_numpy(x[start : start + self.batch_size]).to(self.device_)
                yield start, torch.addmm(self._bias, (part - self._mean_t) * self._inv_t, self._weight)

    def decision_function(self, x) -> np.ndarray:
        """Logits ``(n, classes)`` (float32)."""
        out = np.empty((len(x), self.classes_.shape[0]), dtype=np.float32)
        for start, logits in self._logits(x):
            out[start : start + logits.shape[0]] = logits.cpu().numpy()
        return out

    def predict(self, x) -> np.ndarray:
        """Predicted class of each row (memory: one batch of logits at a time)."""
        out = np.empty(len(x), dtype=np.int64)
        for start, logits in self._logits(x):
            out[start : start + logits.shape[0]] = logits.argmax(dim=1).cpu().numpy()
        return self.classes_[out]


def _column_stats(x: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (ddof 0) of each column in float64, in chunks of rows
    (no float64 copy of ``x``)."""
    n = x.shape[0]
    mean = np.zeros(x.shape[1], dtype=np.float64)
    for lo in range(0, n, chunk):
        mean += x[lo : lo + chunk].sum(axis=0, dtype=np.float64)
    mean /= n
    sq = np.zeros(x.shape[1], dtype=np.float64)
    for lo in range(0, n, chunk):
        d = x[lo : lo + chunk].astype(np.float64) - mean
        sq += np.einsum("ij,ij->j", d, d)
    return mean, np.sqrt(sq / n)


def choose_probe(n_train: int, n_classes: int, probe: str = "auto") -> str:
    """``"sklearn"`` or ``"torch"``: ``probe`` itself, or for ``"auto"`` torch when
    ``n_train x n_classes`` exceeds :data:`TORCH_PROBE_MIN_CELLS`."""
    if probe == "auto":
        return "torch" if float(n_train) * n_classes > TORCH_PROBE_MIN_CELLS else "sklearn"
    if probe not in ("sklearn", "torch"):
        raise ValueError(f"unknown probe {probe!r}; expected 'auto', 'sklearn' or 'torch'")
    return probe


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
    x_tr, y_tr = _check_pair(emb_train, y_train, "emb_train")
    x_te, y_te = _check_pair(emb_test, y_test, "emb_test")
    if x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(f"train and test embeddings differ in width: {x_tr.shape[1]} vs {x_te.shape[1]}")
    classes, counts = np.unique(y_tr, return_counts=True)
    if classes.shape[0] < 2:
        raise ValueError("the few-shot train pool needs at least two classes")
    rows, n_conv, n_fits = [], 0, 0
    for k, n in fewshot_plan(shots, shots_scale, int(counts.min())):
        for r in range(int(n_repeats)):
            idx = sample_per_class(y_tr, n, fewshot_rng(seed, n, r))
            pred, nc = _fit_predict(linear_probe(max_iter, seed), x_tr[idx], y_tr[idx], x_te)
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
):
    """Closed-world species classification: linear probe trained on train, scored on test.

    ``probe``: ``"sklearn"`` (:func:`linear_probe`, lbfgs with ``max_iter``), ``"torch"``
    (:class:`TorchProbe`, the same model and objective fitted by minibatch Adam;
    ``torch_settings``: ``epochs``, ``batch_size``, ``lr``, defaults
    :data:`TORCH_PROBE_DEFAULTS`) or ``"auto"`` (torch above :data:`TORCH_PROBE_MIN_CELLS`
    training rows x species, :func:`choose_probe`; BIOSCAN-5M's 289k x ~8k is far above).
    Metrics accuracy and macro_f1; ``protocol="closed_world"``, ``level="species"``. With
    ``return_predictions=True`` returns ``(table, predicted species of the test rows)``
    (for :func:`bias`).
    """
    x_tr, y_tr = _check_pair(emb_train, species_train, "emb_train")
    x_te, y_te = _check_pair(emb_test, species_test, "emb_test")
    n_species = np.unique(y_tr).shape[0]
    chosen = choose_probe(x_tr.shape[0], n_species, probe)
    if chosen == "torch":
        settings = {**TORCH_PROBE_DEFAULTS, **(torch_settings or {})}
        unknown = set(settings) - set(TORCH_PROBE_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown torch probe setting(s) {sorted(unknown)}; known: {sorted(TORCH_PROBE_DEFAULTS)}")
        started = time.perf_counter()
        model = TorchProbe(seed=seed, **settings).fit(x_tr, y_tr)
        pred = model.predict(x_te)
        _log.info("closed world: %d train x %d species, torch probe on %s (%s), %.1f s, final loss %.4f",
                  x_tr.shape[0], n_species, model.device_, settings, time.perf_counter() - started, model.loss_curve_[-1])
    else:
        _log.info("closed world: %d train x %d species, scikit-learn probe", x_tr.shape[0], n_species)
        pred, n_conv = _fit_predict(linear_probe(max_iter, seed), x_tr, y_tr, x_te)
        if n_conv:
            warnings.warn(f"closed-world logistic regression did not converge (max_iter={max_iter})", stacklevel=2)
    table = _tidy(_rows("closed_world", "species", classification_metrics(y_te, pred, CLOSED_WORLD_METRICS)))
    return (table, pred) if return_predictions else table


#: work (queries x references x dims) above which ``nearest_neighbor(method="auto")`` uses int8
INT8_MIN_WORK = 5e10
_SLACK = 1e-5  # absolute slack on cosine similarities (float32 rounding of the split rows)


def _int8_available() -> bool:
    try:
        import torch

        return hasattr(torch, "_int_mm")
    except ImportError:  # pragma: no cover - torch is a pinned dependency
        return False


def nearest_neighbor(
    emb_ref, emb_query, block_size: int = 4096, method: str = "auto", stats: dict | None = None
) -> np.ndarray:
    """Index into ``emb_ref`` of each query's nearest neighbour by cosine similarity.

    Rows are L2-normalised (all-zero rows stay zero and are at similarity 0 to everything)
    and compared block by block over both queries and references, so memory stays at
    ``block_size**2`` similarities whatever the sizes. Ties go to the lowest reference index.
    Returns int64 ``(len(emb_query),)``.

    ``method``:

    - ``"float32"``: float32 matrix products, the argmax taken block by block;
    - ``"int8"``: the same answer ~3x faster on CPUs with int8 dot-product units
      (:func:`_nearest_neighbor_int8`): an int8 matrix product screens the references with
      a per-pair error bound, and every reference that could be the nearest (or tie with
      it) is re-scored exactly in float64, so the result is exact, not approximate;
    - ``"auto"`` (default): ``"int8"`` when ``queries x references x dims`` exceeds
      :data:`INT8_MIN_WORK` (BIOSCAN-5M scale), else ``"float32"``.

    ``stats``, when given a dict, receives ``method`` and, for int8, ``rescored`` (pairs
    re-scored exactly), ``blocks`` (reference blocks), ``workers`` (threads computing int8
    products) and the seconds spent preparing the references (``prepare_s``) and searching
    (``search_s``).
    """
    ref = l2_normalize(_as_2d(emb_ref, "emb_ref"))
    query = l2_normalize(_as_2d(emb_query, "emb_query"))
    if ref.shape[0] == 0:
        raise ValueError("the reference set is empty")
    if ref.shape[1] != query.shape[1]:
        raise ValueError(f"reference and query embeddings differ in width: {ref.shape[1]} vs {query.shape[1]}")
    if block_size < 1:
        raise ValueError("block_size must be >= 1")
    if method == "auto":
        work = float(query.shape[0]) * ref.shape[0] * ref.shape[1]
        method = "int8" if work > INT8_MIN_WORK and _int8_available() else "float32"
    if stats is not None:
        stats["method"] = method
    if method == "int8":
        return _nearest_neighbor_int8(ref, query, block_size, stats)
    if method != "float32":
        raise ValueError(f"unknown nearest-neighbour method {method!r}; expected 'auto', 'float32' or 'int8'")
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


def _quantize_rows(x: np.ndarray, scale) -> tuple[np.ndarray, np.ndarray]:
    """``round(x / scale)`` as int8 (scale: a number or one per row) and the L2 norm of
    each row's quantisation error ``x - scale * q`` (computed in ``x``'s precision; the
    caller's slack covers its rounding)."""
    scale = np.asarray(scale, dtype=x.dtype)
    col = scale[:, None] if scale.ndim else scale
    y = np.rint(x / col)
    np.clip(y, -127, 127, out=y)
    q = y.astype(np.int8)
    y *= col
    np.subtract(x, y, out=y)
    return q, np.sqrt(np.einsum("ij,ij->i", y, y, dtype=np.float64))


def _best_update(best, arg, rows, cols, sims) -> None:
    """Fold candidate ``(row, col, sim)`` triples into the running best (ties: lower col)."""
    order = np.lexsort((cols, -sims, rows))
    rows, cols, sims = rows[order], cols[order], sims[order]
    first = np.ones(rows.shape[0], dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    rows, cols, sims = rows[first], cols[first], sims[first]
    better = (sims > best[rows]) | ((sims == best[rows]) & (cols < arg[rows]))
    best[rows[better]] = sims[better]
    arg[rows[better]] = cols[better]


def _pair_dots(a: np.ndarray, rows: np.ndarray, b: np.ndarray, cols: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """``a[rows[i]] . b[cols[i]]`` in float64 for each pair, in chunks (bounded memory)."""
    out = np.empty(rows.shape[0], dtype=np.float64)
    for lo in range(0, rows.shape[0], chunk):
        x = a[rows[lo : lo + chunk]].astype(np.float64)
        x *= b[cols[lo : lo + chunk]]
        out[lo : lo + chunk] = x.sum(axis=1)
    return out


def _int8_product(q_int, r_int, start: int, end: int) -> np.ndarray:
    """int32 ``Q R[start:end]^T`` (exact) as a numpy array."""
    import torch

    return torch._int_mm(q_int, r_int[start:end].T).numpy()


def _nearest_neighbor_int8(ref: np.ndarray, query: np.ndarray, block_size: int, stats: dict | None = None) -> np.ndarray:
    """Exact cosine 1-NN of unit rows: an int8 screen with a certified error bound, then an
    exact float64 re-score of every reference the screen cannot rule out.

    Mean-pooled embeddings are anisotropic: most of each row lies along the mean direction
    ``u``. Each row is split into that part and the rest, ``r = a_r u + r'``,
    ``q = b_q u + q'``, so ``q.r = a_r b_q + q.r'`` (an identity for any ``u``). The short
    remainders are quantised to int8 (``r' ~ s_r R`` with one scale, ``q' ~ s_q Q`` with one
    scale per query) and ``D = Q R^T`` is an exact int32 product (``torch._int_mm``, VNNI on
    x86). With ``e = |x' - s X|`` computed exactly per row,
    ``|q.r' - s_q s_r D| <= e_q |r'| + (|q'| + e_q) e_r =: m`` (maxima over a block of
    references). References are processed in order of ``a_r`` so that ``a_r b_q`` varies
    little within a block and is bounded by its block extremes. The screen keeps every
    reference whose upper bound ``s_q s_r D + max_block(a_r b_q) + m`` reaches the best exact
    similarity found so far (initially the best of one reference block, found in float32)
    and re-scores those exactly; a reference left out can neither beat nor tie the answer.
    The int8 products of the next blocks run in worker threads (one per allowed thread:
    ``torch._int_mm`` uses one core for a block this size) while this thread screens.
    """
    import torch

    if _THREADS is not None:
        torch.set_num_threads(_THREADS)
    workers = _THREADS if _THREADS is not None else torch.get_num_threads()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return _nn_int8(ref, query, block_size, stats, pool, workers)


def _nn_int8(ref, query, block_size: int, stats: dict | None, pool, workers: int) -> np.ndarray:
    """The body of :func:`_nearest_neighbor_int8`, with its thread pool."""
    import torch

    started = time.perf_counter()
    n_ref = ref.shape[0]
    step = 16384  # rows per chunk: bounded temporaries
    chunks = range(0, n_ref, step)
    # torch._int_mm runs a block of this size on one core: one product per thread, ahead of
    # the screening that this thread does; the chunked numpy passes below use the same
    # threads (numpy and torch release the GIL)
    mu = ref.mean(axis=0, dtype=np.float64)
    norm = float(np.linalg.norm(mu))
    u = (mu / norm if norm > 1e-12 else np.eye(ref.shape[1])[0]).astype(np.float32)
    alpha = np.empty(n_ref, dtype=np.float64)
    row_abs = np.empty(n_ref, dtype=np.float32)

    def pass1(lo):  # input order: a_r, and max |r'_i| of each row
        chunk = ref[lo : lo + step]
        a = np.einsum("ij,j->i", chunk, u, dtype=np.float64)
        alpha[lo : lo + step] = a
        row_abs[lo : lo + step] = np.abs(chunk - a.astype(np.float32)[:, None] * u).max(axis=1)

    list(pool.map(pass1, chunks))
    order = np.argsort(alpha, kind="stable")
    rank = np.empty(n_ref, dtype=np.int64)
    rank[order] = np.arange(n_ref)
    # one scale per chunk of block_size rows in a_r order (every block lies in one chunk)
    chunk_scale = np.maximum.reduceat(row_abs[order], np.arange(0, n_ref, block_size)).astype(np.float64) / 127.0
    chunk_scale = np.maximum(chunk_scale, 1e-30)
    r_scale = chunk_scale[rank // block_size]  # per row, input order
    r_int = np.empty(ref.shape, dtype=np.int8)
    r_err = np.empty(n_ref, dtype=np.float64)
    r_norm = np.empty(n_ref, dtype=np.float64)

    def pass2(lo):  # input order: quantise r' = r - a_r u; exact error and length of each row
        part = ref[lo : lo + step] - alpha[lo : lo + step, None].astype(np.float32) * u
        r_norm[lo : lo + step] = np.sqrt(np.einsum("ij,ij->i", part, part, dtype=np.float64))
        r_int[lo : lo + step], r_err[lo : lo + step] = _quantize_rows(part, r_scale[lo : lo + step])

    list(pool.map(pass2, chunks))
    r_int, r_err, r_norm, alpha = r_int[order], r_err[order], r_norm[order], alpha[order]
    r_int_t = torch.from_numpy(r_int)
    # blocks of at most block_size references, each spanning at most ``width`` of a_r (so
    # that the a_r b_q term is tight); the largest a_r first: for anisotropic embeddings the
    # nearest neighbours lie there, so the best found so far is strong from the start
    width = max(float(r_err.max()), 1e-6)
    cuts = [0]
    for lo in range(0, n_ref, block_size):
        part = alpha[lo : lo + block_size]
        bins = np.floor((part - part[0]) / width)
        cuts += (lo + 1 + np.flatnonzero(np.diff(bins))).tolist() + [min(lo + block_size, n_ref)]
    starts, ends = cuts[-2::-1], cuts[:0:-1]
    err_max = np.array([r_err[s:e].max() for s, e in zip(starts, ends)])
    norm_max = np.array([r_norm[s:e].max() for s, e in zip(starts, ends)])
    a_lo = np.array([alpha[s] for s in starts])
    a_hi = np.array([alpha[e - 1] for e in ends])

    prepared = time.perf_counter()
    out = np.zeros(query.shape[0], dtype=np.int64)  # all-zero queries: every similarity 0 -> index 0
    live = np.flatnonzero(np.linalg.norm(query, axis=1) > 0)
    first_rows = order[max(n_ref - block_size, 0) :]  # the largest a_r: a strong first lower bound
    first = ref[first_rows]
    rescored = 0
    for qs in range(0, live.shape[0], block_size):
        qi = live[qs : qs + block_size]
        q32 = query[qi]
        beta = q32.astype(np.float64) @ u.astype(np.float64)
        q_rest = q32.astype(np.float64) - beta[:, None] * u.astype(np.float64)
        q_scale = np.maximum(np.abs(q_rest).max(axis=1), 1e-30) / 127.0
        q_int, q_err = _quantize_rows(q_rest, q_scale)
        q_int_t = torch.from_numpy(q_int)
        q_norm = np.linalg.norm(q_rest, axis=1)
        j = (q32 @ first.T).argmax(axis=1)
        best = np.einsum("ij,ij->i", q32, first[j], dtype=np.float64)
        arg = first_rows[j]
        pending = deque()
        for b, rs in enumerate(starts):
            while len(pending) < workers and b + len(pending) < len(starts):
                nxt = b + len(pending)
                pending.append(pool.submit(_int8_product, q_int_t, r_int_t, starts[nxt], ends[nxt]))
            d = pending.popleft().result()
            unit = q_scale * chunk_scale[rs // block_size]
            margin = q_err * norm_max[b] + (q_norm + q_err) * err_max[b] + _SLACK
            top = np.maximum(beta * a_lo[b], beta * a_hi[b])
            thr = np.clip(np.ceil((best - top - margin) / unit), -(2**31), 2**31 - 1).astype(np.int32)
            flat = np.flatnonzero(d >= thr[:, None])
            if flat.shape[0]:
                c_rows, c_cols = flat // d.shape[1], order[rs + flat % d.shape[1]]
                rescored += flat.shape[0]
                _best_update(best, arg, c_rows, c_cols, _pair_dots(q32, c_rows, ref, c_cols))
        out[qi] = arg
    if stats is not None:
        stats.update(rescored=rescored, blocks=len(starts), workers=workers, prepare_s=prepared - started,
                     search_s=time.perf_counter() - prepared)
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


def open_world(
    emb_ref, genus_ref, emb_query, genus_query, block_size: int = 4096, return_predictions: bool = False
):
    """Open-world genus classification of unseen species by cosine 1-NN against the reference.

    Metrics accuracy, balanced_accuracy, macro_f1, and ``chance_accuracy``
    (:func:`chance_accuracy`, the level a label-blind embedding reaches);
    ``protocol="open_world"``, ``level="genus"``. With ``return_predictions=True`` returns
    ``(table, predicted genus of the queries)``.
    """
    x_ref, y_ref = _check_pair(emb_ref, genus_ref, "emb_ref")
    x_q, y_q = _check_pair(emb_query, genus_query, "emb_query")
    pred = y_ref[nearest_neighbor(x_ref, x_q, block_size)]
    values = classification_metrics(y_q, pred, OPEN_WORLD_METRICS)
    values["chance_accuracy"] = chance_accuracy(y_ref, y_q)
    table = _tidy(_rows("open_world", "genus", values))
    return (table, pred) if return_predictions else table


# --------------------------------------------------------------------------- clustering / probing


def _missing(labels: np.ndarray) -> np.ndarray:
    return np.asarray(pd.isna(labels) | (labels.astype(str) == ""), dtype=bool)


def clustering(
    emb,
    labels: Mapping[str, Sequence],
    method: str = "agglomerative",
    seed: int = 0,
    silhouette_sample: int = 10000,
    max_points: int | None = None,
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

    ``max_points``: cluster a seeded random subset of at most this many rows (the same
    subset for every label set); Ward clustering needs memory quadratic in the rows.
    """
    from sklearn.cluster import AgglomerativeClustering, KMeans
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, silhouette_score
    from sklearn.preprocessing import StandardScaler

    if method not in ("agglomerative", "kmeans"):
        raise ValueError(f"unknown clustering method {method!r}; expected 'agglomerative' or 'kmeans'")
    x_all = _as_2d(emb, "emb")
    n = x_all.shape[0]
    for name, lab in labels.items():
        if np.shape(lab) != (n,):
            raise ValueError(f"label set {name!r} has shape {np.shape(lab)}, expected ({n},)")
    subset = np.arange(n)
    if max_points is not None and n > max_points:
        subset = np.sort(np.random.default_rng([int(seed), n]).choice(n, size=int(max_points), replace=False))
    feats = StandardScaler().fit_transform(l2_normalize(x_all[subset]))
    rows = []
    for name, lab in labels.items():
        lab = np.asarray(lab, dtype=object)[subset]
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


def groups_from_labels(labels) -> list[np.ndarray]:
    """Row indices of each class of ``labels`` (missing labels, NaN or "", left out)."""
    lab = np.asarray(labels, dtype=object)
    keep = np.flatnonzero(~_missing(lab))
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
    similarities of same-group pairs and of random pairs of distinct rows (each
    enumerated when there are at most ``max_pairs``, else sampled, seeded). Metrics:
    ``cos_same`` and ``cos_random`` (mean cosine similarities) and ``auc``, the probability
    that a same-group pair is more similar than a random pair (ties count one half; the
    ROC AUC of the similarity as a same-group detector, 0.5 when embeddings ignore the
    groups). A label set without same-group pairs is skipped with a warning.
    ``protocol="consistency"``, ``level=<name>``.
    """
    from sklearn.metrics import roc_auc_score

    x = l2_normalize(_as_2d(emb, "emb"))
    n = x.shape[0]
    rows = []
    for name, spec in label_sets.items():
        if isinstance(spec, (list, tuple)) and (len(spec) == 0 or np.ndim(spec[0]) == 1):
            groups = [np.asarray(g, dtype=np.int64) for g in spec]
            if any(g.size and (g.min() < 0 or g.max() >= n) for g in groups):
                raise ValueError(f"consistency: group indices of {name!r} outside 0..{n - 1}")
        else:
            if np.shape(spec) != (n,):
                raise ValueError(f"label set {name!r} has shape {np.shape(spec)}, expected ({n},)")
            groups = groups_from_labels(spec)
        rng = np.random.default_rng([int(seed), n, len(groups)])
        a, b = _same_group_pairs(groups, max_pairs, rng)
        if a.shape[0] == 0 or n < 2:
            warnings.warn(f"consistency: label set {name!r} has no pair of rows sharing a group; skipped", stacklevel=2)
            continue
        ra, rb = _random_pairs(n, max_pairs, rng)
        same = _pair_dots(x, a, x, b)
        rand = _pair_dots(x, ra, x, rb)
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

    x = _as_2d(emb, "emb")
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
