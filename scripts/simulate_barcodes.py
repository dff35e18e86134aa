"""Rule simulate_barcodes: COI-like barcodes evolved down a taxonomy tree, BIOSCAN-5M splits."""

from dnalm import logs
from dnalm.simulate import barcodes

log = logs.to_file(snakemake.log[0])
barcodes.write_barcode_demo(snakemake.params.outdir, snakemake.params.barcodes, snakemake.params.seed)
log.info("wrote %s", ", ".join(snakemake.output))
