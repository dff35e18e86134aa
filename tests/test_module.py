"""The workflow as a Snakemake module of another workflow, in another folder:

    module dnalm:
        snakefile: "<this repository>/Snakefile"
        config: config
    use rule * from dnalm as dnalm_*

Its own files (package, schema, conda envs, rule scripts, report captions) are found next to
its Snakefile, not in the including workflow's folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

#: A small simulated genome (4 x 40 examples per task class) and few-shot shots that fit it.
LIGHT = {
    "results": "out",
    "data": {"genome": {"simulate": {"contig_lengths": [150_000, 100_000], "train_per_class": 40, "test_per_class": 10}}},
    "evaluation": {"fewshot": {"shots": [5, 10]}},
    "models": {"dnabert": {"preset": "dnabert"}},
}

OUTER = '''configfile: "config.yaml"


module dnalm:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from dnalm{prefix}
{extra}
'''

#: Prints where every rule of the outer workflow finds its conda env, script and captions.
PROBE = '''
for _rule in workflow.rules:
    _base = Path(_rule.snakefile).parent
    print("PROBE", _rule.name, _base, _rule.conda_env, getattr(_rule, "script", None), sep="\\t")
    for _f in _rule.output:
        if "report" in getattr(_f, "flags", {}):
            print("CAPTION", _rule.name, _f.flags["report"].caption, sep="\\t")
'''


def outer_workflow(folder: Path, prefix: bool = True, config: dict | None = None, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = OUTER.format(snakefile=ROOT / "Snakefile", prefix=" as dnalm_*" if prefix else "", extra=extra)
    (folder / "Snakefile").write_text("from pathlib import Path\n\n" + text)
    (folder / "config.yaml").write_text(yaml.safe_dump(config or LIGHT, sort_keys=False))
    return folder


def snakemake(folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    # run from the outer folder, as its user would; nothing on PYTHONPATH points at this repository
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([SNAKEMAKE, *args], cwd=folder, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(proc: subprocess.CompletedProcess) -> dict[str, int]:
    stats = (proc.stdout + proc.stderr).split("Job stats:")[1].split("\n\n")[0]
    return {name: int(n) for name, n in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M)}


def test_module_with_prefix_dry_run_plans_the_whole_workflow(tmp_path):
    extra = "\nrule all:\n    input:\n        rules.dnalm_all.input,\n    default_target: True\n" + PROBE
    folder = outer_workflow(tmp_path / "outer", extra=extra)
    proc = snakemake(folder, "-n", "--cores", "1")
    jobs = job_counts(proc)
    assert jobs["all"] == 1 and jobs["dnalm_pretrain"] == 1 and jobs["dnalm_simulate_genome"] == 1
    # (dnabert, its untrained control dnabert@init and the k-mer baseline) x 3 simulated tasks
    assert jobs["dnalm_fewshot"] == 3 * 3 and jobs["dnalm_init_model"] == 1
    assert jobs["dnalm_npmi_table"] == 1 and jobs["dnalm_count_kmers"] == 2
    out = proc.stdout + proc.stderr
    assert "results/" not in out and "out/report/metrics.tsv" in out  # the outer config's results folder
    probes = [line.split("\t") for line in out.splitlines() if line.startswith("PROBE\t")]
    ours = [p for p in probes if p[1].startswith("dnalm_")]
    assert len(ours) >= 25, probes
    for _, name, base, conda_env, script in ours:
        assert Path(base).is_relative_to(ROOT), (name, base)
        if name == "dnalm_all":  # the target rule runs nothing
            continue
        assert (Path(base) / conda_env).resolve().is_file(), (name, conda_env)
        assert (Path(base) / script).resolve().is_file(), (name, script)
    captions = [line.split("\t") for line in out.splitlines() if line.startswith("CAPTION\t")]
    assert len(captions) >= 8 and all(Path(c).is_file() and Path(c).is_relative_to(ROOT) for _, _, c in captions)


def test_module_without_prefix_keeps_rule_names_and_default_target(tmp_path):
    folder = outer_workflow(tmp_path / "outer", prefix=False)
    jobs = job_counts(snakemake(folder, "-n", "--cores", "1"))
    assert jobs["all"] == 1 and jobs["pretrain"] == 1 and jobs["npmi_table"] == 1
    assert not any(name.startswith("dnalm_") for name in jobs)


def test_module_reports_a_bad_config_by_key(tmp_path):
    bad = {**LIGHT, "kmers": {"k_max": "six"}}
    folder = outer_workflow(tmp_path / "outer", config=bad)
    proc = snakemake(folder, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Invalid configuration: config key 'kmers.k_max'" in out, out[-3000:]


@pytest.mark.e2e
def test_module_runs_its_jobs_in_the_outer_folder(tmp_path):
    """Simulation, k-mer counting, NPMI and the barcode corpus, run through the module."""
    folder = outer_workflow(tmp_path / "outer")
    snakemake(folder, "--cores", "1", "out/npmi/genome.tsv", "out/corpus/barcodes.npz")
    table = pd.read_csv(folder / "out/npmi/genome.tsv", sep="\t", keep_default_na=False)
    assert set(table["n"]) == set(range(2, 7)) and table["npmi"].between(-1, 1).all()
    counts = dict(zip(table["kmer"], table["count"]))
    genome = "".join(
        line.strip().upper() for line in (folder / "out/data/genome.fa").read_text().splitlines() if not line.startswith(">")
    )
    # the table's counts are the genome's (records joined: a count can only be an overcount at a join)
    for kmer in table.sort_values("count", ascending=False)["kmer"].head(5):
        direct = sum(genome.startswith(kmer, i) for i in range(len(genome) - len(kmer) + 1))
        assert counts[kmer] <= direct <= counts[kmer] + 1, kmer
    for log in ("simulate_genome", "count_kmers/0", "merge_kmers", "npmi_table/genome", "barcode_corpus"):
        assert (folder / "out/logs" / f"{log}.log").exists(), log
    assert not (ROOT / "out").exists()
