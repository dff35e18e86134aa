"""Linear probes on frozen embeddings: scikit-learn's logistic regression (the default
learner) and :class:`TorchProbe`, the same model fitted by minibatch Adam at any size, and the
choice between them."""

from __future__ import annotations

import math
import warnings

import numpy as np

from .vectors import as_2d, check_pair


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
    this process sees a GPU, else CPU. ``threads``: torch's CPU threads for the fit (the
    rule's thread count; None leaves torch's setting alone).
    After :meth:`fit`: ``classes_``, ``coef_`` ``(classes, dim)`` and ``intercept_`` in the
    standardised space (as scikit-learn's pipeline holds them), ``loss_curve_`` (each
    epoch's mean minibatch objective) and ``device_``.
    """

    MIN_BATCHES = 20  # optimizer steps per epoch at least (batches shrink for small sets)

    def __init__(self, C: float = 1.0, epochs: int = 30, batch_size: int = 4096, lr: float = 0.01,
                 seed: int = 0, device: str = "auto", threads: int | None = None):
        if C <= 0 or epochs < 1 or batch_size < 1 or lr <= 0:
            raise ValueError("TorchProbe needs C > 0, epochs >= 1, batch_size >= 1 and lr > 0")
        if threads is not None and int(threads) < 1:
            raise ValueError(f"TorchProbe needs threads >= 1, got {threads}")
        self.C, self.epochs, self.batch_size, self.lr = float(C), int(epochs), int(batch_size), float(lr)
        self.seed, self.device = int(seed), device
        self.threads = None if threads is None else int(threads)

    def _device(self):
        from .device import resolve_device

        return resolve_device(self.device)

    def fit(self, x, y) -> TorchProbe:
        import torch

        x, y = check_pair(x, y, "x")
        if self.threads is not None:
            torch.set_num_threads(self.threads)
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

        x = as_2d(x, "x")
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


def fit_predict(model, x_train, y_train, x_test) -> tuple[np.ndarray, int]:
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
