"""Smoke test on real human DNA: a 1.5 Mbp slice of GRCh37 chrX from the Debian package
smalt-examples (``make sysdeps`` installs it as root), through the genome conversion,
k-mer counting, the NPMI table and a few GeneMask pretraining steps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dnalm import corpus, fasta, genome, kmers, npmi, train

SMALT_CHRX = Path("/usr/share/doc/smalt/test/data/hs37chrXtrunc.fa.gz")
pytestmark = pytest.mark.skipif(
    not SMALT_CHRX.exists(),
    reason=f"{SMALT_CHRX} absent: install the Debian package smalt-examples (make sysdeps, as root)",
)
START, LENGTH = 20_000_000, 1_500_000  # inside chrX, away from the N-padded start and PAR1


@pytest.fixture(scope="module")
def slice_fasta(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smalt")
    summary = genome.prepare_genome(SMALT_CHRX, tmp / "chrX.fa", contigs=["X"])
    assert summary["kept"] == ["X"] and summary["bases"] > 60_000_000
    ((name, seq),) = list(fasta.read_fasta(tmp / "chrX.fa"))
    fasta.write_fasta(tmp / "slice.fa", [("X_20M", seq[START : START + LENGTH])])
    return tmp


@pytest.fixture(scope="module")
def counts(slice_fasta):
    return kmers.count_fasta(slice_fasta / "slice.fa", k_max=6)


def test_kmer_counts_show_human_composition(counts):
    n1 = counts.n_windows(1)
    assert n1 > 0.95 * LENGTH
    gc = (counts.count("C") + counts.count("G")) / n1
    assert 0.33 < gc < 0.45, gc  # human chrX: ~39% GC
    cpg_oe = (counts.count("CG") / counts.n_windows(2)) / ((counts.count("C") / n1) * (counts.count("G") / n1))
    assert cpg_oe < 0.4, cpg_oe  # CpG depletion of mammalian DNA
    assert counts.n_windows(6) > 0.95 * LENGTH


def test_npmi_table_on_real_dna(counts, slice_fasta):
    table = npmi.npmi_table(counts, min_count=10)
    assert set(table["n"]) == {2, 3, 4, 5, 6}
    assert table["npmi"].between(-1, 1).all() and np.isfinite(table["npmi"]).all()
    cg = table[(table["n"] == 2) & (table["kmer"] == "CG")].iloc[0]
    assert cg["pmi"] < 0  # depleted dinucleotide: negative PMI
    assert (table[table["n"] == 6]["rank"].sort_values().to_numpy() == np.arange(1, (table["n"] == 6).sum() + 1)).all()
    npmi.write_npmi_table(table, slice_fasta / "npmi.tsv")


def test_a_few_genemask_pretraining_steps(slice_fasta, counts):
    if not (slice_fasta / "npmi.tsv").exists():
        npmi.write_npmi_table(npmi.npmi_table(counts, min_count=10), slice_fasta / "npmi.tsv")
    windows = corpus.genome_windows(slice_fasta / "slice.fa", n_windows=64, min_len=64, max_len=200, seed=1)
    corpus.save_corpus(slice_fasta / "corpus.npz", windows)
    cfg = train.TrainConfig(
        architecture="mlm", masking="genemask", tokenization="overlapping", k=6, max_tokens=64,
        size={"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64},
        steps=4, batch_size=8, warmup_steps=1, checkpoint_every=2, log_every=1, device="cpu", num_threads=1,
    )
    out = slice_fasta / "model"
    train.train(cfg, slice_fasta / "corpus.npz", out, slice_fasta / "metrics.tsv", slice_fasta / "ckpt", npmi_path=slice_fasta / "npmi.tsv")
    metrics = pd.read_csv(slice_fasta / "metrics.tsv", sep="\t")
    assert metrics["step"].max() == 4
    assert all(math.isfinite(v) and v > 0 for v in metrics["loss"])
    assert (metrics["mask_rate"] > 0).all()
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
