"""Pretraining throughput: dnalm's training loop against the transformers Trainer, and the
three architectures (MLM, MAE, CLM) side by side.

Four measurements, all in one run so that their ratios are meaningful on a noisy machine:

1. MLM, side by side: the same BERT (4 layers, 256 hidden, 4 heads, 1024 intermediate,
   4,101-token vocabulary of overlapping 6-mers, BERT's dropout 0.1) on the same windows
   (GeneMask-style genome chunks of 6-511 bp, cropped to 128 tokens), batch 32, AdamW,
   trained by
     * ``trainer``: ``transformers.Trainer`` + ``DataCollatorForLanguageModeling`` (15 %
       i.i.d. masking, LM head over every position, padding to the longest sequence);
     * ``dnalm``: ``dnalm.train.train`` (DNABERT span masking, LM head at the masked
       positions only, short windows packed into shared rows, a cheaper dropout mask,
       fused AdamW);
     * ablations of the dnalm loop (``--ablations``): without packing, with batches
       prepared in a background thread (the default on a GPU only), with torch's own
       dropout (``bernoulli_``) instead of the cheaper mask, with the LM head over every
       position.
   The variants alternate round by round (``--rounds`` rounds of ``--steps`` optimizer
   steps each); a round's throughput is its real (non-padding) input tokens over the wall
   time of its steps 2..N (the first step of a round warms up and is not counted). The
   speed-up is given two ways: best round against best round (the rounds least disturbed
   by other work on the machine), and the median over rounds of each round's ratio to the
   Trainer's round of the same round (load that changes between rounds affects both).
2. MAE: the BarcodeMAE recipe (non-overlapping 6-mers of 660-nt barcodes, 50 % masked, the
   encoder over the visible half only) with the same encoder and a 1-layer, 128-wide decoder;
   CLM: a GPT-2 decoder of the same size (4 x 256, 1024 intermediate, dropout 0.1), next-token
   loss on every k-mer (the LM head at every position), on the MLM's genome windows and on
   the MAE's barcodes. Each round's throughput is also given as a ratio to the MLM's round
   (``vs_mlm``). The held-out validation slice is off (``val_fraction: 0``): only training
   steps are timed.
3. The batch pipeline alone (crop, tokenize, mask, corrupt, pack) for every preset's
   masking x tokenization, single-threaded, against what the model consumes.
4. With ``--device cuda``: BERT-base (12 x 768) on 512-token GeneMask windows in bf16, and
   its model FLOPs utilisation (``--peak-tflops``, default 989 = H100 SXM dense bf16).

Run from the repository root:

    .venv/bin/python benchmarks/bench_train.py                       # CPU, ~5 minutes on 2 cores
    .venv/bin/python benchmarks/bench_train.py --ablations           # + the dnalm ablations
    .venv/bin/python benchmarks/bench_train.py --device cuda --gpu-only   # on a GPU machine

Results go to stdout (markdown) and, with ``--json PATH``, to a JSON file. Needs
``accelerate`` (requirements-dev.txt) for the Trainer side; without it that side is skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from dnalm import seq  # noqa: E402
from dnalm import train as T  # noqa: E402
from dnalm.corpus import Corpus, load_corpus, save_corpus  # noqa: E402
from dnalm.io import write_tsv  # noqa: E402

SMALL = {"layers": 4, "hidden": 256, "heads": 4, "intermediate": 1024}  # dropout: BERT's 0.1
BASE = {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072}
MAE_DECODER = {"layers": 1, "hidden": 128, "heads": 4, "intermediate": 512}


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------


def genome_corpus(path: Path, n: int, min_len: int, max_len: int, seed: int) -> Path:
    """GeneMask-style windows: uniform lengths in [min_len, max_len], random bases."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, n)
    save_corpus(path, Corpus.from_arrays([rng.integers(0, 4, int(m)).astype(np.uint8) for m in lengths]))
    return path


def barcode_corpus(path: Path, n: int, seed: int) -> Path:
    """COI-like barcodes: 640-660 nt, trimmed to 660 as BarcodeBERT/MAE do."""
    rng = np.random.default_rng(seed)
    save_corpus(path, Corpus.from_arrays([rng.integers(0, 4, int(rng.integers(640, 661))).astype(np.uint8) for _ in range(n)]))
    return path


def random_npmi(path: Path, k: int, seed: int) -> Path:
    """An NPMI table of every k-mer with random scores (the lookup costs the same)."""
    import pandas as pd

    kmers = seq.all_kmers(k)
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"kmer": kmers, "n": k, "count": 200, "log_p": -8.0, "pmi": 0.0, "npmi": rng.uniform(-1, 1, len(kmers)), "rank": 1})
    write_tsv(df, path)
    return path


# ----------------------------------------------------------------------------------------
# the two training loops, instrumented
# ----------------------------------------------------------------------------------------


class Recorder:
    """Per-batch real-token counts (in the order batches are made) and step end times."""

    def __init__(self):
        self.tokens: list[int] = []
        self.times: list[float] = []

    def throughput(self, steps: int) -> float:
        """Tokens/s over steps 2..steps (batch i is consumed by step i)."""
        if len(self.times) < steps or len(self.tokens) < steps:
            raise RuntimeError(f"recorded {len(self.times)} steps and {len(self.tokens)} batches, expected {steps}")
        return sum(self.tokens[1:steps]) / (self.times[steps - 1] - self.times[0])


def run_dnalm(
    cfg: T.TrainConfig, corpus: Path, work: Path, npmi: Path | None = None, full_head: bool = False, torch_dropout: bool = False
) -> float:
    """Tokens/s of ``cfg.steps`` steps of dnalm's loop (steps 2.. timed)."""
    rec = Recorder()
    original = T.Batcher.next

    def counting_next(self):
        batch = original(self)
        rec.tokens.append(batch.n_tokens)
        return batch

    T.Batcher.next = counting_next
    restore = None
    if full_head:  # ablation: the LM head over every position, as BertForMaskedLM does
        from dnalm import models

        restore = models.BertMLM.forward

        def forward_full_head(self, input_ids, labels, mask, segments, position_ids, packed=False):
            out = self.mlm(
                input_ids=input_ids,
                attention_mask=models.segment_attention(segments, packed),
                position_ids=position_ids,
                labels=torch.where(mask, labels, -100),
            )
            return {"loss": out.loss, "logits_masked": out.logits[mask], "labels_masked": labels[mask]}

        models.BertMLM.forward = forward_full_head
    use_fast_dropout = T.use_fast_dropout
    if torch_dropout:  # ablation: nn.Dropout and SDPA's dropout, as BertForMaskedLM has them
        T.use_fast_dropout = lambda model: model
    try:
        shutil.rmtree(work, ignore_errors=True)
        T.train(cfg, corpus, work / "model", work / "metrics.tsv", work / "ckpt", npmi_path=npmi, step_callback=lambda s: rec.times.append(time.perf_counter()))
    finally:
        T.Batcher.next = original
        T.use_fast_dropout = use_fast_dropout
        if restore is not None:
            from dnalm import models

            models.BertMLM.forward = restore
    return rec.throughput(cfg.steps)


class TrainerSide:
    """``transformers.Trainer`` + ``DataCollatorForLanguageModeling`` on the same windows."""

    def __init__(self, corpus: Path, size: dict, max_tokens: int, batch_size: int, threads: int, device: str, work: Path, seed: int):
        from transformers import AutoTokenizer, DataCollatorForLanguageModeling

        self.size, self.batch_size, self.device, self.work, self.seed = size, batch_size, device, work, seed
        seq.save_tokenizer(work / "tokenizer", 6)
        self.tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
        windows = load_corpus(corpus)
        rng = np.random.default_rng(seed)
        max_bases = max_tokens - 2 + 6 - 1
        self.data = []
        for i in range(len(windows)):  # the same random crop to max_tokens as dnalm's batcher
            codes = np.asarray(windows[i])
            if len(codes) > max_bases:
                start = int(rng.integers(0, len(codes) - max_bases + 1))
                codes = codes[start : start + max_bases]
            self.data.append({"input_ids": seq.tokenize_codes(codes, 6, "overlapping").tolist()})
        self.collator = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=0.15)

    def run(self, steps: int) -> float:
        from transformers import BertForMaskedLM, Trainer, TrainerCallback, TrainingArguments

        from dnalm.models import bert_config

        rec = Recorder()
        collator = self.collator

        def counting_collator(examples):
            batch = collator(examples)
            rec.tokens.append(int(batch["attention_mask"].sum()))
            return batch

        class Times(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                rec.times.append(time.perf_counter())

        torch.manual_seed(self.seed)
        model = BertForMaskedLM(bert_config(self.size, seq.vocab_size(6), 512))
        args = TrainingArguments(
            output_dir=str(self.work / "trainer"),
            per_device_train_batch_size=self.batch_size,
            max_steps=steps,
            learning_rate=1e-3,
            warmup_steps=2,
            weight_decay=0.01,
            adam_beta2=0.98,
            adam_epsilon=1e-6,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            use_cpu=self.device == "cpu",
            bf16=self.device == "cuda",
            dataloader_num_workers=0,
            seed=self.seed,
        )
        Trainer(model=model, args=args, train_dataset=self.data, data_collator=counting_collator, callbacks=[Times()]).train()
        return rec.throughput(steps)


# ----------------------------------------------------------------------------------------
# batch pipeline alone
# ----------------------------------------------------------------------------------------


def pipeline_rate(cfg: T.TrainConfig, corpus: Path, npmi: Path | None, seconds: float) -> float:
    """Tokens/s of Batcher.next() alone, single-threaded."""
    from dnalm.masking import load_npmi_table

    table = load_npmi_table(npmi, cfg.k) if cfg.masking == "genemask" else None
    batcher = T.Batcher(load_corpus(corpus), cfg, table, np.random.default_rng(0))
    batcher.next()
    tokens, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        tokens += batcher.next().n_tokens
    return tokens / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------------------


def train_flops_per_token(size: dict, vocab: int, width: float, head_fraction: float) -> float:
    """Matmul FLOPs of one training step per input token (forward + backward = 3 x forward):
    per layer 2 * (4 h^2 + 2 h i) for the projections and 4 L h for attention (L = row
    width), plus the LM head (2 h^2 + 2 h V) on ``head_fraction`` of the tokens."""
    h, i, n = size["hidden"], size.get("intermediate", 4 * size["hidden"]), size["layers"]
    layer = 2 * (4 * h * h + 2 * h * i) + 4 * width * h
    head = 2 * h * h + 2 * h * vocab
    return 3 * (n * layer + head_fraction * head)


# ----------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per round and variant")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--ablations", action="store_true", help="also time dnalm without packing / thread / masked head")
    ap.add_argument("--gpu-only", action="store_true", help="with --device cuda: only the BERT-base bf16 MFU run")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak bf16 dense TFLOP/s for the MFU")
    ap.add_argument("--pipeline-seconds", type=float, default=3.0)
    ap.add_argument("--quick", action="store_true", help="a tiny smoke run (tests)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    size, batch, max_tokens, n_windows = SMALL, 32, 128, 4000
    if args.quick:
        size, n_windows = {"layers": 1, "hidden": 32, "heads": 2, "intermediate": 64}, 300
        args.rounds, args.steps, args.pipeline_seconds = 1, 3, 0.3
    results: dict = {"device": args.device, "threads": args.threads, "torch": torch.__version__, "rounds": args.rounds, "steps": args.steps}
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        genome = genome_corpus(work / "genome.npz", n_windows, 6, 511, seed=1)
        barcodes = barcode_corpus(work / "barcodes.npz", n_windows // 4, seed=2)
        npmi = random_npmi(work / "npmi.tsv", 6, seed=3)
        common = dict(
            k=6, max_tokens=max_tokens, size=size, batch_size=batch, lr=1e-3, warmup_steps=2, weight_decay=0.01,
            steps=args.steps, checkpoint_every=10**6, log_every=10**6, device=args.device, num_threads=args.threads, seed=0,
            val_fraction=0.0,
        )  # fmt: skip
        mlm_cfg = T.TrainConfig(architecture="mlm", masking="random", tokenization="overlapping", **common)
        mae_cfg = T.TrainConfig(
            architecture="mae", masking="random", tokenization="non-overlapping", decoder_size=MAE_DECODER,
            masking_params={"mask_ratio": 0.5}, **common,
        )  # fmt: skip
        clm_cfg = T.TrainConfig(architecture="clm", masking="random", tokenization="overlapping", **common)
        clm_barcode_cfg = T.TrainConfig(architecture="clm", masking="random", tokenization="non-overlapping", **common)

        if not args.gpu_only:
            # --- 1 + 2: interleaved rounds ------------------------------------------------
            variants: dict = {}
            try:
                trainer = TrainerSide(genome, size, max_tokens, batch, args.threads, args.device, work, seed=0)
                variants["trainer (HF Trainer, MLM)"] = lambda: trainer.run(args.steps)
            except ImportError as exc:
                print(f"# transformers Trainer side skipped: {exc}", file=sys.stderr)
            variants["dnalm MLM"] = lambda: run_dnalm(mlm_cfg, genome, work / "mlm")
            if args.ablations:
                variants["dnalm MLM, no packing"] = lambda: run_dnalm(T.TrainConfig(**{**mlm_cfg.to_dict(), "packing": False}), genome, work / "mlm")
                variants["dnalm MLM, batches prefetched in a thread"] = lambda: run_dnalm(T.TrainConfig(**{**mlm_cfg.to_dict(), "prefetch": 2}), genome, work / "mlm")
                variants["dnalm MLM, torch's dropout"] = lambda: run_dnalm(mlm_cfg, genome, work / "mlm", torch_dropout=True)
                variants["dnalm MLM, LM head at every position"] = lambda: run_dnalm(mlm_cfg, genome, work / "mlm", full_head=True)
            variants["dnalm MAE (barcodes, 50 % masked)"] = lambda: run_dnalm(mae_cfg, barcodes, work / "mae")
            variants["dnalm CLM (genome, overlapping 6-mers)"] = lambda: run_dnalm(clm_cfg, genome, work / "clm")
            variants["dnalm CLM (barcodes, non-overlapping 6-mers)"] = lambda: run_dnalm(clm_barcode_cfg, barcodes, work / "clmb")
            per_round = {name: [] for name in variants}
            for r in range(args.rounds):
                for name, fn in variants.items():
                    per_round[name].append(fn())
                    print(f"# round {r + 1}/{args.rounds}: {name}: {per_round[name][-1]:,.0f} tokens/s", file=sys.stderr, flush=True)
            results["throughput"] = {
                name: {"median": statistics.median(v), "best": max(v), "rounds": v} for name, v in per_round.items()
            }
            mlm_rounds = per_round["dnalm MLM"]
            results["vs_mlm"] = {
                name: {"median_of_rounds": statistics.median(a / b for a, b in zip(v, mlm_rounds)),
                       "per_round": [a / b for a, b in zip(v, mlm_rounds)]}
                for name, v in per_round.items() if name.startswith("dnalm")
            }  # fmt: skip
            base = per_round.get("trainer (HF Trainer, MLM)")
            if base:
                results["speedup_vs_trainer"] = {
                    name: {
                        "of_bests": max(v) / max(base),
                        "median_of_rounds": statistics.median(a / b for a, b in zip(v, base)),
                        "of_medians": statistics.median(v) / statistics.median(base),
                        "per_round": [a / b for a, b in zip(v, base)],
                    }
                    for name, v in per_round.items()
                    if not name.startswith("trainer")
                }

            # --- 3: the batch pipeline alone --------------------------------------------------
            from dnalm.config import PRESETS

            results["pipeline"] = {}
            for name, preset in PRESETS.items():
                cfg = T.TrainConfig(
                    **{**common, **{k: v for k, v in preset.items() if k != "corpus"}},
                )
                corpus = genome if preset["corpus"] == "genome" else barcodes
                rate = pipeline_rate(cfg, corpus, npmi, args.pipeline_seconds)
                model_variant = {
                    "mlm": "dnalm MLM", "mae": "dnalm MAE (barcodes, 50 % masked)",
                    "clm": "dnalm CLM (genome, overlapping 6-mers)" if preset["corpus"] == "genome"
                    else "dnalm CLM (barcodes, non-overlapping 6-mers)",
                }[preset["architecture"]]  # fmt: skip
                model_rate = statistics.median(per_round[model_variant])
                results["pipeline"][name] = {"tokens_per_s": rate, "model_tokens_per_s": model_rate, "ratio": rate / model_rate}

        # --- 4: BERT-base bf16 MFU on a GPU ---------------------------------------------------
        if args.device == "cuda":
            base_cfg = T.TrainConfig(
                **{**common, "size": {**BASE, "dropout": 0.1}, "max_tokens": 512, "batch_size": 64, "steps": max(args.steps, 20)},
                architecture="mlm", masking="genemask", tokenization="overlapping",
            )  # fmt: skip
            tps = run_dnalm(base_cfg, genome, work / "base", npmi=npmi)
            mask_rate = 0.15  # GeneMask's span masking covers ~15-18 % of tokens (see metrics)
            flops = train_flops_per_token(BASE, seq.vocab_size(6), 512, mask_rate) * tps
            results["gpu_bert_base"] = {
                "tokens_per_s": tps,
                "achieved_tflops": flops / 1e12,
                "mfu": flops / (args.peak_tflops * 1e12),
                "peak_tflops": args.peak_tflops,
                "gpu": torch.cuda.get_device_name(),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # --- report -------------------------------------------------------------------------------
    print(f"\ndevice {args.device}, {args.threads} threads, torch {torch.__version__}, {args.rounds} rounds x {args.steps} steps\n")
    if "throughput" in results:
        print("| variant | tokens/s, best round | median | x Trainer (best / best) | x Trainer, median of the rounds' ratios | x dnalm MLM, median of the rounds' ratios | per round |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for name, r in results["throughput"].items():
            sp = results.get("speedup_vs_trainer", {}).get(name)
            vs = results["vs_mlm"].get(name)
            rounds = ", ".join(f"{v:,.0f}" for v in r["rounds"])
            best = f"{sp['of_bests']:.2f}" if sp else "-"
            paired = f"{sp['median_of_rounds']:.2f}" if sp else "-"
            mlm = f"{vs['median_of_rounds']:.2f}" if vs else "-"
            print(f"| {name} | {r['best']:,.0f} | {r['median']:,.0f} | {best} | {paired} | {mlm} | {rounds} |")
        print("\n| preset | pipeline tokens/s | model tokens/s | pipeline / model |")
        print("|---|---:|---:|---:|")
        for name, r in results["pipeline"].items():
            print(f"| {name} | {r['tokens_per_s']:,.0f} | {r['model_tokens_per_s']:,.0f} | {r['ratio']:.0f}x |")
    if "gpu_bert_base" in results:
        g = results["gpu_bert_base"]
        print(f"\nBERT-base bf16 on {g['gpu']}: {g['tokens_per_s']:,.0f} tokens/s, {g['achieved_tflops']:.0f} TFLOP/s, MFU {g['mfu']:.1%} of {g['peak_tflops']:.0f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
