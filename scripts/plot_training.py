"""Rule plot_training: training and validation loss and accuracy, and the achieved mask rate,
against the step, per model."""

import pandas as pd

from dnalm import logs, plots

log = logs.to_file(snakemake.log[0])
curves = {model: pd.read_csv(path, sep="\t") for model, path in zip(snakemake.params.models, snakemake.input)}
plots.plot_training(curves, snakemake.output[0])
