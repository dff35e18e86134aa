"""The genome background model and the motif-detectability estimate under it.

A strand-symmetric first-order (dinucleotide) Markov chain with a target GC fraction and
CpG / TpA observed/expected ratios, a sampler of many such chains in parallel, and the
planning estimate of how many planted copies a motif needs for its best 6-mer to reach a
target NPMI against that background (used by :func:`dnalm.simulate.genome.simulate_genome`).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..seq import reverse_complement
from ._common import A, C, G, T


@functools.lru_cache(maxsize=256)
def _dinucleotide_model(gc: float, cpg_ratio: float, tpa_ratio: float) -> np.ndarray:
    """4x4 transition matrix of a strand-symmetric first-order Markov chain.

    Its stationary base composition has exactly the GC fraction ``gc`` and its CpG and TpA
    observed/expected ratios are exactly ``cpg_ratio`` and ``tpa_ratio``: the joint
    dinucleotide table ``f = diag(x) K diag(y)`` with ``K_ab = pi_a pi_b rho_ab`` is scaled
    (Sinkhorn) to the marginals ``pi``, and ``rho`` adjusted until the realised ratios match.
    """
    pi = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
    rho = np.ones((4, 4))
    rho[C, G], rho[T, A] = cpg_ratio, tpa_ratio
    y = np.ones(4)
    for _ in range(100):
        K = pi[:, None] * pi[None, :] * rho
        for _ in range(1000):
            x = pi / (K @ y)
            y_new = pi / (K.T @ x)
            if np.abs(y_new - y).max() < 1e-13:
                break
            y = y_new
        y = y_new
        f = x[:, None] * K * y[None, :]
        oe = f / (pi[:, None] * pi[None, :])
        if abs(oe[C, G] - cpg_ratio) < 1e-10 and abs(oe[T, A] - tpa_ratio) < 1e-10:
            break
        rho[C, G] *= cpg_ratio / oe[C, G]
        rho[T, A] *= tpa_ratio / oe[T, A]
    model = f / f.sum(axis=1, keepdims=True)
    model.setflags(write=False)  # shared through the cache
    return model


def _stationary(model: np.ndarray) -> np.ndarray:
    """Stationary distribution of a 4x4 transition matrix (power iteration)."""
    stat = np.full(4, 0.25)
    for _ in range(500):
        stat = stat @ model
    return stat


def _expected_best_npmi(
    consensus: str,
    n: int,
    mutation_rate: float,
    model: np.ndarray,
    total: float,
    stat: np.ndarray | None = None,
) -> float:
    """Predicted NPMI of a motif's best 6-mer when ``n`` instances are planted.

    Counts are forward-strand (half the instances per orientation); the expected count of
    every substring is its background expectation under the dinucleotide ``model`` plus its
    intact copies in the instances (``n / 2 * (1 - mutation_rate) ** len``). The PMI uses the
    same segmentation maximum as the pipeline (docs/design.md#npmi). Repeats and
    isochores are ignored: this is a planning estimate, checked by the tests.
    """
    stat = _stationary(model) if stat is None else stat
    logp: dict[str, float] = {}

    idx = {b: i for i, b in enumerate("ACGT")}
    trans, first = model.tolist(), stat.tolist()

    def lp(s: str) -> float:
        if s not in logp:
            bg = total * first[idx[s[0]]]
            for x, y in zip(s[:-1], s[1:]):
                bg *= trans[idx[x]][idx[y]]
            logp[s] = math.log((bg + n / 2 * (1 - mutation_rate) ** len(s)) / total)
        return logp[s]

    best = -np.inf
    for strand in (consensus, reverse_complement(consensus)):
        for i in range(len(strand) - 5):
            w = strand[i : i + 6]
            seg = [0.0]  # seg[j]: best segmentation of w[:j] into >= 1 parts
            for j in range(1, 7):
                seg.append(max(seg[k] + lp(w[k:j]) for k in range(j)))
            pmi = lp(w) - max(seg[k] + lp(w[k:]) for k in range(1, 6))
            best = max(best, pmi / -lp(w))
    return best


def _instances_for_npmi(
    consensus: str, target: float, mutation_rate: float, model: np.ndarray, total: float
) -> int:
    """The fewest instances (in steps of 25) for which :func:`_expected_best_npmi` reaches ``target``."""
    step = 25
    stat = _stationary(model)

    def enough(k: int) -> bool:
        return _expected_best_npmi(consensus, k * step, mutation_rate, model, total, stat) >= target

    if enough(0):
        return 0
    hi = 1
    while not enough(hi):  # the prediction grows with the count: double, then bisect
        hi *= 2
        if hi * step > total / 50:
            raise ValueError(
                f"motif {consensus} cannot reach motif_target_npmi={target} in this genome; lower it"
            )
    lo = hi // 2  # not enough (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi * step


def _markov_chains(rng, models: np.ndarray, model_of_chain: np.ndarray, length: int) -> np.ndarray:
    """Simulate independent Markov chains in parallel: ``(n_chains, length)`` uint8 codes.

    ``models`` is a stack of 4x4 transition matrices; chain i uses ``models[model_of_chain[i]]``
    and starts from that model's stationary distribution.
    """
    n = model_of_chain.shape[0]
    cum = np.cumsum(models, axis=2)
    cum[..., -1] = 1.0
    stat_cum = np.cumsum(np.stack([_stationary(m) for m in models]), axis=1)
    stat_cum[:, -1] = 1.0
    u = rng.random((n, length))
    out = np.empty((n, length), dtype=np.uint8)
    x = (u[:, 0, None] > stat_cum[model_of_chain]).sum(axis=1)
    out[:, 0] = x
    for t in range(1, length):
        x = (u[:, t, None] > cum[model_of_chain, x]).sum(axis=1)
        out[:, t] = x
    return out


def _background(rng, n: int, length: int, gc: float, cpg: float, tpa: float) -> np.ndarray:
    """``n`` independent background stretches of ``length`` bp from one dinucleotide model."""
    model = _dinucleotide_model(round(gc, 4), round(cpg, 4), round(tpa, 4))[None]
    return _markov_chains(rng, model, np.zeros(n, dtype=np.int64), length)

