# Evaluation protocols on frozen embeddings (DESIGN.md): GeneMask few-shot probes,
# BIOSCAN-5M closed-world species probe and open-world genus 1-NN, clustering vs taxonomy.


rule fewshot:
    input:
        embeddings=R("embeddings/{model}/{task}.npz"),
        train=R("data/tasks/{task}/train.tsv"),
        test=R("data/tasks/{task}/test.tsv"),
    output:
        R("eval/fewshot/{model}/{task}.tsv"),
    log:
        R("logs/fewshot/{model}/{task}.log"),
    benchmark:
        R("benchmarks/fewshot/{model}/{task}.tsv")
    params:
        shots=config["evaluation"]["fewshot"]["shots"],
        n_repeats=config["evaluation"]["fewshot"]["n_repeats"],
        max_iter=config["evaluation"]["fewshot"]["max_iter"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/evaluate.yaml"
    script:
        "../scripts/fewshot.py"


rule taxonomy:
    input:
        embeddings=R("embeddings/{model}/barcodes.npz"),
        barcodes=barcode_table(),
    output:
        R("eval/taxonomy/{model}.tsv"),
    log:
        R("logs/taxonomy/{model}.log"),
    benchmark:
        R("benchmarks/taxonomy/{model}.tsv")
    params:
        closed_train=config["evaluation"]["taxonomy"]["closed_train"],
        closed_test=config["evaluation"]["taxonomy"]["closed_test"],
        open_reference=config["evaluation"]["taxonomy"]["open_reference"],
        open_query=config["evaluation"]["taxonomy"]["open_query"],
        max_iter=config["evaluation"]["taxonomy"]["max_iter"],
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/evaluate.yaml"
    script:
        "../scripts/taxonomy.py"


rule clustering:
    input:
        embeddings=R("embeddings/{model}/barcodes.npz"),
        barcodes=barcode_table(),
    output:
        R("eval/clustering/{model}.tsv"),
    log:
        R("logs/clustering/{model}.log"),
    params:
        method=config["evaluation"]["clustering"]["method"],
        split=config["evaluation"]["clustering"]["split"],
        ranks=config["evaluation"]["clustering"]["ranks"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/evaluate.yaml"
    script:
        "../scripts/clustering.py"
