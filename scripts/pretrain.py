"""Rule pretrain: train one model (resumes from its last checkpoint if one matches)."""

from dnalm import logs, train

log = logs.to_file(snakemake.log[0])
settings = dict(snakemake.params.settings)
settings.pop("threads", None)
settings.pop("gpus", None)
settings["num_threads"] = snakemake.threads
cfg = train.TrainConfig.from_dict(settings)
log.info("training %s with %s", snakemake.wildcards.model, cfg)
summary = train.train(
    cfg,
    corpus_path=snakemake.input.corpus,
    out_dir=snakemake.output.model,
    metrics_path=snakemake.output.metrics,
    checkpoint_dir=snakemake.params.checkpoint_dir,
    npmi_path=snakemake.input.get("npmi"),
)
log.info("done: %s", summary)
