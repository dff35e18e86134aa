"""Training corpora: genome windows (N-free, length range, proportional sampling, seeded),
barcode windows (cleaning, splits, trimming) and the memory-mapped .npz format."""

import gzip
import os
import re

import numpy as np
import pandas as pd
import pytest

from dnalm import barcodes, seq, sources
from dnalm.corpus import Corpus, barcode_corpus, barcode_windows, genome_windows, load_corpus, save_corpus
from dnalm.fasta import write_fasta
from dnalm.io import InputError, write_tsv


def rand_dna(rng, n, alphabet="ACGT"):
    return "".join(rng.choice(list(alphabet), n))


@pytest.fixture
def genome(tmp_path):
    """Two contigs: chr1 with soft-masked bases and N gaps, chr2 plain."""
    rng = np.random.default_rng(0)
    runs = [rand_dna(rng, 300), rand_dna(rng, 40), rand_dna(rng, 500), rand_dna(rng, 90)]
    runs[2] = runs[2][:100] + runs[2][100:200].lower() + runs[2][200:]
    chr1 = runs[0] + "N" * 25 + runs[1] + "NRN" + runs[2] + "n" * 3 + runs[3]
    chr2 = rand_dna(rng, 800)
    path = tmp_path / "genome.fa"
    write_fasta(path, [("chr1", chr1), ("chr2", chr2)])
    return path, [r.upper() for r in runs] + [chr2]


def test_genome_windows_are_nfree_substrings_in_range(genome):
    path, runs = genome
    corpus = genome_windows(path, n_windows=600, min_len=50, max_len=200, seed=1)
    assert len(corpus) == 600
    assert corpus.bases.dtype == np.uint8 and corpus.offsets.dtype == np.int64
    lengths = corpus.lengths
    assert lengths.min() >= 50 and lengths.max() <= 200
    assert lengths.min() < 60 and lengths.max() > 190  # the whole range is used
    seen_runs = set()
    for i in range(len(corpus)):
        w = corpus[i]
        assert (w < 4).all()
        text = seq.decode(w)
        hosts = [j for j, r in enumerate(runs) if text in r]
        assert hosts, text  # inside one N-free run (never across an N)
        seen_runs.update(hosts)
    # the 40 bp run is shorter than min_len: never sampled; all the others are
    assert 1 not in seen_runs and {0, 2, 3, 4} <= seen_runs
    # windows of the 90 bp run are capped at its length
    in_run3 = [len(corpus[i]) for i in range(len(corpus)) if seq.decode(corpus[i]) in runs[3]]
    assert in_run3 and max(in_run3) <= 90


def test_genome_windows_deterministic_and_seeded(genome):
    path, _ = genome
    a = genome_windows(path, 50, 30, 100, seed=7)
    b = genome_windows(path, 50, 30, 100, seed=7)
    c = genome_windows(path, 50, 30, 100, seed=8)
    assert np.array_equal(a.bases, b.bases) and np.array_equal(a.offsets, b.offsets)
    assert not np.array_equal(a.offsets, c.offsets)


def test_genome_windows_proportional_to_length(tmp_path):
    """Contig A (only A/C) is 1/10 of the genome: about 10 % of the windows come from it."""
    rng = np.random.default_rng(3)
    path = tmp_path / "two.fa.gz"
    with gzip.open(path, "wt") as fh:  # gzip input works too
        fh.write(">a\n" + rand_dna(rng, 2000, "AC") + "\n>b\n" + rand_dna(rng, 18000, "GT") + "\n")
    n = 4000
    corpus = genome_windows(path, n, 20, 40, seed=0)
    from_a = np.array([(corpus[i] <= 1).all() for i in range(n)])
    from_b = np.array([(corpus[i] >= 2).all() for i in range(n)])
    assert (from_a ^ from_b).all()
    p = 0.1
    assert abs(from_a.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_genome_windows_errors(tmp_path):
    path = tmp_path / "g.fa"
    write_fasta(path, [("c", "ACGTNACGTNACGT")])
    with pytest.raises(InputError, match="min_len=5"):
        genome_windows(path, 10, 5, 10, seed=0)
    with pytest.raises(ValueError):
        genome_windows(path, 10, 5, 4, seed=0)
    assert len(genome_windows(path, 0, 2, 3, seed=0)) == 0


def test_barcode_windows_cleaning_and_splits():
    df = pd.DataFrame(
        {
            "processid": ["p1", "p2", "p3", "p4", "p5", "p6"],
            "dna_barcode": ["acg-tNN--ac", "AAAACCCCGGGGTTTT", None, "---", "ACGTRY acgt", "GGGG"],
            "split": ["pretrain", "pretrain", "pretrain", "pretrain", "pretrain", "train"],
        }
    )
    corpus = barcode_windows(df, length=10)
    texts = [seq.decode(corpus[i]) for i in range(len(corpus))]
    # gaps/space removed, upper-cased, trimmed to 10; N/R/Y kept (as code 4 -> 'N');
    # missing and all-gap barcodes dropped; other splits left out
    assert texts == ["ACGTNNAC", "AAAACCCCGG", "ACGTNNACGT"]
    assert len(corpus) == 3 and corpus.lengths.tolist() == [8, 10, 10]
    both = barcode_windows(df, splits=("pretrain", "train"), length=660)
    assert [seq.decode(both[i]) for i in range(len(both))][-1] == "GGGG"
    assert len(barcode_windows(df, splits=None)) == 4
    with pytest.raises(ValueError, match="split"):
        barcode_windows(df.drop(columns="split"))
    with pytest.raises(ValueError, match="dna_barcode"):
        barcode_windows(df.drop(columns="dna_barcode"))


def test_barcode_windows_match_per_row_encoding():
    rng = np.random.default_rng(5)
    codes = [rand_dna(rng, int(rng.integers(500, 700)), "ACGTN-acgt") for _ in range(200)]
    df = pd.DataFrame({"dna_barcode": codes, "split": "pretrain"})
    corpus = barcode_windows(df, length=660)
    for i, text in enumerate(codes):
        want = seq.encode(text.replace("-", "").upper()[:660])
        assert np.array_equal(corpus[i], want)


def test_corpus_indexing():
    c = Corpus.from_arrays([np.array([0, 1], np.uint8), np.zeros(0, np.uint8), np.array([3], np.uint8)])
    assert len(c) == 3 and c[0].tolist() == [0, 1] and c[1].tolist() == [] and c[-1].tolist() == [3]
    with pytest.raises(IndexError):
        c[3]
    with pytest.raises(ValueError):
        Corpus(np.zeros(3, np.uint8), np.array([0, 2], np.int64))


def test_save_load_roundtrip_memory_mapped(tmp_path, genome):
    path, _ = genome
    corpus = genome_windows(path, 100, 20, 80, seed=0)
    out = tmp_path / "sub" / "corpus"  # no .npz suffix: saved exactly where asked
    save_corpus(out, corpus)
    assert os.listdir(out.parent) == ["corpus"]  # no temp files left behind
    back = load_corpus(out)
    assert isinstance(back.bases, np.memmap) and isinstance(back.offsets, np.memmap)
    assert np.array_equal(back.bases, corpus.bases) and np.array_equal(back.offsets, corpus.offsets)
    assert all(np.array_equal(back[i], corpus[i]) for i in range(len(corpus)))
    # plain numpy agrees on the contents (the format is an ordinary npz)
    with np.load(out) as z:
        assert sorted(z.files) == ["bases", "offsets"] and np.array_equal(z["bases"], corpus.bases)
    # a compressed npz written by someone else still loads (into memory)
    comp = tmp_path / "c.npz"
    np.savez_compressed(comp, bases=corpus.bases, offsets=corpus.offsets)
    assert np.array_equal(load_corpus(comp).bases, corpus.bases)
    # an empty corpus round-trips
    save_corpus(tmp_path / "e.npz", Corpus.from_arrays([]))
    assert len(load_corpus(tmp_path / "e.npz")) == 0


def test_load_corpus_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(InputError, match=re.escape(str(bad))):
        load_corpus(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(InputError, match="not a dnalm corpus"):
        load_corpus(other)
    incons = tmp_path / "incons.npz"
    np.savez(incons, bases=np.zeros(5, np.uint8), offsets=np.array([0, 3], np.int64))
    with pytest.raises(InputError, match="offsets"):
        load_corpus(incons)


def test_save_corpus_failure_leaves_nothing(tmp_path, monkeypatch):
    corpus = Corpus.from_arrays([np.array([0, 1, 2], np.uint8)])

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError):
        save_corpus(tmp_path / "x.npz", corpus)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- which barcodes pretrain


def _fully_labelled_table(tmp_path, n_genera=4, n_species=5, n_specimens=8, seed=0):
    """A BOLD export in which every specimen has a species: its built splits have no pretrain."""
    rng = np.random.default_rng(seed)
    header = ["processid", "order_name", "family_name", "genus_name", "species_name", "nucleotides"]
    lines, k = ["\t".join(header)], 0
    for g in range(n_genera):
        for sp in range(n_species):
            haplos = [rand_dna(rng, 90) for _ in range(3)]
            for _ in range(n_specimens):
                k += 1
                lines.append(f"P{k}\tDiptera\tFam\tGenus{g}\tGenus{g} sp{sp}\t{haplos[int(rng.integers(3))]}")
    path = tmp_path / "bold.tsv"
    path.write_text("\n".join(lines) + "\n")
    return barcodes.convert(path, seed=1)


def test_a_fully_labelled_table_pretrains_on_train_never_on_evaluation_splits(tmp_path):
    table = _fully_labelled_table(tmp_path)
    assert "pretrain" not in set(table["split"]) and {"train", "test", "test_unseen"} <= set(table["split"])
    # the bug: the old default, the pretrain split alone, holds nothing
    assert len(barcode_windows(table, splits=("pretrain",))) == 0
    windows, chosen, why = barcode_corpus(table, "auto", length=660)
    assert chosen == ("pretrain", "train") and "train" in why and "never val, test" in why
    got = [seq.decode(windows[i]) for i in range(len(windows))]
    train = table.loc[table["split"] == "train", "dna_barcode"].tolist()
    assert got == train and len(got) > 0  # every train barcode, in table order, and nothing else
    held_out = set(table.loc[~table["split"].isin(["pretrain", "train"]), "dna_barcode"])
    assert held_out and not held_out & set(got)  # no test / val / unseen specimen's barcode
    # the same through the pipeline's own barcodes.tsv, read as the rule reads it
    write_tsv(table, tmp_path / "barcodes.tsv")
    again, _, _ = barcode_corpus(pd.read_csv(tmp_path / "barcodes.tsv", sep="\t"), "auto", length=660)
    assert np.array_equal(again.bases, windows.bases) and np.array_equal(again.offsets, windows.offsets)


def test_auto_keeps_a_large_pretrain_split_alone_and_adds_train_to_a_small_one():
    def table(n_pretrain, n_train):
        splits = ["pretrain"] * n_pretrain + ["train"] * n_train + ["test"] * 3 + ["key_unseen"] * 2
        return pd.DataFrame({"dna_barcode": [f"ACGT{'A' * i}" for i in range(len(splits))], "split": splits})

    big = table(10, 6)
    windows, chosen, _ = barcode_corpus(big, "auto", length=660)
    assert chosen == ("pretrain",) and len(windows) == 10  # BIOSCAN-5M and the demo: unchanged
    small = table(2, 6)
    windows, chosen, _ = barcode_corpus(small, "auto", length=660)
    assert chosen == ("pretrain", "train") and len(windows) == 8
    # a list is taken as given, and an empty corpus names the config key and the table's splits
    assert barcode_corpus(small, ["test"], length=660)[0].lengths.tolist() == [12, 13, 14]  # rows 8-10
    with pytest.raises(InputError) as err:
        barcode_corpus(small, ["val"], length=660, source="results/data/barcodes.tsv")
    msg = str(err.value)
    assert "results/data/barcodes.tsv" in msg and "config key 'corpus.barcodes.splits'" in msg
    assert "['val']" in msg and "'train': 6" in msg and "'pretrain': 2" in msg


def test_plan_lists_the_split_names_the_barcode_source_can_have():
    # (config time: tests/test_config.py checks every split key against these)
    assert sources.plan({"corpus": {"barcodes": {"splits": "auto"}}}).barcode_splits[:4] == ("pretrain", "train", "val", "test")
    # the simulator gives no specimen to a split whose fraction is 0
    no_pretrain = {"split_seen": {"pretrain": 0}, "split_unseen": {"pretrain": 0}}
    assert "pretrain" not in sources.plan({"data": {"barcodes": {"simulate": no_pretrain}}}).barcode_splits
    real = {"data": {"barcodes": {"path": "bold.tsv"}}, "corpus": {"barcodes": {"splits": ["other_heldout"]}}}
    assert "other_heldout" in sources.plan(real).barcode_splits
