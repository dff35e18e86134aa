# External checkpoints (models: entries with `pretrained:`): evaluated as published, never
# trained. fetch_pretrained resolves a hub id through the huggingface_hub cache (pinned to
# the entry's revision) or checks a local folder, tries the tokenizer on DNA, and writes the
# manifest model_dir(model)/dnalm.json (source, resolved path, commit, tokenizer, pooling,
# window length, provenance) that the embed and fewshot jobs read. It runs on the machine
# that runs snakemake (localrules): on a cluster, that is where the network is.


localrules:
    fetch_pretrained,


rule fetch_pretrained:
    input:
        external_inputs,
    output:
        directory(model_dir()),
    log:
        R("logs/fetch_pretrained/{model}.log"),
    benchmark:
        R("benchmarks/fetch_pretrained/{model}.tsv")
    wildcard_constraints:
        model=_alternatives(EXTERNAL_MODELS),
    conda:
        "../envs/pretrain.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        settings=external_settings,
    script:
        "../scripts/fetch_pretrained.py"
