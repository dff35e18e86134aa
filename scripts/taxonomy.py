"""Rule taxonomy: closed-world species probe and open-world genus 1-NN on barcode embeddings,
and the class-imbalance bias of both (per-class accuracy against training frequency)."""

import pandas as pd

from dnalm import datasets, embed, evaluate, gpus, io, logs

log = logs.to_file(snakemake.log[0])
gpu_lease = gpus.pin(snakemake.resources.get("gpu", 0), log=log)  # own GPU, before CUDA starts
evaluate.limit_threads(snakemake.threads)
p = snakemake.params
ids, vectors = embed.load_embeddings(snakemake.input.embeddings)
table = datasets.read_barcodes(snakemake.input.barcodes, columns=["processid", "genus", "species", "split"])


def split(name):
    rows = table[table["split"] == name]
    if rows.empty:
        raise ValueError(f"{snakemake.input.barcodes}: split {name!r} has no barcodes")
    return datasets.align(rows["processid"], ids, vectors, snakemake.input.embeddings), rows


x_tr, tr = split(p.closed_train)
x_te, te = split(p.closed_test)
closed, species_pred = evaluate.closed_world(  # logs which probe, where, how long
    x_tr, tr["species"].to_numpy(), x_te, te["species"].to_numpy(), max_iter=p.max_iter, seed=p.seed,
    return_predictions=True, probe=p.probe, torch_settings=p.torch_probe,
)
del x_tr, x_te
closed_bias, closed_classes = evaluate.bias(te["species"].to_numpy(), species_pred, tr["species"].to_numpy(), "species")
x_ref, ref = split(p.open_reference)
x_q, q = split(p.open_query)
opened, genus_pred = evaluate.open_world(x_ref, ref["genus"].to_numpy(), x_q, q["genus"].to_numpy(), return_predictions=True)
open_bias, open_classes = evaluate.bias(q["genus"].to_numpy(), genus_pred, ref["genus"].to_numpy(), "genus")
result = pd.concat([closed, opened, closed_bias, open_bias], ignore_index=True)
per_class = pd.concat(
    [closed_classes.assign(protocol="closed_world", level="species"),
     open_classes.assign(protocol="open_world", level="genus")],
    ignore_index=True,
)
for frame in (result, per_class):
    frame.insert(0, "dataset", "barcodes")
    frame.insert(0, "model", snakemake.wildcards.model)
io.write_tsv(result, snakemake.output.metrics)
io.write_tsv(per_class, snakemake.output.per_class)
log.info("\n%s", result.to_string(index=False))
