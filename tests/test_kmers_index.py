"""count_kmers shards read through the genome's .fai index: only their own records' bytes.

The index is built by pyfaidx, as the ``index_genome`` rule does. References: the brute-force
counter of conftest.py and counting the whole file by streaming it."""

from __future__ import annotations

import mmap
import os
from collections import Counter

import numpy as np
import pyfaidx
import pytest

from conftest import assert_matches, brute_counts, random_records, write_fasta_lines
from dnalm import fasta, io
from dnalm.fasta import fasta_records
from dnalm.kmers import count_fasta, merge_count_files, read_shard_plan, save_counts, write_shard_plan

pytestmark = pytest.mark.filterwarnings("ignore:Index file .* is older than FASTA file")


def build_index(fasta):
    pyfaidx.Fasta(str(fasta), rebuild=True, build_index=True).close()
    return fasta.with_name(fasta.name + ".fai")


@pytest.fixture
def genome(tmp_path):
    """A plain FASTA of 12 records (some several kb, lowercase, N, IUPAC, gaps, one empty,
    one without a final newline) and its .fai."""
    rng = np.random.default_rng(21)
    recs = random_records(rng, 3, 9000) + random_records(rng, 8, 400) + ["", "acgtNNNNacgtACGTTT"]
    fa = tmp_path / "g.fa"
    write_fasta_lines(fa, recs, width=60)
    fa.write_bytes(fa.read_bytes().rstrip(b"\n"))  # last line without a newline
    return fa, build_index(fa), recs


def summed(per_record, indices):
    out = [Counter() for _ in per_record[0]]
    for i in indices:
        for total, c in zip(out, per_record[i]):
            total.update(c)
    return out


@pytest.mark.parametrize("threads,block_size,k", [(1, 1 << 24, 10), (2, 1000, 10), (3, 4097, 7)])
def test_indexed_shards_equal_brute_force_and_whole_file(tmp_path, genome, threads, block_size, k):
    fa, fai, recs = genome
    per_record = [brute_counts([r], k) for r in recs]
    plan = tmp_path / "plan.tsv"
    write_shard_plan(plan, fasta_records(fa), 3)
    paths = []
    for shard in range(3):
        names = read_shard_plan(plan, shard)
        got = count_fasta(fa, k, records=names, threads=threads, block_size=block_size, index=fai)
        assert_matches(got, summed(per_record, [int(n[1:]) for n in names]))
        paths.append(tmp_path / f"{shard}.npz")
        save_counts(paths[-1], got)
    whole = count_fasta(fa, k, threads=2)  # streamed, no index
    assert merge_count_files(paths) == whole
    assert_matches(whole, summed(per_record, range(len(recs))))
    both = count_fasta(fa, 5, both_strands=True, records=["r0", "r5"], index=fai, threads=threads)
    assert_matches(both, brute_counts([recs[0], recs[5]], 5, True))


def test_shard_reads_only_its_own_records(tmp_path, genome, monkeypatch):
    """Every other record is wrecked after indexing (protein letters in its sequence, a
    duplicate header), which the stream would trip over; the indexed shard neither notices
    nor maps or reads any byte outside its records (plus the header line and the first
    byte of the next header, its boundary checks)."""
    fa, fai, recs = genome
    mine = ["r1", "r4"]
    ranges = fasta.read_index(fa, fai)
    data = bytearray(fa.read_bytes())
    for name, (start, end) in ranges.items():
        if name not in mine:
            seq = data[start:end]
            data[start:end] = bytes(b if b in b"\r\n" else ord("E") for b in seq)
    head = ranges["r7"][0] - len(">r7 some description\n")
    assert data[head : head + 3] == b">r7"
    data[head : head + 3] = b">r1"  # now a duplicate name
    fa.write_bytes(bytes(data))
    with pytest.raises(io.InputError, match="duplicate record name"):
        count_fasta(fa, 6, records=mine)  # the stream reads every header
    mapped, read = [], []  # (lo, hi) byte ranges
    real_mmap, real_pread = mmap.mmap, os.pread

    def spy_mmap(fileno, length, access=None, offset=0):
        mapped.append((offset, offset + length))
        return real_mmap(fileno, length, access=access, offset=offset)

    def spy_pread(fd, n, offset):
        read.append((offset, offset + n))
        return real_pread(fd, n, offset)

    def no_stream(*args, **kwargs):
        raise AssertionError("the indexed path must not stream the file")

    monkeypatch.setattr(fasta.mmap, "mmap", spy_mmap)
    monkeypatch.setattr(fasta.os, "pread", spy_pread)
    monkeypatch.setattr(fasta, "FastaStream", no_stream)
    got = count_fasta(fa, 8, records=mine, threads=2, block_size=3000, index=fai)
    monkeypatch.undo()
    assert_matches(got, brute_counts([recs[1], recs[4]], 8))
    assert mapped and read
    own = [ranges[name] for name in mine]
    for lo, hi in mapped:  # the records' bytes, from the start of their first memory page
        assert any(start - mmap.ALLOCATIONGRANULARITY < lo and hi <= end for start, end in own), (lo, hi, own)
    for lo, hi in read:  # the header line (read back 256 bytes) and the first bytes of the next header
        assert any(start - 256 <= lo and hi <= end + 256 for start, end in own), (lo, hi, own)


def test_index_errors(tmp_path, genome):
    fa, fai, recs = genome
    with pytest.raises(io.InputError, match="not found in the index: nope") as err:
        count_fasta(fa, 4, records=["r0", "nope"], index=fai)
    assert str(fai) in str(err.value)
    # a stale index: the file changed after indexing
    stale = tmp_path / "stale.fa"
    stale.write_bytes(b">a\nACGT\nAC\n>b\nGGGG\n")
    stale_fai = build_index(stale)
    stale.write_bytes(b">a\nACGT\nACGT\n>b\nGGGG\n")  # record a grew
    with pytest.raises(io.InputError, match="does not match") as err:
        count_fasta(stale, 3, records=["a"], index=stale_fai)
    assert err.value.record == "a" and str(stale_fai) in str(err.value)
    with pytest.raises(io.InputError, match="header line of 'b'"):
        count_fasta(stale, 3, records=["b"], index=stale_fai)
    stale.write_bytes(b">a\nAC\n>b\nGGGGGGG\n")  # record a shrank
    with pytest.raises(io.InputError, match="does not match"):
        count_fasta(stale, 3, records=["a"], index=stale_fai)
    long = tmp_path / "long.fa"  # a header line longer than the first look back
    long.write_text(">x\nACGT\n>y " + "d" * 3000 + "\nACGTTGCA\nAC\n")
    assert count_fasta(long, 3, records=["y"], index=build_index(long)) == count_fasta(long, 3, records=["y"])
    bad = tmp_path / "bad.fai"
    bad.write_text("a\tnot-a-number\n")
    with pytest.raises(io.InputError, match="cannot read the .fai index"):
        count_fasta(fa, 3, records=["r0"], index=bad)
    import gzip

    gz = tmp_path / "g.fa.gz"
    gz.write_bytes(gzip.compress(fa.read_bytes()))
    with pytest.raises(io.InputError, match="plain"):
        count_fasta(gz, 3, records=["r0"], index=fai)
    # a bad byte in the shard's own record names file, record and byte
    data = bytearray(fa.read_bytes())
    start, _ = fasta.read_index(fa, fai)["r2"]
    data[start + 5] = ord("J")
    fa.write_bytes(bytes(data))
    with pytest.raises(io.InputError, match=rf"'J' at byte {start + 5} .*protein") as err:
        count_fasta(fa, 3, records=["r2"], index=fai, threads=2)
    assert err.value.record == "r2"
