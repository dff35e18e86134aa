"""References shared by several test files: a brute-force n-gram counter (the reference for
the k-mer counter and the NPMI table), the random FASTA records they are checked on, random
pretraining corpora, and one torch thread for tests of small models.

Plain functions: ``from conftest import brute_counts``; fixtures by name:
``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""

from __future__ import annotations

import gzip
from collections import Counter

import numpy as np
import pytest

RC = str.maketrans("ACGT", "TGCA")


def brute_counts(seqs, k_max, both_strands=False):
    """Reference: a dict per n over every substring of every record (and its rev-comp),
    gaps removed, lowercase as uppercase, windows holding a letter other than ACGT skipped."""
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


def assert_matches(counts, ref):
    """A :class:`dnalm.kmers.KmerCounts` equals the brute-force counts ``ref``, n by n."""
    from dnalm.kmers import codes_to_strings

    for n in range(1, counts.k_max + 1):
        dense = counts.counts[n - 1]
        nz = np.flatnonzero(dense)
        got = dict(zip(codes_to_strings(nz, n), dense[nz].tolist()))
        assert got == dict(ref[n - 1]), f"n={n}"
        assert counts.n_windows(n) == sum(ref[n - 1].values())


def random_records(rng, n_records, max_len):
    """Random DNA with lowercase runs, N runs, other IUPAC letters, gaps; some records tiny.

    Ambiguity codes (R, Y, W) stay at 3 % of the letters: a record with more than 10 % of
    them is rejected as a probable protein (test_fasta.py)."""
    letters = np.array(list("ACGTacgtNRYW-"))
    weights = np.array([0.19] * 4 + [0.04] * 4 + [0.05, 0.01, 0.01, 0.01, 0.03])
    recs = []
    for _ in range(n_records):
        length = int(rng.integers(0, max_len))
        recs.append("".join(rng.choice(letters, size=length, p=weights / weights.sum())))
    return recs


def write_fasta_lines(path, recs, width=13, gz=False, eol="\n"):
    """Records ``r0, r1, ...`` (with a description) in lines of ``width`` letters."""
    text = "".join(
        f">r{i} some description{eol}" + "".join(s[j : j + width] + eol for j in range(0, len(s), width))
        for i, s in enumerate(recs)
    )
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_bytes(text.encode())


def _one_torch_thread():
    """One torch thread (exact, repeatable float sums in small models); the count is put back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


one_torch_thread = pytest.fixture(_one_torch_thread, name="one_torch_thread")
# the same for a whole test file, set before the file's module-scoped fixtures build models
one_torch_thread_per_module = pytest.fixture(_one_torch_thread, scope="module", name="one_torch_thread_per_module")


def write_random_corpus(path, seed: int, n_windows: int, min_len: int, max_len: int, edit=None):
    """A pretraining corpus (dnalm.corpus) of ``n_windows`` random windows of base codes,
    lengths drawn in [min_len, max_len); ``edit(windows)`` may change them before saving."""
    from dnalm.corpus import Corpus, save_corpus

    rng = np.random.default_rng(seed)
    wins = [rng.integers(0, 4, int(rng.integers(min_len, max_len))).astype(np.uint8) for _ in range(n_windows)]
    if edit is not None:
        edit(wins)
    save_corpus(path, Corpus.from_arrays(wins))
    return path
