#!/usr/bin/env python
"""Benchmark: this project's k-mer counter against KMC and Jellyfish, side by side.

Every tool counts the same FASTA in the same run, each as its own process, so that the
ratios hold even on a busy machine (absolute figures do not). Reported per tool and k:
wall time of the process and Mbp/s (sequence letters / wall time), the tool's own
counting time where it reports one (KMC's "Total", dnalm's time inside ``count_fasta``,
i.e. without interpreter start-up and imports) and Mbp/s on it, peak resident memory
(``ru_maxrss`` of the process), and both speeds relative to KMC's.

What each tool computes (not the same work; ours does the most):
* ``dnalm``: every n-gram for n = 1..k (all lengths), exact, forward strand, int64 tables
  (``dnalm.kmers.count_fasta``); the "count" column is its in-process counting time
  (without interpreter start-up and imports).
* ``kmc``: k-mers of length k only, non-canonical (``-b``), every count kept (``-ci1``),
  KMC database written (not dumped).
* ``jellyfish``: k-mers of length k only, non-canonical (no ``-C``), hash written.
* ``numpy``: k-mers of length k only with a plain NumPy ``bincount`` over 2-bit window
  codes (the counter this project used before its compiled kernel), whole file in memory.

Run (Debian packages kmc, jellyfish and smalt-examples installed; see tools/apt-packages.txt):

    .venv/bin/python benchmarks/bench_kmers.py                      # hs37chrXtrunc, k = 6 and 12, 2 threads
    .venv/bin/python benchmarks/bench_kmers.py --fasta my.fa.gz --k 8 --threads 1 --repeats 3
    .venv/bin/python benchmarks/bench_kmers.py --copies 5 --tools dnalm,kmc   # 350 Mbp: start-up amortised

By default the FASTA is decompressed once to a temporary plain file that every tool reads
(Jellyfish reads only plain files); ``--gzip`` also times dnalm and KMC on the compressed
file itself.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FASTA = "/usr/share/doc/smalt/test/data/hs37chrXtrunc.fa.gz"

DNALM = """
import sys, time
sys.path.insert(0, {scripts!r})
t0 = time.perf_counter()
from dnalm import kmers
kmers.warm_up({k})
t1 = time.perf_counter()
c = kmers.count_fasta({fasta!r}, {k}, threads={threads})
t2 = time.perf_counter()
print(f"import {{t1 - t0:.3f}} count {{t2 - t1:.3f}} windows {{c.n_windows({k})}}")
"""

NUMPY = """
import sys, time
import numpy as np
t0 = time.perf_counter()
raw = np.fromfile({fasta!r}, dtype=np.uint8)
lut = np.full(256, 4, dtype=np.uint8)
for i, b in enumerate(b"ACGT"):
    lut[b] = lut[b + 32] = i
lines = raw.tobytes().split(b"\\n")
total = np.zeros(4**{k}, dtype=np.int64)
seqs = []
for line in lines + [b">"]:
    if line.startswith(b">"):
        if seqs:
            codes = lut[np.frombuffer(b"".join(seqs), dtype=np.uint8)]
            n = len(codes) - {k} + 1
            if n > 0:
                bad = codes > 3
                ids = np.zeros(n, dtype=np.int64)
                dirty = np.zeros(n, dtype=bool)
                for j in range({k}):
                    ids = ids * 4 + np.where(bad[j:j + n], 0, codes[j:j + n])
                    dirty |= bad[j:j + n]
                total += np.bincount(ids[~dirty], minlength=4**{k})
        seqs = []
    else:
        seqs.append(line.rstrip(b"\\r"))
print(f"count {{time.perf_counter() - t0:.3f}} windows {{int(total.sum())}}")
"""


def run(cmd, cwd=None) -> tuple[float, int, str]:
    """Run a command; (wall seconds, peak RSS in MiB, stdout+stderr)."""
    out = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n{text[-2000:]}")
    return wall, usage.ru_maxrss // 1024, text


def letters(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.startswith(b">"):
                n += len(line.strip())
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fasta", default=DEFAULT_FASTA, help="FASTA to count (plain or gzip)")
    ap.add_argument("--k", type=int, nargs="+", default=[6, 12])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="runs per tool, interleaved; the fastest is reported")
    ap.add_argument("--tools", default="dnalm,kmc,jellyfish,numpy")
    ap.add_argument("--gzip", action="store_true", help="also time dnalm and kmc on the gzip file")
    ap.add_argument("--copies", type=int, default=1, help="count N concatenated copies (amortises start-up)")
    args = ap.parse_args(argv)
    src = Path(args.fasta)
    if not src.exists():
        sys.exit(f"{src} not found (Debian package smalt-examples ships the default)")
    tools = args.tools.split(",")
    for t in ("kmc", "jellyfish"):
        if t in tools and shutil.which(t) is None:
            print(f"# {t} not installed: skipped", file=sys.stderr)
            tools.remove(t)
    work = Path(tempfile.mkdtemp(prefix="bench_kmers."))
    try:
        plain = work / "genome.fa"
        opener = gzip.open if src.read_bytes()[:2] == b"\x1f\x8b" else open
        with open(plain, "wb") as fo:
            for copy in range(args.copies):  # record names made unique per copy
                with opener(src, "rb") as fi:
                    for line in fi:
                        fo.write(line.replace(b">", f">c{copy}_".encode(), 1) if line.startswith(b">") else line)
        n_letters = letters(plain)
        mbp = n_letters / 1e6
        inputs = [("plain", plain)] + (
            [("gzip", src)] if args.gzip and opener is gzip.open and args.copies == 1 else []
        )
        print(
            f"# {src} x {args.copies}: {mbp:.1f} Mbp of sequence letters; threads={args.threads}; "
            f"cpus={os.cpu_count()}; load={os.getloadavg()[0]:.2f}"
        )
        print(
            "input\tk\ttool\twall_s\tMbp_s_wall\tcount_s\tMbp_s_count\tpeak_MiB\tvs_kmc_wall\tvs_kmc_count\tload\tnote"
        )
        for k in args.k:
            for label, fasta in inputs:
                rows = {}
                for _ in range(args.repeats):  # tools take turns, so that a load spike hits all alike
                    for tool in tools:
                        if label == "gzip" and tool not in ("dnalm", "kmc"):
                            continue
                        res = bench_one(tool, fasta, k, args.threads, work)
                        if tool not in rows or res[0] < rows[tool][0]:
                            rows[tool] = res
                base_wall, _, base_count, _ = rows.get("kmc", (None, None, None, None))
                for tool, (wall, rss, count, note) in rows.items():
                    r_wall = f"{base_wall / wall:.2f}" if base_wall else "-"
                    r_count = f"{base_count / count:.2f}" if base_count and count else "-"
                    c_s, c_mbp = (f"{count:.2f}", f"{mbp / count:.1f}") if count else ("-", "-")
                    print(
                        f"{label}\t{k}\t{tool}\t{wall:.2f}\t{mbp / wall:.1f}\t{c_s}\t{c_mbp}\t{rss}\t{r_wall}\t{r_count}\t"
                        f"{os.getloadavg()[0]:.2f}\t{note}",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def bench_one(tool, fasta, k, threads, work) -> tuple[float, int, float | None, str]:
    """(wall s, peak MiB, the tool's own counting time or None, note) of one run."""
    if tool == "dnalm":
        code = DNALM.format(scripts=str(ROOT / "scripts"), fasta=str(fasta), k=k, threads=threads)
        wall, rss, out = run([sys.executable, "-c", code])
        t = dict(zip(out.split()[::2], out.split()[1::2]))
        return wall, rss, float(t["count"]), f"all n=1..{k}; imports + kernel load {float(t['import']):.2f} s"
    if tool == "kmc":
        tmp = work / "kmc_tmp"
        tmp.mkdir(exist_ok=True)
        cmd = [
            "kmc",
            f"-k{k}",
            "-ci1",
            f"-cs{2**32 - 1}",
            "-b",
            f"-t{threads}",
            "-fm",
            str(fasta),
            str(work / "kmc"),
            str(tmp),
        ]
        wall, rss, out = run(cmd)
        total = re.search(r"^Total\s*:\s*([0-9.]+)s", out, flags=re.M)
        return wall, rss, float(total.group(1)) if total else None, f"k={k} only"
    if tool == "jellyfish":
        cmd = ["jellyfish", "count", "-m", str(k), "-s", "64M" if k > 8 else "1M", "-t", str(threads),
               "-o", str(work / "jf.out"), str(fasta)]  # fmt: skip
        wall, rss, _ = run(cmd)
        return wall, rss, None, f"k={k} only"
    if tool == "numpy":
        wall, rss, out = run([sys.executable, "-c", NUMPY.format(fasta=str(fasta), k=k)])
        return wall, rss, float(out.split()[1]), f"k={k} only, 1 thread, whole file in memory"
    raise SystemExit(f"unknown tool {tool}")


if __name__ == "__main__":
    sys.exit(main())
