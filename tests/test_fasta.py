"""FASTA reading and checking (dnalm.fasta): every reader (the k-mer counter, the shard
plan's check, read_fasta, genome preparation) accepts the same files and names the file,
the record and the problem for a bad one."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pytest

from conftest import assert_matches, brute_counts
from dnalm import fasta, genome, io
from dnalm.fasta import fasta_records, read_fasta, sequence_problem, write_fasta
from dnalm.kmers import count_fasta, count_sequences

READERS = {
    "count": lambda p: count_fasta(p, 4),
    "count_threads": lambda p: count_fasta(p, 4, threads=2, block_size=64),
    "records": lambda p: fasta_records(p, block_size=64),
}
ALL_READERS = {
    **READERS,
    "read_fasta": lambda p: list(read_fasta(p, block_size=64)),
    "genome": lambda p: genome.prepare_genome(p, p.with_name("prepared.fa")),
}


def write(path, data: bytes, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def being_read(packed: bytes) -> str:
    """The record being read where a (cut) gzip/bgzip archive ends: the last header in
    what still decompresses, member by member."""
    readable = b""
    while packed:
        member = zlib.decompressobj(wbits=31)
        readable += member.decompress(packed)
        if not member.eof:
            break
        packed = member.unused_data
    return readable[readable.rindex(b"\n>") + 2 :].split(b"\n", 1)[0].decode()


def raises_naming(reader, path, message, record):
    """The reader raises an InputError matching ``message`` that names the file and the
    record, and leaves no output."""
    with pytest.raises(io.InputError, match=message) as err:
        ALL_READERS[reader](path)
    assert str(path) in str(err.value)
    assert err.value.record == record
    if record is not None:
        assert repr(record) in str(err.value)
    assert not path.with_name("prepared.fa").exists()
    return err.value


FILE_CASES = [  # problems of the file, which every reader finds
    (b"", False, "file is empty", None),
    (b"", True, "file is empty", None),
    (b"\n  \n\n", False, "no FASTA records", None),
    (b"hello, world\nthis is text\n", False, "not a FASTA file", None),
    (b"ACGTACGT\n>r1\nACGT\n", True, "not a FASTA file", None),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", False, "not a FASTA file", None),
    (b">r1\nACGT\n>r2\nACGT\n>r1\nAAAA\n", False, "duplicate record name", "r1"),
    (b">r1\nACGT\n>  \nACGT\n", True, "empty name", "#2"),
]
LETTER_CASES = [  # letters, which the readers that check letters find
    (
        b">dna\nACGT\n>sp|P69905|HBA\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSF\n",
        False,
        "protein FASTA",
        "sp|P69905|HBA",
    ),
    (b">r1\nACGT\n>r2\nAC1GT\n", False, "'1' at byte", "r2"),
]


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("data,gz,message,record", FILE_CASES + LETTER_CASES)
def test_bad_fasta(tmp_path, reader, data, gz, message, record):
    path = write(tmp_path / ("in.fa.gz" if gz else "in.fa"), data, gz)
    raises_naming(reader, path, message, record)


@pytest.mark.parametrize("reader", ["read_fasta", "genome"])
@pytest.mark.parametrize("data,gz,message,record", FILE_CASES)
def test_bad_fasta_read_as_records(tmp_path, reader, data, gz, message, record):
    """read_fasta and genome preparation read through the counter's reader: same errors
    (a binary file like the PNG case gave a raw UnicodeDecodeError before)."""
    path = write(tmp_path / ("in.fa.gz" if gz else "in.fa"), data, gz)
    raises_naming(reader, path, message, record)


def _random_bytes(seed, n=4000):
    data = np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()
    assert data[:1] != b">"
    return data


@pytest.mark.parametrize("reader", list(ALL_READERS))
@pytest.mark.parametrize(
    "data,gz,record",
    [
        (_random_bytes(0), False, None),
        (_random_bytes(1), True, None),  # a gzip-compressed binary file
        (b">blob\n" + bytes(range(256)) * 8, False, "blob"),  # binary data after a header line
        (b">ok\nACGT\n>blob\nAC\x00\x01\x02GT\n", True, "blob"),
    ],
)
def test_binary_file_is_not_fasta(tmp_path, reader, data, gz, record):
    """A binary file given as FASTA: 'not a FASTA file' with the path (and the record when
    a header line came first), never a UnicodeDecodeError."""
    path = write(tmp_path / ("in.fa.gz" if gz else "in.fa"), data, gz)
    err = raises_naming(reader, path, "not a FASTA file", record)
    if record is not None:
        assert "binary data (byte 0x00 at " in str(err)


@pytest.mark.parametrize("reader", list(ALL_READERS))
def test_truncated_and_corrupt_gzip(tmp_path, reader):
    rng = np.random.default_rng(0)
    text = "".join(f">r{i}\n" + "".join(rng.choice(list("ACGT"), size=5000)) + "\n" for i in range(20)).encode()
    packed = gzip.compress(text)
    cut = write(tmp_path / "cut.fa.gz", packed[: len(packed) // 2])
    # the record being read where the archive ends: the last header in what still decompresses
    readable = zlib.decompressobj(wbits=31).decompress(packed[: len(packed) // 2])
    record = readable[readable.rindex(b"\n>") + 2 :].split(b"\n", 1)[0].decode()
    assert record not in ("r0", "r19")
    raises_naming(reader, cut, "truncated or corrupt gzip", record)
    bad = bytearray(packed)
    bad[len(bad) // 2 : len(bad) // 2 + 64] = bytes(64)
    corrupt = write(tmp_path / "bad.fa.gz", bytes(bad))
    with pytest.raises(io.InputError, match=str(corrupt)):
        ALL_READERS[reader](corrupt)


@pytest.mark.parametrize("reader", list(ALL_READERS))
def test_bgzf_cut_at_a_block_boundary(tmp_path, reader):
    """Cut after a complete BGZF block, every remaining block decompresses cleanly (plain
    gzip readers see a valid, shorter file): only the missing 28-byte EOF block tells.
    Cut inside a block, the last block is truncated. Both name the record being read."""
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
    assert being_read(cut.read_bytes()) not in ("r0", "r7")
    raises_naming(reader, cut, "end-of-file marker", being_read(cut.read_bytes()))
    inside = write(tmp_path / "inside.fa.gz", packed[: start + raw_len // 2])
    raises_naming(reader, inside, "truncated or corrupt gzip", being_read(inside.read_bytes()))
    assert count_fasta(whole, 3, threads=2) == count_sequences([s for s in text.decode().split("\n")[1::2]], 3)
    assert [name for name, _ in read_fasta(whole)] == [f"r{i}" for i in range(8)]


@pytest.mark.parametrize("gz", [False, True])
def test_protein_spelled_in_nucleotide_codes(tmp_path, gz):
    """A 'DNA' record that is > 10 % IUPAC ambiguity codes (other than N) is a protein whose
    letters all double as nucleotide codes; the shard plan rejects it, naming the record.
    Real DNA with a few such letters, or a long N run, passes."""
    from dnalm.fasta import ambiguity_problem

    peptide = "MKVAHDSNGTRWMKVAHDSNGTRWYYKMADST"  # only letters that are IUPAC codes
    dna = "ACGT" * 50 + "RYKM" + "N" * 500
    path = write(tmp_path / ("p.fa.gz" if gz else "p.fa"), f">dna\n{dna}\n>pep1\n{peptide}\n".encode(), gz)
    with pytest.raises(io.InputError, match="probably a protein") as err:
        fasta_records(path, block_size=16)
    assert err.value.record == "pep1" and str(path) in str(err.value)
    ok = write(tmp_path / "ok.fa", f">dna\n{dna}\n>short\nRYKMACGT\n".encode())
    assert fasta_records(ok) == {"dna": len(dna), "short": 8}  # 8 letters: too few to judge
    assert ambiguity_problem(100, 10) is None and "11 of its 100" in ambiguity_problem(100, 11)


@pytest.mark.parametrize("gz", [False, True])
def test_rna_is_read_as_dna(tmp_path, gz):
    """U (u) is T (t) for every reader: an RNA record is neither 'probably a protein' (it
    was, U counting as an ambiguity code) nor counted with its U breaking every window; the
    prepared genome holds T, so the tokenizer reads it as DNA too."""
    rng = np.random.default_rng(7)
    rna = "".join(rng.choice(list("ACGUacguN"), size=400))
    dna = rna.replace("U", "T").replace("u", "t")
    src = write(tmp_path / ("rna.fa.gz" if gz else "rna.fa"), f">r1 an RNA\n{rna[:150]}\n{rna[150:]}\n".encode(), gz)
    assert sequence_problem(rna) is None
    assert fasta_records(src, block_size=64) == {"r1": 400}
    got = count_fasta(src, 5, threads=2, block_size=64)
    assert_matches(got, brute_counts([dna], 5))
    assert got.n_windows(1) == sum(c in "ACGTacgt" for c in dna) > 300
    assert list(read_fasta(src)) == [("r1", rna)]  # the reader keeps the letters as they are
    out = tmp_path / "genome.fa"
    assert genome.prepare_genome(src, out)["bases"] == 400
    assert "".join(s for _, s in read_fasta(out)) == dna
    assert count_fasta(out, 5) == got


def test_read_fasta_plain_and_gzip(tmp_path):
    text = ">a desc\nACGT\nac\n>b\nNNNN\n"
    (tmp_path / "x.fa").write_text(text)
    with gzip.open(tmp_path / "x.fa.gz", "wt") as fh:
        fh.write(text)
    for name in ("x.fa", "x.fa.gz"):
        assert list(read_fasta(tmp_path / name)) == [("a", "ACGTac"), ("b", "NNNN")]


@pytest.mark.parametrize(
    "content,problem",
    [("", "empty"), ("hello\nworld\n", "not a FASTA"), (">a\nAC\n>a\nGT\n", "duplicate")],
)
def test_read_fasta_errors_name_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "bad.fa"
    path.write_text(content)
    with pytest.raises(io.InputError) as err:
        list(read_fasta(path))
    assert str(path) in str(err.value) and problem in str(err.value)
    if problem == "duplicate":
        assert "'a'" in str(err.value)


def test_truncated_gzip(tmp_path):
    data = gzip.compress((">a\n" + "ACGT" * 5000 + "\n").encode())
    path = tmp_path / "t.fa.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(io.InputError) as err:
        list(read_fasta(path))
    assert str(path) in str(err.value)


def test_fasta_records_edge_cases(tmp_path):
    f = tmp_path / "a.fa"
    f.write_bytes(b"\n\n>x desc\nAC GT\r\nNN-a\n>y\n>z\nA")  # blank lines first, empty record, no final newline
    assert fasta_records(f, block_size=3) == {"x": 7, "y": 0, "z": 1}
    assert count_fasta(f, 2, block_size=3) == count_sequences(["ACGTNNa", "", "A"], 2)
    for block_size in (1, 3, 1 << 20):
        assert list(read_fasta(f, block_size=block_size)) == [("x", "ACGTNN-a"), ("y", ""), ("z", "A")]
    f.write_bytes(b">only-header")
    assert fasta_records(f) == {"only-header": 0}
    assert list(read_fasta(f)) == [("only-header", "")]


def test_write_fasta_removes_what_a_killed_write_left(tmp_path):
    """A killed write of genome.fa leaves its temporary file (as large as the genome); the
    next write of genome.fa removes it, but not the temporaries of other files."""
    out = tmp_path / "genome.fa"
    stale = tmp_path / ".genome.fa.a1b2c3_d.tmp.fa"
    other = tmp_path / ".genome.fa.fai.a1b2c3_d.tmp.fai"  # genome.fa.fai's, being written
    stale.write_text(">half")
    other.write_text("in progress")
    write_fasta(out, [("a", "ACGT" * 30)], width=50)
    assert out.read_text() == ">a\n" + "ACGT" * 12 + "AC\n" + "GT" + "ACGT" * 12 + "\n" + "ACGT" * 5 + "\n"
    assert not stale.exists() and other.read_text() == "in progress"
    assert io.remove_stale_temps(tmp_path / "genome.fa.fai", suffix=".fai") == [other]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genome.fa"]


def test_byte_classes():
    """ACGTU (either case) are bases, U as T; other nucleotide codes break windows;
    whitespace and gaps are skipped; everything else is an error."""
    cls = fasta.BYTE_CLASS
    assert [int(cls[ord(c)]) for c in "ACGTUacgtu"] == [0, 1, 2, 3, 3] * 2
    assert {int(cls[ord(c)]) for c in "RYSWKMBDHVNXryswkmbdhvnx."} == {4}
    assert {int(cls[ord(c)]) for c in " \t\r\n\v\f-"} == {fasta.SKIP}
    assert sum(int(c) != fasta.ERROR for c in cls) == 10 + 25 + 7
