"""Real-data configuration: the data: section's checks, config/full.yaml's DAG (dry run),
and the data rules of a small workflow run whose inputs come from a local HTTP server
(checked downloads, an archive member, GeneMask-style tasks, a BOLD table)."""

from __future__ import annotations

import copy
import functools
import gzip
import hashlib
import os
import re
import subprocess
import sys
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dnalm import fasta, simulate, sources
from dnalm.config import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def merged(*names: str) -> dict:
    """Configs merged as snakemake --configfile does (nested dicts updated, lists replaced)."""

    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    return functools.reduce(merge, [load(n) for n in names], {})


def plan(cfg):
    validate_config(cfg, SCHEMA)
    return sources.plan(cfg, simulate.DEFAULT_GENOME, simulate.DEFAULT_BARCODES)


def snakemake(workdir: Path, *args: str, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    cmd = [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


# --------------------------------------------------------------------------- the data plan


def test_demo_plan_simulates_everything():
    p = plan(load("config.yaml"))
    assert p.genome is None and p.barcodes is None and p.tasks == {}
    assert p.simulated_tasks == ["prom", "splice", "enh"] and p.downloads == {} and p.extracts == {}


def test_full_config_plan_downloads_every_input():
    cfg = merged("config.yaml", "full.yaml")
    p = plan(cfg)
    assert p.simulated_tasks == [] and sorted(p.tasks) == ["cohn-enh", "prom-300", "prom-core", "splice-40"]
    assert p.genome.url.endswith("/hg38/bigZips/hg38.fa.gz") and p.genome.checksums == {"md5": "1c9dcaddfa41027f17cd8f7a82c7293b"}
    assert p.barcodes.checksums == {"md5": "ac381b69fafdbaedc2f9cfb89e3571f7"}
    assert p.barcodes_input() == "resources/barcodes/extracted/bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv"
    assert len(p.downloads) == 2 + 4 * 2
    assert all(set(s.checksums) == {"git_sha1"} for t in p.tasks.values() for s in t.values())
    assert "genome/hg38.fa.gz" in p.downloads and "tasks/splice-40/train/train_splice40_1000.tsv" in p.downloads
    size = cfg["training"]["size"]
    assert (size["layers"], size["hidden"], size["heads"], size["intermediate"]) == (12, 768, 12, 3072)
    assert cfg["training"]["gpus"] == 1


@pytest.mark.parametrize(
    "mutate,key,words",
    [
        (lambda d: d["genome"].update(url="https://x/g.fa", path="g.fa"), "data.genome", "not both"),
        (lambda d: d["genome"].update(path="g.fa", simulate={"gc": 0.5}), "data.genome.simulate", "remove one"),
        (lambda d: d["barcodes"].update(simulate={"n_order": 3}), "data.barcodes.simulate", "unknown simulation parameter"),
        (lambda d: d["genome"].update(contigs=["chr1"]), "data.genome.contigs", "only applies to a real genome"),
        (lambda d: d["barcodes"].update(path="b.zip", member="../x.csv"), "data.barcodes.member", "without '..'"),
        (lambda d: d["tasks"].update(prom={"train": {"path": "a"}, "test": {"path": "b"}}), "data.tasks.prom", "already writes"),
        (lambda d: d["tasks"].update(t={"train": {"path": "a"}, "test": {}}), "data.tasks.t.test", "needs a 'url' or 'path'"),
        (lambda d: d["genome"].update(path="g.fa"), "evaluation.fewshot.tasks", "no data for task 'prom'"),
        (lambda d: d["genome"].update(url="ftp://x/g.fa"), "data.genome.url", "does not match"),
        (lambda d: d["genome"].update(path="g.fa", md5="xyz"), "data.genome.md5", "does not match"),
    ],
)
def test_bad_data_config_names_the_key(mutate, key, words):
    cfg = load("config.yaml")
    mutate(cfg["data"])
    with pytest.raises(ConfigError) as err:
        plan(cfg)
    assert f"'{key}'" in str(err.value) and words in str(err.value), str(err.value)


# --------------------------------------------------------------------------- dry run of full.yaml


def test_full_config_dry_run_builds_the_whole_dag(tmp_path):
    # as `snakemake -n --configfile config/full.yaml` in the repository: full.yaml over config.yaml
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").symlink_to(ROOT / "config" / "config.yaml")
    proc = snakemake(tmp_path, "-n", "--configfile", str(ROOT / "config" / "full.yaml"))
    out = proc.stdout + proc.stderr
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1].split("\n\n")[0], flags=re.M))
    cfg = merged("config.yaml", "full.yaml")
    n_models, n_tasks = len(cfg["models"]), len(cfg["evaluation"]["fewshot"]["tasks"])
    assert int(jobs["download"]) == 10 and int(jobs["extract_member"]) == 1
    assert int(jobs["prepare_genome"]) == 1 and int(jobs["prepare_barcodes"]) == 1
    assert int(jobs["prepare_task"]) == n_tasks
    assert int(jobs["count_kmers"]) == cfg["kmers"]["n_shards"]
    assert int(jobs["pretrain"]) == n_models
    # each model trained here, its untrained control (`<model>@init`) and the k-mer baseline
    n_controls = n_models if cfg["evaluation"].get("controls", True) else 0
    assert n_controls == n_models and int(jobs["init_model"]) == n_models
    assert int(jobs["fewshot"]) == (n_models + n_controls + 1) * n_tasks
    assert "simulate_genome" not in jobs and "simulate_barcodes" not in jobs
    # downloads are local jobs: they run on the submitting machine, which has the internet
    download_rule = (ROOT / "rules" / "data.smk").read_text().split("rule download:")[1].split("\nrule ")[0]
    assert re.search(r"^    localrule: True$", download_rule, flags=re.M)


def dry_run_jobs(out: str) -> list[dict]:
    """Every job a ``snakemake -n`` log lists: rule, wildcards, threads and resources (parsed)."""
    jobs = []
    for m in re.finditer(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", out, flags=re.M):
        fields = dict(re.findall(r"^    (\w+): (.*)$", m.group(2), flags=re.M))
        split = lambda text: dict(kv.split("=", 1) for kv in text.split(", ")) if text else {}  # noqa: E731
        jobs.append({"rule": m.group(1), "wildcards": split(fields.get("wildcards", "")),
                     "threads": int(fields.get("threads", 1)), "resources": split(fields.get("resources", ""))})
    return jobs


def test_slurm_profile_puts_gpu_jobs_on_the_gpu_partition(tmp_path):
    """config/full.yaml through profiles/slurm (dry run, no SLURM needed): pretrain, embed and
    fine-tuning few-shot jobs of the neural models ask for the GPU partition with their GPUs,
    CPUs and memory; the k-mer baseline's embed and few-shot jobs stay on the CPU partition."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").symlink_to(ROOT / "config" / "config.yaml")
    overlay = {"evaluation": {"fewshot": {"finetune": True}}, "models": {"genemask": {"gpus": 2}}}
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    # --cores: a dry run caps threads at the local cores (1 by default); sbatch would not
    proc = snakemake(tmp_path, "-n", "--workflow-profile", str(ROOT / "profiles" / "slurm"), "--cores", "64",
                     "--configfile", str(ROOT / "config" / "full.yaml"), str(tmp_path / "overlay.yaml"))
    jobs = dry_run_jobs(proc.stdout + proc.stderr)
    cfg = merged("config.yaml", "full.yaml")
    models, tasks = list(cfg["models"]), cfg["evaluation"]["fewshot"]["tasks"]
    gpus = {m: 2 if m == "genemask" else cfg["training"]["gpus"] for m in models}
    assert cfg["training"]["gpus"] == 1 and cfg["training"]["threads"] == 8
    gpu_part, cpu_part = "CHANGE_ME_gpu_partition", "CHANGE_ME_cpu_partition"

    def res(rule, **wildcards):
        (job,) = [j for j in jobs if j["rule"] == rule and j["wildcards"] == {k: str(v) for k, v in wildcards.items()}]
        r = job["resources"]
        assert int(r["cpus_per_task"]) == job["threads"], job  # the profile's cpus_per_task: threads
        return {k: r.get(k) for k in ("slurm_partition", "gpu", "cpus_per_task", "mem_mb", "runtime")}

    for m in models:
        assert res("pretrain", model=m) == {"slurm_partition": gpu_part, "gpu": str(gpus[m]), "cpus_per_task": "8",
                                            "mem_mb": "32000", "runtime": "1440"}
        for dataset in tasks + ["barcodes"]:
            assert res("embed", model=m, dataset=dataset) == {"slurm_partition": gpu_part, "gpu": "1",
                                                              "cpus_per_task": "4", "mem_mb": "16000", "runtime": "120"}
        for task in tasks:
            assert res("fewshot", model=m, task=task) == {"slurm_partition": gpu_part, "gpu": "1",
                                                          "cpus_per_task": "4", "mem_mb": "16000", "runtime": "480"}
    for dataset in tasks + ["barcodes"]:
        assert res("embed", model="kmer", dataset=dataset) == {"slurm_partition": cpu_part, "gpu": "0",
                                                               "cpus_per_task": "4", "mem_mb": "16000", "runtime": "120"}
    for task in tasks:  # the baseline is always probed on frozen embeddings
        assert res("fewshot", model="kmer", task=task) == {"slurm_partition": cpu_part, "gpu": "0",
                                                           "cpus_per_task": "1", "mem_mb": "4000", "runtime": "120"}
    # no other job asks for a GPU or lands on the GPU partition
    gpu_rules = {"pretrain", "embed", "fewshot"}
    others = [j for j in jobs if j["rule"] not in gpu_rules and j["rule"] != "all"]
    assert others and all(j["resources"].get("gpu", "0") == "0" for j in others)
    assert all(j["resources"]["slurm_partition"] == cpu_part for j in others)
    assert {j["threads"] for j in jobs if j["rule"] == "taxonomy"} == {16}


# --------------------------------------------------------------------------- a run of the data rules


@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def test_data_rules_download_check_and_convert_real_inputs(tmp_path, file_server):
    www, url = file_server
    genome = "".join("ACGTTGCA"[(i * 7) % 8] for i in range(3000))
    with gzip.open(www / "genome.fa.gz", "wt") as fh:
        fh.write(f">chr1 first\n{genome[:1500]}\n>chrUn_x\nNNNN\n>chr2\n{genome[1500:]}\n")
    bold = "processid\tbin_uri\tphylum_name\tclass_name\torder_name\tfamily_name\tgenus_name\tspecies_name\tnucleotides\n"
    for i in range(40):
        species = f"Genus{i % 2} sp{i % 4}" if i < 32 else ""
        bold += f"P{i}\tBOLD:A{i}\tArthropoda\tInsecta\tDiptera\tFam\t{species.split(' ')[0]}\t{species}\t{'ACGT'[i % 4] * 5}{'ACGT' * 20}{i:b}".replace("0", "A").replace("1", "C") + "\n"
    with zipfile.ZipFile(www / "bold.zip", "w") as zf:
        zf.writestr("export/bold_data.tsv", bold)
    kmer_rows = ["\t".join(['"sequence"', '"label"'])]
    for i, seq in enumerate(["ACGTACGTAC", "TTGACCATGA", "GGGCCCAATT", "CATCATCATG"]):
        kmer_rows.append(f'"{" ".join(seq[j:j + 6] for j in range(5))}"\t"{i % 2}"')
    (www / "train.tsv").write_text("\n".join(kmer_rows) + "\n")
    (tmp_path / "test.tsv").write_text("sequence\tlabel\n" + "\n".join(r.replace('"', "") for r in kmer_rows[1:3]) + "\n")

    cfg = load("config.yaml")
    cfg["data"] = {
        "download": {"dir": "downloads", "retries": 1, "backoff": 0.01},
        "genome": {"url": f"{url}/genome.fa.gz", "md5": _md5(www / "genome.fa.gz"), "contigs": ["chr[0-9]+"]},
        "barcodes": {"url": f"{url}/bold.zip", "member": "export/bold_data.tsv", "splits": {"seed": 5}},
        "tasks": {"kmer-task": {"format": "genemask", "train": {"url": f"{url}/train.tsv"}, "test": {"path": str(tmp_path / "test.tsv"), "md5": _md5(tmp_path / "test.tsv")}}},
    }
    cfg["evaluation"]["fewshot"]["tasks"] = ["kmer-task"]
    cfg["evaluation"]["fewshot"]["shots"] = [1, 2]  # the train file holds 2 examples per class
    cfg["npmi"]["motifs"] = "jaspar"  # a real genome has no planted motifs
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    targets = ["results/data/genome.fa", "results/data/barcodes.tsv", "results/data/tasks/kmer-task/train.tsv"]
    snakemake(work, "--configfile", str(work / "config.yaml"), "--cores", "1", *targets)

    assert [n for n, _ in fasta.read_fasta(work / "results/data/genome.fa")] == ["chr1", "chr2"]
    assert "".join(s for _, s in fasta.read_fasta(work / "results/data/genome.fa")) == genome
    table = pd.read_csv(work / "results/data/barcodes.tsv", sep="\t", keep_default_na=False)
    assert list(table.columns) == simulate.BARCODE_COLUMNS and len(table) == 40
    assert set(table["split"]) <= {"pretrain", "train", "val", "test", "key_unseen", "val_unseen", "test_unseen", "other_heldout"}
    assert set(table.loc[table["species"] == "", "split"]) <= {"pretrain", "other_heldout"}
    task = pd.read_csv(work / "results/data/tasks/kmer-task/train.tsv", sep="\t")
    assert task["sequence"].tolist() == ["ACGTACGTAC", "TTGACCATGA", "GGGCCCAATT", "CATCATCATG"]
    assert (work / "downloads/genome/genome.fa.gz").exists()
    assert not (work / "downloads/barcodes/extracted/export/bold_data.tsv").exists()  # temp(): removed after use

    # a wrong pinned checksum fails the download job, names the problem, and leaves no file
    bad = copy.deepcopy(cfg)
    bad["data"]["download"]["dir"] = "downloads2"
    bad["data"]["genome"]["md5"] = "0" * 32
    (work / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc = snakemake(work, "--configfile", str(work / "bad.yaml"), "--cores", "1", "results/data/genome.fa", check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    log = (work / "results/logs/download/genome/genome.fa.gz.log").read_text()
    assert "md5 mismatch: expected 00000000000000000000000000000000" in log and f"{url}/genome.fa.gz" in log
    assert not (work / "downloads2/genome").exists() or list((work / "downloads2/genome").iterdir()) == []

    # a downloaded task whose pool is too small for the shots: nothing to count before the
    # download, so its conversion job fails, naming the key and the task, and writes no table
    small = copy.deepcopy(cfg)
    small["data"]["download"]["dir"] = "downloads3"
    small["data"]["tasks"] = {"small-task": {"train": {"url": f"{url}/train.tsv"}, "test": cfg["data"]["tasks"]["kmer-task"]["test"]}}
    small["evaluation"]["fewshot"].update(tasks=["small-task"], shots=[1, 3])
    (work / "small.yaml").write_text(yaml.safe_dump(small))
    target = "results/data/tasks/small-task/train.tsv"
    proc = snakemake(work, "--configfile", str(work / "small.yaml"), "--cores", "1", target, check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    log = (work / "results/logs/prepare_task/small-task.log").read_text()
    assert "config key 'evaluation.fewshot.shots': K = [3]" in log and "'small-task'" in log, log[-2000:]
    assert not (work / target).exists()
    # once the file is on disk, the next run reports it before any job runs
    proc = snakemake(work, "--configfile", str(work / "small.yaml"), "--cores", "1", target, check=False)
    out = proc.stdout + proc.stderr
    assert "Invalid configuration: config key 'evaluation.fewshot.shots': K = [3]" in out, out[-3000:]
    assert "Building DAG of jobs" not in out
