"""Rule clustering: cluster barcode embeddings, compare with each taxonomic rank (AMI, ARI)."""

from dnalm import datasets, embed, evaluate, io, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
ids, vectors = embed.load_embeddings(snakemake.input.embeddings)
table = datasets.read_barcodes(snakemake.input.barcodes)
rows = table[table["split"] == p.split]
x = datasets.align(rows["processid"], ids, vectors, snakemake.input.embeddings)
labels = {rank: rows[rank].to_numpy() for rank in p.ranks}
result = evaluate.clustering(x, labels, method=p.method, seed=p.seed)
result.insert(0, "dataset", "barcodes")
result.insert(0, "model", snakemake.wildcards.model)
io.write_tsv(result, snakemake.output[0])
log.info("\n%s", result.to_string(index=False))
