# Pretraining: one job per model (architecture x masking x tokenization, from the `models:`
# config) on its corpus (rules/corpus.smk). Checkpoints live outside the declared outputs,
# so a killed job resumes when the rule is rerun. A model's `gpus:` is the job's `gpu`
# resource; more than one GPU runs the job data-parallel (torchrun, one process per GPU).
# Each trained model also gets its untrained control `<model>@init` (evaluation.controls):
# rule init_model saves the weights training starts from, evaluated like any model.


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        model=directory(model_dir()),
        metrics=R("pretrain/{model}/metrics.tsv"),
        validation=R("pretrain/{model}/validation.tsv"),
    log:
        R("logs/pretrain/{model}.log"),
    benchmark:
        R("benchmarks/pretrain/{model}.tsv")
    wildcard_constraints:
        model=_alternatives(TRAINED_MODELS),
    conda:
        "../envs/pretrain.yaml"
    threads: pretrain_threads
    resources:
        mem_mb=8000,
        # one node: the model's GPUs (the SLURM plugin: sbatch --gpus, the job's total)
        gpu=lambda wildcards: (
            0
            if MODEL_SETTINGS[wildcards.model].get("nodes", 1) > 1
            else MODEL_SETTINGS[wildcards.model].get("gpus", 0)
        ),
        # several nodes: one srun task per node launches torchrun there (dnalm.distributed);
        # the job asks for `gpus` per node (sbatch --gres=gpu:N) and, on the CPU, one task
        # per node (sbatch --ntasks=nodes; the plugin's `tasks` of a GPU job would become
        # --ntasks-per-gpu, and a GPU job has one task per node by default)
        nodes=lambda wildcards: MODEL_SETTINGS[wildcards.model].get("nodes", 1),
        gres=lambda wildcards: (
            f"gpu:{MODEL_SETTINGS[wildcards.model]['gpus']}"
            if MODEL_SETTINGS[wildcards.model].get("nodes", 1) > 1 and MODEL_SETTINGS[wildcards.model].get("gpus", 0)
            else None
        ),
        tasks=lambda wildcards: (
            MODEL_SETTINGS[wildcards.model]["nodes"]
            if MODEL_SETTINGS[wildcards.model].get("nodes", 1) > 1
            and not MODEL_SETTINGS[wildcards.model].get("gpus", 0)
            else None
        ),
        # in a SLURM job: checkpoint and exit 75 this long before the time limit (a retry
        # resumes; dnalm.timelimit, profiles/slurm)
        stop_before_limit_s=300,
    params:
        settings=model_settings,
        checkpoint_dir=lambda wildcards: R(f"pretrain/{wildcards.model}/checkpoints"),
    script:
        "../scripts/pretrain.py"


rule init_model:
    input:
        # the corpus (and NPMI table) of the model: the control is scored on its validation slice
        unpack(pretrain_inputs),
    output:
        model=directory(control_dir()),
        validation=control_validation(),
    log:
        R("logs/init_model/{model}.log"),
    benchmark:
        R("benchmarks/init_model/{model}.tsv")
    wildcard_constraints:
        model=_alternatives(TRAINED_MODELS),
    conda:
        "../envs/pretrain.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        settings=model_settings,
        control=lambda wildcards: control_name(wildcards.model),
    script:
        "../scripts/init_model.py"
