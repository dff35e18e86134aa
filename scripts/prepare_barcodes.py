"""Rule prepare_barcodes: a BOLD / BIOSCAN-5M barcode table as the pipeline's barcodes.tsv."""

from dnalm import barcodes, download, io, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
download.verify_checksums(snakemake.input[0], p.checksums)
splits = p.splits
table = barcodes.convert(
    snakemake.input[0],
    layout=p.layout,
    marker=p.marker,
    max_length=p.max_length,
    rebuild_splits=splits["rebuild"],
    seed=p.seed,
    unseen_fraction=splits["unseen_fraction"],
    seen=splits["seen"],
    unseen=splits["unseen"],
)
io.write_tsv(table, snakemake.output[0])
log.info("%d barcodes; splits %s", len(table), table["split"].value_counts().to_dict())
