# Pretraining: one job per model (architecture x masking x tokenization, from the `models:`
# config) on its corpus (rules/corpus.smk). Checkpoints live outside the declared outputs,
# so a killed job resumes when the rule is rerun. A model's `gpus:` is the job's `gpu`
# resource; more than one GPU runs the job data-parallel (torchrun, one process per GPU).


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        model=directory(model_dir()),
        metrics=R("pretrain/{model}/metrics.tsv"),
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
        gpu=lambda wildcards: MODEL_SETTINGS[wildcards.model].get("gpus", 0),
        # several nodes: one srun task per node launches torchrun there (dnalm.distributed)
        nodes=lambda wildcards: MODEL_SETTINGS[wildcards.model].get("nodes", 1),
    params:
        settings=model_settings,
        checkpoint_dir=lambda wildcards: R(f"pretrain/{wildcards.model}/checkpoints"),
    script:
        "../scripts/pretrain.py"
