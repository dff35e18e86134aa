"""Shared references for the simulator tests (independent of the simulator): small
parameter sets, genome windows and interval masks, brute-force k-mer NPMI, k-mer profiles,
a Newick parser, and cached simulations reused by several test modules."""

import functools
import itertools
import math

import numpy as np
import pandas as pd

from dnalm.seq import encode, kmer_codes, reverse_complement
from dnalm.simulate.genome import simulate_genome
from dnalm.simulate.tasks import build_tasks

SMALL_GENOME = dict(
    contig_lengths=[60_000, 40_000],
    train_per_class=30,
    test_per_class=10,
    gap_length=[50, 300],
    satellite_arrays_per_mbp=20,
)
SMALL_BARCODES = dict(
    n_orders=2, families_per_order=2, genera_per_family=3, species_per_genus=3, specimens_per_species=10
)


def window(contigs, contig, start, end, strand):
    seq = contigs[contig][start:end].upper()
    return seq if strand == "+" else reverse_complement(seq)


def interval_mask(contigs, table):
    """Per-contig boolean masks of the [start, end) intervals of a table."""
    masks = {c: np.zeros(len(s), dtype=bool) for c, s in contigs.items()}
    for r in table.itertuples():
        masks[r.contig][r.start : r.end] = True
    return masks


def npmi_table(contigs, k=6, min_count=10):
    """NPMI of every k-mer (docs/design.md#npmi): forward strand, windows with non-ACGT skipped."""
    logp, counts = {}, {}
    for n in range(1, k + 1):
        c, total = np.zeros(4**n, np.int64), 0
        for s in contigs.values():
            ids, valid = kmer_codes(encode(s), n)
            c += np.bincount(ids[valid], minlength=4**n)
            total += int(valid.sum())
        counts[n] = c
        with np.errstate(divide="ignore"):
            logp[n] = np.log(c / total)
    codes = np.arange(4**k)

    def part(i, j):  # code of w[i:j] for every k-mer w
        return (codes >> (2 * (k - j))) & (4 ** (j - i) - 1)

    best = [np.zeros(4**k)]  # best[j]: max over segmentations of w[:j] into >= 1 parts
    for j in range(1, k + 1):
        best.append(np.max([best[i] + logp[j - i][part(i, j)] for i in range(j)], axis=0))
    seg = np.max([best[i] + logp[k - i][part(i, k)] for i in range(1, k)], axis=0)
    with np.errstate(invalid="ignore"):
        npmi = (logp[k] - seg) / -logp[k]
    kmers = ["".join(p) for p in itertools.product("ACGT", repeat=k)]
    df = pd.DataFrame({"kmer": kmers, "count": counts[k], "npmi": npmi})
    return df[df["count"] >= min_count].sort_values("npmi", ascending=False, ignore_index=True)


def brute_npmi(seq, w):
    """NPMI of one k-mer by explicit enumeration of all segmentations (no DP)."""

    def logp(s):
        n = len(s)
        windows = [seq[i : i + n] for i in range(len(seq) - n + 1)]
        return math.log(windows.count(s) / len(windows))

    best = -math.inf
    k = len(w)
    for r in range(1, k):
        for cuts in itertools.combinations(range(1, k), r):
            bounds = (0, *cuts, k)
            best = max(best, sum(logp(w[a:b]) for a, b in zip(bounds[:-1], bounds[1:])))
    return (logp(w) - best) / -logp(w)


def kmer_profiles(seqs, k=4):
    X = np.zeros((len(seqs), 4**k))
    for i, s in enumerate(seqs):
        ids, valid = kmer_codes(encode(s), k)
        X[i] = np.bincount(ids[valid], minlength=4**k)
    return X / np.maximum(X.sum(axis=1, keepdims=True), 1)


def parse_newick(text):
    """(label, branch_length, children) tree of a Newick string."""
    text = text.strip().rstrip(";")
    pos = 0

    def node():
        nonlocal pos
        children = []
        if text[pos] == "(":
            pos += 1
            children.append(node())
            while text[pos] == ",":
                pos += 1
                children.append(node())
            assert text[pos] == ")"
            pos += 1
        start = pos
        while pos < len(text) and text[pos] not in ",()":
            pos += 1
        label, _, length = text[start:pos].partition(":")
        return label, float(length) if length else None, children

    tree = node()
    assert pos == len(text)
    return tree


@functools.lru_cache(maxsize=None)
def small_genome():
    """The small genome (seed 3) and its tasks, simulated once per test process."""
    sim = simulate_genome(SMALL_GENOME, seed=3)
    return sim, build_tasks(sim, None, seed=3)


@functools.lru_cache(maxsize=None)
def default_genome():
    """The default genome (seed 42), simulated once per test process."""
    return simulate_genome(None, seed=42)
