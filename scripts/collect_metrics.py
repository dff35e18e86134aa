"""Rule collect_metrics: one tidy table of every metric (evaluations and pretraining
validation), the leaderboard (one row per model, one column per headline protocol, with
each model's provenance), each model's gain over its untrained control and gap to the
baselines, and the summary (markdown and HTML)."""

import pandas as pd

from dnalm import io, logs, report

log = logs.to_file(snakemake.log[0])
p = snakemake.params
metrics = report.collect([pd.read_csv(path, sep="\t") for path in snakemake.input.tables])
io.write_tsv(metrics, snakemake.output.metrics)
columns = report.headline_columns(metrics)
board = report.leaderboard(metrics, columns, p.kinds, report.read_provenance(p.kinds, p.model_dirs, p.baselines))
io.write_tsv(board, snakemake.output.leaderboard)
gains = report.gains(metrics, columns, list(p.kinds), report.references(p.kinds))
io.write_tsv(gains, snakemake.output.gains)
comparison = report.comparison_markdown(board, gains, columns, p.kinds)
summary = report.summary_markdown(metrics, models=p.models, shots_scale=p.shots_scale, comparison=comparison)
with io.atomic_open(snakemake.output.summary) as out:
    out.write(summary)
with io.atomic_open(snakemake.output.summary_html) as out:
    out.write(report.summary_html(summary))
log.info("%d metric rows from %d tables; leaderboard of %d models", len(metrics), len(snakemake.input.tables),
         len(board))
