"""Rule prepare_task: a real few-shot task's train/test files as the pipeline's task tables."""

from dnalm import datasets, download, io, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
for role in ("train", "test"):
    download.verify_checksums(snakemake.input[role], p.checksums[role])
train, test = datasets.convert_task(snakemake.input.train, snakemake.input.test, snakemake.wildcards.task, p.format)
io.write_tsv(train, snakemake.output.train)
io.write_tsv(test, snakemake.output.test)
log.info("wrote %s", ", ".join(snakemake.output))
