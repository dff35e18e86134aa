"""Rule merge_kmers: sum the per-shard k-mer counts."""

from dnalm import kmers, logs

log = logs.to_file(snakemake.log[0])
counts = kmers.merge_count_files(list(snakemake.input))
kmers.save_counts(snakemake.output[0], counts)
log.info("merged %d shards; %d valid 1-mer windows", len(snakemake.input), counts.n_windows(1))
