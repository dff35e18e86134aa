"""The simulated demo genome (see :mod:`dnalm.simulate` for what it holds).

:func:`simulate_genome` builds the contigs (isochore background, N gaps, interspersed and
tandem repeats soft-masked, planted promoters, introns, enhancers and lone motif
instances) and returns them with their ground truth as a :class:`GenomeSim`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..seq import decode, encode, reverse_complement
from ._common import A, C, G, N, T, _check_count, _check_fraction, _range, _rc, _resolve
from .background import _background, _dinucleotide_model, _instances_for_npmi, _markov_chains
from .defaults import DEFAULT_GENOME

_UPPER = np.frombuffer(b"ACGTN", dtype=np.uint8)
_LOWER = np.frombuffer(b"acgtn", dtype=np.uint8)

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


def _window_starts(bad: np.ndarray, length: int) -> np.ndarray:
    """Starts s of every window [s, s+length) with no ``bad`` base."""
    cs = np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])
    n = bad.shape[0] - length + 1
    return np.flatnonzero(cs[length : length + n] - cs[:n] == 0)


def _gene_span(anchor: int, strand: str, g0: int, g1: int) -> tuple[int, int]:
    """Genomic [start, end) of the gene-coordinate interval [g0, g1) around ``anchor``.

    Gene coordinate 0 is the genomic base ``anchor``; on the minus strand gene coordinates
    run right to left.
    """
    if strand == "+":
        return anchor + g0, anchor + g1
    return anchor - g1 + 1, anchor - g0 + 1




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
