# Embeddings: one job per (model, dataset). The k-mer-spectrum baseline goes through the
# same rule, so every evaluation treats it as one more model.


rule embed:
    input:
        unpack(embed_inputs),
    output:
        embeddings_file(),
    log:
        R("logs/embed/{model}/{dataset}.log"),
    benchmark:
        R("benchmarks/embed/{model}/{dataset}.tsv")
    conda:
        "../envs/pretrain.yaml"
    threads: config["embedding"]["threads"]
    resources:
        mem_mb=4000,
        # one GPU for a model trained on GPUs (see profiles/default), none for the k-mer baseline
        gpu=lambda wildcards: min(1, MODEL_SETTINGS.get(wildcards.model, {}).get("gpus", 0)),
    params:
        settings=embed_params,
    script:
        "../scripts/embed.py"
