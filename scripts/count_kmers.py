"""Rule count_kmers: count n-grams (n = 1..k_max) over one shard of the genome's records."""

from dnalm import kmers, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
shard = int(snakemake.wildcards.shard)
lengths = kmers.fasta_lengths(snakemake.input.fasta)
records = kmers.shard_records(lengths, p.n_shards)[shard]
log.info("shard %d/%d: %d records, %d bp", shard, p.n_shards, len(records), sum(lengths[r] for r in records))
counts = kmers.count_fasta(snakemake.input.fasta, p.k_max, both_strands=p.both_strands, records=records)
kmers.save_counts(snakemake.output[0], counts)
log.info("valid %d-mer windows: %d", p.k_max, counts.n_windows(p.k_max))
