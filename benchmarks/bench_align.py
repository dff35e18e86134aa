"""Benchmark of the alignment baseline (dnalm.align) and the aligners it could have used.

Data: COI-like barcodes from the project's simulator (``dnalm.simulate.simulate_barcodes``:
~658 nt, trimmed ends, some Ns) on a large taxonomy tree. Queries: distinct barcodes of
unseen species (``test_unseen``); references: distinct barcodes of the seen species (any
split), the first ``--refs`` of them in random order (several sizes: the cost per query x reference pair must not
depend on the size for the extrapolation to hold).

Each size runs, on the same files, one after another:

* ``vsearch`` exhaustive (``--maxaccepts 0 --maxrejects 0``, what dnalm.align runs): CPU
  seconds per query x reference pair, and the time to load the references (one query);
* ``vsearch`` heuristics (``--maxaccepts K``): time, and how often the best identity, the best
  reference and its genus differ from the exhaustive search;
* ``blastn`` (megablast, and ``-task blastn``): time, and how often its top hit (by bit
  score, BLAST's ranking) is not one of the references of the highest identity;
* ``parasail`` (``sg_trace_striped_16``, the alignment an identity needs; single thread, on
  a subset of pairs): CPU time per pair.

Then extrapolates the exhaustive search to BIOSCAN-5M (open world 7,887 x 289,203; closed
world 39,373 x 289,203), per core and per chunk job.

    .venv/bin/python benchmarks/bench_align.py                          # 200 x 20k, 20 x 290k
    .venv/bin/python benchmarks/bench_align.py --refs 5000 --queries 50 --threads 2   # quick
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from dnalm import align  # noqa: E402
from dnalm.fasta import write_fasta  # noqa: E402
from dnalm.simulate import simulate_barcodes  # noqa: E402

FULL_OPEN = (7_887, 289_203)
FULL_CLOSED = (39_373, 289_203)
UNSEEN = ("key_unseen", "val_unseen", "test_unseen")


def barcodes(n_refs: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(queries, references): distinct simulated barcodes with their genus, the references
    in random order (so that any prefix spans the whole tree)."""
    # 25 specimens per species, ~55 % distinct, ~75 % of species seen: a tree large enough
    n_species = max(400, int(n_refs / 25 / 0.55 / 0.75 * 1.1))
    orders = max(1, round(n_species / (8 * 8 * 4)))
    params = {"n_orders": orders, "families_per_order": 8, "genera_per_family": 8, "species_per_genus": 4}
    started = time.perf_counter()
    table, _ = simulate_barcodes(params, seed=seed)
    table["dna_barcode"] = [align.normalize(s) for s in table["dna_barcode"]]
    queries = table[table["split"] == "test_unseen"].drop_duplicates("dna_barcode")
    unseen = set(table.loc[table["split"].isin(UNSEEN), "species"])  # their pretrain rows too
    refs = table[~table["species"].isin(unseen)].drop_duplicates("dna_barcode")
    refs = refs.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    print(f"simulated {len(table):,} barcodes ({orders} orders, {n_species:,} species) in "
          f"{time.perf_counter() - started:.0f} s: {len(queries):,} distinct unseen-species queries, "
          f"{len(refs):,} distinct references; lengths {table['dna_barcode'].str.len().min()}-"
          f"{table['dna_barcode'].str.len().max()}, {(table['dna_barcode'].str.count('N') > 0).mean():.1%} with Ns")
    return queries.reset_index(drop=True), refs


def child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(fn):
    """(result, wall s, CPU s of child processes, CPU s of this process)."""
    c0, s0, w0 = child_cpu(), time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - w0, child_cpu() - c0, time.process_time() - s0


def vsearch_all_best(queries: list[str], ref_fa: Path, settings: align.Settings) -> pd.DataFrame:
    """Every reference tied at the best identity, per query (candidates of dnalm.align)."""
    cand = align.search_vsearch(dict(enumerate(queries)), ref_fa, settings)
    cand = cand.assign(identity=cand["matches"] / cand["columns"])
    return cand[cand["identity"] == cand.groupby("query")["identity"].transform("max")]


def blast(queries: list[str], ref_fa: Path, tmp: Path, task: str, threads: int) -> pd.DataFrame:
    """Top hit per query by bit score (ties: lower reference), as BLAST users take it."""
    db = tmp / "blastdb"
    if not (tmp / "blastdb.nsq").exists() and not (tmp / "blastdb.00.nsq").exists():
        subprocess.run(["makeblastdb", "-in", str(ref_fa), "-dbtype", "nucl", "-out", str(db)], check=True,
                       capture_output=True)
    qfa, out = tmp / f"q_{task}.fa", tmp / f"blast_{task}.tsv"
    write_fasta(qfa, ((str(i), s) for i, s in enumerate(queries)))
    subprocess.run(["blastn", "-task", task, "-query", str(qfa), "-db", str(db), "-outfmt",
                    "6 qseqid sseqid pident bitscore", "-max_target_seqs", "100", "-dust", "no",
                    "-num_threads", str(threads), "-out", str(out)], check=True, capture_output=True)
    hits = pd.read_csv(out, sep="\t", names=["query", "reference", "pident", "bits"])
    hits = hits.sort_values(["query", "bits", "reference"], ascending=[True, False, True], kind="stable")
    return hits.drop_duplicates("query").set_index("query")


def parasail_us_per_pair(queries: list[str], refs: list[str], pairs: int) -> float:
    import parasail

    matrix = parasail.matrix_create("ACGTN", 2, -4)
    n_q = max(1, min(len(queries), pairs // max(1, len(refs))))
    n_r = min(len(refs), pairs // n_q)
    started = time.process_time()
    for q in queries[:n_q]:
        for r in refs[:n_r]:
            parasail.sg_trace_striped_16(q, r, 20, 2, matrix).get_traceback()
    return (time.process_time() - started) / (n_q * n_r) * 1e6


def run_size(queries: pd.DataFrame, refs: pd.DataFrame, n_refs: int, n_queries: int, args, tmp: Path) -> dict:
    q = queries["dna_barcode"].head(n_queries).tolist()
    r = refs.head(n_refs)
    ref_fa = tmp / f"refs_{n_refs}.fa"
    write_fasta(ref_fa, ((str(i), s) for i, s in enumerate(r["dna_barcode"])))
    q_genus, r_genus = queries["genus"].to_numpy(), r["genus"].to_numpy()
    pairs = len(q) * len(r)
    row = {"queries": len(q), "references": len(r), "threads": args.threads}
    print(f"\n== {len(q)} queries x {len(r):,} references ({pairs / 1e6:.1f} M pairs), {args.threads} threads")

    exact = align.Settings(threads=args.threads)
    _, w_load, c_load, _ = timed(lambda: align.search({0: q[0]}, ref_fa, align.Settings(maxaccepts=1, maxrejects=1)))
    best, wall, cpu, _ = timed(lambda: vsearch_all_best(q, ref_fa, exact))
    first = align.best_hits(best, np.arange(len(q))).set_index("query")
    ties = best.groupby("query")["reference"].apply(set)
    acc = (r_genus[first["reference"]] == q_genus[: len(q)]).mean()
    us = (cpu - c_load) / pairs * 1e6
    row.update(load_s=w_load, exhaustive_wall_s=wall, exhaustive_cpu_s=cpu, us_per_pair=us, genus_accuracy=acc)
    print(f"reference load + index (1 query, heuristic): {w_load:.1f} s wall")
    print(f"vsearch exhaustive: {wall:.1f} s wall, {cpu:.1f} s CPU -> {us:.1f} CPU us per pair "
          f"(load subtracted); genus accuracy {acc:.3f}; median best identity {first['identity'].median():.3f}; "
          f"{(ties.map(len) > 1).mean():.1%} of queries with tied best references")

    for k in args.maxaccepts:
        s = align.Settings(maxaccepts=k, maxrejects=32, threads=args.threads)
        hits, wall_h, cpu_h, _ = timed(lambda s=s: align.search(dict(enumerate(q)), ref_fa, s).set_index("query"))
        worse = (hits["identity"] < first["identity"]).mean()
        other_ref = (hits["reference"] != first["reference"]).mean()
        other_genus = (r_genus[hits["reference"]] != r_genus[first["reference"]]).mean()
        acc_h = (r_genus[hits["reference"]] == q_genus[: len(q)]).mean()
        row[f"maxaccepts{k}"] = (cpu_h, worse, other_ref, other_genus, acc_h)
        print(f"vsearch --maxaccepts {k} --maxrejects 32: {wall_h:.1f} s wall, {cpu_h:.1f} s CPU ({cpu / cpu_h:.0f}x less); "
              f"best identity lower for {worse:.1%}, other reference {other_ref:.1%}, other genus {other_genus:.1%}; "
              f"genus accuracy {acc_h:.3f}")

    if shutil.which("blastn") and not args.no_blast:
        for task in args.blast_tasks:
            top, wall_b, cpu_b, _ = timed(lambda task=task: blast(q, ref_fa, tmp, task, args.threads))
            top = top.reindex(range(len(q)))
            missing = top["reference"].isna()
            in_best = np.array([not m and int(t) in ties[i] for i, (t, m) in enumerate(zip(top["reference"], missing))])
            other_genus = np.array([m or r_genus[int(t)] != r_genus[first.loc[i, "reference"]]
                                    for i, (t, m) in enumerate(zip(top["reference"], missing))])
            acc_b = np.array([not m and r_genus[int(t)] == q_genus[i] for i, (t, m) in enumerate(zip(top["reference"], missing))])
            row[f"blastn_{task}"] = (cpu_b, 1 - in_best.mean(), other_genus.mean(), acc_b.mean())
            print(f"blastn -task {task}: {wall_b:.1f} s wall, {cpu_b:.1f} s CPU; top hit not of the highest identity "
                  f"for {1 - in_best.mean():.1%} ({missing.mean():.1%} no hit), other genus {other_genus.mean():.1%}; "
                  f"genus accuracy {acc_b.mean():.3f}")

    if args.parasail_pairs:
        us_p = parasail_us_per_pair(q, r["dna_barcode"].tolist(), args.parasail_pairs)
        row["parasail_us_per_pair"] = us_p
        print(f"parasail sg_trace_striped_16: {us_p:.0f} CPU us per pair (1 thread; {us_p / us:.1f}x vsearch's)")
    return row


def extrapolate(us: float, load_s: float, threads: int) -> None:
    print(f"\n== extrapolation from {us:.1f} CPU us per pair (vsearch exhaustive), {load_s:.0f} s reference load")
    for name, (nq, nr) in (("open world", FULL_OPEN), ("closed world", FULL_CLOSED)):
        core_h = nq * nr * us / 1e6 / 3600
        print(f"{name}: {nq:,} x {nr:,} = {nq * nr / 1e9:.2f} G pairs -> {core_h:.0f} core-hours")
        for chunks in (1, 8, 32, 128):
            per = core_h / chunks / 16 * 60 + load_s / 60
            print(f"   chunks {chunks:>3}, 16 threads each: {per:6.1f} min per chunk job")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refs", type=int, nargs="+", default=[20_000, 289_203], help="reference set sizes")
    ap.add_argument("--queries", type=int, nargs="+", default=[200, 20], help="queries per size (one per --refs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--maxaccepts", type=int, nargs="*", default=[1, 8, 32, 128])
    ap.add_argument("--blast-tasks", nargs="*", default=["megablast", "blastn"])
    ap.add_argument("--no-blast", action="store_true")
    ap.add_argument("--blast-max-refs", type=int, default=50_000, help="skip BLAST above this many references")
    ap.add_argument("--parasail-pairs", type=int, default=3000, help="pairs timed with parasail (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if len(args.queries) != len(args.refs):
        ap.error("give one --queries value per --refs value")
    if shutil.which("vsearch") is None:
        sys.exit("vsearch is not installed (Debian package vsearch)")
    print(align.vsearch_version(), "|", subprocess.run(["blastn", "-version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
          if shutil.which("blastn") else "no blastn")
    queries, refs = barcodes(max(args.refs), args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-align-") as tmp:
        for n_refs, n_q in zip(args.refs, args.queries):
            if n_refs > len(refs):
                print(f"only {len(refs):,} distinct references simulated (asked {n_refs:,})")
            blast_args = argparse.Namespace(**{**vars(args), "no_blast": args.no_blast or n_refs > args.blast_max_refs})
            rows.append(run_size(queries, refs, min(n_refs, len(refs)), min(n_q, len(queries)), blast_args, Path(tmp)))
    big = max(rows, key=lambda r: r["references"])
    extrapolate(big["us_per_pair"], big["load_s"], args.threads)


if __name__ == "__main__":
    main()
