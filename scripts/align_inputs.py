"""Rule align_inputs: distinct query and reference barcodes of each protocol as FASTA, and
the member table that maps every barcode row to its sequence (alignment baseline)."""

from dnalm import align, logs

log = logs.to_file(snakemake.log[0])
protocols = snakemake.params.protocols
outputs = {
    protocol: {name: snakemake.output[name][i] for name in ("queries", "references", "members")}
    for i, protocol in enumerate(protocols)
}
align.write_inputs(snakemake.input.barcodes, {p: snakemake.params.splits[p] for p in protocols}, outputs)
