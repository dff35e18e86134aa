"""Rule prepare_genome: a real genome (downloaded or local FASTA) as the pipeline's genome.fa."""

from dnalm import genome, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
summary = genome.prepare_genome(snakemake.input[0], snakemake.output[0], contigs=p.contigs, checksums=p.checksums)
log.info("kept %s", ", ".join(summary["kept"]))
