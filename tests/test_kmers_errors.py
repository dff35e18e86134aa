"""Bad input to k-mer counting: clear InputErrors naming file and record; nothing
half-written, and what a killed run left is removed by the next. Bad FASTA files (every
reader, the counter's included): test_fasta.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dnalm import io
from dnalm.fasta import fasta_records
from dnalm.kmers import count_fasta, count_sequences, load_counts, merge_count_files, save_counts, write_shard_plan

ROOT = Path(__file__).resolve().parents[1]


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_protein_error_names_record_in_a_shard_only_when_counted(tmp_path):
    path = write(tmp_path / "m.fa", b">dna\nACGTN\n>prot\nMKVLE\n")
    assert count_fasta(path, 2, records=["dna"]).n_windows(2) == 3  # 'prot' not read
    with pytest.raises(io.InputError, match="'prot'"):
        count_fasta(path, 2, records=["prot"])
    with pytest.raises(io.InputError, match="'prot'"):
        fasta_records(path)  # the shard plan checks every record


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


KILLED_MERGE = """
import sys, time
sys.path.insert(0, {scripts!r})
import numpy as np
from dnalm import kmers

counts = kmers.merge_count_files({shards!r})


def stalled(fh, **arrays):  # the compressed archive half written, then the job is killed
    fh.write(b"PK" + bytes(1 << 20))
    fh.flush()
    time.sleep(120)


np.savez_compressed = stalled
kmers.save_counts({out!r}, counts)
"""


def test_sigkill_during_merge_leaves_a_temporary_that_the_next_merge_removes(tmp_path):
    """merge_kmers killed with SIGKILL (no clean-up runs) while writing counts.npz leaves
    its temporary file; the next write of counts.npz removes it, and only it: the
    temporaries of other outputs in the folder (another job may be writing them) stay."""
    rng = np.random.default_rng(5)
    shards = []
    for i in range(3):
        seqs = ["".join(rng.choice(list("ACGTN"), size=500)) for _ in range(4)]
        shards.append(str(tmp_path / f"shard{i}.npz"))
        save_counts(shards[-1], count_sequences(seqs, 6))
    out = tmp_path / "kmers" / "counts.npz"
    out.parent.mkdir()
    others = [  # temporaries of other outputs, named as dnalm.io.atomic_path names them
        out.parent / ".counts.npz.bak.k2j4x9q0.tmp.npz.bak",  # output counts.npz.bak
        out.parent / ".counts.npz2.k2j4x9q0.tmp.npz2",  # output counts.npz2
        out.parent / ".other.npz.k2j4x9q0.tmp.npz",
    ]
    for p in others:
        p.write_bytes(b"in progress")
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_MERGE.format(scripts=str(ROOT / "scripts"), shards=shards, out=str(out))],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            stale = sorted(out.parent.glob(".counts.npz.*.tmp.npz"))
            if stale and stale[0].stat().st_size > 1 << 20:
                break
            if child.poll() is not None:
                pytest.fail(f"the merge ended before it was killed: {child.stderr.read().decode()}")
            assert time.monotonic() < deadline, "the merge never started writing"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not out.exists() and len(stale) == 1 and stale[0].exists()  # left behind by the kill
    save_counts(out, merge_count_files(shards))  # the rerun
    assert load_counts(out) == merge_count_files(shards)
    assert not stale[0].exists()
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["counts.npz"] + [p.name for p in others])
    assert all(p.read_bytes() == b"in progress" for p in others)
