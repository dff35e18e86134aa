"""Rule pretrain: train one model (resumes from its last checkpoint if one matches).

With ``resources: gpu`` > 1 the job runs data-parallel, one process per GPU (torchrun);
with ``resources: nodes`` > 1 (a multi-node SLURM job) on every node of the job. On
SIGTERM/SIGUSR1 the run checkpoints after its current step and the job exits with status
75 (``dnalm.preemption``): a retry resumes it. In a SLURM job the run stops that way
``resources: stop_before_limit_s`` seconds before the job's time limit (``dnalm.timelimit``).
An output named ``validation`` receives the validation scores of the model and of the
no-model predictors as tidy metric rows."""

from dnalm import distributed, gpus, io, logs, timelimit, train, validation

log = logs.to_file(snakemake.log[0])
n_gpus = distributed.gpus_per_node(snakemake.resources)  # per node
gpu_lease = gpus.pin(n_gpus, log=log)  # own GPUs, before CUDA starts
cfg = train.TrainConfig.from_dict({**snakemake.params.settings, "num_threads": snakemake.threads})
log.info("training %s with %s", snakemake.wildcards.model, cfg)
with timelimit.stop_before_limit(int(snakemake.resources.get("stop_before_limit_s", 0))):
    summary = distributed.launch(
        cfg,
        corpus_path=snakemake.input.corpus,
        out_dir=snakemake.output.model,
        metrics_path=snakemake.output.metrics,
        checkpoint_dir=snakemake.params.checkpoint_dir,
        npmi_path=snakemake.input.get("npmi"),
        nproc=n_gpus,
        nodes=int(snakemake.resources.get("nodes", 1)),
    )
if snakemake.output.get("validation"):
    io.write_tsv(validation.validation_table(summary, snakemake.wildcards.model), snakemake.output.validation)
log.info("done: %s", summary)
