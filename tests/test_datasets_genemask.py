"""GeneMask's few-shot task files (space-separated overlapping 6-mers) as task tables.

The real files are read from ../shared/data/genemask/ (see its PROVENANCE.md); those tests
skip when the folder is absent. The files are never copied into the project.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dnalm import datasets, download, io

ROOT = Path(__file__).resolve().parents[1]
GENEMASK = ROOT.parent / "shared" / "data" / "genemask"
DATA = GENEMASK / "Data-B_fewshot-task-datasets"
needs_shared = pytest.mark.skipif(not DATA.is_dir(), reason=f"real GeneMask files not present ({DATA})")

# task -> (few-shot train file, test file, bp per sequence, classes, rows per class per shot)
TASKS = {
    "prom-core": ("Prom-core/10/train.tsv", "Prom-core/test.tsv", 70, 2, 1),
    "splice-40": ("Splice-40/10/train_splice40_10.tsv", "Splice-40/test.tsv", 40, 3, 10),
    "prom-300": ("Prom-300/10/train.tsv", None, 300, 2, 1),
    "cohn-enh": ("Cohn-enh/10/train.tsv", None, 500, 2, 1),
}


def test_kmers_to_sequence_checks_overlaps():
    assert datasets.kmers_to_sequence("ACGTAC CGTACG GTACGT") == "ACGTACGT"
    assert datasets.kmers_to_sequence("ACG") == "ACG"
    with pytest.raises(io.InputError) as err:
        datasets.kmers_to_sequence("ACGTAC CGTACG TTACGT", "f.tsv", "line 7")
    msg = str(err.value)
    assert "f.tsv" in msg and "line 7" in msg and "'CGTACG' then 'TTACGT'" in msg and "k-mers 2 and 3" in msg
    with pytest.raises(io.InputError, match="has 5 letters, the first has 6"):
        datasets.kmers_to_sequence("ACGTAC CGTAC")


def test_plain_task_tables_and_errors(tmp_path):
    (tmp_path / "train.csv").write_text("id,sequence,label\na,ACGTNN,pos\nb,acgt,neg\n")
    (tmp_path / "test.csv").write_text("id,sequence,label\nc,GGCC,pos\n")
    train, test = datasets.convert_task(tmp_path / "train.csv", tmp_path / "test.csv", "t")
    assert train.to_dict("list") == {"id": ["a", "b"], "sequence": ["ACGTNN", "acgt"], "label": ["pos", "neg"]}
    (tmp_path / "bad.csv").write_text("id,sequence,label\nd,GG1C,pos\n")
    with pytest.raises(io.InputError, match=r"bad.csv, record 'line 2': sequence contains '1'"):
        datasets.convert_task(tmp_path / "train.csv", tmp_path / "bad.csv", "t")
    (tmp_path / "new.csv").write_text("id,sequence,label\ne,GGCC,other\n")
    with pytest.raises(io.InputError, match=r"label\(s\) \['other'\] never occur in the train file"):
        datasets.convert_task(tmp_path / "train.csv", tmp_path / "new.csv", "t")
    (tmp_path / "lfs.tsv").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    with pytest.raises(io.InputError, match="Git LFS pointer"):
        datasets.read_task_file(tmp_path / "lfs.tsv")


@needs_shared
def test_git_blob_hashes_match_provenance():
    provenance = (GENEMASK / "PROVENANCE.md").read_text()
    for rel in ("Prom-core/test.tsv", "Splice-40/10/train_splice40_10.tsv"):
        blob = download.file_checksums(DATA / rel, ("git_sha1",))["git_sha1"]
        assert f"| Data-B_fewshot-task-datasets/{rel} |" in provenance and blob in provenance


@needs_shared
@pytest.mark.parametrize("task", sorted(TASKS))
def test_real_genemask_files_convert_to_task_tables(task, tmp_path):
    train_rel, test_rel, bp, n_classes, per_shot = TASKS[task]
    test_rel = test_rel or train_rel.replace("/10/", "/50/")  # no test file copied: any other set
    train, test = datasets.convert_task(DATA / train_rel, DATA / test_rel, task, "genemask")
    assert list(train.columns) == ["id", "sequence", "label"]
    assert train["sequence"].str.len().eq(bp).all() and test["sequence"].str.len().eq(bp).all()
    assert set(train["sequence"].str.cat()) <= set("ACGTN")
    assert sorted(train["label"].unique()) == list(range(n_classes))
    assert (train["label"].value_counts() == 10 * per_shot).all()  # the "10" file: 10 (x10) per class
    # the bases rebuild exactly the 6-mers of the file
    raw = pd.read_csv(DATA / train_rel, sep="\t", dtype=str)
    assert " ".join(train["sequence"].iloc[0][i : i + 6] for i in range(bp - 5)) == raw["sequence"].iloc[0]
    # written and read back through the pipeline's reader
    io.write_tsv(train, tmp_path / "train.tsv")
    io.write_tsv(test, tmp_path / "test.tsv")
    ids, seqs = datasets.dataset_sequences([tmp_path / "train.tsv", tmp_path / "test.tsv"], task)
    assert len(ids) == len(train) + len(test) and seqs[0] == train["sequence"].iloc[0]


@needs_shared
def test_a_corrupted_real_file_names_the_line(tmp_path):
    lines = (DATA / "Prom-core/10/train.tsv").read_text().splitlines()
    kmers = lines[5].split("\t")[0].strip('"').split()
    kmers[10] = kmers[10][:-1] + ("A" if kmers[10][-1] != "A" else "C")
    lines[5] = '"' + " ".join(kmers) + '"\t' + lines[5].split("\t")[1]
    bad = tmp_path / "train.tsv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(io.InputError) as err:
        datasets.read_task_file(bad)
    msg = str(err.value)
    assert str(bad) in msg and "line 6" in msg and "k-mers 11 and 12 do not overlap" in msg


@needs_shared
def test_splice40_dev_test_overlap_is_warned_with_its_count(caplog):
    """Splice-40's full-dataset/dev.tsv repeats sequences of test.tsv (PROVENANCE.md: 2,699
    shared sequences): converting them as a train/test pair keeps the rows and warns."""
    import logging

    dev, test = DATA / "Splice-40/full-dataset/dev.tsv", DATA / "Splice-40/test.tsv"
    # independent count on the raw files: identical 6-mer strings <=> identical bases
    raw_dev = pd.read_csv(dev, sep="\t", dtype=str)["sequence"].str.strip()
    raw_test = pd.read_csv(test, sep="\t", dtype=str)["sequence"].str.strip()
    shared = raw_test.isin(set(raw_dev))
    rows, distinct = int(shared.sum()), raw_test[shared].nunique()
    assert distinct == 2699 and rows == 2700  # one dev sequence occurs twice in test
    with caplog.at_level(logging.WARNING, logger="dnalm.datasets"):
        train_t, test_t = datasets.convert_task(dev, test, "splice-40", "genemask")
    assert len(train_t) == len(raw_dev) and len(test_t) == len(raw_test)  # logged, not removed
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "dnalm.datasets"]
    assert len(warned) == 1
    message = warned[0].getMessage()
    assert message.startswith(f"splice-40: {rows} test row(s) ({distinct} distinct sequence(s)) also occur")
    assert str(dev) in message
    assert test_t["sequence"].isin(set(train_t["sequence"])).sum() == rows  # the converted bases agree


def test_read_barcodes_reads_only_the_columns_asked_for(tmp_path):
    path = tmp_path / "barcodes.tsv"
    header = "processid\tdna_barcode\torder\tfamily\tgenus\tspecies\tsplit\n"
    path.write_text(header + "p1\tACGT\tO\tF\tG1\tS1\ttrain\np2\tNNAC\tO\tF\tG2\t\ttest\n")
    full = datasets.read_barcodes(path)
    assert list(full.columns) == list(datasets.BARCODE_COLUMNS) and full["species"].tolist() == ["S1", ""]
    labels = datasets.read_barcodes(path, columns=["processid", "species", "split"])
    assert list(labels.columns) == ["processid", "species", "split"]
    pd.testing.assert_frame_equal(labels, full[["processid", "species", "split"]])
    (tmp_path / "bad.tsv").write_text("processid\tspecies\tsplit\np1\tS1\ttrain\n")
    with pytest.raises(io.InputError, match=r"bad.tsv.*missing column\(s\) \['dna_barcode'"):
        datasets.read_barcodes(tmp_path / "bad.tsv", columns=["processid", "species", "split"])
