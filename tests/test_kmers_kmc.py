"""Counts identical to KMC's (Debian package ``kmc``) on the same FASTA files.

KMC is told to count non-canonical k-mers (``-b``), keep every count (``-ci1``, counter
limit 2**32-1) and read multi-line FASTA (``-fm``); its database is dumped with
``kmc_tools transform ... dump``. KMC counts only length k, so n = k_max is compared.
Alignment gaps differ by design (DESIGN.md removes '-', KMC breaks k-mers at it), so these
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

from dnalm.kmers import count_fasta, strings_to_codes

pytestmark = pytest.mark.skipif(
    shutil.which("kmc") is None or shutil.which("kmc_tools") is None,
    reason="KMC not installed (Debian package kmc; `make sysdeps` installs it as root)",
)
ECOLI = Path("/usr/share/doc/bowtie/examples/genomes/NC_008253.fna.gz")


def kmc_counts(fasta: Path, k: int, tmp: Path) -> np.ndarray:
    """KMC's counts as a dense array indexed by the k-mer's base-4 code."""
    work = tmp / f"kmc{k}"
    work.mkdir()
    db = work / "db"
    subprocess.run(
        ["kmc", f"-k{k}", "-ci1", f"-cs{2**32 - 1}", "-b", "-fm", "-t2", str(fasta), str(db), str(work)],
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


def ours(fasta: Path, k: int) -> np.ndarray:
    return count_fasta(fasta, k, threads=2).counts[k - 1]


@pytest.mark.parametrize("k", [5, 12])
def test_equal_to_kmc_on_random_records(tmp_path, k):
    rng = np.random.default_rng(k)
    letters = np.array(list("ACGTACGTACGTacgtNRY"))
    recs = ["".join(rng.choice(letters, size=int(n))) for n in rng.integers(0, 3000, size=30)]
    recs += ["ACGTA" * 3, "AC", "nnnnn", "G" * 40]
    fa = tmp_path / "r.fa.gz"
    with gzip.open(fa, "wt") as fh:
        for i, s in enumerate(recs):
            fh.write(f">r{i}\n" + "".join(s[j : j + 61] + "\n" for j in range(0, len(s), 61)))
    got, ref = ours(fa, k), kmc_counts(fa, k, tmp_path)
    assert ref.sum() > 1000
    np.testing.assert_array_equal(got, ref)


@pytest.mark.skipif(not ECOLI.exists(), reason=f"{ECOLI} absent (Debian package bowtie-examples)")
def test_equal_to_kmc_on_e_coli_k12(tmp_path):
    got, ref = ours(ECOLI, 12), kmc_counts(ECOLI, 12, tmp_path)
    assert np.count_nonzero(ref) > 1_000_000
    np.testing.assert_array_equal(got, ref)
