# Evaluation protocols (docs/design.md#evaluation): GeneMask few-shot probes (or fine-tuning), BIOSCAN-5M
# closed-world species probe and open-world genus 1-NN with the class-imbalance bias, and
# the knowledge probes: clustering against taxonomy / task labels and the consistency probe.
# The k-mer-spectrum baseline is one more {model}.


rule fewshot:
    input:
        unpack(fewshot_inputs),
    output:
        R("eval/fewshot/{model}/{task}.tsv"),
    log:
        R("logs/fewshot/{model}/{task}.log"),
    benchmark:
        R("benchmarks/fewshot/{model}/{task}.tsv")
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        gpu=fewshot_gpus,
    params:
        shots=config["evaluation"]["fewshot"]["shots"],
        shots_scale=lambda wildcards: config["evaluation"]["fewshot"]["shots_scale"].get(wildcards.task, 1),
        n_repeats=config["evaluation"]["fewshot"]["n_repeats"],
        max_iter=config["evaluation"]["fewshot"]["max_iter"],
        finetune=fewshot_finetune_settings,
        seed=config["seed"],
    script:
        "../scripts/fewshot.py"


rule taxonomy:
    input:
        embeddings=embeddings_file(dataset="barcodes"),
        barcodes=barcode_table(),
    output:
        metrics=R("eval/taxonomy/{model}.tsv"),
        per_class=R("eval/bias/{model}.tsv"),
    log:
        R("logs/taxonomy/{model}.log"),
    benchmark:
        R("benchmarks/taxonomy/{model}.tsv")
    conda:
        "../envs/evaluate.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        # evaluation.taxonomy.gpus (0 or 1): the torch species probe on CUDA (never sklearn)
        gpu=0 if config["evaluation"]["taxonomy"]["probe"] == "sklearn" else config["evaluation"]["taxonomy"]["gpus"],
    params:
        closed_train=config["evaluation"]["taxonomy"]["closed_train"],
        closed_test=config["evaluation"]["taxonomy"]["closed_test"],
        open_reference=config["evaluation"]["taxonomy"]["open_reference"],
        open_query=config["evaluation"]["taxonomy"]["open_query"],
        max_iter=config["evaluation"]["taxonomy"]["max_iter"],
        probe=config["evaluation"]["taxonomy"]["probe"],
        torch_probe=config["evaluation"]["taxonomy"]["torch_probe"],
        seed=config["seed"],
    script:
        "../scripts/taxonomy.py"


rule clustering:
    input:
        embeddings=embeddings_file(dataset="barcodes"),
        barcodes=barcode_table(),
    output:
        R("eval/clustering/{model}.tsv"),
    log:
        R("logs/clustering/{model}.log"),
    benchmark:
        R("benchmarks/clustering/{model}.tsv")
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        method=config["evaluation"]["clustering"]["method"],
        split=config["evaluation"]["clustering"]["split"],
        ranks=config["evaluation"]["clustering"]["ranks"],
        max_points=config["evaluation"]["clustering"]["max_points"],
        umap=config["evaluation"]["clustering"]["umap"],
        umap_dims=config["evaluation"]["clustering"]["umap_dims"],
        umap_neighbors=config["evaluation"]["clustering"]["umap_neighbors"],
        max_pairs=config["evaluation"]["probing"]["max_pairs"],
        seed=config["seed"],
    script:
        "../scripts/clustering.py"


rule probing:
    input:
        embeddings=embeddings_file(dataset="{task}"),
        test=task_file("test"),
        motifs=known_motifs(),
    output:
        R("eval/probing/{model}/{task}.tsv"),
    log:
        R("logs/probing/{model}/{task}.log"),
    benchmark:
        R("benchmarks/probing/{model}/{task}.tsv")
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        method=config["evaluation"]["clustering"]["method"],
        max_points=config["evaluation"]["clustering"]["max_points"],
        motif_source=config["npmi"]["motifs"],
        max_pairs=config["evaluation"]["probing"]["max_pairs"],
        mismatches=config["evaluation"]["probing"]["motif_mismatches"],
        max_motifs=config["evaluation"]["probing"]["max_motifs"],
        seed=config["seed"],
    script:
        "../scripts/probing.py"
