"""Rule plot_training: training and validation loss and accuracy, and the achieved mask rate,
against the step, per model; the validation curves start at step 0 from the scores of the
model's untrained control when it is evaluated (evaluation.controls)."""

import pandas as pd

from dnalm import logs, plots

log = logs.to_file(snakemake.log[0])
curves = {model: pd.read_csv(path, sep="\t") for model, path in zip(snakemake.params.models, snakemake.input.curves)}
initial = {}
for model, path in zip(snakemake.params.controlled, snakemake.input.initial):
    scores = pd.read_csv(path, sep="\t").query("level == 'model'").set_index("metric")["value"]
    initial[model] = {"val_loss": scores.get("cross_entropy"), "val_masked_acc": scores.get("accuracy")}
plots.plot_training(curves, snakemake.output[0], initial=initial)
