"""Rule align_taxonomy: gather the alignment chunks into the taxonomy and bias tables of the
model `align` (same columns as the taxonomy rule's)."""

from pathlib import Path

import pandas as pd

from dnalm import align, io, logs

log = logs.to_file(snakemake.log[0])
protocols = {}
for protocol, members_path in zip(snakemake.params.protocols, snakemake.input.members):
    paths = [p for p in snakemake.input.hits if Path(p).parent.parent.name == protocol]
    members = pd.read_csv(members_path, sep="\t", dtype={"label": str}, keep_default_na=False)
    n_queries = int(members.loc[members["role"] == "query", "seq"].max()) + 1
    hits = align.merge_hits([pd.read_csv(p, sep="\t") for p in paths], n_queries)
    protocols[protocol] = (members, hits)
metrics, per_class = align.taxonomy_tables(protocols)
for frame in (metrics, per_class):
    frame.insert(0, "dataset", "barcodes")
    frame.insert(0, "model", "align")
io.write_tsv(metrics, snakemake.output.metrics)
io.write_tsv(per_class, snakemake.output.per_class)
log.info("\n%s", metrics.to_string(index=False))
