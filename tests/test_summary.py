"""The markdown summary: hand-built metric tables, checked cell by cell."""

import numpy as np
import pandas as pd

from dnalm.report import collect, summary_markdown


def _rows(model, protocol, dataset, metric, values, shots=np.nan, level=""):
    return [
        dict(model=model, dataset=dataset, protocol=protocol, level=level, shots=shots, repeat=i,
             metric=metric, value=v)
        for i, v in enumerate(values)
    ]


def _table(md: str, header_start: str) -> dict[str, list[str]]:
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    out = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def test_summary_means_stds_and_bold_best():
    rows = (
        _rows("kmer", "fewshot", "prom", "accuracy", [0.8, 0.9], shots=10)
        + _rows("dnabert", "fewshot", "prom", "accuracy", [0.5, 0.7], shots=10)
        + _rows("kmer", "open_world", "barcodes", "accuracy", [0.6], level="genus")
        + _rows("dnabert", "open_world", "barcodes", "accuracy", [0.3], level="genus")
        + _rows("kmer", "open_world", "barcodes", "chance_accuracy", [0.04], level="genus")
        + _rows("dnabert", "open_world", "barcodes", "chance_accuracy", [0.04], level="genus")
    )
    md = summary_markdown(collect([pd.DataFrame(rows)]))
    few = _table(md, "| model | accuracy K=10")
    # mean 0.85, sample std of (0.8, 0.9) = 0.0707
    assert few["kmer"] == ["**0.850 ± 0.071**"]
    assert few["dnabert"] == ["0.600 ± 0.141"]
    ow = _table(md, "| model | accuracy | chance_accuracy")
    assert ow["kmer"] == ["**0.600**", "0.040"]  # chance levels are never marked best
    assert ow["dnabert"] == ["0.300", "0.040"]


def test_summary_restricts_models():
    rows = _rows("kmer", "fewshot", "prom", "accuracy", [0.8], shots=10) + _rows(
        "dnabert", "fewshot", "prom", "accuracy", [0.5], shots=10
    )
    md = summary_markdown(collect([pd.DataFrame(rows)]), models=["dnabert"])
    table = _table(md, "| model | accuracy K=10")
    assert list(table) == ["dnabert"]
    assert table["dnabert"] == ["0.500"]  # a single model is not bolded against itself
