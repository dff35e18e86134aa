"""Rule plan_kmer_shards: record names and lengths (one streaming pass that checks the
whole genome), grouped into shards."""

from dnalm import fasta, kmers, logs

log = logs.to_file(snakemake.log[0])
lengths = fasta.fasta_records(snakemake.input.fasta)
plan = kmers.write_shard_plan(snakemake.output[0], lengths, snakemake.params.n_shards)
for shard, group in plan.groupby("shard"):
    log.info("shard %d: %d records, %d letters", shard, len(group), group["length"].sum())
