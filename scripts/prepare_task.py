"""Rule prepare_task: a real few-shot task's train/test files as the pipeline's task tables."""

from dnalm import datasets, download, input_checks, io, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
task = snakemake.wildcards.task
for role in ("train", "test"):
    download.verify_checksums(snakemake.input[role], p.checksums[role])
train, test = datasets.convert_task(snakemake.input.train, snakemake.input.test, task, p.format)
# The pool must hold two classes and every K of evaluation.fewshot.shots (the workflow checks
# this before any job when the file is already on disk). Read from the config, not params:
# the tables do not depend on the shots, so changing them must not redo the conversion.
pool = train["label"].value_counts().to_dict()
input_checks.check_fewshot_pool(
    task, pool, snakemake.config["evaluation"]["fewshot"], f"its train file {snakemake.input.train}", f"data.tasks.{task}.train"
)
io.write_tsv(train, snakemake.output.train)
io.write_tsv(test, snakemake.output.test)
log.info("wrote %s", ", ".join(snakemake.output))
