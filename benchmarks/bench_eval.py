"""Benchmarks of the taxonomy protocols at BIOSCAN-5M scale.

Open-world genus 1-NN (default; issue 5): 7,887 queries (test_unseen) x 289,203 references
(train) x 768 dimensions, cosine 1-NN as ``dnalm.evaluate.open_world`` runs it
(``dnalm.neighbors.nearest_neighbor``: blockwise, bounded memory). The embeddings are synthetic but shaped like mean-pooled language-model
embeddings of barcodes: a large common component (random pairs at cosine ~0.87 with the
default seed), then genus, species and specimen offsets; queries come from species absent
from the references, as in the open-world split.

Closed-world species probe (``--closed-world``): a linear probe trained on 289,203 ``train``
barcodes of ~8,000 species (long-tailed counts, every species seen in training), scored on
39,373 ``test`` barcodes of the same species, as ``dnalm.evaluate.closed_world`` runs it
(``--probe torch``: :class:`dnalm.probes.TorchProbe`, what ``probe: auto`` picks at this
size; ``--probe sklearn`` for comparison at small sizes only: its lbfgs holds several
float64 ``n x species`` arrays).

    .venv/bin/python benchmarks/bench_eval.py                      # full scale, method auto
    .venv/bin/python benchmarks/bench_eval.py --method float32     # the plain float32 path
    .venv/bin/python benchmarks/bench_eval.py --n-ref 20000 --n-query 1000   # quick look
    .venv/bin/python benchmarks/bench_eval.py --compare            # float32, int8, faiss side by side
    .venv/bin/python benchmarks/bench_eval.py --compare --n-ref 40000 --n-query 1500
    .venv/bin/python benchmarks/bench_eval.py --closed-world --epochs 2      # 2 of the 30 epochs
    .venv/bin/python benchmarks/bench_eval.py --closed-world --n-train 20000 --n-test 4000 \
        --n-species 500 --probe sklearn                                       # the reference probe

Prints one line per phase and the peak resident memory; ``--check N`` compares N queries
with a float64 brute force (not timed; open world only). ``--compare`` (issue 12) runs, in one
process on the same data: the calibration that ``method="auto"`` uses (one block each way),
the float32 path, the int8 screen, and faiss-cpu's exact ``IndexFlatIP`` when faiss is
installed (not a pipeline dependency), and prints each wall time, its ratio to float32 and
whether the neighbours agree.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from dnalm import evaluate, neighbors, probes  # noqa: E402
from dnalm.vectors import l2_normalize  # noqa: E402


def synthetic(n_ref: int, n_query: int, dim: int, n_genera: int, seed: int):
    """(ref, genus_ref, query, genus_query): float32 embeddings and genus labels."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    common = rng.standard_normal(dim, dtype=f32) * f32(2.5)
    genus_c = rng.standard_normal((n_genera, dim), dtype=f32) * f32(0.3)
    seen = 4  # seen species per genus (references); one more unseen species per genus (queries)
    species_c = np.repeat(genus_c, seen + 1, axis=0) + rng.standard_normal((n_genera * (seen + 1), dim), dtype=f32) * f32(0.8)
    species_ref = rng.integers(0, n_genera * seen, n_ref)
    species_ref = (species_ref // seen) * (seen + 1) + species_ref % seen
    species_query = rng.integers(0, n_genera, n_query) * (seen + 1) + seen

    def draw(species):
        out = np.empty((species.shape[0], dim), dtype=f32)
        for lo in range(0, species.shape[0], 65536):
            s = species[lo : lo + 65536]
            out[lo : lo + 65536] = common + species_c[s] + rng.standard_normal((s.shape[0], dim), dtype=f32) * f32(0.5)
        return out

    return draw(species_ref), species_ref // (seen + 1), draw(species_query), species_query // (seen + 1)


def synthetic_species(n_train: int, n_test: int, dim: int, n_species: int, seed: int, noise: float = 3.5):
    """(train, species_train, test, species_test): float32 embeddings as :func:`synthetic`
    (common + genus + species + specimen offsets, ``noise`` the specimen scale) for a
    closed-world split. Species counts are long-tailed (log-normal weights, like BIOSCAN-5M's)
    and every species has at least one training barcode; test barcodes follow the same
    frequencies."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    common = rng.standard_normal(dim, dtype=f32) * f32(2.5)
    n_genera = max(n_species // 4, 1)
    genus_c = rng.standard_normal((n_genera, dim), dtype=f32) * f32(0.3)
    species_c = genus_c[np.arange(n_species) % n_genera] + rng.standard_normal((n_species, dim), dtype=f32) * f32(0.8)
    weight = rng.lognormal(0.0, 1.2, n_species)
    weight /= weight.sum()
    species_train = np.concatenate([np.arange(n_species), rng.choice(n_species, n_train - n_species, p=weight)])
    species_test = rng.choice(n_species, n_test, p=weight)

    def draw(species):
        out = np.empty((species.shape[0], dim), dtype=f32)
        for lo in range(0, species.shape[0], 65536):
            s = species[lo : lo + 65536]
            out[lo : lo + 65536] = common + species_c[s] + rng.standard_normal((s.shape[0], dim), dtype=f32) * f32(noise)
        return out

    return draw(species_train), species_train, draw(species_test), species_test


def closed_world_bench(args) -> None:
    import torch

    t0 = time.perf_counter()
    x_tr, y_tr, x_te, y_te = synthetic_species(args.n_train, args.n_test, args.dim, args.n_species, args.seed)
    print(f"data: {args.n_train} train x {args.dim} dims over {args.n_species} species, {args.n_test} test "
          f"({x_tr.nbytes / 2**30:.2f} GiB of training embeddings), generated in {time.perf_counter() - t0:.1f} s")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    settings = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0, c0 = time.perf_counter(), time.process_time()
    table = evaluate.closed_world(x_tr, y_tr, x_te, y_te, seed=args.seed, probe=args.probe, torch_settings=settings,
                                  threads=args.threads)
    t_fit, c_fit = time.perf_counter() - t0, time.process_time() - c0
    chosen = probes.choose_probe(args.n_train, args.n_species, args.probe)
    values = dict(zip(table["metric"], table["value"]))
    where = f", {args.epochs} epochs of {args.batch_size} rows on {device}" if chosen == "torch" else ""
    print(f"closed_world (probe {args.probe} -> {chosen}{where}): {t_fit:.1f} s wall, {c_fit:.1f} s CPU; "
          f"accuracy {values['accuracy']:.3f}, macro-F1 {values['macro_f1']:.3f}")
    if chosen == "torch":
        print(f"  per epoch: {t_fit / args.epochs:.1f} s (x {probes.TORCH_PROBE_DEFAULTS['epochs']} default epochs "
              f"= {t_fit / args.epochs * probes.TORCH_PROBE_DEFAULTS['epochs'] / 60:.1f} min)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory: {peak:.2f} GiB (before the probe: {rss0:.2f} GiB; the float32 inputs: "
          f"{(x_tr.nbytes + x_te.nbytes) / 2**30:.2f} GiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-ref", type=int, default=289_203)
    ap.add_argument("--n-query", type=int, default=7_887)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--n-genera", type=int, default=2_000)
    ap.add_argument("--method", default="auto", choices=["auto", "float32", "int8"])
    ap.add_argument("--block-size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check", type=int, default=200, help="queries checked against a float64 brute force")
    ap.add_argument("--compare", action="store_true", help="float32, int8 and faiss side by side, one process")
    ap.add_argument("--seed", type=int, default=0)
    cw = ap.add_argument_group("closed world (--closed-world)")
    cw.add_argument("--closed-world", action="store_true", help="benchmark the closed-world species probe instead")
    cw.add_argument("--n-train", type=int, default=289_203)
    cw.add_argument("--n-test", type=int, default=39_373)
    cw.add_argument("--n-species", type=int, default=8_000)
    cw.add_argument("--probe", default="auto", choices=["auto", "sklearn", "torch"])
    cw.add_argument("--epochs", type=int, default=probes.TORCH_PROBE_DEFAULTS["epochs"])
    cw.add_argument("--batch-size", type=int, default=probes.TORCH_PROBE_DEFAULTS["batch_size"])
    cw.add_argument("--lr", type=float, default=probes.TORCH_PROBE_DEFAULTS["lr"])
    args = ap.parse_args()

    evaluate.limit_threads(args.threads)
    if args.closed_world:
        closed_world_bench(args)
        return
    if args.compare:
        compare_bench(args)
        return
    t0 = time.perf_counter()
    ref, g_ref, query, g_query = synthetic(args.n_ref, args.n_query, args.dim, args.n_genera, args.seed)
    print(f"data: {args.n_query} queries x {args.n_ref} references x {args.dim} dims "
          f"({ref.nbytes / 2**30:.2f} GiB of references), generated in {time.perf_counter() - t0:.1f} s")

    t0, c0 = time.perf_counter(), time.process_time()
    stats: dict = {}
    nn = neighbors.nearest_neighbor(ref, query, block_size=args.block_size, method=args.method, stats=stats,
                                    threads=args.threads)
    t_nn, c_nn = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    values = evaluate.classification_metrics(g_query, g_ref[nn], evaluate.OPEN_WORLD_METRICS)
    t_metrics = time.perf_counter() - t0
    flops = 2.0 * args.n_query * args.n_ref * args.dim
    extra = ""
    if "rescored" in stats:
        extra = (f"; {stats['rescored'] / args.n_query:.0f} pairs re-scored exactly per query, {stats['blocks']} "
                 f"reference blocks, {stats['prepare_s']:.1f} s preparing + {stats['search_s']:.1f} s searching")
    print(f"nearest_neighbor (method {args.method} -> {stats['method']}): {t_nn:.1f} s wall, {c_nn:.1f} s CPU "
          f"({flops / t_nn / 1e9:.0f} GFLOP/s float32-equivalent{extra})")
    print(f"open-world genus metrics: +{t_metrics:.2f} s; accuracy {values['accuracy']:.3f}, "
          f"balanced accuracy {values['balanced_accuracy']:.3f}, macro-F1 {values['macro_f1']:.3f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory: {peak:.2f} GiB (the float32 inputs: {(ref.nbytes + query.nbytes) / 2**30:.2f} GiB)")

    if args.check:
        pick, expected = brute_force(ref, query, args.check)
        same = int((expected == nn[pick]).sum())
        print(f"check: {same}/{pick.shape[0]} queries agree with a float64 brute force")
        if same != pick.shape[0]:
            raise SystemExit("nearest neighbours differ from the brute force")


def brute_force(ref, query, n_check: int):
    """(query indices, their float64 brute-force nearest reference) for a seeded sample of
    ``n_check`` queries (ties to the lowest index, as every method here)."""
    pick = np.random.default_rng(1).choice(query.shape[0], size=min(n_check, query.shape[0]), replace=False)
    r = l2_normalize(ref).astype(np.float64)
    q = l2_normalize(query[pick]).astype(np.float64)
    expected = np.empty(pick.shape[0], dtype=np.int64)
    for lo in range(0, pick.shape[0], 50):
        expected[lo : lo + 50] = (q[lo : lo + 50] @ r.T).argmax(axis=1)
    return pick, expected


def compare_bench(args) -> None:
    """float32, int8 and faiss IndexFlatIP side by side on the same data, in this process."""
    t0 = time.perf_counter()
    ref, _, query, _ = synthetic(args.n_ref, args.n_query, args.dim, args.n_genera, args.seed)
    print(f"data: {args.n_query} queries x {args.n_ref} references x {args.dim} dims, {args.threads} threads, "
          f"generated in {time.perf_counter() - t0:.1f} s; cpu capability {neighbors._cpu_capability()}")
    t0 = time.perf_counter()
    cal = neighbors.calibrate(args.dim, args.threads)
    int8_block = "unavailable" if cal["int8_s"] is None else f"{1e3 * cal['int8_s']:.2f} ms"
    print(f"calibration ({time.perf_counter() - t0:.2f} s): one {neighbors.CALIBRATION_BLOCK}-row block float32 "
          f"{1e3 * cal['float32_s']:.2f} ms, int8 {int8_block} -> speedup {cal['speedup']:.2f}, auto picks {cal['method']} "
          f"above {neighbors.INT8_MIN_WORK:.0e} multiply-adds")
    results, times = {}, {}
    for method in ("float32", "int8"):
        t0 = time.perf_counter()
        results[method] = neighbors.nearest_neighbor(ref, query, block_size=args.block_size, method=method,
                                                     threads=args.threads)
        times[method] = time.perf_counter() - t0
    try:
        import faiss
    except ImportError:
        print("faiss: not installed (pip install faiss-cpu to compare)")
    else:
        faiss.omp_set_num_threads(args.threads)
        t0 = time.perf_counter()
        index = faiss.IndexFlatIP(args.dim)
        index.add(l2_normalize(ref))
        _, found = index.search(l2_normalize(query), 1)
        results["faiss IndexFlatIP"] = found[:, 0].astype(np.int64)
        times["faiss IndexFlatIP"] = time.perf_counter() - t0
    pick, expected = brute_force(ref, query, args.check) if args.check else (None, None)
    for method, nn in results.items():
        agree = f", {int((nn == results['int8']).sum())}/{nn.shape[0]} equal to int8" if method != "int8" else ""
        exact = f", {int((nn[pick] == expected).sum())}/{pick.shape[0]} equal to float64" if pick is not None else ""
        print(f"{method:>18}: {times[method]:7.2f} s wall, {times[method] / times['float32']:.2f}x float32{agree}{exact}")


if __name__ == "__main__":
    main()
