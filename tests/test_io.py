"""Atomic writes of files and directories, file digests (FASTA reading: test_fasta.py)."""

import os

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


def test_atomic_dir_replaces_the_target_or_leaves_it_untouched(tmp_path):
    target = tmp_path / "model"
    with io.atomic_dir(target) as tmp:
        assert tmp.is_dir() and tmp.parent == tmp_path and tmp.name.startswith(".tmp-model-")
        (tmp / "a.txt").write_text("first")
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with io.atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("half")
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with io.atomic_dir(target) as tmp:  # an existing directory is replaced as a whole
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_remove_stale_dirs_only_removes_this_targets_leftovers(tmp_path):
    import tempfile

    mine = [tempfile.mkdtemp(prefix=".tmp-dnabert-", dir=tmp_path) for _ in range(2)]
    others = [tempfile.mkdtemp(prefix=prefix, dir=tmp_path) for prefix in (".tmp-dnabert-big-", ".tmp-dna-")]
    (tmp_path / "dnabert").mkdir()
    removed = io.remove_stale_dirs(tmp_path / "dnabert")
    assert sorted(map(str, removed)) == sorted(mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["dnabert"] + [os.path.basename(o) for o in others])
    assert io.remove_stale_dirs(tmp_path / "missing" / "x") == []


def test_file_digest_equals_hashlib(tmp_path):
    import hashlib

    data = os.urandom(3 * (1 << 20) + 17)  # several chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert io.file_digest(path) == hashlib.sha256(data).hexdigest()
    assert io.file_digest(path, "md5") == hashlib.md5(data).hexdigest()
    with pytest.raises(ValueError):
        io.file_digest(path, "no-such-hash")
