"""Atomic writes (FASTA reading: test_fasta.py)."""

import pytest

from dnalm import io


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError):
        with io.atomic_open(target) as out:
            out.write("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with io.atomic_open(target) as out:
        out.write("whole")
    assert target.read_text() == "whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tsv"]
