"""Rule plot_embedding_map: 2-D map (t-SNE or PCA) of barcode embeddings per model, coloured
by a taxonomic rank; the same seeded subset of barcodes in every panel."""

import numpy as np

from dnalm import datasets, embed, evaluate, logs, plots, structure

log = logs.to_file(snakemake.log[0])
evaluate.limit_threads(snakemake.threads)
s = snakemake.params.settings
table = datasets.read_barcodes(snakemake.input.barcodes)
rows = table[table["split"] == s["split"]]
if len(rows) > s["max_points"]:
    rows = rows.iloc[np.sort(np.random.default_rng(snakemake.params.seed).choice(len(rows), s["max_points"], replace=False))]
coords = {}
for model, path in zip(snakemake.params.models, snakemake.input.embeddings):
    ids, vectors = embed.load_embeddings(path)
    x = datasets.align(rows["processid"], ids, vectors, path)
    coords[model] = structure.project_2d(x, method=s["method"], seed=snakemake.params.seed)
    log.info("%s: %d barcodes projected (%s)", model, len(x), s["method"])
method = {"tsne": "t-SNE", "pca": "PCA"}[s["method"]]
plots.plot_embedding_map(coords, rows[s["rank"]].to_numpy(), snakemake.output[0], rank=s["rank"], method=method)
