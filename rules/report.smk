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
        ),
        summary=R("report/summary.md"),
    log:
        R("logs/collect_metrics.log"),
    params:
        models=REPORT_MODELS,
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
        ),
    log:
        R("logs/plot_fewshot.log"),
    params:
        metric=config["report"]["fewshot_metric"],
        models=REPORT_MODELS,
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
        ),
    log:
        R("logs/plot_taxonomy.log"),
    params:
        models=REPORT_MODELS,
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
