"""The embedded demo data (DESIGN.md "Data / Embedded demo"), simulated offline from a seed.

Two independent simulators, each deterministic under its seed (same seed => byte-identical
files, different seed => different data):

* **Genome** (:func:`simulate_genome`, :func:`build_tasks`, :func:`write_genome_demo`).
  A few contigs of a CpG-depleted dinucleotide (first-order Markov) background whose GC
  varies in isochore blocks; interspersed repeat families (consensus sequences copied many
  times with divergence, 5' truncation and CpG decay, random strand), microsatellites and
  satellite arrays, all soft-masked (lowercase) as RepeatMasker would; runs of N (one at
  each end of the assembly) and isolated ambiguous bases; and planted motif instances with
  known coordinates: promoters (GC-rich upstream, GC box, TATA box ~30 bp upstream of the
  TSS, Inr at the TSS), introns (donor and acceptor sites with a polypyrimidine tract),
  enhancers (clusters of enhancer-motif instances) and generic motifs scattered alone.
  Three few-shot tasks are then cut from the genome: ``prom`` (promoter vs background),
  ``splice`` (neither / donor / acceptor, "neither" centred on decoy GT/AG) and ``enh``
  (enhancer vs background). Positive windows are real genome windows around the planted
  sites, in the gene's orientation; negatives never overlap a planted site.

* **Barcodes** (:func:`simulate_barcodes`, :func:`write_barcode_demo`). COI-like barcodes
  (658 bp, AT-rich, a coding frame with invertebrate-mitochondrial stop codons avoided and
  fast third codon positions) evolved down a taxonomy tree order -> family -> genus ->
  species -> haplotype -> specimen, with trimmed ends and a few Ns, split as BIOSCAN-5M.

Coordinates are 0-based, half-open. Parameters are plain JSON-compatible dicts (the
workflow config mirrors :data:`DEFAULT_GENOME` and :data:`DEFAULT_BARCODES`); an unknown
key raises ``ValueError`` naming it.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .io import atomic_open, write_fasta, write_tsv
from .seq import decode, encode, reverse_complement

A, C, G, T, N = 0, 1, 2, 3, 4
_UPPER = np.frombuffer(b"ACGTN", dtype=np.uint8)
_LOWER = np.frombuffer(b"acgtn", dtype=np.uint8)

# ----------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------

DEFAULT_GENOME: dict = {
    # --- assembly and background -------------------------------------------------------
    "contig_lengths": [600_000, 500_000, 400_000],  # bp per contig, named chr1, chr2, ...
    "gc": 0.40,  # mean background GC fraction (planted features bring the genome to ~0.41)
    "cpg_ratio": 0.22,  # CpG observed/expected of the background dinucleotide model
    "tpa_ratio": 0.75,  # TpA observed/expected of the background model
    "isochore_size": 50_000,  # bp per isochore block; each block draws its own GC ...
    "isochore_gc_sd": 0.02,  # ... from Normal(gc, sd)
    "n_gaps": 6,  # runs of N: the first at the start of chr1, the second at the end of the
    # last contig (telomere-like, at most 10% of the contig), the others inside contigs
    "gap_length": [200, 3000],  # N-run length range in bp
    "ambiguous_per_mbp": 25,  # isolated ambiguous bases (N) per Mbp of unique sequence
    # --- repeats (all soft-masked) -----------------------------------------------------
    "repeat_families": 4,  # interspersed repeat families (consensus + many copies)
    "repeat_length": [250, 600],  # consensus length range
    "repeat_copies_per_mbp": 100,  # copies per family per Mbp (full length or 5'-truncated)
    "repeat_divergence": [0.04, 0.25],  # per-copy substitution rate range (+ indels, CpG decay)
    "microsatellites_per_mbp": 100,  # short tandem repeats (unit 1-6 bp) per Mbp
    "microsatellite_length": [16, 50],  # bp per microsatellite
    "satellite_arrays_per_mbp": 4,  # long tandem arrays (unit 20-180 bp) per Mbp
    "satellite_array_length": [500, 3000],  # bp per array
    "satellite_divergence": 0.05,  # substitution rate of each unit copy
    # --- planted motifs ----------------------------------------------------------------
    "motif_mutation_rate": 0.04,  # per-base substitution rate of every planted instance
    "motif_length": [8, 10],  # length range of the random (enhancer, generic) consensi
    "n_enhancer_motifs": 3,  # random consensus motifs used in enhancer clusters
    "n_generic_motifs": 3,  # random consensus motifs planted alone (role "generic")
    "generic_per_mbp": 300,  # lone instances per generic motif per Mbp (at least)
    "enhancer_decoys_per_mbp": 30,  # lone instances per enhancer motif per Mbp outside enhancers
    "motif_target_npmi": 0.08,  # every motif gets extra lone instances until a background-
    # model prediction of its best 6-mer's NPMI (forward-strand counts) reaches this (0: off)
    "enhancer_cluster_size": [2, 5],  # enhancer-motif instances per enhancer
    "promoter_gc": 0.62,  # GC of the GC-rich stretch upstream of a promoter ...
    "promoter_cpg_ratio": 0.6,  # ... and its CpG o/e (CpG-island-like)
    "promoter_gc_prob": 0.7,  # probability a promoter has the GC-rich stretch
    "promoter_gcbox_prob": 0.6,  # ... a GC box (SP1-like) in it
    "promoter_tata_prob": 0.8,  # ... a TATA box at about -30
    "promoter_inr_prob": 0.8,  # ... an Inr at the TSS
    "intron_length": [80, 2000],  # donor-to-acceptor distance of planted introns
    "extra_sites": 0.5,  # planted promoters/introns/enhancers beyond the task's positives,
    # as a fraction of train_per_class + test_per_class (they stay in the genome, unused)
    # --- few-shot tasks (one planted site per positive window) -------------------------
    "train_per_class": 600,  # train pool size per class
    "test_per_class": 200,  # test set size per class
    "prom_length": 100,  # window bp; TSS at 70% of the window (-70..+30 for 100 bp)
    "prom_jitter": 10,  # window shift range (+-bp) around that anchor
    "splice_length": 40,  # window bp; exon/intron boundary at the centre
    "enh_length": 200,  # window bp; the enhancer's motif cluster spans 60% of it
    "enh_jitter": 20,  # window shift range (+-bp) around the cluster centre
}

DEFAULT_BARCODES: dict = {
    # --- taxonomy tree -----------------------------------------------------------------
    "n_orders": 3,
    "families_per_order": 3,
    "genera_per_family": 3,
    "species_per_genus": 4,
    "specimens_per_species": 25,  # mean (Poisson) specimens per species ...
    "min_specimens": 6,  # ... never fewer than this
    "haplotypes_per_species": 4,  # mean (1 + Poisson) distinct haplotypes per species
    # --- sequence evolution (expected substitutions per site along each branch) ---------
    "length": 658,  # aligned barcode length (COI 5' barcode region)
    "branch_order": 0.25,  # root -> order
    "branch_family": 0.10,  # order -> family
    "branch_genus": 0.05,  # family -> genus
    "branch_species": 0.15,  # genus -> species (long: unseen species are hard to place)
    "branch_haplotype": 0.006,  # species -> haplotype
    "branch_sd": 0.3,  # log-normal sd of every branch length around its mean
    "codon_rates": [0.5, 0.15, 2.35],  # relative rates of codon positions 1, 2, 3
    "gamma_shape": 0.6,  # among-site rate heterogeneity (Gamma shape)
    # --- sequencing artefacts -------------------------------------------------------------
    "trim_fraction": 0.4,  # fraction of barcodes with trimmed ends ...
    "min_length": 600,  # ... never shorter than this
    "n_fraction": 0.05,  # fraction of barcodes with a few Ns ...
    "max_ns": 5,  # ... 1..max_ns of them
    # --- BIOSCAN-5M-style splits ------------------------------------------------------------
    "unseen_fraction": 0.25,  # fraction of each genus' species held out as unseen
    "split_seen": {"pretrain": 0.4, "train": 0.35, "val": 0.05, "test": 0.2},
    "split_unseen": {"pretrain": 0.4, "key_unseen": 0.3, "val_unseen": 0.1, "test_unseen": 0.2},
}

GENOME_TASKS = ("prom", "splice", "enh")
TASK_CLASSES = {"prom": 2, "splice": 3, "enh": 2}
# splice labels: 0 = neither (decoy GT/AG at the centre), 1 = donor, 2 = acceptor
SPLICE_LABELS = {"neither": 0, "donor": 1, "acceptor": 2}
SEEN_SPLITS = ("pretrain", "train", "val", "test")
UNSEEN_SPLITS = ("pretrain", "key_unseen", "val_unseen", "test_unseen")
BARCODE_COLUMNS = ["processid", "dna_barcode", "order", "family", "genus", "species", "split"]

# Motifs with a biological template (consensus, role). Enhancer and generic motifs are
# random consensi drawn per seed (see _random_motifs).
_FIXED_MOTIFS = [
    ("prom_tata", "CTATAAAAGG", "promoter"),  # TATA box, starts ~33 bp upstream of the TSS
    ("prom_inr", "GTCAGTCTCC", "promoter"),  # initiator; its A sits on the TSS
    ("prom_gcbox", "GGGGCGGGGC", "promoter"),  # SP1-like GC box
    ("splice_donor", "CAGGTAAGT", "splice_donor"),  # exon CAG | GTAAGT intron; GT invariant
    ("splice_acceptor", "CCTTTTGCAGG", "splice_acceptor"),  # ...YYYYNCAG | G exon; AG invariant
]
_PROTECTED = {"splice_donor": (3, 4), "splice_acceptor": (8, 9)}  # canonical GT / AG


def _resolve(defaults: dict, params: Mapping | None, what: str) -> dict:
    """Defaults overridden key by key by ``params``; unknown keys raise ``ValueError``."""
    out = copy.deepcopy(defaults)
    if params is None:
        return out
    if not isinstance(params, Mapping):
        raise ValueError(f"{what} parameters must be a mapping, got {type(params).__name__}")
    for key, value in params.items():
        if key not in defaults:
            raise ValueError(f"unknown {what} parameter {key!r}; known: {sorted(defaults)}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"{what} parameter {key!r} must be a mapping")
            for sub in value:
                if sub not in defaults[key]:
                    raise ValueError(
                        f"unknown {what} parameter {key}.{sub!r}; known: {sorted(defaults[key])}"
                    )
            out[key].update(copy.deepcopy(dict(value)))
        else:
            out[key] = copy.deepcopy(value)
    return out


def _range(p: dict, key: str, lo_min: float = 0) -> tuple:
    value = p[key]
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and lo_min <= value[0] <= value[1]):
        raise ValueError(
            f"parameter {key!r} must be a range [lo, hi] with {lo_min} <= lo <= hi, got {value!r}"
        )
    return value[0], value[1]


def _check_fraction(p: dict, *keys: str) -> None:
    for key in keys:
        if not 0 <= p[key] <= 1:
            raise ValueError(f"parameter {key!r} must be in [0, 1], got {p[key]!r}")


def _check_count(p: dict, *keys: str, minimum: int = 0) -> None:
    for key in keys:
        if int(p[key]) != p[key] or p[key] < minimum:
            raise ValueError(f"parameter {key!r} must be an integer >= {minimum}, got {p[key]!r}")


def genome_params(params: Mapping | None = None) -> dict:
    """:data:`DEFAULT_GENOME` overridden by ``params``, validated."""
    p = _resolve(DEFAULT_GENOME, params, "genome")
    if not p["contig_lengths"] or any(int(x) != x or x < 10_000 for x in p["contig_lengths"]):
        raise ValueError(
            f"parameter 'contig_lengths' must list integers >= 10000, got {p['contig_lengths']!r}"
        )
    _check_fraction(
        p,
        "gc",
        "isochore_gc_sd",
        "motif_mutation_rate",
        "promoter_gc",
        "promoter_gc_prob",
        "promoter_gcbox_prob",
        "promoter_tata_prob",
        "promoter_inr_prob",
        "satellite_divergence",
    )
    if p["extra_sites"] < 0:
        raise ValueError("parameter 'extra_sites' must be >= 0")
    for key in ("cpg_ratio", "tpa_ratio", "promoter_cpg_ratio"):
        if not 0 < p[key] <= 2:
            raise ValueError(f"parameter {key!r} must be in (0, 2], got {p[key]!r}")
    _check_count(p, "n_gaps", "repeat_families", "n_generic_motifs", "prom_jitter", "enh_jitter")
    for key in (
        "ambiguous_per_mbp",
        "repeat_copies_per_mbp",
        "microsatellites_per_mbp",
        "generic_per_mbp",
        "enhancer_decoys_per_mbp",
        "motif_target_npmi",
        "satellite_arrays_per_mbp",
    ):
        if p[key] < 0:
            raise ValueError(f"parameter {key!r} must be >= 0, got {p[key]!r}")
    _check_count(p, "n_enhancer_motifs", "train_per_class", "test_per_class", minimum=1)
    _check_count(p, "isochore_size", minimum=1000)
    _check_count(p, "prom_length", "splice_length", "enh_length", minimum=12)
    for key in (
        "gap_length",
        "repeat_length",
        "microsatellite_length",
        "satellite_array_length",
        "enhancer_cluster_size",
        "intron_length",
    ):
        _range(p, key, lo_min=1)
    if p["repeat_divergence"][1] >= 1:
        raise ValueError("parameter 'repeat_divergence' must stay below 1")
    _range(p, "repeat_divergence")
    if p["intron_length"][0] < p["splice_length"]:
        raise ValueError("parameter 'intron_length' must start at or above 'splice_length'")
    return p


def barcode_params(params: Mapping | None = None) -> dict:
    """:data:`DEFAULT_BARCODES` overridden by ``params``, validated."""
    p = _resolve(DEFAULT_BARCODES, params, "barcodes")
    _check_count(
        p,
        "n_orders",
        "families_per_order",
        "genera_per_family",
        "species_per_genus",
        "min_specimens",
        minimum=1,
    )
    _check_count(p, "haplotypes_per_species", "max_ns")
    if p["min_specimens"] < 4:
        raise ValueError("parameter 'min_specimens' must be >= 4 (train, test and unseen splits need them)")
    if not 60 <= p["length"] or int(p["length"]) != p["length"]:
        raise ValueError(f"parameter 'length' must be an integer >= 60, got {p['length']!r}")
    if not 30 <= p["min_length"] <= p["length"]:
        raise ValueError("parameter 'min_length' must be in [30, length]")
    _check_fraction(p, "trim_fraction", "n_fraction", "unseen_fraction")
    for key in (
        "branch_order",
        "branch_family",
        "branch_genus",
        "branch_species",
        "branch_haplotype",
        "branch_sd",
        "specimens_per_species",
    ):
        if p[key] < 0:
            raise ValueError(f"parameter {key!r} must be >= 0")
    if len(p["codon_rates"]) != 3 or min(p["codon_rates"]) < 0 or sum(p["codon_rates"]) <= 0:
        raise ValueError("parameter 'codon_rates' must be three non-negative rates")
    if p["gamma_shape"] <= 0:
        raise ValueError("parameter 'gamma_shape' must be > 0")
    for key in ("split_seen", "split_unseen"):
        if any(v < 0 for v in p[key].values()) or sum(p[key].values()) <= 0:
            raise ValueError(f"parameter {key!r} must hold non-negative fractions, not all zero")
    return p


# ----------------------------------------------------------------------------------------
# Small sequence helpers (uint8 codes A0 C1 G2 T3 N4)
# ----------------------------------------------------------------------------------------


def _rc(codes: np.ndarray) -> np.ndarray:
    """Reverse complement of codes (N stays N)."""
    codes = np.asarray(codes, dtype=np.uint8)
    return np.where(codes < 4, 3 - codes, codes)[::-1].astype(np.uint8)


def _substitute(rng, codes: np.ndarray, rate: float, protect=()) -> np.ndarray:
    """Each base replaced by one of the three others with probability ``rate``.

    ``codes`` is one sequence or a 2-D stack of them; ``protect`` lists positions (along the
    last axis) that never change.
    """
    codes = codes.copy()
    hit = rng.random(codes.shape) < rate
    if len(protect):
        hit[..., list(protect)] = False
    shift = rng.integers(1, 4, size=codes.shape, dtype=np.uint8)
    codes[hit] = (codes[hit] + shift[hit]) % 4
    return codes


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
    same segmentation maximum as the pipeline (DESIGN.md "k-mer counts and NPMI"). Repeats and
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


def _find_free(rng, blocked: np.ndarray, length: int, what: str, tries: int = 20_000) -> int:
    """A random start s with ``blocked[s:s+length]`` all False (raises if none is found)."""
    hi = blocked.shape[0] - length
    if hi > 0:
        done = 0
        while done < tries:
            for s in rng.integers(0, hi, size=256):
                if not blocked[s : s + length].any():
                    return int(s)
            done += 256
    raise ValueError(
        f"the simulated genome is too small to place another {what} ({length} bp); "
        "increase 'contig_lengths' or reduce the number of planted features/task sizes"
    )


def _gene_span(anchor: int, strand: str, g0: int, g1: int) -> tuple[int, int]:
    """Genomic [start, end) of the gene-coordinate interval [g0, g1) around ``anchor``.

    Gene coordinate 0 is the genomic base ``anchor``; on the minus strand gene coordinates
    run right to left.
    """
    if strand == "+":
        return anchor + g0, anchor + g1
    return anchor - g1 + 1, anchor - g0 + 1


# ----------------------------------------------------------------------------------------
# Genome simulation
# ----------------------------------------------------------------------------------------


@dataclass
class GenomeSim:
    """A simulated genome and its ground truth.

    ``contigs``: name -> sequence (soft-masked repeats in lowercase, gaps as N).
    ``motifs``: motif_id, consensus, length, n_instances, role.
    ``instances``: motif_id, contig, start, end, strand, sequence (the instance read on its
    own strand: ``genome[start:end]`` for '+', its reverse complement for '-').
    ``sites``: planted task sites: kind (promoter / donor / acceptor / enhancer), contig,
    anchor (TSS, first intron base, first exon base after the intron, cluster centre),
    strand, and the zone [zone_start, zone_end) every window of that site lies in
    (negatives avoid all zones).
    ``repeats``: contig, start, end, strand, family, repeat_class (the soft-masked runs).
    ``gaps``: contig, start, end of the N runs.
    ``params``: the resolved parameters it was simulated with.
    """

    contigs: dict[str, str]
    motifs: pd.DataFrame
    instances: pd.DataFrame
    sites: pd.DataFrame
    repeats: pd.DataFrame
    gaps: pd.DataFrame
    params: dict = field(default_factory=dict)


def _random_motifs(
    rng, n: int, prefix: str, role: str, taken: set[str], lengths: tuple[int, int]
) -> list[tuple[str, str, str]]:
    """``n`` random consensi (CpG-free, length in ``lengths``) sharing no 5-mer (either
    strand) with ``taken``."""
    out = []
    for _ in range(100_000):
        if len(out) == n:
            return out
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        cons = decode(rng.integers(0, 4, size=length).astype(np.uint8))
        gc = (cons.count("G") + cons.count("C")) / length
        if not 0.3 <= gc <= 0.65 or any(b * 3 in cons for b in "ACGT") or "CG" in cons:
            continue  # CpG-free: CpG-containing 6-mers are rare enough to outshine everything
        if any(cons[i : i + 2] * 2 in cons for i in range(length - 1)):  # no dinucleotide runs
            continue
        kmers = _motif_kmers(cons, 5)
        if kmers & taken:
            continue  # no shared 5-mer (either strand) with another motif
        taken |= kmers
        out.append((f"{prefix}_{len(out) + 1}", cons, role))
    if len(out) == n:
        return out
    raise ValueError(f"cannot draw {n} distinct {role} motifs; reduce their number or widen 'motif_length'")


def _motif_kmers(consensus: str, k: int = 6) -> set[str]:
    """The k-mers of a consensus and of its reverse complement."""
    out = set()
    for s in (consensus, reverse_complement(consensus)):
        out.update(s[i : i + k] for i in range(len(s) - k + 1))
    return out


class _Builder:
    """Mutable state of one genome simulation, in a global coordinate system.

    The contigs are laid end to end, each followed by one separator base that is blocked,
    so no planted feature can straddle two contigs.
    """

    def __init__(self, p: dict, rng):
        self.p, self.rng = p, rng
        lengths = [int(x) for x in p["contig_lengths"]]
        self.names = [f"chr{i + 1}" for i in range(len(lengths))]
        self.lengths = np.array(lengths)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths + 1)[:-1]])
        total = int(self.lengths.sum() + len(lengths))
        self.codes = np.empty(total, dtype=np.uint8)
        self.soft = np.zeros(total, dtype=bool)
        self.occ = np.zeros(total, dtype=bool)  # bases holding a planted feature
        self.zone = np.zeros(total, dtype=bool)  # task-site zones (negatives avoid them)
        self.taken = np.zeros(total, dtype=bool)  # occ | zone: new task sites avoid both
        self.occ[self.offsets + self.lengths] = True  # separators
        self.taken |= self.occ
        self.instances: list[tuple] = []  # motif_id, gstart, gend, strand
        self.sites: list[tuple] = []
        self.repeats: list[tuple] = []
        self.gaps: list[tuple] = []

    def per_mbp(self, key: str) -> int:
        """A density parameter (per Mbp) times the genome size, rounded."""
        return round(self.p[key] * self.lengths.sum() / 1e6)

    # -- coordinates ------------------------------------------------------------------
    def local(self, gpos: int) -> tuple[str, int]:
        i = int(np.searchsorted(self.offsets, gpos, side="right") - 1)
        return self.names[i], int(gpos - self.offsets[i])

    def occupy(self, s: int, e: int) -> None:
        self.occ[s:e] = True
        self.taken[s:e] = True

    def put(self, anchor: int, strand: str, g0: int, seg: np.ndarray) -> None:
        """Write ``seg`` (gene orientation) at gene coordinates [g0, g0+len) and occupy it."""
        s, e = _gene_span(anchor, strand, g0, g0 + len(seg))
        self.codes[s:e] = seg if strand == "+" else _rc(seg)
        self.occupy(s, e)

    def plant(self, motif_id: str, consensus: np.ndarray, anchor: int, strand: str, g0: int) -> None:
        """Write a mutated instance of a motif at gene coordinates [g0, g0+len) and record it."""
        inst = _substitute(self.rng, consensus, self.p["motif_mutation_rate"], _PROTECTED.get(motif_id, ()))
        self.put(anchor, strand, g0, inst)
        s, e = _gene_span(anchor, strand, g0, g0 + len(inst))
        self.instances.append((motif_id, s, e, strand))

    # -- background -------------------------------------------------------------------
    def background(self) -> None:
        p, rng = self.p, self.rng
        chain = 1000
        n_chains = -(-self.codes.shape[0] // chain)
        block = np.arange(n_chains) * chain // int(p["isochore_size"])
        gc = np.clip(rng.normal(p["gc"], p["isochore_gc_sd"], size=block.max() + 1), 0.25, 0.65)
        gc = np.round(gc * 200) / 200  # 0.005 steps: few distinct models
        levels, which = np.unique(gc, return_inverse=True)
        models = np.stack([_dinucleotide_model(float(g), p["cpg_ratio"], p["tpa_ratio"]) for g in levels])
        seq = _markov_chains(rng, models, which[block], chain).ravel()
        self.codes[:] = seq[: self.codes.shape[0]]
        self.codes[self.offsets + self.lengths] = N

    def place_gaps(self) -> None:
        p, rng = self.p, self.rng
        lo, hi = _range(p, "gap_length", 1)
        for i in range(int(p["n_gaps"])):
            length = int(rng.integers(lo, hi + 1))
            if i == 0:  # telomere-like run at the start of the assembly
                s = int(self.offsets[0])
                length = min(length, int(self.lengths[0]) // 10)
            elif i == 1:  # ... and at its end
                length = min(length, int(self.lengths[-1]) // 10)
                s = int(self.offsets[-1] + self.lengths[-1] - length)
            else:
                s = _find_free(rng, self.occ, length, "N gap")
            self.codes[s : s + length] = N
            self.occupy(s, s + length)
            self.gaps.append((s, s + length))

    # -- repeats ----------------------------------------------------------------------
    def _insert_repeat(self, seq: np.ndarray, strand: str, family: str, rclass: str) -> None:
        s = _find_free(self.rng, self.occ, len(seq), f"{rclass} repeat")
        self.codes[s : s + len(seq)] = seq if strand == "+" else _rc(seq)
        self.soft[s : s + len(seq)] = True
        self.occupy(s, s + len(seq))
        self.repeats.append((s, s + len(seq), strand, family, rclass))

    def interspersed(self) -> None:
        p, rng = self.p, self.rng
        lo, hi = _range(p, "repeat_length", 1)
        dlo, dhi = _range(p, "repeat_divergence")
        for f in range(int(p["repeat_families"])):
            length = int(rng.integers(lo, hi + 1))
            # young repeats are CpG-richer than the host background; copies lose CpGs as they age
            cons = _background(rng, 1, length, rng.uniform(0.38, 0.52), 0.5, p["tpa_ratio"])[0]
            poly_a = f % 2 == 0  # SINE-like families end in a poly-A tail
            name = f"REP{f + 1}"
            for _ in range(self.per_mbp("repeat_copies_per_mbp")):
                seq = cons
                if rng.random() < 0.5:  # 5'-truncated copy, LINE-like
                    seq = seq[int(rng.integers(0, len(seq) * 3 // 4)) :]
                if poly_a:
                    tail = np.zeros(int(rng.integers(5, 16)), dtype=np.uint8)
                    seq = np.concatenate([seq, tail])
                seq = _diverge(rng, seq, rng.uniform(dlo, dhi))
                self._insert_repeat(seq, "+" if rng.random() < 0.5 else "-", name, "interspersed")

    def tandem(self) -> None:
        p, rng = self.p, self.rng
        lo, hi = _range(p, "microsatellite_length", 1)
        for _ in range(self.per_mbp("microsatellites_per_mbp")):
            unit_len = int(rng.choice([1, 2, 2, 3, 4, 4, 5, 6]))
            unit = rng.integers(0, 4, size=unit_len).astype(np.uint8)
            if unit_len == 1:  # mononucleotide runs are poly-A/T, as in real genomes
                unit[:] = rng.choice([A, T])
            length = int(rng.integers(lo, hi + 1))
            seq = np.resize(unit, length)
            seq = _substitute(rng, seq, 0.03)
            self._insert_repeat(seq, "+", f"({decode(unit)})n", "microsatellite")
        lo, hi = _range(p, "satellite_array_length", 1)
        for i in range(self.per_mbp("satellite_arrays_per_mbp")):
            unit = _background(rng, 1, int(rng.integers(20, 181)), p["gc"], 0.5, p["tpa_ratio"])[0]
            length = int(rng.integers(lo, hi + 1))
            copies = [
                _substitute(rng, unit, p["satellite_divergence"]) for _ in range(-(-length // len(unit)))
            ]
            seq = np.concatenate(copies)[:length]
            self._insert_repeat(seq, "+", f"SAT{i + 1}", "satellite")

    # -- planted sites ----------------------------------------------------------------
    def _free(self, s: int, e: int) -> bool:
        return 0 <= s and e <= self.taken.shape[0] and not self.taken[s:e].any()

    def _choose(self, kind: str, g0: int, g1: int, strand: str | None = None) -> tuple[int, str]:
        """An anchor and strand whose gene interval [g0, g1) is free of features and zones."""
        s = _find_free(self.rng, self.taken, g1 - g0, f"{kind} site")
        if strand is None:
            strand = "+" if self.rng.random() < 0.5 else "-"
        anchor = s - g0 if strand == "+" else s + g1 - 1
        return anchor, strand

    def _reserve(self, kind: str, anchor: int, strand: str, zone: tuple[int, int]) -> None:
        """Record a task site and mark its zone (where its windows will be cut)."""
        zs, ze = _gene_span(anchor, strand, *zone)
        self.zone[zs:ze] = True
        self.taken[zs:ze] = True
        name, local = self.local(anchor)
        off = anchor - local
        self.sites.append((kind, name, local, strand, zs - off, ze - off))

    def promoters(self, n: int, motifs: dict[str, np.ndarray]) -> None:
        p, rng = self.p, self.rng
        L, J = int(p["prom_length"]), int(p["prom_jitter"])
        a = round(0.7 * L)
        zone = (-a - J, L - a + J)
        extent = (min(zone[0], -70), max(zone[1], 10))
        gc_rich = _background(rng, n, 30, p["promoter_gc"], p["promoter_cpg_ratio"], p["tpa_ratio"])
        for i in range(n):
            anchor, strand = self._choose("promoter", *extent)
            self._reserve("promoter", anchor, strand, zone)
            has_gc = rng.random() < p["promoter_gc_prob"]
            has_box = has_gc and rng.random() < p["promoter_gcbox_prob"]
            has_tata = rng.random() < p["promoter_tata_prob"]
            has_inr = rng.random() < p["promoter_inr_prob"]
            if not (has_box or has_tata or has_inr):
                has_tata = True
            if has_gc:
                self.put(anchor, strand, -65, gc_rich[i])
            if has_box:
                self.plant("prom_gcbox", motifs["prom_gcbox"], anchor, strand, int(rng.integers(-63, -50)))
            if has_tata:
                self.plant("prom_tata", motifs["prom_tata"], anchor, strand, -33 + int(rng.integers(-2, 3)))
            if has_inr:
                self.plant("prom_inr", motifs["prom_inr"], anchor, strand, -3)

    def introns(self, n: int, motifs: dict[str, np.ndarray]) -> None:
        p, rng = self.p, self.rng
        L = int(p["splice_length"])
        lo, hi = _range(p, "intron_length", 1)
        zone = (-(L // 2), L - L // 2)
        # donor motif: exon MAG | GT... intron, the G of GT at gene coordinate 0 (first intron
        # base); acceptor motif: ...YYNCAG | G exon, its last base at 0 (first exon base),
        # after an 8-bp polypyrimidine-rich stretch
        donor, acceptor = motifs["splice_donor"], motifs["splice_acceptor"]
        a_start = -(len(acceptor) - 1)
        d_ext = (min(zone[0], -3), max(zone[1], len(donor) - 3))
        a_ext = (min(zone[0], a_start - 8), max(zone[1], 1))
        for _ in range(n):
            # a donor, then the acceptor one intron length downstream on the same strand
            for _attempt in range(1000):
                anchor, strand = self._choose("donor", *d_ext)
                length = int(rng.integers(lo, hi + 1))
                acc = anchor + length if strand == "+" else anchor - length
                if self._free(*_gene_span(acc, strand, *a_ext)):
                    break
            else:
                raise ValueError("could not place another intron; increase 'contig_lengths'")
            self._reserve("donor", anchor, strand, zone)
            self._reserve("acceptor", acc, strand, zone)
            self.plant("splice_donor", donor, anchor, strand, -3)
            tract = np.where(rng.random(8) < 0.8, rng.choice([C, T], 8), rng.integers(0, 4, 8)).astype(
                np.uint8
            )
            self.put(acc, strand, a_start - 8, tract)
            self.plant("splice_acceptor", acceptor, acc, strand, a_start)

    def enhancers(self, n: int, motifs: dict[str, np.ndarray], enh_ids: list[str]) -> None:
        p, rng = self.p, self.rng
        L, J = int(p["enh_length"]), int(p["enh_jitter"])
        span = round(0.6 * L)
        zone = (-(L // 2) - J, L - L // 2 + J)
        klo, khi = _range(p, "enhancer_cluster_size", 1)
        for _ in range(n):
            anchor, _ = self._choose("enhancer", *zone, strand="+")
            self._reserve("enhancer", anchor, "+", zone)
            k = int(rng.integers(klo, khi + 1))
            chosen = [enh_ids[j] for j in rng.integers(0, len(enh_ids), size=k)]
            lengths = [len(motifs[m]) for m in chosen]
            slack = span - sum(lengths) - 2 * (k - 1)
            if slack < 0:
                raise ValueError("'enh_length' is too short for 'enhancer_cluster_size' motif instances")
            # random non-overlapping layout: the slack is cut into k + 1 random gaps
            gaps = np.diff(np.concatenate([[0], np.sort(rng.integers(0, slack + 1, size=k)), [slack]]))
            pos = anchor - span // 2 + int(gaps[0])
            for m, length, gap in zip(chosen, lengths, gaps[1:]):
                self.plant_at(m, motifs[m], pos, "+" if rng.random() < 0.5 else "-")
                pos += length + 2 + int(gap)

    def plant_at(self, motif_id: str, consensus: np.ndarray, start: int, strand: str) -> None:
        """Plant a motif instance at genomic [start, start+len) on ``strand``."""
        anchor = start if strand == "+" else start + len(consensus) - 1
        self.plant(motif_id, consensus, anchor, strand, 0)

    def lone_instances(self, motif_id: str, consensus: np.ndarray, n: int) -> None:
        """Plant ``n`` instances at random free places, random strand (vectorised)."""
        if n == 0:
            return
        rng, length = self.rng, len(consensus)
        free = _window_starts(self.occ, length + 2)  # keep 1 bp clear on either side
        cand = np.sort(rng.choice(free, size=min(len(free), 3 * n), replace=False)) if len(free) else free
        keep, last = [], -1
        for s in cand.tolist():  # drop candidates overlapping an earlier one
            if s > last:
                keep.append(s + 1)
                last = s + length + 1
        if len(keep) < n:
            raise ValueError(
                f"the simulated genome is too small for {n} more {motif_id} instances; "
                "increase 'contig_lengths' or reduce the planted features"
            )
        starts = np.sort(rng.choice(np.array(keep), size=n, replace=False))
        minus = rng.random(n) < 0.5
        inst = _substitute(
            rng, np.tile(consensus, (n, 1)), self.p["motif_mutation_rate"], _PROTECTED.get(motif_id, ())
        )
        rc = np.where(inst < 4, 3 - inst, inst)[:, ::-1]
        idx = starts[:, None] + np.arange(length)
        self.codes[idx] = np.where(minus[:, None], rc, inst)
        self.occ[idx] = True
        self.taken[idx] = True
        self.instances.extend(
            (motif_id, int(s), int(s) + length, "-" if m else "+") for s, m in zip(starts, minus)
        )

    def ambiguous(self) -> None:
        for _ in range(self.per_mbp("ambiguous_per_mbp")):
            s = _find_free(self.rng, self.occ, 1, "ambiguous base")
            self.codes[s] = N
            self.occupy(s, s + 1)


def _diverge(rng, seq: np.ndarray, d: float) -> np.ndarray:
    """A diverged copy: substitutions at rate d (2/3 transitions), CpG decay, small indels."""
    n = seq.shape[0]
    out = seq.copy()
    hit = rng.random(n) < d
    transition = rng.random(n) < 2 / 3
    flip = np.where(transition, 2, rng.choice([1, 3], size=n)).astype(np.uint8)  # A<->G, C<->T by XOR 2
    out[hit] ^= flip[hit]
    # CpG decay: methylated CpGs mutate to TpG / CpA about 5x faster
    cpg = np.flatnonzero((out[:-1] == C) & (out[1:] == G))
    decay = cpg[rng.random(cpg.shape[0]) < min(1.0, 5 * d)]
    on_c = rng.random(decay.shape[0]) < 0.5
    out[decay[on_c]] = T
    out[decay[~on_c] + 1] = A
    # indels at d/10 each
    dele = np.flatnonzero(rng.random(n) < d / 10)
    out = np.delete(out, dele)
    ins = np.flatnonzero(rng.random(out.shape[0]) < d / 10)
    out = np.insert(out, ins, rng.integers(0, 4, size=ins.shape[0]).astype(np.uint8))
    return out


def simulate_genome(params: dict | None = None, seed: int = 0) -> GenomeSim:
    """Simulate the demo genome (see the module docstring) from ``params`` and ``seed``.

    ``(train_per_class + test_per_class) * (1 + extra_sites)`` promoters, introns (a donor
    and an acceptor each) and enhancers are planted, enough for every positive task window.
    Motif instances then come from these sites, from lone copies (generic motifs, enhancer
    decoys) and from a top-up that gives every motif (all roles) enough instances for a
    background-model prediction of its best 6-mer's NPMI to reach ``motif_target_npmi``.
    """
    p = genome_params(params)
    rng = np.random.default_rng(seed)
    b = _Builder(p, rng)
    b.background()
    b.place_gaps()
    b.interspersed()
    b.tandem()

    taken: set[str] = set()
    fixed = list(_FIXED_MOTIFS)
    for _, cons, _ in fixed:
        taken |= _motif_kmers(cons, 5)
    lengths = _range(p, "motif_length", 6)
    enh = _random_motifs(rng, int(p["n_enhancer_motifs"]), "enh", "enhancer", taken, lengths)
    gen = _random_motifs(rng, int(p["n_generic_motifs"]), "generic", "generic", taken, lengths)
    table = fixed + enh + gen
    motifs = {m: encode(cons) for m, cons, _ in table}

    n_sites = round((int(p["train_per_class"]) + int(p["test_per_class"])) * (1 + p["extra_sites"]))
    b.promoters(n_sites, motifs)
    b.introns(n_sites, motifs)
    b.enhancers(n_sites, motifs, [m for m, _, _ in enh])
    # lone instances: enhancer decoys and generic motifs, then a top-up of every motif to
    # its detectability target (all roles: e.g. TATA-like boxes outside promoters)
    have = pd.Series([i[0] for i in b.instances]).value_counts()
    model = _dinucleotide_model(p["gc"], p["cpg_ratio"], p["tpa_ratio"])
    for m, cons, role in table:
        lone = {
            "enhancer": b.per_mbp("enhancer_decoys_per_mbp"),
            "generic": b.per_mbp("generic_per_mbp"),
        }.get(role, 0)
        n = int(have.get(m, 0)) + lone
        if p["motif_target_npmi"] > 0:
            need = _instances_for_npmi(
                cons, p["motif_target_npmi"], p["motif_mutation_rate"], model, float(b.lengths.sum())
            )
            lone += max(0, need - n)
        b.lone_instances(m, motifs[m], lone)
    b.ambiguous()

    # assemble contigs (soft-masked repeats in lowercase)
    chars = np.where(b.soft, _LOWER[b.codes], _UPPER[b.codes])
    contigs = {}
    for name, off, length in zip(b.names, b.offsets, b.lengths):
        contigs[name] = chars[off : off + length].tobytes().decode("ascii")

    rows = []  # every table is sorted by genomic position (contig order, then start)
    for motif_id, s, e, strand in sorted(b.instances, key=lambda r: (r[1], r[0])):
        name, local = b.local(s)
        seq = b.codes[s:e] if strand == "+" else _rc(b.codes[s:e])
        rows.append((motif_id, name, local, local + (e - s), strand, decode(seq)))
    instances = pd.DataFrame(rows, columns=["motif_id", "contig", "start", "end", "strand", "sequence"])
    counts = instances["motif_id"].value_counts()
    motif_df = pd.DataFrame(
        [(m, cons, len(cons), int(counts.get(m, 0)), role) for m, cons, role in table],
        columns=["motif_id", "consensus", "length", "n_instances", "role"],
    )

    def _local_rows(items):
        out = []
        for s, e, *rest in sorted(items):
            name, local = b.local(s)
            out.append((name, local, local + (e - s), *rest))
        return out

    repeats = pd.DataFrame(
        _local_rows(b.repeats), columns=["contig", "start", "end", "strand", "family", "repeat_class"]
    )
    gaps = pd.DataFrame(_local_rows(b.gaps), columns=["contig", "start", "end"])
    sites = pd.DataFrame(b.sites, columns=["kind", "contig", "anchor", "strand", "zone_start", "zone_end"])
    return GenomeSim(contigs, motif_df, instances, sites, repeats, gaps, p)


# ----------------------------------------------------------------------------------------
# Few-shot tasks
# ----------------------------------------------------------------------------------------

_GEOMETRY = ("prom_length", "prom_jitter", "splice_length", "enh_length", "enh_jitter")


def _window_starts(bad: np.ndarray, length: int) -> np.ndarray:
    """Starts s of every window [s, s+length) with no ``bad`` base."""
    cs = np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])
    n = bad.shape[0] - length + 1
    return np.flatnonzero(cs[length : length + n] - cs[:n] == 0)


def _pick_disjoint(
    rng, candidates: np.ndarray, length: int, taken: np.ndarray, n: int, what: str
) -> np.ndarray:
    """Indices of ``n`` random ``candidates`` (window starts) whose windows overlap neither
    each other nor ``taken`` (which is updated)."""
    out = []
    for i in rng.permutation(candidates.shape[0]):
        s = candidates[i]
        if not taken[s : s + length].any():
            taken[s : s + length] = True
            out.append(int(i))
            if len(out) == n:
                return np.array(out, dtype=np.int64)
    raise ValueError(f"not enough background left for {n} {what} windows; increase 'contig_lengths'")


def build_tasks(
    sim: GenomeSim, params: dict | None = None, seed: int = 0
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Cut the three few-shot tasks out of a simulated genome.

    Returns ``{task: (train_pool, test)}`` for ``prom``, ``splice`` and ``enh``; each frame
    has ``id, sequence, label`` (what the task files hold) plus the window's provenance
    ``contig, start, end, strand`` (genomic, 0-based half-open; the sequence is the
    reverse complement of ``genome[start:end]`` on '-'). Sizes are ``train_per_class`` and
    ``test_per_class`` per class; ``params=None`` uses the parameters of ``sim``. Labels:
    prom/enh 1 = planted site, 0 = background; splice 0 = neither, 1 = donor, 2 = acceptor.
    """
    p = sim.params if params is None else genome_params(params)
    for key in _GEOMETRY:
        if p[key] != sim.params[key]:
            raise ValueError(f"parameter {key!r} differs from the one the genome was simulated with")
    n_train, n_test = int(p["train_per_class"]), int(p["test_per_class"])
    n_per_class = n_train + n_test
    rng = np.random.default_rng([seed, 1])

    # the genome in global coordinates again, with a blocked separator after each contig
    names = list(sim.contigs)
    raw = [np.frombuffer(sim.contigs[c].encode("ascii"), dtype=np.uint8) for c in names]
    offsets = np.concatenate([[0], np.cumsum([len(r) + 1 for r in raw])[:-1]])
    off = dict(zip(names, offsets.tolist()))
    total = int(sum(len(r) + 1 for r in raw))
    codes = np.full(total, N, dtype=np.uint8)
    bad = np.ones(total, dtype=bool)  # soft-masked, gap, separator: no task window there
    for o, r in zip(offsets, raw):
        codes[o : o + len(r)] = encode(r.tobytes())
        bad[o : o + len(r)] = r >= ord("a")
    for g in sim.gaps.itertuples():
        bad[off[g.contig] + g.start : off[g.contig] + g.end] = True
    zone = np.zeros(total, dtype=bool)
    for s in sim.sites.itertuples():
        zone[off[s.contig] + s.zone_start : off[s.contig] + s.zone_end] = True

    def window(gstart: int, length: int, strand: str) -> str:
        seg = codes[gstart : gstart + length]
        return decode(seg if strand == "+" else _rc(seg))

    def local(gstart: int) -> tuple[str, int]:
        i = int(np.searchsorted(offsets, gstart, side="right") - 1)
        return names[i], int(gstart - offsets[i])

    def row(gstart: int, length: int, strand: str, label: int) -> tuple:
        contig, s = local(gstart)
        return (window(gstart, length, strand), label, contig, s, s + length, strand)

    def positives(kind: str, length: int, a: int, jitter: int, label: int) -> list[tuple]:
        """Windows [-a+j, -a+j+length) in gene coordinates around each site's anchor."""
        sites = sim.sites[sim.sites["kind"] == kind]
        if len(sites) < n_per_class:
            raise ValueError(f"the genome has {len(sites)} {kind} sites, the task needs {n_per_class}")
        sites = sites.iloc[rng.permutation(len(sites))[:n_per_class]]
        out = []
        for s in sites.itertuples():
            j = int(rng.integers(-jitter, jitter + 1)) if jitter else 0
            gs, _ = _gene_span(off[s.contig] + s.anchor, s.strand, -a + j, -a + j + length)
            out.append(row(gs, length, s.strand, label))
        return out

    def negatives(length: int, label: int, strands: bool) -> list[tuple]:
        starts = _window_starts(bad | zone, length)
        picked = starts[
            _pick_disjoint(rng, starts, length, np.zeros(total, dtype=bool), n_per_class, "background")
        ]
        return [row(int(s), length, "+" if not strands or rng.random() < 0.5 else "-", label) for s in picked]

    rows: dict[str, list[tuple]] = {}
    L = int(p["prom_length"])
    rows["prom"] = positives("promoter", L, round(0.7 * L), int(p["prom_jitter"]), 1) + negatives(L, 0, True)

    L = int(p["splice_length"])
    h = L // 2
    splice = positives("donor", L, h, 0, SPLICE_LABELS["donor"])
    splice += positives("acceptor", L, h, 0, SPLICE_LABELS["acceptor"])
    # "neither": background windows with a decoy GT (at the donor's place) or AG (at the
    # acceptor's place) in the centre, read on either strand
    starts = _window_starts(bad | zone, L)
    starts = starts[starts + L <= total - 1]
    dinuc = codes[:-1].astype(np.int64) * 5 + codes[1:]

    def at(offset: int, a: int, b: int) -> np.ndarray:
        return starts[dinuc[starts + offset] == a * 5 + b]

    cand = {
        ("GT", "+"): at(h, G, T),
        ("GT", "-"): at(L - h - 2, A, C),
        ("AG", "+"): at(h - 2, A, G),
        ("AG", "-"): at(L - h, C, T),
    }
    taken = np.zeros(total, dtype=bool)
    for kind, need in (("GT", (n_per_class + 1) // 2), ("AG", n_per_class // 2)):
        both = np.concatenate([cand[(kind, "+")], cand[(kind, "-")]])
        strand = np.repeat(["+", "-"], [len(cand[(kind, "+")]), len(cand[(kind, "-")])])
        for i in _pick_disjoint(rng, both, L, taken, need, f"splice decoy {kind}"):
            splice.append(row(int(both[i]), L, str(strand[i]), SPLICE_LABELS["neither"]))
    rows["splice"] = splice

    L = int(p["enh_length"])
    rows["enh"] = positives("enhancer", L, L // 2, int(p["enh_jitter"]), 1) + negatives(L, 0, False)

    out = {}
    cols = ["sequence", "label", "contig", "start", "end", "strand"]
    for task, items in rows.items():
        df = pd.DataFrame(items, columns=cols)
        is_test = np.zeros(len(df), dtype=bool)
        for label in sorted(df["label"].unique()):
            idx = np.flatnonzero(df["label"].to_numpy() == label)
            is_test[rng.permutation(idx)[:n_test]] = True
        order = rng.permutation(len(df))
        df = df.iloc[order].reset_index(drop=True)
        is_test = is_test[order]
        df.insert(0, "id", [f"{task}_{i:05d}" for i in range(len(df))])
        train = df[~is_test].reset_index(drop=True)
        test = df[is_test].reset_index(drop=True)
        out[task] = (train, test)
    return out


def write_genome_demo(outdir, params: dict | None = None, seed: int = 0) -> None:
    """Simulate the genome and its tasks and write them under ``outdir``.

    Files: ``genome.fa``, ``motifs.tsv``, ``motif_instances.tsv``, ``repeats.tsv``
    (RepeatMasker-like annotation of the soft-masked runs) and, per task,
    ``tasks/<task>/train.tsv`` and ``test.tsv`` (``id, sequence, label``) plus
    ``tasks/<task>/regions.tsv`` (``id, split, contig, start, end, strand``: where each
    window comes from).
    """
    outdir = Path(outdir)
    sim = simulate_genome(params, seed)
    tasks = build_tasks(sim, None, seed)
    write_fasta(outdir / "genome.fa", sim.contigs.items())
    write_tsv(sim.motifs, outdir / "motifs.tsv")
    write_tsv(sim.instances, outdir / "motif_instances.tsv")
    write_tsv(sim.repeats, outdir / "repeats.tsv")
    for task, (train, test) in tasks.items():
        write_tsv(train[["id", "sequence", "label"]], outdir / "tasks" / task / "train.tsv")
        write_tsv(test[["id", "sequence", "label"]], outdir / "tasks" / task / "test.tsv")
        regions = pd.concat([train.assign(split="train"), test.assign(split="test")], ignore_index=True)
        write_tsv(
            regions[["id", "split", "contig", "start", "end", "strand"]],
            outdir / "tasks" / task / "regions.tsv",
        )


# ----------------------------------------------------------------------------------------
# Barcodes
# ----------------------------------------------------------------------------------------

# Stationary base composition of insect COI barcodes per codon position (A, C, G, T):
# third positions are ~90% A+T, overall ~68% A+T.
_COI_COMPOSITION = np.array(
    [
        [0.28, 0.15, 0.27, 0.30],
        [0.17, 0.24, 0.15, 0.44],
        [0.43, 0.07, 0.04, 0.46],
    ]
)
_STOPS = (T * 16 + A * 4 + A, T * 16 + A * 4 + G)  # TAA, TAG (invertebrate mitochondrial code)
_ORDERS = [
    "Diptera",
    "Hymenoptera",
    "Lepidoptera",
    "Coleoptera",
    "Hemiptera",
    "Trichoptera",
    "Psocodea",
    "Orthoptera",
    "Thysanoptera",
    "Neuroptera",
    "Ephemeroptera",
    "Plecoptera",
]
_ONSETS = [
    "b",
    "c",
    "d",
    "f",
    "g",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "ch",
    "ph",
    "th",
    "tr",
    "st",
    "pl",
]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "y"]
_SUFFIXES = ["us", "a", "um", "is", "ensis", "ii", "ata", "oides"]


def _word(rng, syllables: int) -> str:
    return "".join(
        _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] for _ in range(syllables)
    )


def _names(rng, n: int, make, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        name = make()
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


def _stop_mask(seq: np.ndarray) -> np.ndarray:
    """Per-base mask of codons (in frame 0) that are stop codons, for a (n, L) array."""
    n_cod = seq.shape[-1] // 3
    cod = seq[..., : 3 * n_cod].reshape(*seq.shape[:-1], n_cod, 3).astype(np.int64)
    code = cod[..., 0] * 16 + cod[..., 1] * 4 + cod[..., 2]
    stop = np.isin(code, _STOPS)
    mask = np.zeros(seq.shape, dtype=bool)
    mask[..., : 3 * n_cod] = np.repeat(stop, 3, axis=-1)
    return mask


class _Evolver:
    """F81 substitutions with codon-position composition and among-site rate variation."""

    def __init__(self, p: dict, rng):
        self.rng, self.p = rng, p
        L = int(p["length"])
        self.pos = np.arange(L) % 3
        rates = np.asarray(p["codon_rates"], dtype=float)[self.pos]
        rates = rates * rng.gamma(p["gamma_shape"], 1 / p["gamma_shape"], size=L)
        self.rates = rates / rates.mean()
        self.cum = np.cumsum(_COI_COMPOSITION, axis=1)[self.pos]
        self.cum[:, -1] = 1.0

    def draw(self, n: int) -> np.ndarray:
        """``n`` sequences from the stationary composition (no stop codons)."""
        out = (self.rng.random((n, self.pos.shape[0]))[..., None] > self.cum).sum(-1).astype(np.uint8)
        while (bad := _stop_mask(out)).any():
            redo = (self.rng.random(out.shape)[..., None] > self.cum).sum(-1).astype(np.uint8)
            out[bad] = redo[bad]
        return out

    def branch(self, mean: float) -> float:
        sd = self.p["branch_sd"]
        return float(mean * self.rng.lognormal(-sd * sd / 2, sd)) if mean > 0 else 0.0

    def evolve(self, parent: np.ndarray, t: float) -> np.ndarray:
        """A child of ``parent`` after a branch of length ``t``; changes making a stop are undone."""
        hit = self.rng.random(parent.shape) < 1 - np.exp(-t * self.rates)
        child = np.where(hit, self.draw(1)[0] if parent.ndim == 1 else self.draw(parent.shape[0]), parent)
        stop = _stop_mask(child)
        child[stop] = parent[stop]
        return child.astype(np.uint8)


def simulate_barcodes(params: dict | None = None, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate COI-like barcodes on a taxonomy tree with BIOSCAN-5M-style splits.

    Returns ``(barcodes, taxonomy)``: ``barcodes`` has the columns of
    :data:`BARCODE_COLUMNS` (one row per specimen, sorted by processid); ``taxonomy`` has
    one row per species: ``species, genus, family, order, seen`` plus the branch lengths
    of the tree (``branch_order``, ``branch_family``, ``branch_genus``, ``branch_species``:
    the branch above each node, repeated on every row below it).

    Splits: species are seen or unseen (every genus keeps at least one seen species).
    Specimens of seen species go to pretrain/train/val/test, of unseen species to
    pretrain/key_unseen/val_unseen/test_unseen. Specimens with identical barcode strings
    always share a split; each seen species has >= 2 train and >= 1 test specimens, each
    unseen species >= 1 key_unseen and >= 1 test_unseen specimen.
    """
    p = barcode_params(params)
    rng = np.random.default_rng(seed)
    ev = _Evolver(p, rng)
    root = ev.draw(1)[0]
    taken: set[str] = set()
    n_o = int(p["n_orders"])
    orders = _ORDERS[:n_o] + [
        w.capitalize() + "ptera"
        for w in _names(rng, max(0, n_o - len(_ORDERS)), lambda: _word(rng, 2), taken)
    ]

    species_rows, haplos = [], []  # haplos[i]: (n_hap, L) codes for species i
    for order in orders:
        bo = ev.branch(p["branch_order"])
        s_order = ev.evolve(root, bo)
        for family in _names(
            rng, int(p["families_per_order"]), lambda: _word(rng, 2).capitalize() + "idae", taken
        ):
            bf = ev.branch(p["branch_family"])
            s_family = ev.evolve(s_order, bf)
            for genus in _names(rng, int(p["genera_per_family"]), lambda: _word(rng, 3).capitalize(), taken):
                bg = ev.branch(p["branch_genus"])
                s_genus = ev.evolve(s_family, bg)
                epithets = _names(
                    rng,
                    int(p["species_per_genus"]),
                    lambda: _word(rng, 2) + _SUFFIXES[rng.integers(len(_SUFFIXES))],
                    set(),
                )
                for ep in epithets:
                    bs = ev.branch(p["branch_species"])
                    s_species = ev.evolve(s_genus, bs)
                    n_hap = 1 + int(rng.poisson(max(0.0, p["haplotypes_per_species"] - 1)))
                    hap = np.stack(
                        [ev.evolve(s_species, ev.branch(p["branch_haplotype"])) for _ in range(n_hap)]
                    )
                    haplos.append(hap)
                    species_rows.append((f"{genus} {ep}", genus, family, order, bo, bf, bg, bs))
    taxonomy = pd.DataFrame(
        species_rows,
        columns=[
            "species",
            "genus",
            "family",
            "order",
            "branch_order",
            "branch_family",
            "branch_genus",
            "branch_species",
        ],
    )

    # specimens: a haplotype (Zipf-like weights), trimmed ends, a few Ns
    L, min_len = int(p["length"]), int(p["min_length"])
    seqs, sp_of = [], []
    for i, hap in enumerate(haplos):
        n_spec = max(int(p["min_specimens"]), int(rng.poisson(p["specimens_per_species"])))
        w = 1.0 / np.arange(1, hap.shape[0] + 1)
        which = rng.choice(hap.shape[0], size=n_spec, p=w / w.sum())
        for h in which:
            seqs.append(_specimen(rng, hap[h], p, L, min_len))
            sp_of.append(i)
    seqs = _make_distinct(rng, seqs, np.array(sp_of), min_groups=4)

    # seen / unseen species: in each genus a stochastically rounded share is unseen, never all
    seen = np.ones(len(taxonomy), dtype=bool)
    for _genus, idx in taxonomy.groupby("genus", sort=False).indices.items():
        n_unseen = int(np.floor(p["unseen_fraction"] * len(idx) + rng.random()))
        n_unseen = min(n_unseen, len(idx) - 1)
        seen[rng.permutation(idx)[:n_unseen]] = False
    taxonomy["seen"] = seen

    # splits, assigned to groups of identical barcode strings within each species
    split = np.empty(len(seqs), dtype=object)
    sp_of = np.array(sp_of)
    for i in range(len(taxonomy)):
        members = np.flatnonzero(sp_of == i)
        groups: dict[str, list[int]] = {}
        for m in members:
            groups.setdefault(seqs[m], []).append(int(m))
        order = [groups[k] for k in sorted(groups)]
        order = [order[j] for j in rng.permutation(len(order))]
        if seen[i]:
            fractions, first = p["split_seen"], ["train", "train", "test"]
        else:
            fractions, first = p["split_unseen"], ["key_unseen", "test_unseen"]
        for name, grp in zip(_assign_groups(order, fractions, first), order):
            split[grp] = name

    perm = rng.permutation(len(seqs))
    barcodes = pd.DataFrame(
        {
            "processid": [f"BSIM{rank + 1:06d}-{seed % 100:02d}" for rank in range(len(perm))],
            "dna_barcode": [seqs[j] for j in perm],
            **{
                rank: taxonomy[rank].to_numpy()[sp_of[perm]]
                for rank in ("order", "family", "genus", "species")
            },
            "split": split[perm].astype(str),
        }
    )
    return barcodes, taxonomy


def _specimen(rng, hap: np.ndarray, p: dict, L: int, min_len: int) -> str:
    seq = hap.copy()
    if rng.random() < p["n_fraction"] and p["max_ns"] > 0:
        k = int(rng.integers(1, int(p["max_ns"]) + 1))
        seq[rng.choice(L, size=k, replace=False)] = N
    start, end = 0, L
    if rng.random() < p["trim_fraction"]:
        cut = int(rng.integers(1, L - min_len + 1)) if L > min_len else 0
        start = int(rng.integers(0, cut + 1))
        end = L - (cut - start)
    return decode(seq[start:end])


def _make_distinct(rng, seqs: list[str], sp_of: np.ndarray, min_groups: int) -> list[str]:
    """Make strings unique across species and give each species >= ``min_groups`` distinct ones.

    A clash is resolved by one extra substitution in a specimen (a new, private haplotype).
    """
    seqs = list(seqs)
    while True:
        owner: dict[str, int] = {}
        clash = None
        for j, s in enumerate(seqs):
            if owner.setdefault(s, sp_of[j]) != sp_of[j]:
                clash = j
                break
        if clash is None:
            for i in np.unique(sp_of):
                members = np.flatnonzero(sp_of == i)
                distinct = {seqs[m] for m in members}
                if len(distinct) < min(min_groups, len(members)):
                    seen_once: set[str] = set()
                    for m in members:  # mutate the second copy of a duplicated string
                        if seqs[m] in seen_once:
                            clash = int(m)
                            break
                        seen_once.add(seqs[m])
                    break
        if clash is None:
            return seqs
        codes = encode(seqs[clash])
        pos = int(rng.integers(0, len(codes)))
        codes[pos] = (codes[pos] + int(rng.integers(1, 4))) % 4 if codes[pos] < 4 else int(rng.integers(0, 4))
        seqs[clash] = decode(codes)


def _assign_groups(groups: list[list[int]], fractions: dict, first: list[str]) -> list[str]:
    """Split names for groups of specimens: ``first`` ones as listed, then greedily towards
    ``fractions`` of the specimen count (the split furthest below its target gets the next group)."""
    total = sum(len(g) for g in groups)
    names = list(fractions)
    target = np.array([fractions[s] for s in names], dtype=float)
    target = target / target.sum() * total
    have = np.zeros(len(names))
    out = []
    for j, grp in enumerate(groups):
        name = first[j] if j < len(first) else names[int(np.argmax(target - have))]
        have[names.index(name)] += len(grp)
        out.append(name)
    return out


def taxonomy_newick(taxonomy: pd.DataFrame) -> str:
    """The tree order -> family -> genus -> species in Newick, with branch lengths.

    Labels use underscores for spaces (Newick convention); internal nodes are labelled.
    """

    def label(s: str) -> str:
        return s.replace(" ", "_")

    parts = []
    for order, o in taxonomy.groupby("order", sort=False):
        fams = []
        for family, f in o.groupby("family", sort=False):
            gens = []
            for genus, g in f.groupby("genus", sort=False):
                leaves = ",".join(f"{label(r.species)}:{r.branch_species:.5f}" for r in g.itertuples())
                gens.append(f"({leaves}){label(genus)}:{g['branch_genus'].iloc[0]:.5f}")
            fams.append(f"({','.join(gens)}){label(family)}:{f['branch_family'].iloc[0]:.5f}")
        parts.append(f"({','.join(fams)}){label(order)}:{o['branch_order'].iloc[0]:.5f}")
    return f"({','.join(parts)})root;\n"


def write_barcode_demo(outdir, params: dict | None = None, seed: int = 0) -> None:
    """Simulate barcodes and write ``barcodes.tsv``, ``taxonomy.tsv`` and ``taxonomy.nwk``.

    ``taxonomy.tsv`` holds ``species, genus, family, order, seen`` (one row per species).
    """
    outdir = Path(outdir)
    barcodes, taxonomy = simulate_barcodes(params, seed)
    write_tsv(barcodes, outdir / "barcodes.tsv")
    write_tsv(taxonomy[["species", "genus", "family", "order", "seen"]], outdir / "taxonomy.tsv")
    with atomic_open(outdir / "taxonomy.nwk") as fh:
        fh.write(taxonomy_newick(taxonomy))
