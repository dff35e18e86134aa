"""Bring-your-own barcode tables: BOLD TSV and BIOSCAN-5M CSV layouts, BIOSCAN-5M-style splits."""

from __future__ import annotations

import gzip
import zipfile

import numpy as np
import pandas as pd
import pytest

from dnalm import barcodes, io
from dnalm.simulate import BARCODE_COLUMNS

# BOLD's public TSV export starts with these columns (a subset, in BOLD's order)
BOLD_HEADER = [
    "processid", "sampleid", "recordID", "bin_uri", "phylum_name", "class_name", "order_name",
    "family_name", "subfamily_name", "genus_name", "species_name", "country", "markercode", "nucleotides",
]


def _barcode(rng, n=120):
    return "".join(rng.choice(list("ACGT"), size=n))


def bold_rows(seed=0):
    """3 genera x 4 species, 2-4 haplotypes each, a barcode shared by two species, unlabelled rows."""
    rng = np.random.default_rng(seed)
    rows, k = [], 0

    def add(genus, species, seq, marker="COI-5P"):
        nonlocal k
        k += 1
        rows.append({
            "processid": f"ABC{k:04d}-21", "sampleid": f"S{k}", "recordID": str(1000 + k), "bin_uri": f"BOLD:AA{k:04d}",
            "phylum_name": "Arthropoda", "class_name": "Insecta", "order_name": "Diptera" if genus else "",
            "family_name": "Cecidomyiidae" if genus else "", "subfamily_name": "", "genus_name": genus,
            "species_name": species, "country": "Canada", "markercode": marker, "nucleotides": seq,
        })

    shared = _barcode(rng)
    for g in ("Alpha", "Beta", "Gamma"):
        for s in range(4):
            species = f"{g} sp{s}"
            haplos = [_barcode(rng) for _ in range(int(rng.integers(2, 5)))]
            for _ in range(6):
                add(g, species, haplos[int(rng.integers(len(haplos)))])
    add("Alpha", "Alpha sp0", shared)
    add("Alpha", "Alpha sp1", shared)  # one barcode, two species: they must stay together
    labelled = [r["nucleotides"] for r in rows]
    for i in range(10):
        add("", "", _barcode(rng) if i < 7 else labelled[i])  # 3 unlabelled copies of labelled barcodes
    add("Alpha", "Alpha sp0", "ACGT-ACGT--acgtn" * 5)  # gaps and lowercase are cleaned
    add("Beta", "Beta sp0", "")  # no sequence: dropped
    add("Beta", "Beta sp1", _barcode(rng), marker="ITS")  # another marker: dropped
    return rows


def write_bold(path, rows):
    with open(path, "w") as fh:
        fh.write("\t".join(BOLD_HEADER) + "\n")
        for r in rows:
            fh.write("\t".join(r[c] for c in BOLD_HEADER) + "\n")
    return path


def test_bold_table_gets_bioscan5m_style_splits(tmp_path):
    rows = bold_rows()
    table = barcodes.convert(write_bold(tmp_path / "bold.tsv", rows), seed=3)
    assert list(table.columns) == BARCODE_COLUMNS
    assert len(table) == len(rows) - 2  # the empty barcode and the ITS row are gone
    assert "ACGTACGTACGTN" in table["dna_barcode"].iloc[-1] and set("".join(table["dna_barcode"])) <= set("ACGTN")

    # an identical barcode never straddles two splits (other_heldout is used by nothing)
    used = table[table["split"] != "other_heldout"]
    assert used.groupby("dna_barcode")["split"].nunique().max() == 1
    lab = table[table["species"] != ""]
    seen_sp = set(lab.loc[lab["split"].isin(["train", "val", "test"]), "species"])
    unseen_sp = set(lab.loc[lab["split"].isin(["key_unseen", "val_unseen", "test_unseen"]), "species"])
    assert unseen_sp and not seen_sp & unseen_sp
    # unseen species' genera are seen (open-world genus classification has references)
    train_genera = set(lab.loc[lab["split"] == "train", "genus"])
    assert {s.split()[0] for s in unseen_sp} <= train_genera
    # species that share a barcode stay seen; every seen species has train rows
    assert {"Alpha sp0", "Alpha sp1"} <= seen_sp
    assert seen_sp <= set(lab.loc[lab["split"] == "train", "species"])
    # unlabelled rows: pretrain, or other_heldout when their barcode is also labelled
    unl = table[table["species"] == ""]
    assert unl["split"].value_counts().to_dict() == {"pretrain": 7, "other_heldout": 3}
    assert not (lab["split"] == "pretrain").any()

    again = barcodes.convert(write_bold(tmp_path / "bold2.tsv", rows), seed=3)
    pd.testing.assert_frame_equal(table, again)
    other = barcodes.convert(tmp_path / "bold2.tsv", seed=4)
    assert not other["split"].equals(table["split"])


def test_split_fractions_follow_the_config(tmp_path):
    rng = np.random.default_rng(1)
    rows = [
        {"processid": f"P{i}", "dna_barcode": _barcode(rng, 30), "order": "O", "family": "F",
         "genus": f"G{i % 5}", "species": f"G{i % 5} s{i % 20}"}
        for i in range(2000)
    ]
    split, summary = barcodes.build_splits(
        pd.DataFrame(rows), seed=0, unseen_fraction=0.5, seen={"train": 0.6, "val": 0.2, "test": 0.2}
    )
    counts = pd.Series(split).value_counts(normalize=True)
    assert summary["species_unseen"] == 10 and summary["species_seen"] == 10
    assert counts["train"] == pytest.approx(0.5 * 0.6, abs=0.03)
    assert counts["val"] == pytest.approx(0.5 * 0.2, abs=0.03)
    assert counts["key_unseen"] == pytest.approx(0.5 * 0.7, abs=0.03)
    with pytest.raises(ValueError, match="'test' needs a fraction"):
        barcodes.build_splits(pd.DataFrame(rows), seed=0, seen={"train": 1.0})


def test_bioscan5m_csv_keeps_its_splits_and_reads_from_gzip(tmp_path):
    df = pd.DataFrame({
        "processid": ["BIOUG1-21", "BIOUG2-21", "BIOUG3-21"],
        "sampleid": ["a", "b", "c"],
        "taxon": ["Diptera", "Aedes vexans", "Aedes"],
        "phylum": ["Arthropoda"] * 3,
        "class": ["Insecta"] * 3,
        "order": ["Diptera"] * 3,
        "family": ["", "Culicidae", "Culicidae"],
        "subfamily": ["", "", ""],
        "genus": ["", "Aedes", "Aedes"],
        "species": ["", "Aedes vexans", ""],
        "dna_bin": ["BOLD:A", "BOLD:B", "BOLD:C"],
        "dna_barcode": ["ACGT" * 200, "AACC" * 10, "GGTT" * 10],
        "split": ["pretrain", "train", "other_heldout"],
    })
    path = tmp_path / "meta.csv.gz"
    with gzip.open(path, "wt") as fh:
        df.to_csv(fh, index=False)
    table = barcodes.convert(path, max_length=660)
    assert table["split"].tolist() == ["pretrain", "train", "other_heldout"]
    assert table["dna_barcode"].str.len().tolist() == [660, 40, 40]
    assert table.loc[1, ["order", "family", "genus", "species"]].tolist() == ["Diptera", "Culicidae", "Aedes", "Aedes vexans"]
    # the converted table reads back through the pipeline's own reader, and again as a source
    io.write_tsv(table, tmp_path / "barcodes.tsv")
    from dnalm import datasets

    assert len(datasets.read_barcodes(tmp_path / "barcodes.tsv")) == 3
    pd.testing.assert_frame_equal(barcodes.convert(tmp_path / "barcodes.tsv"), table)


@pytest.mark.parametrize(
    "mutate,words,record",
    [
        (lambda r: r[2].update(nucleotides="ACGTXACGT"), "'X', which is not a nucleotide", "ABC0003-21"),
        (lambda r: r[4].update(processid="ABC0001-21"), "processid repeated", "ABC0001-21"),
    ],
)
def test_bad_records_are_named(tmp_path, mutate, words, record):
    rows = bold_rows()
    mutate(rows)
    path = write_bold(tmp_path / "bad.tsv", rows)
    with pytest.raises(io.InputError) as err:
        barcodes.convert(path)
    msg = str(err.value)
    assert str(path) in msg and words in msg and repr(record) in msg


def test_unknown_layouts_and_archives_are_explained(tmp_path):
    (tmp_path / "x.tsv").write_text("id\tseq\n1\tACGT\n")
    with pytest.raises(io.InputError, match="not a barcode table I know.*nucleotides"):
        barcodes.convert(tmp_path / "x.tsv")
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        zf.writestr("inner.tsv", "a\tb\n")
    with pytest.raises(io.InputError, match="zip archive.*data.barcodes.member"):
        barcodes.convert(tmp_path / "x.zip")


def test_missing_ranks_are_missing_never_a_class(tmp_path, caplog):
    """Empty fields, blanks and placeholders ('None', 'NA', 'not_classified') are all missing
    (""), counted in the log; a species 'None' is unlabelled (pretrain), not a species."""
    rows = bold_rows()
    placeholders = {"genus_name": ["", "  ", "None", " NA ", "n/a", "null"], "species_name": ["None", "not_classified", "nan"]}
    labelled = [r for r in rows if r["species_name"] and r["markercode"] == "COI-5P" and r["nucleotides"]]
    for r, value in zip(labelled[:6], placeholders["genus_name"]):
        r["genus_name"] = value
    for r, value in zip(labelled[6:9], placeholders["species_name"]):
        r["species_name"] = value
    labelled[9]["family_name"] = "NULL"
    with caplog.at_level("INFO", logger="dnalm.barcodes"):
        table = barcodes.convert(write_bold(tmp_path / "bold.tsv", rows), seed=3)
    for rank in ("order", "family", "genus", "species"):
        values = set(table[rank])
        assert not values & {"None", "NA", "n/a", "null", "NULL", "not_classified", "nan", "  "}, (rank, values)
    by_id = table.set_index("processid")
    assert (by_id.loc[[r["processid"] for r in labelled[:6]], "genus"] == "").all()
    assert (by_id.loc[[r["processid"] for r in labelled[6:9]], "species"] == "").all()
    assert by_id.loc[labelled[9]["processid"], "family"] == ""
    # unlabelled rows: 10 from bold_rows + the 3 placeholder species; none of them trains or tests a species
    unlabelled = table[table["species"] == ""]
    assert len(unlabelled) == 13 and set(unlabelled["split"]) <= {"pretrain", "other_heldout"}
    n_genus = 10 + 6  # bold_rows' unlabelled rows have no genus either
    assert (table["genus"] == "").sum() == n_genus
    assert f"genus {n_genus}, species 13" in caplog.text and "family 11" in caplog.text, caplog.text


def test_unknown_split_names_are_an_error(tmp_path):
    df = pd.DataFrame({
        "processid": ["P1", "P2", "P3", "P4"], "dna_barcode": ["ACGT" * 10] * 4, "order": ["Diptera"] * 4,
        "family": ["Culicidae"] * 4, "genus": ["Aedes"] * 4, "species": ["Aedes vexans"] * 4,
        "split": ["train", "training", "test", "training"],
    })
    df.to_csv(tmp_path / "meta.csv", index=False)
    with pytest.raises(io.InputError) as err:
        barcodes.convert(tmp_path / "meta.csv")
    msg = str(err.value)
    assert str(tmp_path / "meta.csv") in msg and "unknown split name(s) 'training' (2 rows)" in msg, msg
    assert "record 'P2'" in msg and "known: pretrain, train, val, test, key_unseen, val_unseen, test_unseen, other_heldout" in msg
    assert "data.barcodes.splits.rebuild" in msg
    # rebuilding the splits ignores the file's names
    table = barcodes.convert(tmp_path / "meta.csv", rebuild_splits=True)
    assert set(table["split"]) <= {"train", "test", "val"}
