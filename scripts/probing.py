"""Rule probing: knowledge probes on a task's test set: clustering against the task labels
(AMI, ARI, silhouette) and the consistency probe for same-label pairs and for pairs that
share a known motif (npmi.motifs), each against random pairs. A test set with one class is
an error naming the task and its file."""

import pandas as pd

from dnalm import datasets, embed, evaluate, io, logs, motifs, structure

log = logs.to_file(snakemake.log[0])
evaluate.limit_threads(snakemake.threads)
p = snakemake.params
test = datasets.read_task(snakemake.input.test)
evaluate.check_classes(test["label"], snakemake.wildcards.task, snakemake.input.test)
ids, vectors = embed.load_embeddings(snakemake.input.embeddings)
x = datasets.align(test["id"], ids, vectors, snakemake.input.embeddings)
labels = test["label"].astype(str).to_numpy()
known = motifs.load_motifs(p.motif_source, snakemake.input.motifs[0] if snakemake.input.motifs else None)
groups = structure.motif_groups(test["sequence"].tolist(), known.head(p.max_motifs), mismatches=p.mismatches)
log.info("test sequences containing each motif: %s", {m: len(g) for m, g in groups.items()})
result = pd.concat(
    [structure.clustering(x, {"label": labels}, method=p.method, seed=p.seed, max_points=p.max_points),
     structure.consistency(x, {"label": labels, "motif": list(groups.values())}, max_pairs=p.max_pairs, seed=p.seed)],
    ignore_index=True,
)
result.insert(0, "dataset", snakemake.wildcards.task)
result.insert(0, "model", snakemake.wildcards.model)
io.write_tsv(result, snakemake.output[0])
log.info("\n%s", result.to_string(index=False))
