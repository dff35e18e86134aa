"""Rule count_barcode_kmers: count n-grams (n = 1..k_max) over a pretraining corpus (the
barcode windows a model trains on: chosen splits, cleaned and trimmed as in barcode_corpus)."""

import time

from dnalm import corpus, kmers, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
windows = corpus.load_corpus(snakemake.input[0])
log.info("%d windows, %d bases; k_max=%d, both_strands=%s", len(windows), len(windows.bases), p.k_max, p.both_strands)
start = time.perf_counter()
counts = kmers.count_corpus(windows, p.k_max, both_strands=p.both_strands, threads=snakemake.threads)
kmers.save_counts(snakemake.output[0], counts)
log.info("%d valid 1-mer windows in %.1f s", counts.n_windows(1), time.perf_counter() - start)
