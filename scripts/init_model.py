"""Rule init_model: the untrained control of a model (``<model>@init``): the weights its
pretraining starts from (same architecture, size and seed; no step), saved like a trained
model, and its scores on the model's validation slice (step 0) as tidy metric rows."""

from dnalm import io, logs, train, validation

log = logs.to_file(snakemake.log[0])
cfg = train.TrainConfig.from_dict({**snakemake.params.settings, "num_threads": snakemake.threads})
control = snakemake.params.control
summary = train.save_initial(
    cfg,
    snakemake.output.model,
    corpus_path=snakemake.input.corpus,
    npmi_path=snakemake.input.get("npmi"),
    extra={"control_of": snakemake.wildcards.model},
)
io.write_tsv(validation.validation_table(summary, control), snakemake.output.validation)
log.info("untrained control %s of %s (seed %d): validation loss %s", control, snakemake.wildcards.model, cfg.seed,
         summary["final_val_loss"])
