"""k-mer counting against a brute-force dictionary counter over every substring (conftest.py).

Bad-input tests are in test_kmers_errors.py and test_fasta.py, the comparison with KMC in
test_kmers_kmc.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conftest import RC, assert_matches, brute_counts, random_records, write_fasta_lines
from dnalm import _counter, io
from dnalm.fasta import fasta_records
from dnalm.kmers import (
    KmerCounts,
    codes_to_strings,
    count_fasta,
    count_sequences,
    load_counts,
    merge_count_files,
    read_shard_plan,
    reverse_complement_codes,
    save_counts,
    shard_records,
    strings_to_codes,
    write_shard_plan,
)


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


@pytest.fixture(scope="module")
def long_records():
    """Records of several kb (so that threads cut inside them) plus the short ones."""
    rng = np.random.default_rng(2)
    recs = random_records(rng, 4, 12000) + random_records(rng, 30, 50)
    return recs + ["", "ACGTACGTACGTACGTACGT", "nnnnACGTTGCAACGTTGCAnnnn", "A"]


@pytest.fixture(scope="module")
def long_brute(long_records):
    return brute_counts(long_records, 5), brute_counts(long_records, 5, True)


@pytest.mark.parametrize(
    "block_size,threads,width,eol",
    [
        (1, 1, 13, "\n"),
        (2, 1, 7, "\r\n"),
        (7, 2, 60, "\n"),
        (997, 3, 1, "\n"),
        (10000, 2, 80, "\r\n"),
        (1 << 24, 2, 70, "\n"),
    ],
)
def test_count_fasta_blocks_threads_equal_brute_force(
    tmp_path, long_records, long_brute, block_size, threads, width, eol
):
    """Headers, lines and records cut anywhere by blocks and threads: nothing lost or doubled."""
    fa = tmp_path / "x.fa"
    write_fasta_lines(fa, long_records, width=width, eol=eol)
    got = count_fasta(fa, 5, threads=threads, block_size=block_size)
    assert_matches(got, long_brute[0])
    assert got == count_sequences(long_records, 5)
    both = count_fasta(fa, 5, both_strands=True, threads=threads, block_size=block_size)
    assert_matches(both, long_brute[1])


@pytest.mark.parametrize("k", [8, 10, 12])
def test_bucketed_kernel_and_folds(tmp_path, long_records, k, monkeypatch):
    """k >= 10 counts through counting-sort batches into a shared table, k <= 9 into
    per-thread uint32 tables; tiny batches and frequent folds into int64 stress both."""
    ref = brute_counts(long_records, k)
    fa = tmp_path / "x.fa.gz"
    write_fasta_lines(fa, long_records, width=61, gz=True)
    assert_matches(count_fasta(fa, k, threads=2, block_size=9000), ref)
    monkeypatch.setattr(_counter, "BATCH", 5)  # batches of 5 windows (k >= 10)
    monkeypatch.setattr(_counter, "FOLD_LIMIT", 3000)  # uint32 tables folded into int64 often (k <= 9)
    assert_matches(count_fasta(fa, k, block_size=1000), ref)
    assert_matches(count_fasta(fa, k, threads=3, block_size=7000), ref)
    assert_matches(count_sequences(long_records, k), ref)


@pytest.mark.parametrize("k,threads", [(10, 1), (12, 2)])
def test_counts_past_uint16(tmp_path, k, threads, monkeypatch):
    """The shared k >= 10 table is uint16 with int64 carries: counts of 2**16 and more
    (here a 140 kb poly-A run) come out exact, also when the wraps happen in tiny batches."""
    rng = np.random.default_rng(11)
    tail = "".join(rng.choice(list("ACGTN"), size=3000))
    poly = 140_000
    ref = brute_counts([tail], k)
    for n in range(1, k + 1):
        ref[n - 1]["A" * n] += poly - n + 1  # hand count: a run of L A's holds L - n + 1 n-grams A^n
    fa = tmp_path / "a.fa"
    write_fasta_lines(fa, ["A" * poly, tail], width=60)
    assert ref[k - 1]["A" * k] > 2 * 2**16
    assert_matches(count_fasta(fa, k, threads=threads), ref)
    monkeypatch.setattr(_counter, "BATCH", 1000)
    assert_matches(count_fasta(fa, k, threads=threads, block_size=5000), ref)


def test_state_at_matches_forward_scan():
    """The state recomputed at a cut equals the state reached by reading up to the cut."""
    from dnalm._kernels import kernel
    from dnalm.fasta import BYTE_CLASS as _BYTE_CLASS

    state_at = kernel("state_at")
    rng = np.random.default_rng(4)
    buf = np.frombuffer("".join(rng.choice(list("ACGTacgtN\n-"), size=3000)).encode(), dtype=np.uint8)
    for k in (1, 3, 12):
        code, run = 0, 0
        cls = _BYTE_CLASS[buf]
        for s in range(len(buf) + 1):
            if s in (0, 5, 100, 1999, 3000) or s % 97 == 0:
                r = min(run, k)  # only the last r bases of the code matter
                got = state_at(buf, 0, s, _BYTE_CLASS, k, 0, 0)
                assert (got[0] & (4**r - 1), got[1]) == (code & (4**r - 1), r), (k, s)
                mid = s // 2  # the same through an intermediate state
                c0, r0 = state_at(buf, 0, mid, _BYTE_CLASS, k, 0, 0)
                via = state_at(buf, mid, s, _BYTE_CLASS, k, c0, r0)
                assert (via[0] & (4**r - 1), via[1]) == (got[0] & (4**r - 1), r), (k, s)
            if s < len(buf):
                c = cls[s]
                if c < 4:
                    code, run = ((code << 2) | int(c)) & (4**k - 1), run + 1
                elif c == 4:
                    run = 0


def test_count_fasta_gzip_bgzip_both_strands_and_records(tmp_path, records):
    fa = tmp_path / "x.fa.gz"
    write_fasta_lines(fa, records, gz=True)
    assert_matches(count_fasta(fa, 3, both_strands=True, block_size=5), brute_counts(records, 3, True))
    subset = ["r3", "r0", "r7"]
    got = count_fasta(fa, 3, records=subset, block_size=11)
    assert_matches(got, brute_counts([records[0], records[3], records[7]], 3))
    empty = count_fasta(fa, 3, records=[])
    assert empty == KmerCounts.zeros(3) and empty.n_windows(1) == 0
    with pytest.raises(io.InputError, match="nope"):
        count_fasta(fa, 3, records=["r1", "nope"])
    from Bio import bgzf

    bgz = tmp_path / "b.fa.gz"
    with bgzf.BgzfWriter(str(bgz), "wb") as w:  # many gzip members
        for i, s in enumerate(records):
            w.write(f">r{i}\n{s}\n".encode())
    assert count_fasta(bgz, 3, threads=2) == count_sequences(records, 3)


def test_shards_sum_to_whole(tmp_path):
    rng = np.random.default_rng(3)
    recs = random_records(rng, 25, 300)
    fa = tmp_path / "g.fa.gz"
    write_fasta_lines(fa, recs, width=60, gz=True)
    lengths = fasta_records(fa, block_size=64)
    assert lengths == {f"r{i}": len(s.replace("-", "")) for i, s in enumerate(recs)}
    plan = tmp_path / "plan.tsv"
    write_shard_plan(plan, lengths, 4)
    shards = [read_shard_plan(plan, i) for i in range(4)]
    assert shards == shard_records(lengths, 4)
    assert sorted(itertools.chain(*shards)) == sorted(lengths)
    paths = []
    for i, shard in enumerate(shards):
        p = tmp_path / f"shard{i}.npz"
        save_counts(p, count_fasta(fa, 5, both_strands=True, records=shard, block_size=50))
        paths.append(p)
    whole = count_fasta(fa, 5, both_strands=True)
    assert merge_count_files(paths) == whole
    assert_matches(whole, brute_counts(recs, 5, True))


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


def test_long_n_runs_k8_small_chunks(tmp_path):
    rng = np.random.default_rng(9)
    parts = [
        "".join(rng.choice(list("ACGT"), size=int(rng.integers(1, 40)))) + "N" * int(rng.integers(1, 30))
        for _ in range(40)
    ]
    recs = ["".join(parts[:20]), "".join(parts[20:]).lower()]
    fa = tmp_path / "n.fa"
    write_fasta_lines(fa, recs, width=70)
    assert_matches(count_fasta(fa, 8, block_size=11), brute_counts(recs, 8))


def test_count_corpus_equals_brute_force_over_the_trained_barcodes(tmp_path, monkeypatch):
    """count_corpus reads a saved (memory-mapped) barcode corpus: the pretrain split only,
    gaps removed, trimmed to ``length``, N and other letters breaking windows, and no
    n-gram across two barcodes."""
    import pandas as pd

    from dnalm.corpus import barcode_windows, load_corpus, save_corpus
    from dnalm.kmers import count_corpus

    rng = np.random.default_rng(12)
    rows = []
    for i in range(60):
        seq = "".join(rng.choice(list("ACGTACGTacgtN-"), size=int(rng.integers(5, 90))))
        rows.append({"dna_barcode": seq, "split": ["pretrain", "train"][i % 3 == 0]})
    table = pd.DataFrame(rows)
    path = tmp_path / "c.npz"
    save_corpus(path, barcode_windows(table, splits=("pretrain",), length=70))
    corpus = load_corpus(path)
    trained = [r["dna_barcode"].replace("-", "").upper()[:70] for r in rows if r["split"] == "pretrain"]
    ref = brute_counts(trained, 10)
    for threads in (1, 2):
        assert_matches(count_corpus(corpus, 10, threads=threads), ref)
    assert count_corpus(corpus, 4, both_strands=True) == count_sequences(trained, 4, both_strands=True)
    import dnalm.kmers as km

    monkeypatch.setattr(km, "_BLOCK_SIZE", 100)  # many chunks of windows (and of sequences)
    assert_matches(count_corpus(corpus, 10, threads=2), ref)
    assert_matches(count_sequences(trained, 10), ref)
