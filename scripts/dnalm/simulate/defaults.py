"""Default parameters and fixed names of the demo simulators (no heavy imports).

The workflow reads these at parse time (``rules/common.smk``) to check the
``data.*.simulate`` overrides, so this module imports nothing but the standard library;
the simulators themselves live in :mod:`dnalm.simulate.genome`,
:mod:`dnalm.simulate.tasks` and :mod:`dnalm.simulate.barcodes`.
"""

from __future__ import annotations

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
#: Every split name a barcode table may hold (BIOSCAN-5M's, including ``other_heldout``).
KNOWN_SPLITS = tuple(dict.fromkeys(SEEN_SPLITS + UNSEEN_SPLITS + ("other_heldout",)))
