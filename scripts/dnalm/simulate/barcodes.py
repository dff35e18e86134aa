"""Simulated COI-like DNA barcodes on a taxonomy tree, with BIOSCAN-5M-style splits.

:func:`simulate_barcodes` evolves barcodes down order -> family -> genus -> species ->
haplotype -> specimen (codon-position composition and rates, no stop codons), adds
trimmed ends and a few Ns, and splits the specimens as BIOSCAN-5M does;
:func:`write_barcode_demo` writes the table, the taxonomy and its Newick tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..barcodes import assign_groups
from ..io import atomic_open, write_tsv
from ..seq import decode, encode
from ._common import A, G, N, T, _check_count, _check_fraction, _resolve
from .defaults import DEFAULT_BARCODES


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
        for name, grp in zip(assign_groups([len(g) for g in order], fractions, first), order):
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
