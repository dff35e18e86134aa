# Report: one tidy table of every metric, a markdown summary, and the figures (declared
# with report() so that `snakemake --report results/report.html` shows them).


rule collect_metrics:
    input:
        eval_outputs(),
    output:
        metrics=report(
            R("report/metrics.tsv"),
            caption="report/metrics.rst",
            category="Tables",
            labels={"table": "every metric (tidy)"},
        ),
        summary=R("report/summary.md"),
        summary_html=report(
            R("report/summary.html"),
            caption="report/summary.rst",
            category="Tables",
            labels={"table": "summary"},
        ),
    log:
        R("logs/collect_metrics.log"),
    params:
        models=report_models(embedded=False),
        shots_scale=config["evaluation"]["fewshot"]["shots_scale"],
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/evaluate.yaml"
    script:
        "../scripts/collect_metrics.py"


rule plot_fewshot:
    input:
        R("report/metrics.tsv"),
    output:
        report(
            R("report/figures/fewshot.png"),
            caption="report/fewshot.rst",
            category="Few-shot",
            labels={"figure": "few-shot curves"},
        ),
    log:
        R("logs/plot_fewshot.log"),
    params:
        metric=config["report"]["fewshot_metric"],
        models=report_models(),
        shots_scale=config["evaluation"]["fewshot"]["shots_scale"],
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/evaluate.yaml"
    script:
        "../scripts/plot_fewshot.py"


rule plot_taxonomy:
    input:
        R("report/metrics.tsv"),
    output:
        report(
            R("report/figures/taxonomy.png"),
            caption="report/taxonomy.rst",
            category="Taxonomy",
            labels={"figure": "closed / open world"},
        ),
    log:
        R("logs/plot_taxonomy.log"),
    params:
        models=report_models(embedded=False),
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/evaluate.yaml"
    script:
        "../scripts/plot_taxonomy.py"


rule plot_training:
    input:
        training_metrics(),
    output:
        report(
            R("report/figures/training.png"),
            caption="report/training.rst",
            category="Pretraining",
            labels={"figure": "loss and mask rate"},
        ),
    log:
        R("logs/plot_training.log"),
    params:
        models=MODELS,
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/evaluate.yaml"
    script:
        "../scripts/plot_training.py"


rule plot_top_kmers:
    input:
        R("npmi/top_kmers.tsv"),
    output:
        report(
            R("report/figures/top_kmers.png"),
            caption="report/top_kmers.rst",
            category="NPMI",
            labels={"figure": "top NPMI k-mers"},
        ),
    log:
        R("logs/plot_top_kmers.log"),
    params:
        top=config["npmi"]["plot_top"],
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/evaluate.yaml"
    script:
        "../scripts/plot_top_kmers.py"


rule plot_bias:
    input:
        expand(R("eval/bias/{model}.tsv"), model=report_models(embedded=False)),
    output:
        report(
            R("report/figures/bias.png"),
            caption="report/bias.rst",
            category="Taxonomy",
            labels={"figure": "class-imbalance bias"},
        ),
    log:
        R("logs/plot_bias.log"),
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/evaluate.yaml"
    script:
        "../scripts/plot_bias.py"


rule plot_embedding_map:
    input:
        embeddings=[embeddings_file(model, "barcodes") for model in report_models()],
        barcodes=barcode_table(),
    output:
        report(
            R("report/figures/embedding_map.png"),
            caption="report/embedding_map.rst",
            category="Taxonomy",
            labels={"figure": "embedding map"},
        ),
    log:
        R("logs/plot_embedding_map.log"),
    benchmark:
        R("benchmarks/plot_embedding_map.tsv")
    params:
        models=report_models(),
        settings=config["report"]["embedding_map"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/evaluate.yaml"
    script:
        "../scripts/plot_embedding_map.py"
