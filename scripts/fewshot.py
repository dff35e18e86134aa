"""Rule fewshot: GeneMask few-shot probes (shots x repeats) on frozen embeddings."""

from dnalm import datasets, embed, evaluate, io, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
ids, vectors = embed.load_embeddings(snakemake.input.embeddings)
train = datasets.read_task(snakemake.input.train)
test = datasets.read_task(snakemake.input.test)
x_train = datasets.align(train["id"], ids, vectors, snakemake.input.embeddings)
x_test = datasets.align(test["id"], ids, vectors, snakemake.input.embeddings)
result = evaluate.fewshot(
    x_train, train["label"].to_numpy(), x_test, test["label"].to_numpy(),
    shots=p.shots, n_repeats=p.n_repeats, seed=p.seed, max_iter=p.max_iter,
)
result.insert(0, "dataset", snakemake.wildcards.task)
result.insert(0, "model", snakemake.wildcards.model)
io.write_tsv(result, snakemake.output[0])
log.info("\n%s", evaluate.summarize(result).to_string(index=False))
