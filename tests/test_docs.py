"""The project's documents cite tests and design anchors that exist."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "bad-input.md", ROOT / "docs" / "design.md", ROOT / "README.md", ROOT / "BENCHMARKS.md"]


def cited_tests(text):
    """``test_x.py::test_name`` references (parametrisation brackets dropped)."""
    return sorted(set(re.findall(r"(test_\w+\.py)::(\w+)", text)))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_cited_tests_exist(doc):
    missing = []
    for file, name in cited_tests(doc.read_text()):
        path = ROOT / "tests" / file
        if not path.is_file() or not re.search(rf"^def {name}\(", path.read_text(), flags=re.M):
            missing.append(f"{file}::{name}")
    assert not missing, f"{doc.name} cites tests that do not exist: {missing}"


def test_cited_tests_finder_reads_parametrised_names():
    text = "`test_a.py::test_b[x-1]`, `test_c.py::test_d` and test_a.py::test_b"
    assert cited_tests(text) == [("test_a.py", "test_b"), ("test_c.py", "test_d")]


def test_design_anchors_cited_from_code_exist():
    anchors = set(re.findall(r'<a id="([\w-]+)"></a>', (ROOT / "docs" / "design.md").read_text()))
    anchors |= {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", (ROOT / "docs" / "design.md").read_text(), flags=re.M)}
    cited = set()
    for path in list((ROOT / "scripts").rglob("*.py")) + list((ROOT / "rules").glob("*.smk")):
        cited |= {(path.relative_to(ROOT), a) for a in re.findall(r"docs/design\.md#([\w-]+)", path.read_text())}
    missing = sorted(f"{p}: #{a}" for p, a in cited if a not in anchors)
    assert cited and not missing, missing
