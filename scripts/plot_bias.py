"""Rule plot_bias: per-class accuracy against training frequency, per model and protocol."""

import pandas as pd

from dnalm import logs, plots

log = logs.to_file(snakemake.log[0])
per_class = pd.concat(
    [pd.read_csv(path, sep="\t", dtype={"class": str}, keep_default_na=False) for path in snakemake.input],
    ignore_index=True,
)
plots.plot_bias(per_class, snakemake.output[0])
log.info("%d classes from %d models", len(per_class), len(snakemake.input))
