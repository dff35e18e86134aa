"""The report stage end to end: evaluation and report rules on a small synthetic data set,
`snakemake --report`, and the HTML report opened in headless Chromium.

The workflow here is the real rules/common.smk, rules/evaluate.smk and rules/report.smk
(rule scripts, captions, categories) behind a small Snakefile; the inputs the upstream
stages would write (task tables, barcodes, embeddings, training curves, top k-mers) are
synthesised, so the module needs no pretraining and runs in about a minute. The browser
test needs Debian's chromium and chromium-driver (tools/apt-packages.txt) and selenium
(requirements-dev.txt); it skips, saying which is missing, without them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dnalm import embed

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
FIGURES = ["fewshot", "taxonomy", "training", "top_kmers", "bias", "embedding_map", "leaderboard"]
#: category -> labels of its entries (rules/report.smk)
CATEGORIES = {
    "Few-shot": ["few-shot curves"],
    "Taxonomy": ["class-imbalance bias", "closed / open world", "embedding map"],
    "Pretraining": ["training and validation curves"],
    "NPMI": ["top NPMI k-mers"],
    "Tables": ["every metric (tidy)", "leaderboard", "summary"],
    "Leaderboard": ["leaderboard heat map"],
}
#: tables offered as downloads, not shown in the page
DOWNLOADS = {"every metric (tidy)", "leaderboard"}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--window-size=1400,1000",
]

SNAKEFILE = """
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "{root}/rules/report/workflow.rst"


include: "{root}/rules/common.smk"
include: "{root}/rules/evaluate.smk"
include: "{root}/rules/align.smk"
include: "{root}/rules/report.smk"


rule all:
    input:
        expand(R("report/figures/{{name}}.png"), name={figures}),
        R("report/metrics.tsv"),
"""


def _random_dna(rng, n, p=None):
    return "".join(rng.choice(list("ACGT"), size=n, p=p))


def _mutate(rng, seq, rate):
    seq = np.array(list(seq))
    hit = rng.random(len(seq)) < rate
    seq[hit] = rng.choice(list("ACGT"), size=int(hit.sum()))
    return "".join(seq)


def _write_inputs(results: Path, rng) -> None:
    """What the data, pretraining, embedding and NPMI stages would have written."""
    data = results / "data"
    (data / "tasks" / "prom").mkdir(parents=True)
    tata = "CTATAAAAGG"
    pd.DataFrame({"motif_id": ["prom_tata", "generic_1"], "consensus": [tata, "GGATGGCC"]}).to_csv(
        data / "motifs.tsv", sep="\t", index=False
    )
    task_seqs = {}
    for split, n in (("train", 30), ("test", 20)):
        rows = []
        for label in (0, 1):
            for i in range(n):
                s = _random_dna(rng, 80, p=[0.3, 0.2, 0.2, 0.3] if label else None)
                if label:
                    s = s[:30] + tata + s[40:]
                rows.append((f"prom_{split}_{label}_{i:02d}", s, label))
        table = pd.DataFrame(rows, columns=["id", "sequence", "label"])
        table.to_csv(data / "tasks" / "prom" / f"{split}.tsv", sep="\t", index=False)
        task_seqs.update(zip(table["id"], table["sequence"]))
    # barcodes: 2 orders x 2 families x 2 genera x 3 species; the third species of each genus unseen
    rows, n = [], 0
    for o in range(2):
        order_seq = _random_dna(rng, 300)
        for f in range(2):
            family_seq = _mutate(rng, order_seq, 0.12)
            for g in range(2):
                genus_seq = _mutate(rng, family_seq, 0.08)
                for sp in range(3):
                    species_seq = _mutate(rng, genus_seq, 0.04)
                    splits = ["test_unseen"] * 3 if sp == 2 else ["train"] * (4 + sp) + ["test"] * 2
                    for split in splits:
                        n += 1
                        rows.append((f"BC{n:04d}", _mutate(rng, species_seq, 0.01), f"Order{o}", f"Fam{o}{f}",
                                     f"Gen{o}{f}{g}", f"Gen{o}{f}{g} sp{sp}", split))
    barcodes = pd.DataFrame(rows, columns=["processid", "dna_barcode", "order", "family", "genus", "species", "split"])
    barcodes.to_csv(data / "barcodes.tsv", sep="\t", index=False)
    # embeddings: the k-mer baseline for real; "tiny" stands in for a network (a noisy projection),
    # "tiny@init" for its untrained control (noisier)
    projection = rng.normal(size=(64, 16))
    for dataset, seqs in (("prom", task_seqs), ("barcodes", dict(zip(barcodes["processid"], barcodes["dna_barcode"])))):
        spectrum = embed.kmer_spectrum(list(seqs.values()), 3)
        embed.save_embeddings(results / "embeddings" / "kmer" / f"{dataset}.npz", list(seqs), spectrum)
        for model, noise in (("tiny", 0.5), ("tiny@init", 5.0)):
            fake = spectrum @ projection * 20 + rng.normal(size=(len(seqs), 16)) * noise
            embed.save_embeddings(results / "embeddings" / model / f"{dataset}.npz", list(seqs), fake)
    # the saved models (dnalm.json: their provenance) and their validation scores
    for model, steps, loss in (("tiny", 300, 2.5), ("tiny@init", 0, 4.2)):
        (results / "models" / model).mkdir(parents=True)
        meta = {"k": 3, "tokenization": "overlapping", "max_tokens": 64, "steps": steps, "seed": 0,
                "config_hash": "0123456789abcdef"}  # fmt: skip
        (results / "models" / model / "dnalm.json").write_text(json.dumps(meta))
        (results / "pretrain" / model).mkdir(parents=True)
        pd.DataFrame({"model": model, "dataset": "validation", "protocol": "pretraining",
                      "level": ["model", "model", "unigram"], "shots": np.nan, "repeat": 0,
                      "metric": ["cross_entropy", "accuracy", "accuracy"], "value": [loss, 0.3, 0.1]}).to_csv(
            results / "pretrain" / model / "validation.tsv", sep="\t", index=False)  # fmt: skip
    step = np.arange(1, 31) * 10
    pd.DataFrame({"step": step, "loss": 8 * np.exp(-step / 150) + 2, "masked_acc": step / 600,
                  "mask_rate": 0.15 + rng.normal(0, 0.005, 30)}).to_csv(
        results / "pretrain" / "tiny" / "metrics.tsv", sep="\t", index=False)
    (results / "npmi").mkdir()
    kmers = [_random_dna(rng, 6) for _ in range(30)]
    pd.DataFrame({"kmer": kmers, "n": 6, "count": rng.integers(200, 3000, 30), "npmi": np.linspace(0.2, 0.05, 30),
                  "rank": np.arange(1, 31), "motifs": ["prom_tata"] * 3 + [""] * 27}).to_csv(
        results / "npmi" / "top_kmers.tsv", sep="\t", index=False)


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    cmd = [SNAKEMAKE, "--snakefile", str(workdir / "Snakefile"), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("report")
    for name in ("scripts", "config"):  # common.smk finds both next to the Snakefile
        (workdir / name).symlink_to(ROOT / name)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["results"] = "results"
    cfg["models"] = {"tiny": {"preset": "dnabert"}}
    # shots_scale 2: each K draws 2 K per class (the train pool has 30 per class)
    cfg["evaluation"]["fewshot"].update(tasks=["prom"], shots=[5, 10], n_repeats=2, max_iter=200,
                                        shots_scale={"prom": 2})
    cfg["report"]["embedding_map"] = {"method": "pca", "split": "test", "rank": "family"}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (workdir / "Snakefile").write_text(SNAKEFILE.format(root=ROOT, figures=FIGURES))
    _write_inputs(workdir / "results", np.random.default_rng(0))
    _snakemake(workdir, "--cores", "2")
    _snakemake(workdir, "--report", "report.html")
    return workdir


def test_report_rules_write_tables_and_figures(report_html):
    results = report_html / "results"
    metrics = pd.read_csv(results / "report" / "metrics.tsv", sep="\t", keep_default_na=False)
    assert set(metrics["model"]) == {"tiny", "tiny@init", "kmer", "align"}
    board = pd.read_csv(results / "report" / "leaderboard.tsv", sep="\t", keep_default_na=False)
    assert board["model"].tolist() == ["tiny", "tiny@init", "kmer", "align"]
    assert board["kind"].tolist() == ["trained", "control", "baseline", "baseline"]
    assert "config 0123456789ab" in board["provenance"].iloc[0]
    assert "<h2>Leaderboard</h2>" in (results / "report" / "summary.html").read_text()
    assert set(metrics.loc[metrics["protocol"] == "pretraining", "model"]) == {"tiny", "tiny@init"}
    assert {"fewshot", "closed_world", "open_world", "clustering", "consistency"} <= set(metrics["protocol"])
    probing = metrics[(metrics["dataset"] == "prom") & (metrics["protocol"] == "consistency")]
    assert set(probing["level"]) == {"label", "motif"}
    per_class = pd.read_csv(results / "eval" / "bias" / "kmer.tsv", sep="\t", keep_default_na=False)
    assert set(per_class["level"]) == {"species", "genus"} and per_class["accuracy"].between(0, 1).all()
    html = (results / "report" / "summary.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and "| tiny" not in html
    # evaluation.fewshot.shots_scale reached the rule: nominal K in metrics.tsv, 2 K drawn per class
    few = metrics[metrics["protocol"] == "fewshot"]
    assert sorted(set(few["shots"].astype(float))) == [5.0, 10.0]
    for model in ("tiny", "kmer"):
        table = pd.read_csv(results / "eval" / "fewshot" / model / "prom.tsv", sep="\t")
        assert (table["per_class"] == 2 * table["shots"]).all() and len(table) == 2 * 2 * 3
    assert "<b>prom</b> (K is nominal: 2 K examples drawn per class)" in html
    for name in FIGURES:
        assert (results / "report" / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    page = (report_html / "report.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and len(page) > 200_000
    for name in FIGURES:
        assert f"{name}.png" in page


def _browser():
    """A headless Chromium driven by selenium, or a skip naming what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (requirements-dev.txt)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Chromium or chromedriver not found (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _wait(condition, timeout=20.0):
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.2)


def test_report_opens_in_chromium_and_shows_every_figure(report_html):
    from selenium.webdriver.common.by import By

    browser = _browser()
    page = (report_html / "report.html").as_uri()

    def open_category(category):
        browser.get(page)
        assert _wait(lambda: browser.find_elements(By.PARTIAL_LINK_TEXT, category)), "the report app did not render"
        browser.find_element(By.PARTIAL_LINK_TEXT, category).click()

    def row(label):
        rows = [r for r in browser.find_elements(By.TAG_NAME, "tr") if r.text.strip() == label]
        return rows[0] if rows else None

    png = ("return Array.from(document.images).filter(i => i.src.startsWith('data:image/png') && i.complete)"
           ".map(i => [i.naturalWidth, i.naturalHeight])")
    try:
        browser.get(page)
        assert _wait(lambda: browser.find_elements(By.LINK_TEXT, "Few-shot")), "the report app did not render"
        assert "dnalm-workflow" in browser.find_element(By.TAG_NAME, "body").text  # rules/report/workflow.rst
        for category, labels in CATEGORIES.items():
            for label in labels:
                open_category(category)
                assert _wait(lambda: row(label)), f"{category}: no entry {label!r}"
                if label not in DOWNLOADS:  # a TSV is offered as a download, not shown
                    row(label).find_elements(By.CSS_SELECTOR, "a")[0].click()  # the eye: show the result
                    if label == "summary":
                        frame = _wait(lambda: browser.find_elements(By.TAG_NAME, "iframe"))
                        assert frame, "the HTML summary is not shown"
                        browser.switch_to.frame(frame[0])
                        assert _wait(lambda: browser.find_elements(By.TAG_NAME, "table")), "the summary shows no table"
                        browser.switch_to.default_content()
                    else:
                        sizes = _wait(lambda: browser.execute_script(png))
                        assert sizes and min(sizes[0]) > 300, f"{label}: figure not displayed ({sizes})"
                row(label).find_elements(By.CSS_SELECTOR, "a")[1].click()  # the (i): caption and provenance
                assert _wait(lambda: "DESCRIPTION" in browser.find_element(By.TAG_NAME, "body").text.upper()), label
    finally:
        browser.quit()
