"""Rule taxonomy: closed-world species probe and open-world genus 1-NN on barcode embeddings."""

import pandas as pd

from dnalm import datasets, embed, evaluate, io, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
ids, vectors = embed.load_embeddings(snakemake.input.embeddings)
table = datasets.read_barcodes(snakemake.input.barcodes)


def split(name):
    rows = table[table["split"] == name]
    if rows.empty:
        raise ValueError(f"{snakemake.input.barcodes}: split {name!r} has no barcodes")
    return datasets.align(rows["processid"], ids, vectors, snakemake.input.embeddings), rows


x_tr, tr = split(p.closed_train)
x_te, te = split(p.closed_test)
closed = evaluate.closed_world(x_tr, tr["species"].to_numpy(), x_te, te["species"].to_numpy(), max_iter=p.max_iter)
x_ref, ref = split(p.open_reference)
x_q, q = split(p.open_query)
opened = evaluate.open_world(x_ref, ref["genus"].to_numpy(), x_q, q["genus"].to_numpy())
result = pd.concat([closed, opened], ignore_index=True)
result.insert(0, "dataset", "barcodes")
result.insert(0, "model", snakemake.wildcards.model)
io.write_tsv(result, snakemake.output[0])
log.info("\n%s", result.to_string(index=False))
