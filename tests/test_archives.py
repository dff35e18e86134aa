"""Safe archive extraction (dnalm.archives): members checked before anything is written,
paths outside the target, links and names two entries share refused."""

from __future__ import annotations

import io as _io
import tarfile
import zipfile

import pytest

from dnalm import archives, download


def _tar(members: dict) -> bytes:
    buf = _io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, _io.BytesIO(data))
    return buf.getvalue()


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_zip_and_tar_members(tmp_path):
    arc = _zip(tmp_path / "a.zip", {"dir/table.csv": "x,y\n1,2\n", "other.txt": "hi"})
    (out,) = archives.extract(arc, tmp_path / "t1", members=["dir/table.csv"])
    assert out == (tmp_path / "t1" / "dir" / "table.csv").resolve() and out.read_text() == "x,y\n1,2\n"
    assert sorted(p.name for p in (tmp_path / "t1").rglob("*")) == ["dir", "table.csv"]
    tgz = tmp_path / "a.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        info = tarfile.TarInfo("data/t.tsv")
        info.size = 3
        tf.addfile(info, _io.BytesIO(b"abc"))
    assert [p.read_bytes() for p in archives.extract(tgz, tmp_path / "t2")] == [b"abc"]
    with pytest.raises(download.DownloadError, match=r"no member 'nope.csv'.*dir/table.csv"):
        archives.extract(arc, tmp_path / "t3", members=["nope.csv"])


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt"])
def test_extract_refuses_paths_outside_the_target(tmp_path, name):
    arc = _zip(tmp_path / "bad.zip", {"fine.txt": "ok", name: "evil"})
    target = tmp_path / "deep" / "target"
    with pytest.raises(download.DownloadError) as err:
        archives.extract(arc, target)
    assert str(arc) in str(err.value) and repr(name) in str(err.value) and "outside" in str(err.value)
    assert not target.exists() or list(target.rglob("*")) == []  # checked before writing anything
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["bad.zip"]


def test_extract_refuses_tar_links(tmp_path):
    arc = tmp_path / "links.tar"
    with tarfile.open(arc, "w") as tf:
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tf.addfile(link)
        info = tarfile.TarInfo("escape/passwd")
        info.size = 4
        tf.addfile(info, _io.BytesIO(b"root"))
    with pytest.raises(download.DownloadError, match="link"):
        archives.extract(arc, tmp_path / "t")
    assert not (tmp_path / "t").exists() or list((tmp_path / "t").rglob("*")) == []


def test_extract_refuses_tar_members_outside_the_target(tmp_path):
    arc = tmp_path / "dotdot.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        for name in ("fine.txt", "data/../../evil.txt"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tf.addfile(info, _io.BytesIO(b"evil"))
    with pytest.raises(download.DownloadError) as err:
        archives.extract(arc, tmp_path / "t")
    assert str(arc) in str(err.value) and "'data/../../evil.txt'" in str(err.value) and "outside" in str(err.value)
    with pytest.raises(download.DownloadError, match="outside"):  # also when asked for by name
        archives.extract(arc, tmp_path / "t", members=["data/../../evil.txt"])
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["dotdot.tar.gz"]


def test_extract_refuses_zip_symlinks(tmp_path):
    arc = tmp_path / "link.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("fine.txt", "ok")
        link = zipfile.ZipInfo("data/passwd")
        link.create_system = 3  # unix: the mode in the high bits of external_attr
        link.external_attr = (0o120777 << 16)  # S_IFLNK | 0777: the content is the link target
        zf.writestr(link, "/etc/passwd")
    assert (zipfile.ZipFile(arc).getinfo("data/passwd").external_attr >> 16) & 0o170000 == 0o120000
    with pytest.raises(download.DownloadError) as err:
        archives.extract(arc, tmp_path / "t")
    assert "symbolic link" in str(err.value) and "'data/passwd'" in str(err.value)
    assert not (tmp_path / "t").exists() or list((tmp_path / "t").rglob("*")) == []  # nothing written
    (out,) = archives.extract(arc, tmp_path / "t", members=["fine.txt"])  # other members still work
    assert out.read_text() == "ok"


def test_extract_refuses_a_member_name_that_two_entries_have(tmp_path):
    arc = tmp_path / "dup.zip"
    with zipfile.ZipFile(arc, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("other.txt", "fine")
        zf.writestr("data/t.tsv", "a\tb\n1\t2\n")
        zf.writestr("data/t.tsv", "a\tb\n3\t4\n")
    assert [i.filename for i in zipfile.ZipFile(arc).infolist()].count("data/t.tsv") == 2
    for members in (["data/t.tsv"], None):  # asked for by name, or everything
        with pytest.raises(download.DownloadError) as err:
            archives.extract(arc, tmp_path / "t", members=members)
        msg = str(err.value)
        assert str(arc) in msg and "2 entries of the archive are named 'data/t.tsv'" in msg, msg
        assert "'data/t.tsv' (entry 2), 'data/t.tsv' (entry 3)" in msg and "refusing to choose" in msg
    assert not (tmp_path / "t").exists() or list((tmp_path / "t").rglob("*")) == []
    (out,) = archives.extract(arc, tmp_path / "t", members=["other.txt"])  # the others still work
    assert out.read_text() == "fine"
    # two spellings of one path in a tar, both named in the error
    tar = tmp_path / "dup.tar"
    tar.write_bytes(_tar({"data/t.tsv": b"x", "./data//t.tsv": b"y"}))
    with pytest.raises(download.DownloadError) as err:
        archives.extract(tar, tmp_path / "u", members=["data/t.tsv"])
    assert "'data/t.tsv' (entry 1), './data//t.tsv' (entry 2)" in str(err.value)
    assert not (tmp_path / "u").exists()
    # a file name found only in other folders: the error lists where
    arc2 = _zip(tmp_path / "two.zip", {"a/t.tsv": "1", "b/t.tsv": "2"})
    with pytest.raises(download.DownloadError, match=r"no member 't.tsv'.*entries with that file name: a/t.tsv, b/t.tsv"):
        archives.extract(arc2, tmp_path / "v", members=["t.tsv"])
