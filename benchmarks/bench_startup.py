"""Benchmark of the per-job start-up costs the demo pays many times over.

Every ``clustering`` job runs UMAP (the BIOSCAN-5M zero-shot protocol), and UMAP compiles its
numba kernels on first use in each process. ``dnalm.structure.cache_umap_kernels`` keeps the
compiled kernels in numba's on-disk cache. This script runs the first UMAP of a fresh process
(the same call and size as a demo clustering job: 400 rows x 64, 50 dimensions, 30 neighbours)
side by side:

* ``uncached``: UMAP as released (the cache left off), every process compiles;
* ``cached, first process``: the cache on, empty (compiles and writes it);
* ``cached, later process``: the cache on, filled (loads it).

Each variant runs in its own Python process (``--repeats`` times, median reported) with
``NUMBA_CACHE_DIR`` pointing at a fresh temporary folder, so the library's own ``__pycache__``
is not touched; ``import umap`` is timed apart. The coordinates must be identical in every run.

    .venv/bin/python benchmarks/bench_startup.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

CHILD = """
import json, sys, time
started = time.perf_counter()
import numpy as np
import umap  # noqa: F401
imported = time.perf_counter()
from dnalm import structure
if sys.argv[1] == "off":
    structure.cache_umap_kernels = lambda: 0  # the cache left off: UMAP as released
x = np.random.default_rng(0).normal(size=(400, 64))
t = time.perf_counter()
out = structure.umap_embedding(x, dims=50, neighbors=30, seed=0)
print(json.dumps({"import": imported - started, "first_umap": time.perf_counter() - t, "sum": float(out.sum())}))
"""


def child(mode: str, cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(SCRIPTS))
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"uncached": [], "cached, first process": [], "cached, later process": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            runs["uncached"].append(child("off", cache))
        with tempfile.TemporaryDirectory() as cache:
            runs["cached, first process"].append(child("on", cache))
            runs["cached, later process"].append(child("on", cache))
    sums = {r["sum"] for rs in runs.values() for r in rs}
    if len(sums) != 1:
        raise SystemExit(f"the coordinates differ between runs: {sums}")
    base = statistics.median(r["first_umap"] for r in runs["uncached"])
    print(f"first UMAP of a process (400 x 64 -> 50 dims), median of {args.repeats}; identical coordinates")
    print(f"{'variant':24s} {'import umap s':>14s} {'first UMAP s':>13s} {'vs uncached':>12s}")
    for name, rs in runs.items():
        first = statistics.median(r["first_umap"] for r in rs)
        imp = statistics.median(r["import"] for r in rs)
        print(f"{name:24s} {imp:14.1f} {first:13.1f} {base / first:11.1f}x")


if __name__ == "__main__":
    main()
