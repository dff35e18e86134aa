"""The embedded demo data (docs/design.md#demo-data), simulated offline from a seed.

Two independent simulators, each deterministic under its seed (same seed => byte-identical
files, different seed => different data):

* **Genome** (:mod:`.genome`: :func:`simulate_genome`; :mod:`.tasks`: :func:`build_tasks`,
  :func:`write_genome_demo`). A few contigs of a CpG-depleted dinucleotide (first-order
  Markov, :mod:`.background`) background whose GC varies in isochore blocks; interspersed
  repeat families (consensus sequences copied many times with divergence, 5' truncation
  and CpG decay, random strand), microsatellites and satellite arrays, all soft-masked
  (lowercase) as RepeatMasker would; runs of N (one at each end of the assembly) and
  isolated ambiguous bases; and planted motif instances with known coordinates: promoters
  (GC-rich upstream, GC box, TATA box ~30 bp upstream of the TSS, Inr at the TSS), introns
  (donor and acceptor sites with a polypyrimidine tract), enhancers (clusters of
  enhancer-motif instances) and generic motifs scattered alone. Three few-shot tasks are
  then cut from the genome: ``prom`` (promoter vs background), ``splice`` (neither / donor /
  acceptor, "neither" centred on decoy GT/AG) and ``enh`` (enhancer vs background).
  Positive windows are real genome windows around the planted sites, in the gene's
  orientation; negatives never overlap a planted site.

* **Barcodes** (:mod:`.barcodes`: :func:`simulate_barcodes`, :func:`write_barcode_demo`).
  COI-like barcodes (658 bp, AT-rich, a coding frame with invertebrate-mitochondrial stop
  codons avoided and fast third codon positions) evolved down a taxonomy tree order ->
  family -> genus -> species -> haplotype -> specimen, with trimmed ends and a few Ns,
  split as BIOSCAN-5M.

Coordinates are 0-based, half-open. Parameters are plain JSON-compatible dicts (the
workflow config mirrors :data:`DEFAULT_GENOME` and :data:`DEFAULT_BARCODES`, in the light
module :mod:`.defaults` that the workflow reads at parse time); an unknown key raises
``ValueError`` naming it.

Importing this package loads only :mod:`.defaults`; the simulators (numpy, pandas) load
on first use of one of their names here, or when their submodule is imported.
"""

from __future__ import annotations

import importlib

from .defaults import (
    BARCODE_COLUMNS,
    DEFAULT_BARCODES,
    DEFAULT_GENOME,
    GENOME_TASKS,
    KNOWN_SPLITS,
    SEEN_SPLITS,
    SPLICE_LABELS,
    TASK_CLASSES,
    UNSEEN_SPLITS,
)

#: public name -> submodule that defines it (loaded on first access)
_LAZY = {
    "GenomeSim": "genome",
    "genome_params": "genome",
    "simulate_genome": "genome",
    "build_tasks": "tasks",
    "write_genome_demo": "tasks",
    "barcode_params": "barcodes",
    "simulate_barcodes": "barcodes",
    "taxonomy_newick": "barcodes",
    "write_barcode_demo": "barcodes",
}

__all__ = [
    "BARCODE_COLUMNS",
    "DEFAULT_BARCODES",
    "DEFAULT_GENOME",
    "GENOME_TASKS",
    "KNOWN_SPLITS",
    "SEEN_SPLITS",
    "SPLICE_LABELS",
    "TASK_CLASSES",
    "UNSEEN_SPLITS",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
