"""Rule npmi_table: NPMI of every n-gram (n >= 2) seen at least min_count times."""

from dnalm import kmers, logs, npmi

log = logs.to_file(snakemake.log[0])
counts = kmers.load_counts(snakemake.input[0])
table = npmi.npmi_table(counts, min_count=snakemake.params.min_count)
npmi.write_npmi_table(table, snakemake.output[0])
log.info("%d n-grams with count >= %d", len(table), snakemake.params.min_count)
