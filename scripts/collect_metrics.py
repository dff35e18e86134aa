"""Rule collect_metrics: one tidy table of every metric and its summary (markdown and HTML)."""

import pandas as pd

from dnalm import io, logs, report

log = logs.to_file(snakemake.log[0])
metrics = report.collect([pd.read_csv(path, sep="\t") for path in snakemake.input])
io.write_tsv(metrics, snakemake.output.metrics)
summary = report.summary_markdown(metrics, models=snakemake.params.models, shots_scale=snakemake.params.shots_scale)
with io.atomic_open(snakemake.output.summary) as out:
    out.write(summary)
with io.atomic_open(snakemake.output.summary_html) as out:
    out.write(report.summary_html(summary))
log.info("%d metric rows from %d tables", len(metrics), len(snakemake.input))
