"""Bad input to k-mer counting: clear InputErrors naming file and record; nothing half-written."""

from __future__ import annotations

import gzip
import zlib

from pathlib import Path

import numpy as np
import pytest

from dnalm import io
from dnalm.kmers import count_fasta, count_sequences, fasta_records, save_counts, write_shard_plan

READERS = {
    "count": lambda p: count_fasta(p, 4),
    "count_threads": lambda p: count_fasta(p, 4, threads=2, block_size=64),
    "records": lambda p: fasta_records(p, block_size=64),
}


def write(path, data: bytes, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize(
    "data,gz,message,record",
    [
        (b"", False, "file is empty", None),
        (b"", True, "file is empty", None),
        (b"\n  \n\n", False, "no FASTA records", None),
        (b"hello, world\nthis is text\n", False, "not a FASTA file", None),
        (b"ACGTACGT\n>r1\nACGT\n", True, "not a FASTA file", None),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", False, "not a FASTA file", None),
        (
            b">dna\nACGT\n>sp|P69905|HBA\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSF\n",
            False,
            "protein FASTA",
            "sp|P69905|HBA",
        ),
        (b">r1\nACGT\n>r2\nAC1GT\n", False, "'1' at byte", "r2"),
        (b">r1\nACGT\n>r2\nACGT\n>r1\nAAAA\n", False, "duplicate record name", "r1"),
        (b">r1\nACGT\n>  \nACGT\n", True, "empty name", "#2"),
    ],
)
def test_bad_fasta(tmp_path, reader, data, gz, message, record):
    path = write(tmp_path / ("in.fa.gz" if gz else "in.fa"), data, gz)
    with pytest.raises(io.InputError, match=message) as err:
        READERS[reader](path)
    assert str(path) in str(err.value)
    assert err.value.record == record
    if record is not None:
        assert repr(record) in str(err.value)


@pytest.mark.parametrize("reader", list(READERS))
def test_truncated_and_corrupt_gzip(tmp_path, reader):
    rng = np.random.default_rng(0)
    text = "".join(f">r{i}\n" + "".join(rng.choice(list("ACGT"), size=5000)) + "\n" for i in range(20)).encode()
    packed = gzip.compress(text)
    cut = write(tmp_path / "cut.fa.gz", packed[: len(packed) // 2])
    # the record being read where the archive ends: the last header in what still decompresses
    readable = zlib.decompressobj(wbits=31).decompress(packed[: len(packed) // 2])
    being_read = readable[readable.rindex(b"\n>") + 2 :].split(b"\n", 1)[0].decode()
    assert being_read not in ("r0", "r19")
    with pytest.raises(io.InputError, match="truncated or corrupt gzip") as err:
        READERS[reader](cut)
    assert str(cut) in str(err.value)
    assert err.value.record == being_read and repr(being_read) in str(err.value)
    bad = bytearray(packed)
    bad[len(bad) // 2 : len(bad) // 2 + 64] = bytes(64)
    corrupt = write(tmp_path / "bad.fa.gz", bytes(bad))
    with pytest.raises(io.InputError, match=str(corrupt)):
        READERS[reader](corrupt)


@pytest.mark.parametrize("reader", list(READERS))
def test_bgzf_cut_at_a_block_boundary(tmp_path, reader):
    """Cut after a complete BGZF block, every remaining block decompresses cleanly (plain
    gzip readers see a valid, shorter file): only the missing 28-byte EOF block tells."""
    from Bio import bgzf

    rng = np.random.default_rng(1)
    text = "".join(f">r{i}\n" + "".join(rng.choice(list("ACGT"), size=30000)) + "\n" for i in range(8)).encode()
    whole = tmp_path / "whole.fa.gz"
    with bgzf.BgzfWriter(str(whole), "wb") as w:
        w.write(text)
    packed = whole.read_bytes()
    assert packed.endswith(bgzf._bgzf_eof)
    with open(whole, "rb") as fh:
        blocks = list(bgzf.BgzfBlocks(fh))  # (start, raw length, data start, data length)
    assert len(blocks) >= 4
    start, raw_len, _, _ = blocks[len(blocks) // 2]
    cut = write(tmp_path / "cut.fa.gz", packed[: start + raw_len])
    assert 0 < len(gzip.decompress(cut.read_bytes())) < len(text)  # silently shorter for gzip itself
    with pytest.raises(io.InputError, match="end-of-file marker") as err:
        READERS[reader](cut)
    assert str(cut) in str(err.value)
    assert count_fasta(whole, 3, threads=2) == count_sequences([s for s in text.decode().split("\n")[1::2]], 3)


def test_protein_error_names_record_in_a_shard_only_when_counted(tmp_path):
    path = write(tmp_path / "m.fa", b">dna\nACGTN\n>prot\nMKVLE\n")
    assert count_fasta(path, 2, records=["dna"]).n_windows(2) == 3  # 'prot' not read
    with pytest.raises(io.InputError, match="'prot'"):
        count_fasta(path, 2, records=["prot"])
    with pytest.raises(io.InputError, match="'prot'"):
        fasta_records(path)  # the shard plan checks every record


@pytest.mark.parametrize("gz", [False, True])
def test_protein_spelled_in_nucleotide_codes(tmp_path, gz):
    """A 'DNA' record that is > 10 % IUPAC ambiguity codes (other than N) is a protein whose
    letters all double as nucleotide codes; the shard plan rejects it, naming the record.
    Real DNA with a few such letters, or a long N run, passes."""
    from dnalm.kmers import ambiguity_problem

    peptide = "MKVAHDSNGTRWMKVAHDSNGTRWYYKMADST"  # only letters that are IUPAC codes
    dna = "ACGT" * 50 + "RYKM" + "N" * 500
    path = write(tmp_path / ("p.fa.gz" if gz else "p.fa"), f">dna\n{dna}\n>pep1\n{peptide}\n".encode(), gz)
    with pytest.raises(io.InputError, match="probably a protein") as err:
        fasta_records(path, block_size=16)
    assert err.value.record == "pep1" and str(path) in str(err.value)
    ok = write(tmp_path / "ok.fa", f">dna\n{dna}\n>short\nRYKMACGT\n".encode())
    assert fasta_records(ok) == {"dna": len(dna), "short": 8}  # 8 letters: too few to judge
    assert ambiguity_problem(100, 10) is None and "11 of its 100" in ambiguity_problem(100, 11)


@pytest.mark.parametrize("k", [0, 13, -1, 2.5, True, "6"])
def test_k_max_out_of_range(tmp_path, k):
    path = write(tmp_path / "ok.fa", b">a\nACGT\n")
    with pytest.raises(ValueError, match="k_max"):
        count_sequences(["ACGT"], k)
    with pytest.raises(ValueError, match="k_max"):
        count_fasta(path, k)
    with pytest.raises(ValueError, match="threads"):
        count_fasta(path, 3, threads=0)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        count_fasta(tmp_path / "absent.fa", 3)


def test_nothing_half_written(tmp_path, monkeypatch):
    """A failing write leaves neither the output nor a temporary file behind."""
    out = tmp_path / "out"
    counts = count_sequences(["ACGTACGT"], 3)

    def boom(fh, **arrays):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        save_counts(out / "c.npz", counts)
    assert list(out.iterdir()) == []
    monkeypatch.undo()
    # the shard plan: the table is half written when the disk fills up
    import pandas as pd

    real_to_csv = pd.DataFrame.to_csv

    def to_csv_then_fail(self, path, *args, **kwargs):
        real_to_csv(self.head(1), path, *args, **kwargs)
        assert Path(path).exists() and Path(path).parent == out  # a temporary file next to the target
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_shard_plan(out / "plan.tsv", {"a": 3, "b": 4}, 2)
    assert list(out.iterdir()) == []
