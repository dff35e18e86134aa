"""k-mer counting against a brute-force dictionary counter over every substring."""

from __future__ import annotations

import gzip
import itertools
from collections import Counter

import numpy as np
import pytest

from dnalm import io
from dnalm.seq import encode, kmer_codes
from dnalm.kmers import (
    _window_codes,
    KmerCounts,
    codes_to_strings,
    count_fasta,
    count_sequences,
    fasta_lengths,
    load_counts,
    merge_count_files,
    reverse_complement_codes,
    save_counts,
    shard_records,
    strings_to_codes,
)

RC = str.maketrans("ACGT", "TGCA")


def brute_counts(seqs, k_max, both_strands=False):
    """Reference: a dict per n over every substring of every record (and its rev-comp)."""
    out = [Counter() for _ in range(k_max)]
    for s in seqs:
        s = s.replace("-", "").upper()
        strands = [s, s.translate(RC)[::-1]] if both_strands else [s]
        for t in strands:
            for n in range(1, k_max + 1):
                for i in range(len(t) - n + 1):
                    w = t[i : i + n]
                    if set(w) <= set("ACGT"):
                        out[n - 1][w] += 1
    return out


def assert_matches(counts: KmerCounts, ref):
    for n in range(1, counts.k_max + 1):
        dense = counts.counts[n - 1]
        nz = np.flatnonzero(dense)
        got = dict(zip(codes_to_strings(nz, n), dense[nz].tolist()))
        assert got == dict(ref[n - 1]), f"n={n}"
        assert counts.n_windows(n) == sum(ref[n - 1].values())


def random_records(rng, n_records, max_len):
    """Random DNA with lowercase runs, N runs, other IUPAC letters, gaps; some records tiny."""
    letters = np.array(list("ACGTACGTACGTACGTacgtNNRYW-"))
    recs = []
    for _ in range(n_records):
        length = int(rng.integers(0, max_len))
        recs.append("".join(rng.choice(letters, size=length)))
    return recs


@pytest.fixture(scope="module")
def records():
    rng = np.random.default_rng(1)
    recs = random_records(rng, 40, 60) + ["", "A", "AC", "acg", "NNNN", "ACGTN", "GATTACA" * 5]
    return recs


@pytest.mark.parametrize("both_strands", [False, True])
@pytest.mark.parametrize("k_max", [1, 3, 5])
def test_count_sequences_matches_brute_force(records, k_max, both_strands):
    got = count_sequences(records, k_max, both_strands)
    assert got.k_max == k_max and got.both_strands == both_strands
    assert_matches(got, brute_counts(records, k_max, both_strands))


def test_hand_example():
    c = count_sequences(["ACGnA", "TT"], 2)
    # 1-mers: A C G A T T ; 2-mers: AC CG TT (windows with 'n' skipped, no cross-record AT)
    assert c.counts[0].tolist() == [2, 1, 1, 2]
    assert c.count("AC") == c.count("CG") == c.count("TT") == 1
    assert c.n_windows(2) == 3
    assert c.count("GA") == 0 and c.count("AT") == 0


def write_fasta_lines(path, recs, width=13, gz=False):
    text = "".join(
        f">r{i} some description\n" + "".join(s[j : j + width] + "\n" for j in range(0, len(s), width))
        for i, s in enumerate(recs)
    )
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)


@pytest.mark.parametrize("chunk_size", [1, 2, 7, 1 << 24])
def test_count_fasta_chunks_equal_whole(tmp_path, records, chunk_size):
    """Long records split into tiny chunks: the k_max-1 carry must neither lose nor double windows."""
    rng = np.random.default_rng(2)
    long_recs = random_records(rng, 3, 400) + records[:10]
    fa = tmp_path / "x.fa"
    write_fasta_lines(fa, long_recs)
    got = count_fasta(fa, 4, chunk_size=chunk_size)
    assert_matches(got, brute_counts(long_recs, 4))
    assert got == count_sequences(long_recs, 4)


def test_count_fasta_gzip_both_strands_and_records(tmp_path, records):
    fa = tmp_path / "x.fa.gz"
    write_fasta_lines(fa, records, gz=True)
    assert_matches(count_fasta(fa, 3, both_strands=True, chunk_size=5), brute_counts(records, 3, True))
    subset = ["r3", "r0", "r7"]
    got = count_fasta(fa, 3, records=subset)
    assert_matches(got, brute_counts([records[0], records[3], records[7]], 3))
    empty = count_fasta(fa, 3, records=[])
    assert empty == KmerCounts.zeros(3) and empty.n_windows(1) == 0
    with pytest.raises(io.InputError, match="nope"):
        count_fasta(fa, 3, records=["r1", "nope"])


def test_shards_sum_to_whole(tmp_path):
    rng = np.random.default_rng(3)
    recs = random_records(rng, 25, 300)
    fa = tmp_path / "g.fa"
    write_fasta_lines(fa, recs, width=60)
    lengths = fasta_lengths(fa)
    assert lengths == {f"r{i}": len(s) for i, s in enumerate(recs)}
    shards = shard_records(lengths, 4)
    assert sorted(itertools.chain(*shards)) == sorted(lengths)
    paths = []
    for i, shard in enumerate(shards):
        p = tmp_path / f"shard{i}.npz"
        save_counts(p, count_fasta(fa, 5, both_strands=True, records=shard, chunk_size=50))
        paths.append(p)
    whole = count_fasta(fa, 5, both_strands=True)
    assert merge_count_files(paths) == whole
    assert_matches(whole, brute_counts(recs, 5, True))


def test_fasta_lengths_gzip_fallback_and_unequal_lines(tmp_path):
    recs = ["ACGTACGTAC", "AC", "GGGGGGG"]
    gz = tmp_path / "a.fa.gz"
    write_fasta_lines(gz, recs, width=4, gz=True)  # plain gzip: pyfaidx refuses, scan used
    assert fasta_lengths(gz) == {"r0": 10, "r1": 2, "r2": 7}
    from Bio import bgzf

    bgz = tmp_path / "c.fa.gz"
    with bgzf.BgzfWriter(str(bgz), "wb") as w:
        w.write(b">p desc\nACGTA\nAC\n>q\nAAAA\n")
    assert fasta_lengths(bgz) == {"p": 7, "q": 4}
    assert (tmp_path / "c.fa.gz.fai").exists()  # indexed by pyfaidx, not scanned
    ragged = tmp_path / "b.fa"
    ragged.write_text(">x\nACG\nACGTT\nA\n>y\nAA\n")  # unequal line lengths: not indexable
    assert fasta_lengths(ragged) == {"x": 9, "y": 2}


def test_shard_records_balanced_and_deterministic():
    lengths = {"a": 100, "b": 90, "c": 10, "d": 50, "e": 40, "f": 5}
    shards = shard_records(lengths, 2)
    # longest first: a->0, b->1, d->1 (90<100), e->0 (140 vs ... ) -> hand-traced LPT
    # a:0(100) b:1(90) d:1(140) e:0(140) c:0(150) f:1(145)
    assert shards == [["a", "c", "e"], ["b", "d", "f"]]
    assert shard_records(lengths, 2) == shards
    many = shard_records({"x": 3, "y": 1}, 4)
    assert many == [["x"], ["y"], [], []]
    assert shard_records({}, 2) == [[], []]
    with pytest.raises(ValueError):
        shard_records(lengths, 0)


def test_save_load_roundtrip_and_errors(tmp_path):
    c = count_sequences(["ACGTTGCA", "GGN"], 4, both_strands=True)
    p = tmp_path / "sub" / "c.counts"  # no .npz suffix: must still land at this exact path
    save_counts(p, c)
    assert p.exists() and list(p.parent.iterdir()) == [p]
    back = load_counts(p)
    assert back == c and back.both_strands and back.k_max == 4
    assert all(a.dtype == np.int64 for a in back.counts)
    bad = tmp_path / "bad.npz"
    np.savez(bad, counts_1=np.zeros(4))
    with pytest.raises(io.InputError, match="bad.npz"):
        load_counts(bad)
    for junk in (b"not a zip at all", b"PK\x03\x04truncated"):
        (tmp_path / "junk.npz").write_bytes(junk)
        with pytest.raises(io.InputError, match="junk.npz"):
            load_counts(tmp_path / "junk.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(io.InputError, match="single.npy"):
        load_counts(tmp_path / "single.npy")
    other = tmp_path / "o.npz"
    save_counts(other, count_sequences(["ACGT"], 4, both_strands=False))
    with pytest.raises(io.InputError, match="both_strands"):
        merge_count_files([p, other])
    with pytest.raises(ValueError):
        merge_count_files([])


@pytest.mark.parametrize("k", [0, 13, -1, 2.5, True])
def test_k_max_out_of_range(k):
    with pytest.raises(ValueError, match="k_max"):
        count_sequences(["ACGT"], k)


def test_add_checks_settings():
    a = count_sequences(["ACGT"], 3)
    assert (a + a).count("CGT") == 2
    with pytest.raises(ValueError):
        a + count_sequences(["ACGT"], 2)
    with pytest.raises(ValueError):
        a + count_sequences(["ACGT"], 3, both_strands=True)


def test_code_helpers():
    for n in (1, 3, 4):
        kmers = ["".join(p) for p in itertools.product("ACGT", repeat=n)]
        assert list(codes_to_strings(np.arange(4**n), n)) == kmers
        assert strings_to_codes(kmers, n).tolist() == list(range(4**n))
        rc = reverse_complement_codes(n)
        assert [kmers[i] for i in rc] == [k.translate(RC)[::-1] for k in kmers]
    with pytest.raises(ValueError):
        strings_to_codes(["ACN"], 3)


@pytest.mark.parametrize("k", [1, 2, 6, 12])
def test_window_codes_equal_seq_kmer_codes(k):
    codes = encode("".join(np.random.default_rng(k).choice(list("ACGTACGTNa"), size=500)))
    ids, dirty = _window_codes(codes, k)
    ref_ids, ref_valid = kmer_codes(codes, k)
    assert (dirty == ~ref_valid).all()
    assert (ids[~dirty] == ref_ids[ref_valid]).all()
    assert _window_codes(codes[: k - 1], k)[0].size == 0


def test_long_n_runs_k8_small_chunks(tmp_path):
    rng = np.random.default_rng(9)
    parts = [
        "".join(rng.choice(list("ACGT"), size=int(rng.integers(1, 40)))) + "N" * int(rng.integers(1, 30))
        for _ in range(40)
    ]
    recs = ["".join(parts[:20]), "".join(parts[20:]).lower()]
    fa = tmp_path / "n.fa"
    write_fasta_lines(fa, recs, width=70)
    assert_matches(count_fasta(fa, 8, chunk_size=11), brute_counts(recs, 8))
