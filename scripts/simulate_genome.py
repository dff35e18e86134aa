"""Rule simulate_genome: the demo genome, its planted motifs and the few-shot tasks."""

from dnalm import logs
from dnalm.simulate import tasks

log = logs.to_file(snakemake.log[0])
tasks.write_genome_demo(snakemake.params.outdir, snakemake.params.genome, snakemake.params.seed)
log.info("wrote %s", ", ".join(snakemake.output))
