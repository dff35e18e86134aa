"""Rule collect_metrics: one tidy table of every metric and a markdown summary."""

import pandas as pd

from dnalm import io, logs, report

log = logs.to_file(snakemake.log[0])
metrics = report.collect([pd.read_csv(path, sep="\t") for path in snakemake.input])
io.write_tsv(metrics, snakemake.output.metrics)
with io.atomic_open(snakemake.output.summary) as out:
    out.write(report.summary_markdown(metrics, models=snakemake.params.models))
log.info("%d metric rows from %d tables", len(metrics), len(snakemake.input))
