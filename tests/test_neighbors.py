"""Tests of dnalm.neighbors: exact cosine 1-NN (float32 and the int8 screen) against brute
force and scikit-learn, and the calibration that chooses between them."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from dnalm import neighbors as nb
from dnalm.vectors import l2_normalize


def _brute_nn(ref, query):
    """float64 cosine 1-NN of the float32 unit rows; ties to the lowest index."""
    r = l2_normalize(ref).astype(np.float64)
    q = l2_normalize(query).astype(np.float64)
    return (q @ r.T).argmax(axis=1)


# --------------------------------------------------------------------------- float32 path


@pytest.mark.parametrize("block_size", [1, 7, 64, 4096])
def test_nearest_neighbor_vs_brute_force(block_size):
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(257, 8)) + 0.3
    query = rng.normal(size=(103, 8)) + 0.3
    expected = cdist(query, ref, metric="cosine").argmin(axis=1)
    got = nb.nearest_neighbor(ref, query, block_size=block_size)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_nearest_neighbor_scale_invariant_and_ties():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(12, 4))
    ref[10] = ref[3] * 2.5  # same direction as row 3, in another block
    query = np.stack([ref[3] * 0.1, ref[7] * 40.0])
    np.testing.assert_array_equal(nb.nearest_neighbor(ref, query, block_size=4), [3, 7])
    with pytest.raises(ValueError):
        nb.nearest_neighbor(ref, rng.normal(size=(2, 5)))


# --------------------------------------------------------------------------- int8 path


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["isotropic", "anisotropic", "clustered"])
@pytest.mark.parametrize("block_size", [1, 37, 4096])
def test_int8_nearest_neighbor_is_exact(kind, block_size, threads):
    """Exact against a float64 brute force with one worker thread and with two (the int8
    products of the next blocks then run concurrently with the screening)."""
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
    got = nb.nearest_neighbor(ref, query, block_size=block_size, method="int8", stats=stats, threads=threads)
    assert stats["method"] == "int8" and stats["rescored"] >= n_q and stats["workers"] == threads
    np.testing.assert_array_equal(got, _brute_nn(ref, query))
    # the float32 path agrees up to float32 rounding (near-ties may resolve either way)
    f32 = nb.nearest_neighbor(ref, query, block_size=block_size, method="float32")
    sims = l2_normalize(query).astype(np.float64) @ l2_normalize(ref).astype(np.float64).T
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
    got = nb.nearest_neighbor(ref, query, block_size=64, method="int8")
    assert got[0] == 7 and got[1] == 0
    fit = NearestNeighbors(n_neighbors=1, metric="cosine", algorithm="brute").fit(np.delete(ref, 450, axis=0))
    idx = fit.kneighbors(query[2:], return_distance=False)[:, 0]
    idx = idx + (idx >= 450)  # back to indices with the zero row
    np.testing.assert_array_equal(got[2:], idx)


def test_nearest_neighbor_method_choice():
    rng = np.random.default_rng(12)
    ref, query = rng.normal(size=(50, 8)), rng.normal(size=(5, 8))
    stats = {}
    nb.nearest_neighbor(ref, query, stats=stats)
    assert stats == {"method": "float32"}  # small: the plain path
    with pytest.raises(ValueError, match="unknown nearest-neighbour method"):
        nb.nearest_neighbor(ref, query, method="faiss")


def test_nearest_neighbor_auto_switches_to_int8_above_the_threshold(monkeypatch, slow_float32):
    rng = np.random.default_rng(17)
    ref, query = rng.normal(size=(200, 8)), rng.normal(size=(30, 8))
    work = 30 * 200 * 8
    monkeypatch.setattr(nb, "INT8_MIN_WORK", work)  # exactly at the threshold: still float32
    stats = {}
    nb.nearest_neighbor(ref, query, stats=stats)
    assert stats["method"] == "float32"
    assert "calibration" not in stats  # below the threshold nothing is measured
    monkeypatch.setattr(nb, "INT8_MIN_WORK", 0)
    stats = {}
    got = nb.nearest_neighbor(ref, query, block_size=64, stats=stats)
    assert stats["calibration"]["method"] == "int8"  # float32 measured slow: int8 chosen
    assert stats["method"] == "int8" and stats["blocks"] >= 4  # the int8 path ran
    np.testing.assert_array_equal(got, _brute_nn(ref, query))


# --------------------------------------------------------------------------- calibration


@pytest.fixture(autouse=True)
def fresh_calibration(monkeypatch):
    """Each test measures anew (timings faked here never reach another test), and torch's
    thread count, which the int8 search sets, is put back."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(nb, "_CALIBRATION", {})
    yield
    torch.set_num_threads(before)


def _slowed(monkeypatch, name, seconds, calls=None):
    """Make the kernel ``nb.<name>`` take ``seconds`` longer per call (counted in ``calls``)."""
    import time

    real = getattr(nb, name)

    def slow(*args, **kwargs):
        if calls is not None:
            calls.append(name)
        time.sleep(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(nb, name, slow)


@pytest.fixture()
def slow_float32(monkeypatch):
    _slowed(monkeypatch, "_float32_block", 0.2)


def _anisotropic(seed, n_ref=3000, n_q=400, dim=64):
    rng = np.random.default_rng(seed)
    common = rng.normal(size=dim) * 4
    return common + rng.normal(size=(n_ref, dim)), common + rng.normal(size=(n_q, dim))


def test_calibration_picks_float32_when_int8_is_slow(monkeypatch):
    """A CPU without int8 dot-product units (torch._int_mm ~50x slower than float32): the
    measured int8 kernel is slow, so "auto" searches in float32, with the same answers."""
    calls = []
    _slowed(monkeypatch, "_int8_product", 0.5, calls)
    ref, query = _anisotropic(21)
    monkeypatch.setattr(nb, "INT8_MIN_WORK", 0)
    stats = {}
    got = nb.nearest_neighbor(ref, query, block_size=256, stats=stats, threads=2)
    cal = stats["calibration"]
    assert stats["method"] == "float32" and cal["method"] == "float32"
    assert cal["speedup"] < 1 and cal["int8_s"] > cal["float32_s"]
    assert calls.count("_int8_product") == 2  # one round of two workers: clearly slow, not timed again
    np.testing.assert_array_equal(got, _brute_nn(ref, query))
    # the int8 path, run explicitly (at its real speed), gives the identical neighbours
    monkeypatch.undo()
    np.testing.assert_array_equal(nb.nearest_neighbor(ref, query, block_size=256, method="int8", threads=2), got)


def test_calibration_picks_int8_when_it_is_fast(monkeypatch, slow_float32):
    ref, query = _anisotropic(22)
    monkeypatch.setattr(nb, "INT8_MIN_WORK", 0)
    stats = {}
    got = nb.nearest_neighbor(ref, query, block_size=256, stats=stats, threads=1)
    cal = stats["calibration"]
    assert stats["method"] == "int8" and cal["method"] == "int8"
    assert cal["speedup"] >= nb.INT8_MIN_SPEEDUP
    assert cal["speedup"] == pytest.approx(cal["float32_s"] / cal["int8_s"])
    assert cal["int8_s"] == pytest.approx(cal["product_s"] + cal["screen_s"])
    np.testing.assert_array_equal(got, _brute_nn(ref, query))
    monkeypatch.undo()  # the float32 path at its real speed: the identical neighbours
    np.testing.assert_array_equal(nb.nearest_neighbor(ref, query, block_size=256, method="float32"), got)


def test_calibration_speedup_threshold_and_cache(monkeypatch):
    """The decision follows INT8_MIN_SPEEDUP on the measured ratio, and one process measures
    once per (dim, threads, block)."""
    calls = []
    _slowed(monkeypatch, "_float32_block", 0.0, calls)  # counts the calls only
    first = nb.calibrate(32, 1, block=128)
    n_calls = len(calls)
    assert n_calls == 6  # one warm-up + best of 5
    assert nb.calibrate(32, 1, block=128) is first and len(calls) == n_calls  # cached
    assert nb.calibrate(32, 2, block=128) is not first  # another thread count: measured anew
    assert first["method"] == ("int8" if first["speedup"] >= nb.INT8_MIN_SPEEDUP else "float32")
    monkeypatch.setattr(nb, "_CALIBRATION", {})
    monkeypatch.setattr(nb, "INT8_MIN_SPEEDUP", np.inf)  # int8 never worth it
    assert nb.calibrate(32, 1, block=128)["method"] == "float32"


def test_calibration_falls_back_to_float32_when_int8_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no int8 kernel for this CPU")

    monkeypatch.setattr(nb, "_int8_product", broken)
    cal = nb.calibrate(16, 1, block=64)
    assert cal["method"] == "float32" and cal["int8_s"] is None and cal["float32_s"] > 0
    rng = np.random.default_rng(23)
    ref, query = rng.normal(size=(300, 16)), rng.normal(size=(40, 16))
    monkeypatch.setattr(nb, "INT8_MIN_WORK", 0)
    monkeypatch.setattr(nb, "CALIBRATION_BLOCK", 64)
    stats = {}
    got = nb.nearest_neighbor(ref, query, stats=stats, threads=1)
    assert stats["method"] == "float32"
    np.testing.assert_array_equal(got, _brute_nn(ref, query))
