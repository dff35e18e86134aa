"""Do the small models learn? Pretrain one setting, compare it with its untrained control.

(One file of ~650 lines on purpose: a benchmark that a reader reruns from one command;
data, evaluation, training and control, summary and the plateau toy are its sections.)

For every (setting, model seed) this script

1. builds (or reuses, under ``--work``) the data: the demo genome, tasks and barcodes
   simulated with ``--data-seed`` (the demo's top-level ``seed``), or a real genome FASTA
   (``--genome``) and GeneMask task files (``--genemask-tasks``) with the demo barcodes;
   the pretraining corpus (``corpus.genome`` / ``corpus.barcodes`` of the demo config,
   overridable; barcodes through ``dnalm.corpus.barcode_corpus``, as the pipeline) and, for
   GeneMask masking, the NPMI table (``dnalm.kmers`` + ``dnalm.npmi``);
2. pretrains the model with ``dnalm.train.train`` (settings: the demo config's
   ``training`` block < the preset < the overrides, exactly as ``dnalm.config.resolve_model``
   resolves a ``models:`` entry; one torch thread), timing wall and CPU seconds; the run's
   own validation slice (5 % of the corpus, never trained on) gives the held-out loss and
   masked-token accuracy, and those of the unigram and k-mer context predictors
   (``dnalm.json``);
3. builds the untrained control: the model ``train`` starts from (same seeding and build),
   saved in the trained model's format and scored on the same validation slice
   (``dnalm.train.save_initial`` when the package has it, else :func:`save_control_here`,
   which does the same with the training module's own functions);
4. embeds, with ``dnalm.embed`` (the model's pooling, ``mean`` unless ``--set pooling=...``;
   windows of the training length, as the ``embed`` rule does), the barcodes of
   ``train``/``test``/``test_unseen`` and the few-shot task sets, for the trained model, the
   control and (once per data set) the k-mer-spectrum baseline;
5. evaluates with ``dnalm.evaluate``: closed-world species (linear probe, train -> test),
   open-world genus (cosine 1-NN, train -> test_unseen), each also split into full-length
   and start-trimmed query barcodes, and few-shot probes (``--shots`` x ``--repeats``; the
   draws are the same for the model, its control and the baseline, so the paired
   difference and its spread over repeats are reported too);
6. for non-overlapping models (``--frames``, on by default), the same taxonomy metrics on
   **frame-averaged** embeddings: the mean of the embedding over the k reading frames (the
   sequence with 0..k-1 leading bases dropped). A benchmark measurement only, not a
   pipeline option: it makes every non-overlapping model frame-invariant, control included;

and appends one TSV row per (setting, seed) to ``--out``.

Settings (``--set KEY=VALUE``, VALUE parsed as YAML; dotted keys go into nested dicts):
any ``dnalm.train.TrainConfig`` key (``k``, ``tokenization``, ``lr``, ``steps``,
``batch_size``, ``warmup_steps``, ``schedule``, ``max_tokens``, ``pooling``,
``size.hidden``, ``size.layers``, ``size.heads``, ``size.intermediate``, ``size.dropout``,
``masking_params.mask_ratio``, ``masking_params.center_prob``, ...), plus
``corpus.genome.n_windows|min_len|max_len`` and ``corpus.barcodes.splits|length``. A plan
file (``--plan``, YAML: a list of ``{name, family, set: {...}, seeds: [...]}``) runs many
settings; rows already in ``--out`` (same name, family, data, seed) are skipped, so an
interrupted sweep resumes.

Run from the repository root (nice: other work shares the cores; timings are then noisy,
so the CPU seconds of the training process are recorded beside the wall time):

    nice -n 10 .venv/bin/python benchmarks/bench_learning.py --family barcodebert --set k=4 --seeds 0 1 2
    nice -n 10 .venv/bin/python benchmarks/bench_learning.py --plan benchmarks/learning_sweep.yaml
    .venv/bin/python benchmarks/bench_learning.py --summary --markdown --where "data == 'sim42'"

``--quick`` runs a tiny data set and a few steps (the smoke test, tests/test_bench_learning.py).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import os
import resource
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from dnalm import config as C  # noqa: E402
from dnalm import corpus as dcorpus  # noqa: E402
from dnalm import datasets, embed, evaluate, kmers, npmi, seq, simulate  # noqa: E402

log = logging.getLogger("bench_learning")
FAMILIES = tuple(C.PRESETS)
BARCODE_SPLITS = ("train", "test", "test_unseen")
GENEMASK_TASKS = {  # name: (train file, test file, shots_scale) under the GeneMask folder
    "prom-core": ("Prom-core/1000/train.tsv", "Prom-core/test.tsv", 1),
    "splice-40": ("Splice-40/500/train_splice40_500.tsv", "Splice-40/test.tsv", 10),
}
#: --quick: a small simulated data set (seconds to build) and a few training steps
QUICK_DATA = {
    "genome": {"contig_lengths": [120_000, 80_000], "train_per_class": 30, "test_per_class": 20},
    "barcodes": {"n_orders": 2, "families_per_order": 2, "genera_per_family": 2, "species_per_genus": 3,
                 "specimens_per_species": 12},
}
QUICK_TRAINING = {"steps": 6, "warmup_steps": 2, "log_every": 2, "checkpoint_every": 6}
QUICK_CORPUS = {"genome": {"n_windows": 300}}


# ----------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------


def parse_sets(items) -> dict:
    """``["a.b=1", "k=4"]`` -> ``{"a": {"b": 1}, "k": 4}`` (values parsed as YAML)."""
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set needs KEY=VALUE, got {item!r}")
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def resolve(base_config: dict, family: str, overrides: dict) -> tuple[dict, dict]:
    """(train settings, corpus settings) of a setting: the demo config's training block <
    preset < overrides (``dnalm.config.resolve_model``), corpus from the config's ``corpus``
    block < ``overrides["corpus"]``."""
    overrides = copy.deepcopy(overrides)
    corpus_over = overrides.pop("corpus", {})
    cfg = copy.deepcopy(base_config)
    cfg["models"] = {"m": {"preset": family, **overrides}}
    resolved = C.resolve_model(cfg, "m")
    kind = resolved["corpus"]
    corpus = C.deep_merge(cfg["corpus"][kind], corpus_over.get(kind, {}))
    corpus["kind"] = kind
    train = C.train_settings(resolved)
    train["num_threads"] = 1
    train["device"] = "cpu"
    return train, corpus


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------
# data (cached under --work)
# ----------------------------------------------------------------------------------------


class Data:
    """Barcodes, tasks, genome and corpora of one data set, built once and cached."""

    def __init__(self, work: Path, data_seed: int, genome: str | None, genemask_dir: str | None, base_config: dict,
                 quick: bool = False):
        self.seed = data_seed
        self.real = genome is not None
        tag = f"sim{data_seed}" if not self.real else f"real{data_seed}-{digest([genome, genemask_dir])}"
        self.dir = work / (tag + ("-quick" if quick else ""))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.base_config = base_config
        sim = self.dir / "sim"
        params = base_config["data"]
        if not (sim / "barcodes.tsv").is_file():
            simulate.write_barcode_demo(sim, params["barcodes"].get("simulate") or None, data_seed)
        if not self.real and not (sim / "genome.fa").is_file():
            simulate.write_genome_demo(sim, params["genome"].get("simulate") or None, data_seed)
        self.barcodes = pd.read_csv(sim / "barcodes.tsv", sep="\t")
        self.genome = Path(genome) if self.real else sim / "genome.fa"
        self.tasks: dict[str, tuple[pd.DataFrame, pd.DataFrame, int]] = {}
        if self.real:
            for name, (tr, te, scale) in GENEMASK_TASKS.items():
                train, test = datasets.convert_task(Path(genemask_dir) / tr, Path(genemask_dir) / te, name)
                self.tasks[name] = (train, test, scale)
        else:
            for name in simulate.GENOME_TASKS:
                t = sim / "tasks" / name
                self.tasks[name] = (datasets.read_task(t / "train.tsv"), datasets.read_task(t / "test.tsv"), 1)

    def corpus(self, settings: dict) -> Path:
        path = self.dir / f"corpus-{digest(settings)}.npz"
        if not path.is_file():
            if settings["kind"] == "genome":
                c = dcorpus.genome_windows(
                    self.genome, settings["n_windows"], settings["min_len"], settings["max_len"], self.seed
                )
            else:  # as the barcode_corpus rule: splits 'auto' or as given
                c, chosen, why = dcorpus.barcode_corpus(self.barcodes, settings["splits"], settings["length"])
                log.info("barcode corpus: %d windows of %s (%s)", len(c), list(chosen), why)
            dcorpus.save_corpus(path, c)
        return path

    def npmi(self, kind: str, corpus_path: Path) -> Path:
        """NPMI table of the genome (genome models) or of the barcode corpus."""
        k_max = int(self.base_config["kmers"]["k_max"])
        min_count = int(self.base_config["npmi"]["min_count"])
        if kind == "genome":
            path = self.dir / "npmi-genome.tsv"
            if not path.is_file():
                counts = kmers.count_fasta(self.genome, k_max, both_strands=False)
                npmi.write_npmi_tsv(counts, path, min_count=min_count)
        else:
            path = self.dir / f"npmi-{corpus_path.stem}.tsv"
            if not path.is_file():
                counts = kmers.count_corpus(dcorpus.load_corpus(corpus_path), k_max)
                npmi.write_npmi_tsv(counts, path, min_count=min_count)
        return path

    def barcode_split(self, name: str) -> pd.DataFrame:
        rows = self.barcodes[self.barcodes["split"] == name]
        if rows.empty:
            raise ValueError(f"barcode split {name!r} is empty")
        return rows


# ----------------------------------------------------------------------------------------
# embedding and evaluation
# ----------------------------------------------------------------------------------------


def embedder(model_dir: Path | None, baseline_k: int):
    """A function sequences -> embeddings (a model directory, as the embed rule embeds with
    it; or the k-mer spectrum)."""
    if model_dir is None:
        return lambda seqs: embed.kmer_spectrum(seqs, baseline_k)
    import transformers

    transformers.logging.set_verbosity_error()  # the MLM head left out of the encoder is expected
    model, meta = embed.load_encoder(model_dir, device="cpu")
    return lambda seqs: embed.embed_sequences(
        model, meta, seqs, batch_size=64, progress=False, max_tokens=meta["max_tokens"], long="chunk"
    )


def frame_averaged(fn, k: int):
    """Embeddings averaged over the k reading frames of non-overlapping k-mers: the mean of
    ``fn`` over the sequence with 0..k-1 leading bases dropped (frame-invariant)."""
    return lambda seqs: np.mean([fn([s[j:] for s in seqs]) for j in range(k)], axis=0)


def taxonomy_metrics(fn, data: Data, eval_seed: int) -> dict:
    """Closed-world species and open-world genus accuracy of one embedder, also on
    full-length and start-trimmed query barcodes separately (a trimmed start shifts the
    reading frame of non-overlapping k-mers)."""
    res: dict = {}
    parts = {s: data.barcode_split(s) for s in BARCODE_SPLITS}
    emb = {s: fn(parts[s]["dna_barcode"].tolist()) for s in BARCODE_SPLITS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        closed, pred = evaluate.closed_world(
            emb["train"], parts["train"]["species"].to_numpy(), emb["test"], parts["test"]["species"].to_numpy(),
            max_iter=1000, seed=eval_seed, probe="sklearn", return_predictions=True,
        )
    res["closed_species_acc"] = float(closed.query("metric == 'accuracy'")["value"].iloc[0])
    opened, gpred = evaluate.open_world(
        emb["train"], parts["train"]["genus"].to_numpy(), emb["test_unseen"], parts["test_unseen"]["genus"].to_numpy(),
        return_predictions=True, threads=1,
    )
    res["open_genus_acc"] = float(opened.query("metric == 'accuracy'")["value"].iloc[0])
    full_len = data.barcodes["dna_barcode"].str.len().max()
    for tag, part, ok in (("closed", "test", pred == parts["test"]["species"].to_numpy()),
                          ("open", "test_unseen", gpred == parts["test_unseen"]["genus"].to_numpy())):
        full = (parts[part]["dna_barcode"].str.len() == full_len).to_numpy()
        res[f"{tag}_full"] = float(ok[full].mean()) if full.any() else float("nan")
        res[f"{tag}_trimmed"] = float(ok[~full].mean()) if (~full).any() else float("nan")
    res["open_genus_chance"] = float(opened.query("metric == 'chance_accuracy'")["value"].iloc[0])
    return res


def evaluate_embeddings(fn, data: Data, shots, repeats: int, eval_seed: int) -> tuple[dict, dict]:
    """(taxonomy metrics, few-shot accuracy per (task, K, repeat)) of one embedder."""
    res = taxonomy_metrics(fn, data, eval_seed)
    fewshot: dict = {}
    for task, (train, test, scale) in data.tasks.items():
        x_tr, x_te = fn(train["sequence"].tolist()), fn(test["sequence"].tolist())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = evaluate.fewshot(
                x_tr, train["label"].to_numpy(), x_te, test["label"].to_numpy(), shots=shots, n_repeats=repeats,
                seed=eval_seed, max_iter=1000, shots_scale=scale,
            )
        for row in df.query("metric == 'accuracy'").itertuples():
            fewshot[(task, int(row.shots), int(row.repeat))] = float(row.value)
    return res, fewshot


def fewshot_columns(prefix: str, fs: dict, ref: dict | None = None) -> dict:
    """mean/std over repeats per (task, K); with ``ref``, also the paired difference."""
    out = {}
    for task, k in sorted({(t, k) for t, k, _ in fs}):
        reps = sorted(r for t, kk, r in fs if t == task and kk == k)
        v = np.array([fs[(task, k, r)] for r in reps])
        out[f"{prefix}fs_{task}_{k}"] = round(float(v.mean()), 4)
        out[f"{prefix}fs_{task}_{k}_sd"] = round(float(v.std(ddof=1)) if len(v) > 1 else float("nan"), 4)
        if ref is not None:
            d = v - np.array([ref[(task, k, r)] for r in reps])
            out[f"{prefix}fs_{task}_{k}_gain"] = round(float(d.mean()), 4)
            out[f"{prefix}fs_{task}_{k}_gain_sd"] = round(float(d.std(ddof=1)) if len(d) > 1 else float("nan"), 4)
    return out


# ----------------------------------------------------------------------------------------
# pretraining and the untrained control
# ----------------------------------------------------------------------------------------


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def save_control_here(cfg, out_dir: Path, corpus_path: Path, npmi_path) -> dict:
    """The untrained control, for a package without ``dnalm.train.save_initial``: the model
    ``train`` starts from (``_init_model``: ``torch.manual_seed(cfg.seed)`` + ``build_model``),
    saved with the trainer's ``_save_final`` and scored on the run's validation slice
    (``dnalm.validation.Validation``, whose batches depend on ``cfg`` and the corpus only)."""
    import torch

    from dnalm import train as T

    device = torch.device("cpu")
    model = T._init_model(cfg, device)
    metrics = T.RunningMetrics(device, T.Dist(), masking=cfg.architecture != "clm")
    batcher = T.Batcher(dcorpus.load_corpus(corpus_path), cfg, T._npmi_table(cfg, npmi_path), np.random.default_rng(0))
    validation = T.Validation(batcher, cfg)
    summary = T._summary(cfg, metrics, T.Dist(), device, T.config_hash(cfg, corpus_path, npmi_path))
    summary.update(steps=0, mean_mask_rate=None)
    if validation.enabled:
        scores = validation.evaluate(model, lambda t: T.forward(model, t, device, contextlib.nullcontext()), T.Dist())
        summary.update(final_val_loss=scores["val_loss"], final_val_masked_acc=scores["val_masked_acc"])
    T._save_final(model, cfg, summary, out_dir)
    return summary


def save_control(cfg, out_dir: Path, corpus_path: Path, npmi_path) -> tuple[dict, str]:
    """(summary, which function saved it) of the untrained control of ``cfg``."""
    from dnalm import train as T

    if hasattr(T, "save_initial"):
        return T.save_initial(cfg, out_dir, corpus_path, npmi_path), "dnalm.train.save_initial"
    return save_control_here(cfg, out_dir, corpus_path, npmi_path), "bench_learning.save_control_here"


def baseline_scores(summary: dict) -> dict:
    """Validation scores of the no-model predictors recorded in ``dnalm.json``."""
    val = summary.get("validation") or {}
    out = {}
    for name, scores in (val.get("baselines") or {}).items():
        out[f"{name}_val_acc"] = scores.get("accuracy")
        out[f"{name}_val_loss"] = scores.get("cross_entropy")
    out["val_mask_rate"] = val.get("mask_rate")
    return out


def r4(x):
    return None if x is None else round(float(x), 4)


def run_one(name: str, family: str, overrides: dict, seed: int, data: Data, args, base_config: dict) -> dict:
    import torch

    from dnalm import train as T

    train_settings, corpus_settings = resolve(base_config, family, overrides)
    train_settings["seed"] = seed
    cfg = T.TrainConfig.from_dict(train_settings)
    corpus_path = data.corpus(corpus_settings)
    npmi_path = data.npmi(corpus_settings["kind"], corpus_path) if cfg.masking == "genemask" else None
    run_dir = Path(args.work) / "runs" / f"{data.dir.name}-{family}-{digest([train_settings, corpus_settings])}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    torch.set_num_threads(1)

    load0 = os.getloadavg()[0]
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    summary = T.train(cfg, corpus_path, run_dir / "model", run_dir / "metrics.tsv", run_dir / "ckpt", npmi_path)
    train_wall, train_cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    load1 = os.getloadavg()[0]
    ctl, ctl_by = save_control(cfg, run_dir / "control", corpus_path, npmi_path)
    metrics = pd.read_csv(run_dir / "metrics.tsv", sep="\t")

    eval_seed = data.seed  # the workflow seeds its probes with the top-level seed
    t0 = time.perf_counter()
    fn, fn_c = embedder(run_dir / "model", 0), embedder(run_dir / "control", 0)
    res, fs = evaluate_embeddings(fn, data, args.shots, args.repeats, eval_seed)
    res_c, fs_c = evaluate_embeddings(fn_c, data, args.shots, args.repeats, eval_seed)
    frames = {}
    if args.frames and cfg.tokenization == "non-overlapping":
        fa = taxonomy_metrics(frame_averaged(fn, cfg.k), data, eval_seed)
        fa_c = taxonomy_metrics(frame_averaged(fn_c, cfg.k), data, eval_seed)
        frames = {
            "closed_fa": r4(fa["closed_species_acc"]), "ctl_closed_fa": r4(fa_c["closed_species_acc"]),
            "open_fa": r4(fa["open_genus_acc"]), "ctl_open_fa": r4(fa_c["open_genus_acc"]),
        }
    eval_wall = time.perf_counter() - t0
    kres, kfs = kmer_baseline(data, args, int(base_config["baseline"]["k"]), eval_seed)

    n_params = sum(p.numel() for p in T.build_model(cfg).parameters())
    row = {
        "name": name, "family": family, "data": data.dir.name, "seed": seed,
        "overrides": json.dumps(overrides, sort_keys=True),
        "architecture": cfg.architecture, "masking": cfg.masking,
        "k": cfg.k, "tokenization": cfg.tokenization, "vocab": seq.vocab_size(cfg.k),
        "size": f"{cfg.size['layers']}x{cfg.size['hidden']}h{cfg.size['heads']}",
        "steps": cfg.steps, "batch": cfg.batch_size, "lr": cfg.lr, "warmup": cfg.warmup_steps,
        "max_tokens": cfg.max_tokens, "pooling": cfg.pooling,
        "corpus_windows": len(dcorpus.load_corpus(corpus_path)), "n_params": n_params,
        "train_wall_s": round(train_wall, 1), "train_cpu_s": round(train_cpu, 1),
        "load_start": round(load0, 2), "load_end": round(load1, 2),
        "first_loss": r4(metrics["loss"].iloc[0]), "final_loss": r4(metrics["loss"].iloc[-1]),
        "train_masked_acc": r4(metrics["masked_acc"].iloc[-1]),
        "mask_rate": r4(summary["mean_mask_rate"]),
        "val_loss": r4(summary["final_val_loss"]), "val_acc": r4(summary["final_val_masked_acc"]),
        "ctl_val_loss": r4(ctl.get("final_val_loss")), "ctl_val_acc": r4(ctl.get("final_val_masked_acc")),
        **{k: r4(v) for k, v in baseline_scores(summary).items()},
        "closed": r4(res["closed_species_acc"]), "ctl_closed": r4(res_c["closed_species_acc"]),
        "kmer_closed": r4(kres["closed_species_acc"]),
        "open": r4(res["open_genus_acc"]), "ctl_open": r4(res_c["open_genus_acc"]),
        "kmer_open": r4(kres["open_genus_acc"]), "open_chance": r4(res["open_genus_chance"]),
        **frames,
        **{f"{p}{t}_{g}": r4(r[f"{t}_{g}"]) for p, r in (("", res), ("ctl_", res_c), ("kmer_", kres))
           for t in ("closed", "open") for g in ("full", "trimmed")},
        "eval_wall_s": round(eval_wall, 1), "control_by": ctl_by,
    }
    row.update(fewshot_columns("", fs, fs_c))
    row.update(fewshot_columns("ctl_", fs_c))
    row.update(fewshot_columns("kmer_", kfs))
    if not args.keep:
        shutil.rmtree(run_dir / "ckpt", ignore_errors=True)
    return row


_KMER_CACHE: dict = {}


def kmer_baseline(data: Data, args, k: int, eval_seed: int):
    key = (data.dir.name, k, tuple(args.shots), args.repeats)
    if key not in _KMER_CACHE:
        path = data.dir / f"kmer-{digest(list(key))}.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            _KMER_CACHE[key] = (saved["res"], {tuple(json.loads(a)): b for a, b in saved["fs"].items()})
        else:
            res, fs = evaluate_embeddings(embedder(None, k), data, args.shots, args.repeats, eval_seed)
            path.write_text(json.dumps({"res": res, "fs": {json.dumps(list(a)): b for a, b in fs.items()}}))
            _KMER_CACHE[key] = (res, fs)
    return _KMER_CACHE[key]


# ----------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------


def append_row(path: Path, row: dict) -> None:
    """Append a row, widening the file's columns when the row brings new ones."""
    new = pd.DataFrame([row])
    if path.is_file() and path.stat().st_size:
        old = pd.read_csv(path, sep="\t")
        new = pd.concat([old, new], ignore_index=True)
    tmp = path.with_suffix(".tmp")
    new.to_csv(tmp, sep="\t", index=False)
    os.replace(tmp, path)


def done_keys(path: Path) -> set:
    if not path.is_file() or not path.stat().st_size:
        return set()
    old = pd.read_csv(path, sep="\t")
    return set(zip(old["name"], old["family"], old["data"], old["seed"]))


def toy_plateau(k: int, length: int, span: int, init_std: float, lr: float, steps: int, seed: int = 0) -> list:
    """The genome plateau without dnalm code: a plain ``BertForMaskedLM`` (2 layers, 64 wide,
    2 heads, no dropout) learns masked overlapping k-mers of uniform random DNA (windows of
    ``length`` tokens, batch 32; ``span`` 1: 15 % single tokens, each fully determined by its
    neighbours; ``span`` k: DNABERT's k-token spans, one base per span never visible, floor
    ln 4). Returns ``[(step, loss)]`` every 50 steps; the unigram entropy is ln(4^k)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    vocab = seq.N_SPECIAL + 4**k
    model = BertForMaskedLM(BertConfig(
        vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=512, type_vocab_size=1,
        pad_token_id=seq.PAD_ID, initializer_range=init_std,
    ))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    out = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 30)
        bases = rng.integers(0, 4, (32, length + k - 1))
        ids = np.zeros((32, length), dtype=np.int64)
        for j in range(k):
            ids = ids * 4 + bases[:, j : j + length]
        ids += seq.N_SPECIAL
        if span == 1:
            mask = rng.random((32, length)) < 0.15
        else:
            centres = rng.random((32, length)) < 0.15 / span
            mask = np.zeros_like(centres)
            for o in range(span):
                mask |= np.roll(centres, o - (span - 1) // 2, axis=1)
        inputs = np.where(mask, seq.MASK_ID, ids)
        labels = np.where(mask, ids, -100)
        inputs = np.concatenate([np.full((32, 1), seq.CLS_ID), inputs, np.full((32, 1), seq.SEP_ID)], 1)
        labels = np.concatenate([np.full((32, 1), -100), labels, np.full((32, 1), -100)], 1)
        loss = model(input_ids=torch.from_numpy(inputs), labels=torch.from_numpy(labels)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step % 50 == 49:
            out.append((step + 1, round(float(loss.detach()), 3)))
    return out


@contextlib.contextmanager
def heavy_lock(path: str | None):
    """Hold ``flock(path)`` (the shared machine's lock for heavy jobs) around one run."""
    if not path:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def summarize(path: Path) -> pd.DataFrame:
    """Mean and sd over model seeds per (name, family, data): the sweep table."""
    df = pd.read_csv(path, sep="\t").drop_duplicates(["name", "family", "data", "seed"], keep="last").copy()
    for m in ("closed", "open", "closed_fa", "open_fa"):  # gain over the control, per seed
        if m in df and f"ctl_{m}" in df:
            df[f"gain_{m}"] = df[m] - df[f"ctl_{m}"]
    df["open_vs_kmer"] = df["open"] / df["kmer_open"]
    fs = [c for c in df.columns if c.startswith("fs_") and not c.endswith(("_sd", "_gain_sd"))]
    cols = ["train_cpu_s", "final_loss", "val_loss", "ctl_val_loss", "val_acc", "ctl_val_acc", "unigram_val_acc",
            "kmer_context_val_acc", "closed", "ctl_closed", "kmer_closed", "open", "ctl_open", "kmer_open",
            "closed_fa", "ctl_closed_fa", "open_fa", "ctl_open_fa",
            "closed_full", "ctl_closed_full", "closed_trimmed", "ctl_closed_trimmed",
            "open_full", "ctl_open_full", "open_trimmed", "ctl_open_trimmed",
            "gain_closed", "gain_open", "gain_closed_fa", "gain_open_fa", "open_vs_kmer"] + fs
    cols += [c for c in df.columns if c.startswith(("ctl_fs_", "kmer_fs_")) and not c.endswith("_sd")]
    rows = []
    for key, g in df.groupby(["family", "name", "data"], sort=False):
        row = dict(zip(["family", "name", "data"], key), n=len(g))
        for c in cols:
            if c in g:
                v = g[c].astype(float)
                row[c] = f"{v.mean():.3f}" + (f"±{v.std(ddof=1):.3f}" if len(v) > 1 else "")
        rows.append(row)
    return pd.DataFrame(rows)


def paired(path: Path, family_a: str, family_b: str, name: str = "demo") -> pd.DataFrame:
    """``family_b - family_a`` per (data, model seed) for setting ``name`` (same seed: same
    corpus draws up to the masking, same evaluation draws), mean ± sd over seeds, for the
    metrics every row has: the GeneMask-vs-random comparison (``--paired dnabert genemask``)."""
    df = pd.read_csv(path, sep="\t").drop_duplicates(["name", "family", "data", "seed"], keep="last")
    df = df[df["name"] == name]
    metrics = ["closed", "open"] + [c for c in df.columns if c.startswith("fs_") and c.count("_") == 2]
    a = df[df["family"] == family_a].set_index(["data", "seed"])[metrics]
    b = df[df["family"] == family_b].set_index(["data", "seed"])[metrics]
    diff = (b - a).dropna(how="all")
    rows = []
    for data, g in diff.groupby(level="data"):
        row = {"data": data, "n": len(g)}
        for c in metrics:
            v = g[c].astype(float)
            row[c] = f"{v.mean():+.3f}" + (f"±{v.std(ddof=1):.3f}" if len(v) > 1 else "")
        rows.append(row)
    return pd.DataFrame(rows)


def quick_config(base_config: dict) -> dict:
    """The base config scaled down for ``--quick`` (tiny data, a few steps)."""
    cfg = copy.deepcopy(base_config)
    for kind, params in QUICK_DATA.items():
        cfg["data"][kind]["simulate"] = {**(cfg["data"][kind].get("simulate") or {}), **params}
    cfg["training"] = C.deep_merge(cfg["training"], QUICK_TRAINING)
    cfg["corpus"] = C.deep_merge(cfg["corpus"], QUICK_CORPUS)
    return cfg


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "config.yaml"), help="base config (demo)")
    ap.add_argument("--family", choices=FAMILIES, help="preset family of a single setting")
    ap.add_argument("--name", help="setting name in the table (default: family + overrides)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (repeatable)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="model seeds (init, data order, masks)")
    ap.add_argument("--plan", help="YAML list of settings {name, family, set, seeds}")
    ap.add_argument("--only", nargs="*", help="with --plan: run only these setting names")
    ap.add_argument("--data-seed", type=int, nargs="+", default=[42], help="simulation seed(s) of the demo data")
    ap.add_argument("--genome", help="real genome FASTA (genome models pretrain on it; GeneMask tasks replace the demo tasks)")
    ap.add_argument("--genemask-tasks", default=str(ROOT.parent / "shared" / "data" / "genemask" / "Data-B_fewshot-task-datasets"))
    ap.add_argument("--shots", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", action=argparse.BooleanOptionalAction, default=True,
                    help="also score frame-averaged embeddings of non-overlapping models (closed_fa, open_fa)")
    ap.add_argument("--quick", action="store_true", help="tiny data and a few steps (smoke test); data cached apart")
    ap.add_argument("--work", default="/tmp/dnalm-bench-learning", help="cache of data, corpora and runs")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "learning_sweep.tsv"))
    ap.add_argument("--lock", default="/tmp/dnalm-heavy.lock", help="flock held during each run ('' = none)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints of each run")
    ap.add_argument("--summary", action="store_true", help="print the sweep table of --out and exit")
    ap.add_argument("--columns", nargs="*", help="with --summary: only these columns")
    ap.add_argument("--markdown", action="store_true", help="with --summary: a markdown table")
    ap.add_argument("--paired", nargs=2, metavar=("FAMILY_A", "FAMILY_B"),
                    help="print FAMILY_B - FAMILY_A per model seed (setting --name, default demo) and exit")
    ap.add_argument("--where", help="with --summary: a pandas query on the summary (e.g. \"data == 'sim42'\")")
    ap.add_argument("--toy", nargs=6, metavar=("K", "LENGTH", "SPAN", "INIT_STD", "LR", "STEPS"),
                    help="run the plain-BERT plateau toy (toy_plateau) and print its loss curve")
    args = ap.parse_args(argv)
    if args.toy:
        import torch

        torch.set_num_threads(1)
        k, length, span, init, lr, steps = args.toy
        curve = toy_plateau(int(k), int(length), int(span), float(init), float(lr), int(steps))
        print(f"unigram entropy {np.log(4 ** int(k)):.2f}; " + " ".join(f"{s}:{v}" for s, v in curve))
        return
    if args.paired:
        table = paired(Path(args.out), *args.paired, name=args.name or "demo")
        print(table.to_markdown(index=False) if args.markdown else table.to_string(index=False))
        return
    if args.summary:
        table = summarize(Path(args.out))
        if args.where:
            table = table.query(args.where)
        if args.columns:
            table = table[["family", "name", "data", "n"] + [c for c in args.columns if c in table]]
        print(table.to_markdown(index=False) if args.markdown else table.to_string(index=False))
        return

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("dnalm.train").setLevel(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    base_config = yaml.safe_load((Path(args.config)).read_text())
    if args.quick:
        base_config = quick_config(base_config)
    C.validate_config(base_config, ROOT / "config" / "schema.yaml")

    def load_plan() -> list:
        if args.plan:
            plan = yaml.safe_load(Path(args.plan).read_text())
            return [p for p in plan if not args.only or p["name"] in args.only]
        if args.family:
            overrides = parse_sets(args.set)
            name = args.name or (args.family + ("" if not args.set else ":" + ",".join(args.set)))
            return [{"name": name, "family": args.family, "set": overrides, "seeds": args.seeds}]
        raise SystemExit("give --family (with --set) or --plan")

    out = Path(args.out)
    for data_seed in args.data_seed:
        data = Data(Path(args.work), data_seed, args.genome, args.genemask_tasks if args.genome else None, base_config,
                    quick=args.quick)
        while True:  # the plan is re-read after every run: entries may be appended while it runs
            todo = [
                (entry, seed)
                for entry in load_plan()
                for seed in entry.get("seeds", args.seeds)
                if (entry["name"], entry["family"], data.dir.name, seed) not in done_keys(out)
                and entry.get("data", "any") in ("any", data.dir.name)
            ]
            if not todo:
                break
            entry, seed = todo[0]
            key = (entry["name"], entry["family"], data.dir.name, seed)
            with heavy_lock(args.lock):
                if key in done_keys(out):  # another sweep sharing --out ran it meanwhile
                    continue
                log.info("run %s", key)
                row = run_one(entry["name"], entry["family"], entry.get("set") or {}, seed, data, args, base_config)
                append_row(out, row)
            brief = {k: row[k] for k in ("name", "seed", "train_cpu_s", "val_loss", "ctl_val_loss", "closed",
                                         "ctl_closed", "open", "ctl_open", "kmer_open")}
            log.info("row %s", brief)


if __name__ == "__main__":
    main()
