"""Rule index_genome: a samtools-compatible .fai index (pyfaidx), used to plan count shards."""

from pathlib import Path

import pyfaidx

from dnalm import logs

log = logs.to_file(snakemake.log[0])
fasta = pyfaidx.Fasta(snakemake.input[0], rebuild=True, build_index=True)
log.info("indexed %d records of %s", len(fasta.keys()), snakemake.input[0])
fasta.close()
assert Path(snakemake.output[0]).exists(), "pyfaidx did not write the index"
