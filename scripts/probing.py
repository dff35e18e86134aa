"""Rule probing: knowledge probes on a task's test set: clustering against the task labels
(AMI, ARI, silhouette) and the consistency probe for same-label pairs and for pairs that
share a known motif (npmi.motifs), each against random pairs."""

import pandas as pd

from dnalm import datasets, embed, evaluate, io, logs, motifs

log = logs.to_file(snakemake.log[0])
evaluate.limit_threads(snakemake.threads)
p = snakemake.params
ids, vectors = embed.load_embeddings(snakemake.input.embeddings)
test = datasets.read_task(snakemake.input.test)
x = datasets.align(test["id"], ids, vectors, snakemake.input.embeddings)
labels = test["label"].astype(str).to_numpy()
known = motifs.load_motifs(p.motif_source, snakemake.input.motifs[0] if snakemake.input.motifs else None)
groups = evaluate.motif_groups(test["sequence"].tolist(), known.head(p.max_motifs), mismatches=p.mismatches)
log.info("test sequences containing each motif: %s", {m: len(g) for m, g in groups.items()})
result = pd.concat(
    [evaluate.clustering(x, {"label": labels}, method=p.method, seed=p.seed, max_points=p.max_points),
     evaluate.consistency(x, {"label": labels, "motif": list(groups.values())}, max_pairs=p.max_pairs, seed=p.seed)],
    ignore_index=True,
)
result.insert(0, "dataset", snakemake.wildcards.task)
result.insert(0, "model", snakemake.wildcards.model)
io.write_tsv(result, snakemake.output[0])
log.info("\n%s", result.to_string(index=False))
