# Report: one tidy table of every metric, a markdown summary, and the figures (declared
# with report() so that `snakemake --report results/report.html` shows them).


rule collect_metrics:
    input:
        tables=eval_outputs() + validation_tables(),
        models=list(provenance_inputs().values()),
    output:
        metrics=report(
            R("report/metrics.tsv"),
            caption="report/metrics.rst",
            category="Tables",
            labels={"table": "every metric (tidy)"},
        ),
        leaderboard=report(
            R("report/leaderboard.tsv"),
            caption="report/leaderboard.rst",
            category="Tables",
            labels={"table": "leaderboard"},
        ),
        gains=R("report/gains.tsv"),
        summary=R("report/summary.md"),
        summary_html=report(
            R("report/summary.html"),
            caption="report/summary.rst",
            category="Tables",
            labels={"table": "summary"},
        ),
    log:
        R("logs/collect_metrics.log"),
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        models=report_models(embedded=False),
        shots_scale=config["evaluation"]["fewshot"]["shots_scale"],
        kinds={m: model_kind(m) for m in leaderboard_models()},
        model_dirs=provenance_inputs(),
        baselines=baseline_provenance(),
    script:
        "../scripts/collect_metrics.py"


rule plot_leaderboard:
    input:
        leaderboard=R("report/leaderboard.tsv"),
        metrics=R("report/metrics.tsv"),
    output:
        report(
            R("report/figures/leaderboard.png"),
            caption="report/leaderboard_figure.rst",
            category="Leaderboard",
            labels={"figure": "leaderboard heat map"},
        ),
    log:
        R("logs/plot_leaderboard.log"),
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../scripts/plot_leaderboard.py"


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
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        metric=config["report"]["fewshot_metric"],
        models=report_models(),
        shots_scale=config["evaluation"]["fewshot"]["shots_scale"],
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
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        models=report_models(embedded=False),
    script:
        "../scripts/plot_taxonomy.py"


rule plot_training:
    input:
        curves=training_metrics(),
        initial=[R(f"pretrain/{c}/validation.tsv") for c in CONTROLS],
    output:
        report(
            R("report/figures/training.png"),
            caption="report/training.rst",
            category="Pretraining",
            labels={"figure": "training and validation curves"},
        ),
    log:
        R("logs/plot_training.log"),
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        models=TRAINED_MODELS,
        controlled=[control_of(c) for c in CONTROLS],
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
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        top=config["npmi"]["plot_top"],
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
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
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
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        models=report_models(),
        settings=config["report"]["embedding_map"],
        seed=config["seed"],
    script:
        "../scripts/plot_embedding_map.py"
