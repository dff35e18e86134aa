"""Peak memory of count_fasta does not grow with the input: the same count run, each in a
fresh process, on a random FASTA and on four times as much (plain: mapped window by window;
gzip: decompressed block by block). Windows of 1 MiB, so that the inputs (10 and 40 MB) are
far bigger than what may be resident at once; a reader that held the whole file would
add ~30 MiB."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import resource, sys
sys.path.insert(0, {scripts!r})
from dnalm import kmers
kmers.warm_up(8)
c = kmers.count_fasta({path!r}, 8, threads=2, block_size=1 << 20)
print(c.n_windows(8), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_random_fasta(path: Path, mbp: int, seed: int) -> int:
    """``mbp`` Mbp in records of ~2 Mbp, 60-column lines; returns the number of letters."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGTacgtN", dtype=np.uint8)
    n = 0
    with open(path, "wb") as fh:
        for r in range(mbp // 2):
            seq = letters[rng.integers(0, 9, size=60 * 33_333)]
            lines = np.full((len(seq) // 60, 61), ord("\n"), dtype=np.uint8)
            lines[:, :60] = seq.reshape(-1, 60)
            fh.write(f">r{r}\n".encode() + lines.tobytes())
            n += len(seq)
    return n


def peak_rss_kib(path: Path) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(scripts=str(ROOT / "scripts"), path=str(path))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.parametrize("gz", [False, True])
def test_peak_memory_does_not_grow_with_input(tmp_path, gz):
    paths = []
    for copies in (1, 4):
        path = tmp_path / f"x{copies}.fa"
        write_random_fasta(path, 10 * copies, seed=copies)
        if gz:
            from isal import igzip

            packed = path.with_suffix(".fa.gz")
            with open(path, "rb") as src, igzip.open(packed, "wb", compresslevel=0) as dst:
                dst.write(src.read())
            path.unlink()
            path = packed
        paths.append(path)
    (w1, rss1), (w4, rss4) = (peak_rss_kib(p) for p in paths)
    assert w4 > 3.5 * w1 > 0  # four times the counted windows ...
    growth = rss4 - rss1  # ... for (about) the same peak memory
    assert growth <= max(0.10 * rss1, 20 * 1024), f"peak RSS {rss1} KiB -> {rss4} KiB"
