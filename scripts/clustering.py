"""Rule clustering: cluster barcode embeddings and compare with each taxonomic rank (AMI,
ARI, silhouette), the BIOSCAN-5M zero-shot protocol (UMAP then Ward, AMI) when
evaluation.clustering.umap is on, and the consistency probe (same-taxon pairs against random
pairs) per rank. Barcodes without a label at a rank are left out of that rank."""

import pandas as pd

from dnalm import datasets, embed, evaluate, io, logs, structure

log = logs.to_file(snakemake.log[0])
evaluate.limit_threads(snakemake.threads)
p = snakemake.params
ids, vectors = embed.load_embeddings(snakemake.input.embeddings)
table = datasets.read_barcodes(snakemake.input.barcodes)
rows = table[table["split"] == p.split]
if rows.empty:
    raise ValueError(f"{snakemake.input.barcodes}: split {p.split!r} has no barcodes")
x = datasets.align(rows["processid"], ids, vectors, snakemake.input.embeddings)
labels = {rank: rows[rank].to_numpy() for rank in p.ranks}
parts = [structure.clustering(x, labels, method=p.method, seed=p.seed, max_points=p.max_points)]
if p.umap:
    parts.append(structure.zero_shot_clustering(x, labels, dims=p.umap_dims, neighbors=p.umap_neighbors, seed=p.seed,
                                                max_points=p.max_points))
parts.append(structure.consistency(x, labels, max_pairs=p.max_pairs, seed=p.seed))
result = pd.concat(parts, ignore_index=True)
result.insert(0, "dataset", "barcodes")
result.insert(0, "model", snakemake.wildcards.model)
io.write_tsv(result, snakemake.output[0])
log.info("\n%s", result.to_string(index=False))
