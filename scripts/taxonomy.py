"""Rule taxonomy: closed-world species probe and open-world genus 1-NN on barcode embeddings,
and the class-imbalance bias of both (per-class accuracy against training frequency);
barcodes without a species or genus are left out of that rank (dnalm.evaluate.taxonomy)."""

from dnalm import datasets, embed, evaluate, gpus, io, logs

log = logs.to_file(snakemake.log[0])
gpu_lease = gpus.pin(snakemake.resources.get("gpu", 0), log=log)  # own GPU, before CUDA starts
threads = evaluate.limit_threads(snakemake.threads)
p = snakemake.params
ids, vectors = embed.load_embeddings(snakemake.input.embeddings)
table = datasets.read_barcodes(snakemake.input.barcodes, columns=["processid", "genus", "species", "split"])
result, per_class = evaluate.taxonomy(
    table, ids, vectors, closed_train=p.closed_train, closed_test=p.closed_test, open_reference=p.open_reference,
    open_query=p.open_query, max_iter=p.max_iter, seed=p.seed, probe=p.probe, torch_settings=p.torch_probe,
    threads=threads, table_path=snakemake.input.barcodes, embeddings_path=snakemake.input.embeddings,
)
for frame in (result, per_class):
    frame.insert(0, "dataset", "barcodes")
    frame.insert(0, "model", snakemake.wildcards.model)
io.write_tsv(result, snakemake.output.metrics)
io.write_tsv(per_class, snakemake.output.per_class)
log.info("\n%s", result.to_string(index=False))
