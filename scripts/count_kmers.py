"""Rule count_kmers: count n-grams (n = 1..k_max) over one shard (contig group) of the genome,
reading only the shard's records, at their byte offsets in the genome's .fai index."""

import time

from dnalm import kmers, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
shard = int(snakemake.wildcards.shard)
records = kmers.read_shard_plan(snakemake.input.plan, shard)
log.info(
    "shard %d: %d records, k_max=%d, both_strands=%s, %d threads",
    shard,
    len(records),
    p.k_max,
    p.both_strands,
    snakemake.threads,
)
start = time.perf_counter()
counts = kmers.count_fasta(
    snakemake.input.fasta,
    p.k_max,
    both_strands=p.both_strands,
    records=records,
    threads=snakemake.threads,
    index=snakemake.input.fai,
)
seconds = time.perf_counter() - start
kmers.save_counts(snakemake.output[0], counts)
log.info(
    "%d valid 1-mer windows in %.1f s (%.1f Mbp/s)",
    counts.n_windows(1),
    seconds,
    counts.n_windows(1) / max(seconds, 1e-9) / 1e6,
)
