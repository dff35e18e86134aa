"""Formatting and lint, as `make lint` runs them: snakefmt on the Snakemake files, ruff on the
Python code (settings in pyproject.toml), and `snakemake --lint`. Each test skips when its
tool is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    """The tool next to this Python (the project's venv), else on PATH; skip if neither."""
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_snakemake_files_are_formatted():
    proc = run(tool("snakefmt"), "--check", "--diff", "Snakefile", "rules")
    assert proc.returncode == 0, f"run `make format` (snakefmt Snakefile rules):\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"


def test_python_code_passes_ruff():
    proc = run(tool("ruff"), "check", "--no-cache", "--output-format", "concise", ".")
    assert proc.returncode == 0, f"ruff check . (pyproject.toml [tool.ruff]):\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"


def test_ruff_settings_apply():
    """The lint above really reads pyproject.toml: an unused import is reported, the undefined
    `snakemake` is allowed in rule scripts only."""
    ruff = tool("ruff")
    source = "import os\nprint(snakemake.input)\n"
    for path, codes in (("scripts/dnalm/probe.py", {"F401", "F821"}), ("scripts/probe.py", {"F401"})):
        proc = subprocess.run(
            [ruff, "check", "--no-cache", "--output-format", "concise", "--stdin-filename", path, "-"],
            input=source, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        found = {code for code in ("F401", "F821") if code in proc.stdout}
        assert found == codes, (path, proc.stdout)


def test_snakemake_lint_is_clean(tmp_path):
    proc = run(
        tool("snakemake"), "--lint", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(ROOT / "config" / "config.yaml"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
