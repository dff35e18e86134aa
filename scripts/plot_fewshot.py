"""Rule plot_fewshot: few-shot curves (metric vs shots) per task, one line per model."""

import pandas as pd

from dnalm import logs, plots, report

log = logs.to_file(snakemake.log[0])
metrics = pd.read_csv(snakemake.input[0], sep="\t", keep_default_na=False, na_values=[""])
summary = report.summarize(metrics[metrics["protocol"] == "fewshot"])
summary = summary[summary["model"].isin(snakemake.params.models)]
plots.plot_fewshot(summary, snakemake.output[0], metric=snakemake.params.metric, shots_scale=snakemake.params.shots_scale)
