"""Rule plot_taxonomy: closed-world species and open-world genus accuracy per model."""

import pandas as pd

from dnalm import logs, plots, report

log = logs.to_file(snakemake.log[0])
metrics = pd.read_csv(snakemake.input[0], sep="\t", keep_default_na=False, na_values=[""])
summary = report.summarize(metrics[metrics["protocol"].isin(["closed_world", "open_world"])])
summary = summary[summary["model"].isin(snakemake.params.models)]
# the dashed chance line comes from the open-world `chance_accuracy` rows: what 1-NN scores
# when the embedding carries no genus information (sum over genera of query x reference share)
plots.plot_taxonomy(summary, snakemake.output[0])
