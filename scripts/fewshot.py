"""Rule fewshot: GeneMask few-shot learning (shots x repeats): a logistic-regression probe on
frozen embeddings, or, with evaluation.fewshot.finetune, a fine-tuned encoder. Each K draws
K x shots_scale examples per class (the task's evaluation.fewshot.shots_scale, default 1).
A task file with one class is an error naming the task and the file."""

from dnalm import datasets, embed, evaluate, gpus, io, logs

log = logs.to_file(snakemake.log[0])
evaluate.limit_threads(snakemake.threads)
p = snakemake.params
train = datasets.read_task(snakemake.input.train)
test = datasets.read_task(snakemake.input.test)
for path, frame in ((snakemake.input.train, train), (snakemake.input.test, test)):
    evaluate.check_classes(frame["label"], snakemake.wildcards.task, path)
y_train, y_test = train["label"].to_numpy(), test["label"].to_numpy()
if p.finetune:
    gpu_lease = gpus.pin(snakemake.resources.get("gpu", 0), log=log)  # own GPU, before CUDA starts
    import torch

    from dnalm import finetune

    torch.set_num_threads(snakemake.threads)
    result = finetune.fewshot_finetune(
        snakemake.input.model, train["sequence"].tolist(), y_train, test["sequence"].tolist(), y_test,
        shots=p.shots, n_repeats=p.n_repeats, seed=p.seed, settings=p.finetune, shots_scale=p.shots_scale,
    )
else:
    ids, vectors = embed.load_embeddings(snakemake.input.embeddings)
    x_train = datasets.align(train["id"], ids, vectors, snakemake.input.embeddings)
    x_test = datasets.align(test["id"], ids, vectors, snakemake.input.embeddings)
    result = evaluate.fewshot(
        x_train, y_train, x_test, y_test, shots=p.shots, n_repeats=p.n_repeats, seed=p.seed, max_iter=p.max_iter,
        shots_scale=p.shots_scale,
    )
result.insert(0, "dataset", snakemake.wildcards.task)
result.insert(0, "model", snakemake.wildcards.model)
io.write_tsv(result, snakemake.output[0])
log.info("\n%s", evaluate.summarize(result).to_string(index=False))
