"""config/laptop.yaml (real chrX from smalt-examples, a user's barcode table, GeneMask's task
files from ../shared): it validates over the demo config and its dry run builds the whole
DAG, with the genome models on the long schedule and every other model on the demo's.
Skipped where smalt-examples or the shared GeneMask files are missing."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dnalm import simulate
from dnalm.config import resolve_model, validate_config

ROOT = Path(__file__).resolve().parents[1]
LAPTOP = yaml.safe_load((ROOT / "config" / "laptop.yaml").read_text())
GENOME = Path(LAPTOP["data"]["genome"]["path"])
SHARED = ROOT.parent / "shared"
TASK_FILES = [f[part]["path"] for f in LAPTOP["data"]["tasks"].values() for part in ("train", "test")]

pytestmark = [
    pytest.mark.skipif(not GENOME.is_file(), reason=f"{GENOME} missing (Debian package smalt-examples)"),
    pytest.mark.skipif(
        not all((ROOT / p).is_file() for p in TASK_FILES), reason="GeneMask task files missing under ../shared"
    ),
]


def merged() -> dict:
    """config.yaml then laptop.yaml, merged as snakemake --configfile does (dicts updated)."""

    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    return functools.reduce(merge, [yaml.safe_load((ROOT / "config" / n).read_text()) for n in ("config.yaml", "laptop.yaml")], {})


def test_laptop_settings_resolve():
    cfg = validate_config(merged(), ROOT / "config" / "schema.yaml")
    assert cfg["data"]["barcodes"]["path"] == "resources/my_barcodes.tsv"  # the placeholder the comment names
    assert set(cfg["evaluation"]["fewshot"]["tasks"]) == set(cfg["data"]["tasks"]) == {"prom-core", "splice-40"}
    for name in ("dnabert", "genemask"):
        m = resolve_model(cfg, name)
        assert (m["steps"], m["lr"], m["corpus"]) == (2000, 1.0e-3, "genome")
    demo = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for name in cfg["models"]:
        if resolve_model(cfg, name)["corpus"] == "barcodes":  # unchanged from the demo
            assert resolve_model(cfg, name) == resolve_model(demo, name)
    assert cfg["corpus"]["genome"]["n_windows"] == 50000


def test_laptop_dry_run_builds_the_whole_dag(tmp_path):
    # the layout the config expects: the repository next to shared/, the user's table under resources/
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    (repo / "config" / "config.yaml").symlink_to(ROOT / "config" / "config.yaml")
    (tmp_path / "shared").symlink_to(SHARED.resolve())
    (repo / "resources").mkdir()
    table, _ = simulate.simulate_barcodes({"n_orders": 2, "families_per_order": 2, "genera_per_family": 2}, seed=1)
    table.to_csv(repo / "resources" / "my_barcodes.tsv", sep="\t", index=False)
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        [snakemake, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(repo), "-n", "--configfile",
         str(ROOT / "config" / "laptop.yaml")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1].split("\n\n")[0], flags=re.M))
    cfg = merged()
    n_models = len(cfg["models"])
    assert int(jobs["prepare_genome"]) == 1 and int(jobs["prepare_barcodes"]) == 1
    assert int(jobs["prepare_task"]) == 2 and int(jobs["pretrain"]) == n_models
    # each trained model, its untrained control and the k-mer baseline, on two tasks
    assert int(jobs["init_model"]) == n_models
    assert int(jobs["fewshot"]) == (2 * n_models + 1) * 2
    assert "simulate_genome" not in jobs and "simulate_barcodes" not in jobs and "download" not in jobs
