"""The three few-shot tasks cut from a simulated genome, and the demo genome's files.

:func:`build_tasks` cuts ``prom`` (promoter vs background), ``splice`` (neither / donor /
acceptor) and ``enh`` (enhancer vs background) out of a :class:`~dnalm.simulate.genome.GenomeSim`;
:func:`write_genome_demo` simulates the genome, cuts its tasks and writes both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..fasta import write_fasta
from ..io import write_tsv
from ..seq import decode, encode
from ._common import A, C, G, N, T, _rc
from .defaults import SPLICE_LABELS
from .genome import (
    GenomeSim,
    _gene_span,
    _window_starts,
    genome_params,
    simulate_genome,
)

_GEOMETRY = ("prom_length", "prom_jitter", "splice_length", "enh_length", "enh_jitter")


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
