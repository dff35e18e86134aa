"""Counts identical to KMC's (Debian package ``kmc``) on the same FASTA files.

KMC is told to count non-canonical k-mers (``-b``), keep every count (``-ci1``, counter
limit 2**32-1) and read multi-line FASTA (``-fm``); its database is dumped with
``kmc_tools transform ... dump``. KMC counts one length k per run, so on the random file it
is run for every k = 1..k_max and compared with our n = k counts of a single k_max run.

``both_strands`` against KMC's canonical counts (no ``-b``): KMC counts each occurrence of
w or of its reverse complement rc(w) once, under the lexicographically smaller of the two.
Ours adds rc's counts to every n-gram: for a non-palindrome, ours[w] = ours[rc(w)] = KMC's
count of the canonical one; a palindrome (w = rc(w), even k only) is one string that is
both strands at once, so ours counts each occurrence twice (forward and reverse strand)
and KMC once: ours[w] = 2 * KMC[w].

Alignment gaps differ by design (docs/design.md#sequences removes '-', KMC breaks k-mers at it), so these
files hold none. Skipped when KMC is not installed (``make sysdeps`` installs it).
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dnalm.kmers import count_fasta, reverse_complement_codes, strings_to_codes

pytestmark = pytest.mark.skipif(
    shutil.which("kmc") is None or shutil.which("kmc_tools") is None,
    reason="KMC not installed (Debian package kmc; `make sysdeps` installs it as root)",
)
ECOLI = Path("/usr/share/doc/bowtie/examples/genomes/NC_008253.fna.gz")


def kmc_counts(fasta: Path, k: int, tmp: Path, canonical: bool = False) -> np.ndarray:
    """KMC's counts as a dense array indexed by the k-mer's base-4 code (canonical: only
    the canonical k-mers hold counts)."""
    work = tmp / f"kmc{k}{'c' if canonical else ''}"
    work.mkdir()
    db = work / "db"
    strand = [] if canonical else ["-b"]
    subprocess.run(
        ["kmc", f"-k{k}", "-ci1", f"-cs{2**32 - 1}", *strand, "-fm", "-t2", str(fasta), str(db), str(work)],
        check=True,
        capture_output=True,
    )
    dump = work / "dump.txt"
    subprocess.run(["kmc_tools", "transform", str(db), "dump", str(dump)], check=True, capture_output=True)
    table = pd.read_csv(dump, sep="\t", header=None, names=["kmer", "count"], dtype={"kmer": str, "count": np.int64})
    dense = np.zeros(4**k, dtype=np.int64)
    codes = strings_to_codes(table["kmer"].tolist(), k)
    assert len(np.unique(codes)) == len(codes)
    dense[codes] = table["count"].to_numpy()
    return dense


def assert_equal_sparse(got: np.ndarray, ref: np.ndarray, msg: str = ""):
    """Dense count arrays equal (compared on their non-zero entries: quicker for k = 12)."""
    nz = np.flatnonzero(ref)
    np.testing.assert_array_equal(np.flatnonzero(got), nz, err_msg=msg)
    np.testing.assert_array_equal(got[nz], ref[nz], err_msg=msg)


def ours(fasta: Path, k: int) -> np.ndarray:
    return count_fasta(fasta, k, threads=2).counts[k - 1]


def random_fasta(tmp_path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACGTACGTACGTacgtNRY"))
    recs = ["".join(rng.choice(letters, size=int(n))) for n in rng.integers(0, 3000, size=30)]
    recs += ["ACGTA" * 3, "AC", "nnnnn", "G" * 40, "ACGT" * 30]  # ACGT...: palindromes of even k
    fa = tmp_path / "r.fa.gz"
    with gzip.open(fa, "wt") as fh:
        for i, s in enumerate(recs):
            fh.write(f">r{i}\n" + "".join(s[j : j + 61] + "\n" for j in range(0, len(s), 61)))
    return fa


@pytest.mark.parametrize("k_max", [5, 12])
def test_equal_to_kmc_on_random_records_every_k(tmp_path, k_max):
    fa = random_fasta(tmp_path, k_max)
    got = count_fasta(fa, k_max, threads=2)
    for k in range(1, k_max + 1):
        ref = kmc_counts(fa, k, tmp_path)
        assert ref.sum() > 1000
        assert_equal_sparse(got.counts[k - 1], ref, f"k={k}")


def test_both_strands_equal_to_kmc_canonical(tmp_path):
    fa = random_fasta(tmp_path, 3)
    k_max = 8
    got = count_fasta(fa, k_max, both_strands=True, threads=2)
    for k in range(1, k_max + 1):
        ref = kmc_counts(fa, k, tmp_path, canonical=True)  # count under the canonical k-mer only
        codes = np.arange(4**k)
        rc = reverse_complement_codes(k)
        canon = np.minimum(codes, rc)  # lexicographic order = code order
        palindrome = codes == rc
        expected = np.where(palindrome, 2 * ref, ref[canon])
        assert ref[codes > rc].sum() == 0  # KMC reports canonical k-mers only
        assert palindrome.any() == (k % 2 == 0)
        if k % 2 == 0:
            assert ref[palindrome].sum() > 0  # the palindromes are present, so the factor 2 is tested
        np.testing.assert_array_equal(got.counts[k - 1], expected, err_msg=f"k={k}")


@pytest.mark.skipif(not ECOLI.exists(), reason=f"{ECOLI} absent (Debian package bowtie-examples)")
def test_equal_to_kmc_on_e_coli_k12(tmp_path):
    got, ref = ours(ECOLI, 12), kmc_counts(ECOLI, 12, tmp_path)
    assert np.count_nonzero(ref) > 1_000_000
    assert_equal_sparse(got, ref)
