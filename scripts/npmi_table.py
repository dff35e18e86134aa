"""Rule npmi_table: NPMI of every n-gram (n >= 2) seen at least min_count times."""

from dnalm import kmers, logs, npmi

log = logs.to_file(snakemake.log[0])
counts = kmers.load_counts(snakemake.input[0])
rows = npmi.write_npmi_tsv(counts, snakemake.output[0], min_count=snakemake.params.min_count)
log.info("%d n-grams with count >= %d", rows, snakemake.params.min_count)
