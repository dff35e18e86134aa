"""prepare_genome (genome.py) and the k-mer counter accept and reject the same letters."""

from __future__ import annotations

import string

import pytest

from dnalm import genome, io
from dnalm.fasta import fasta_records
from dnalm.kmers import count_fasta, count_sequences


def test_genome_and_counter_agree_on_every_printable_letter(tmp_path):
    verdicts = {}
    for letter in string.ascii_letters + string.digits + string.punctuation:
        if letter == ">":
            continue  # a header marker, not a sequence letter
        src = tmp_path / "one.fa"
        src.write_text(f">a\nACGTACGT{letter}ACGTACGTACGTACGTACGT\n")
        try:
            fasta_records(src)
            counter = True
        except io.InputError:
            counter = False
        try:
            genome.prepare_genome(src, tmp_path / "out.fa")
            prepared = True
        except io.InputError as exc:
            assert exc.record == "a" and "position 9" in str(exc)
            prepared = False
        verdicts[letter] = (counter, prepared)
    disagree = {c: v for c, v in verdicts.items() if v[0] != v[1]}
    assert not disagree
    accepted = {c for c, v in verdicts.items() if v[0]}
    assert accepted == set("ACGTRYSWKMBDHVNUXacgtryswkmbdhvnuxX.-")


def test_prepare_genome_keeps_codes_removes_gaps_reads_u_as_t(tmp_path):
    src = tmp_path / "in.fa"
    src.write_text(">chr1 desc\nACGT-acgtN\nUX.RYacg\n>chrUn\nAAAA\n>chr2\nGG--TT\n")
    out = tmp_path / "genome.fa"
    summary = genome.prepare_genome(src, out, contigs=[r"chr\d+"])
    assert summary == {"kept": ["chr1", "chr2"], "dropped": 1, "bases": 17 + 4}
    assert out.read_text() == ">chr1\nACGTacgtNTX.RYacg\n>chr2\nGGTT\n"  # U (RNA) written as T
    # the counter sees the same sequence in the source and in the prepared genome
    assert count_fasta(out, 3) == count_fasta(src, 3, records=["chr1", "chr2"])
    assert count_fasta(out, 3) == count_sequences(["ACGTacgtNTX.RYacg", "GGTT"], 3)


@pytest.mark.parametrize(
    "seq,message",
    [
        ("ACGTACGTEFIL", "'E' at position 9 .*protein FASTA"),
        ("MKVAHDSNGTRWMKVAHDSNGTRWYYKMADST", "probably a protein"),
    ],
)
def test_prepare_genome_rejects_proteins(tmp_path, seq, message):
    src = tmp_path / "p.fa"
    src.write_text(f">ok\nACGTACGT\n>pep\n{seq}\n")
    with pytest.raises(io.InputError, match=message) as err:
        genome.prepare_genome(src, tmp_path / "out.fa")
    assert err.value.record == "pep" and str(src) in str(err.value)
    with pytest.raises(io.InputError, match=message.split(" ")[-1]) as err:
        fasta_records(src)
    assert err.value.record == "pep"
    assert not (tmp_path / "out.fa").exists()
