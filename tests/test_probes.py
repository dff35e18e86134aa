"""Tests of dnalm.probes: the torch species probe (TorchProbe) against scikit-learn's
LogisticRegression, the probe it stands in for at BIOSCAN-5M scale, and the choice of probe."""

import numpy as np
import pytest
import torch

from dnalm import evaluate as ev
from dnalm import probes as pr

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _species(rng, n, n_classes=5, dim=12, spread=2.6):
    """Overlapping Gaussian classes with a large common offset (as mean-pooled embeddings)
    and unequal frequencies: a probe reaches ~0.8, so predictions can disagree."""
    centers = rng.normal(size=(n_classes, dim)) * 1.5 + 6.0
    y = rng.choice(n_classes, size=n, p=np.arange(1, n_classes + 1) / np.arange(1, n_classes + 1).sum())
    x = centers[y] + rng.normal(size=(n, dim)) * spread * rng.uniform(0.5, 2.0, size=dim)
    return x.astype(np.float32), np.array([f"sp{i}" for i in range(n_classes)])[y]


def _objective(coef, intercept, x_std, y_idx, C):
    """scikit-learn's LogisticRegression objective, per row: mean log-loss + ||W||^2 / (2 C n)."""
    z = x_std @ coef.T + intercept
    z -= z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(y_idx)), y_idx].mean() + (coef**2).sum() / (2 * C * len(y_idx))


@pytest.mark.parametrize("C", [1.0, 0.01])
def test_torch_probe_fits_the_sklearn_probe(C):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x, y = _species(rng, 1000)
    x_te, y_te = _species(np.random.default_rng(0), 600)  # same classes (same centres), new rows
    sk = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000, tol=1e-8)).fit(x, y)
    tp = pr.TorchProbe(C=C, epochs=30, batch_size=50, lr=0.1, seed=0).fit(x, y)
    assert tp.classes_.tolist() == sk.classes_.tolist()
    # the same function is minimised: each solution scores the same under sklearn's objective
    scaler = sk[0]
    x_std = scaler.transform(x)
    y_idx = np.searchsorted(sk.classes_, y)
    f_sk = _objective(sk[1].coef_, sk[1].intercept_, x_std, y_idx, C)
    f_torch = _objective(tp.coef_, tp.intercept_, x_std, y_idx, C)
    assert f_sk <= f_torch <= f_sk * (1 + 1e-3)
    np.testing.assert_allclose(tp._mean, scaler.mean_, rtol=1e-6)
    np.testing.assert_allclose(tp._scale, scaler.scale_, rtol=1e-5)
    if C == 0.01:  # strongly regularised: one well-defined optimum, the weights agree too
        np.testing.assert_allclose(tp.coef_, sk[1].coef_, atol=0.02)
    # the two probes predict alike
    p_sk, p_torch = sk.predict(x_te), tp.predict(x_te)
    acc_sk, acc_torch = np.mean(p_sk == y_te), np.mean(p_torch == y_te)
    assert 0.6 < acc_sk < 0.9  # not trivial: there is room to disagree
    assert np.mean(p_sk == p_torch) >= 0.98 and abs(acc_sk - acc_torch) <= 0.01
    logits = tp.decision_function(x_te)
    assert logits.shape == (600, 5) and (tp.classes_[logits.argmax(1)] == p_torch).all()


def test_torch_probe_is_deterministic_and_seeded():
    rng = np.random.default_rng(1)
    x, y = _species(rng, 800)
    fit = lambda seed: pr.TorchProbe(epochs=5, batch_size=50, seed=seed).fit(x, y)  # noqa: E731
    a, b, c = fit(3), fit(3), fit(4)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    assert a.loss_curve_ == b.loss_curve_ and len(a.loss_curve_) == 5
    assert not np.array_equal(a.coef_, c.coef_)  # the seed sets the batch order
    assert a.loss_curve_[-1] < a.loss_curve_[0]
    assert a.device_.type == "cpu"


def test_torch_probe_threads_are_a_parameter():
    """The fit uses the thread count it is given (the rule's), and leaves torch alone without."""
    rng = np.random.default_rng(5)
    x, y = _species(rng, 200)
    torch.set_num_threads(2)
    pr.TorchProbe(epochs=1).fit(x, y)
    assert torch.get_num_threads() == 2
    one = pr.TorchProbe(epochs=2, batch_size=50, threads=1).fit(x, y)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    again = pr.TorchProbe(epochs=2, batch_size=50, threads=1).fit(x, y)
    np.testing.assert_array_equal(one.coef_, again.coef_)  # same thread count: the same weights
    with pytest.raises(ValueError, match="threads >= 1"):
        pr.TorchProbe(threads=0)


def test_small_training_sets_still_take_min_batches_steps_per_epoch(monkeypatch):
    rng = np.random.default_rng(2)
    x, y = _species(rng, 200)
    steps = []
    original = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        steps.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    pr.TorchProbe(epochs=3, batch_size=4096).fit(x, y)  # one batch of 4096 would be 3 steps
    assert len(steps) == 3 * pr.TorchProbe.MIN_BATCHES


def test_choose_probe_and_closed_world_dispatch(monkeypatch):
    assert pr.choose_probe(1000, 100) == "sklearn"
    assert pr.choose_probe(289_203, 8000) == "torch"  # BIOSCAN-5M
    assert pr.choose_probe(289_203, 8000, "sklearn") == "sklearn"
    assert pr.choose_probe(10, 2, "torch") == "torch"
    with pytest.raises(ValueError, match="unknown probe"):
        pr.choose_probe(10, 2, "svm")
    rng = np.random.default_rng(3)
    x, y = _species(rng, 600)
    x_te, y_te = _species(np.random.default_rng(3), 200)
    fitted = []
    original = pr.TorchProbe.fit
    monkeypatch.setattr(pr.TorchProbe, "fit", lambda self, *a: fitted.append(self) or original(self, *a))
    sk = ev.closed_world(x, y, x_te, y_te)  # small: scikit-learn
    assert fitted == []
    monkeypatch.setattr(pr, "TORCH_PROBE_MIN_CELLS", 600 * 5 - 1)  # now just above the threshold
    auto, pred = ev.closed_world(x, y, x_te, y_te, seed=7, return_predictions=True,
                                 torch_settings={"epochs": 30, "batch_size": 30, "lr": 0.1})
    assert len(fitted) == 1 and (fitted[0].epochs, fitted[0].batch_size, fitted[0].lr, fitted[0].seed) == (30, 30, 0.1, 7)
    assert pred.shape == (200,) and set(pred) <= set(y)
    assert _value(auto, "accuracy") == pytest.approx(np.mean(pred == y_te))
    assert abs(_value(auto, "accuracy") - _value(sk, "accuracy")) <= 0.02
    with pytest.raises(ValueError, match="unknown torch probe setting"):
        ev.closed_world(x, y, x_te, y_te, probe="torch", torch_settings={"epoch": 3})
    with pytest.raises(ValueError, match="at least two classes"):
        pr.TorchProbe().fit(x[:5], np.array(["a"] * 5))


def _value(df, metric):
    rows = df[df["metric"] == metric]
    assert len(rows) == 1
    return float(rows["value"].iloc[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_probe_on_cuda_matches_cpu():
    rng = np.random.default_rng(4)
    x, y = _species(rng, 1000)
    cpu = pr.TorchProbe(epochs=10, batch_size=64, device="cpu").fit(x, y)
    gpu = pr.TorchProbe(epochs=10, batch_size=64, device="cuda").fit(x, y)
    assert gpu.device_.type == "cuda"
    np.testing.assert_allclose(cpu.coef_, gpu.coef_, atol=5e-3)  # reduction order differs: close, not equal
    assert np.mean(cpu.predict(x) == gpu.predict(x)) >= 0.99
