"""Rule align_inputs: distinct query and reference barcodes of each protocol as FASTA, and
the member table that maps every barcode row to its sequence (alignment baseline)."""

from dnalm import align, logs

log = logs.to_file(snakemake.log[0])
protocols = snakemake.params.protocols
outputs = {
    protocol: {name: snakemake.output[name][i] for name in ("queries", "references", "members")}
    for i, protocol in enumerate(protocols)
}
splits = {p: snakemake.params.splits[p] for p in protocols}
align.write_inputs(snakemake.input.barcodes, splits, outputs, max_n_fraction=snakemake.params.max_n_fraction)
