"""Atomic writes and FASTA reading errors."""

import gzip

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


def test_read_fasta_plain_and_gzip(tmp_path):
    text = ">a desc\nACGT\nac\n>b\nNNNN\n"
    (tmp_path / "x.fa").write_text(text)
    with gzip.open(tmp_path / "x.fa.gz", "wt") as fh:
        fh.write(text)
    for name in ("x.fa", "x.fa.gz"):
        assert list(io.read_fasta(tmp_path / name)) == [("a", "ACGTac"), ("b", "NNNN")]


@pytest.mark.parametrize(
    "content,problem",
    [("", "empty"), ("hello\nworld\n", "not a FASTA"), (">a\nAC\n>a\nGT\n", "duplicate")],
)
def test_read_fasta_errors_name_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "bad.fa"
    path.write_text(content)
    with pytest.raises(io.InputError) as err:
        list(io.read_fasta(path))
    assert str(path) in str(err.value) and problem in str(err.value)
    if problem == "duplicate":
        assert "'a'" in str(err.value)


def test_truncated_gzip(tmp_path):
    data = gzip.compress((">a\n" + "ACGT" * 5000 + "\n").encode())
    path = tmp_path / "t.fa.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(io.InputError) as err:
        list(io.read_fasta(path))
    assert str(path) in str(err.value)
