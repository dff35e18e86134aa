"""Tests of the simulators' parameters (dnalm.simulate.defaults, shared checks) and of the
package's light import: the workflow reads the defaults at parse time without numpy."""

import subprocess
import sys
from pathlib import Path

import pytest

import dnalm
from dnalm.simulate.barcodes import barcode_params, simulate_barcodes
from dnalm.simulate.defaults import DEFAULT_BARCODES, DEFAULT_GENOME
from dnalm.simulate.genome import genome_params, simulate_genome
from dnalm.simulate.tasks import write_genome_demo


def test_defaults_are_json_compatible():
    import json

    for defaults in (DEFAULT_GENOME, DEFAULT_BARCODES):
        assert json.loads(json.dumps(defaults)) == defaults


@pytest.mark.parametrize(
    "call, key",
    [
        (lambda: simulate_genome({"contig_length": [20_000]}, 1), "contig_length"),
        (lambda: genome_params({"n_motifs": 3}), "n_motifs"),
        (lambda: simulate_barcodes({"orders": 3}, 1), "orders"),
        (lambda: barcode_params({"split_seen": {"training": 0.5}}), "training"),
        (lambda: write_genome_demo("/nonexistent/never", {"bogus": 1}, 1), "bogus"),
    ],
)
def test_unknown_parameter_raises_naming_it(call, key):
    with pytest.raises(ValueError, match=key):
        call()


HEAVY = ["numpy", "pandas", "dnalm.simulate.genome", "dnalm.simulate.tasks", "dnalm.simulate.barcodes",
         "dnalm.simulate.background", "dnalm.simulate._common"]


def _modules_after(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; the HEAVY modules it left in sys.modules."""
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    env_path = str(Path(dnalm.__file__).parents[1])
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    return [m for m in proc.stdout.strip().split(",") if m]


def test_reading_the_defaults_imports_no_simulator():
    # what rules/common.smk does at parse time
    assert _modules_after(
        "from dnalm.simulate.defaults import DEFAULT_GENOME, DEFAULT_BARCODES\n"
        "from dnalm import simulate, sources\n"
        "assert simulate.DEFAULT_GENOME is DEFAULT_GENOME and 'contig_lengths' in DEFAULT_GENOME\n"
        "sources.plan({}, DEFAULT_GENOME, DEFAULT_BARCODES)"
    ) == []
    # the control: a simulator name loads its module (and numpy) on first use
    loaded = _modules_after(
        "import dnalm.simulate as S, dnalm.simulate.barcodes as B\n"
        "assert S.simulate_barcodes is B.simulate_barcodes and S.write_genome_demo"
    )
    assert {"numpy", "pandas", "dnalm.simulate.barcodes", "dnalm.simulate.tasks", "dnalm.simulate.genome"} <= set(loaded)
    with pytest.raises(AttributeError, match="no_such_name"):
        import dnalm.simulate as S

        S.no_such_name  # noqa: B018
