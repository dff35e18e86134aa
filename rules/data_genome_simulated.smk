# The demo genome (included by rules/data.smk when data.genome names no url or path).


rule simulate_genome:
    output:
        genome=R("data/genome.fa"),
        motifs=R("data/motifs.tsv"),
        instances=R("data/motif_instances.tsv"),
        tasks=expand(R("data/tasks/{task}/{split}.tsv"), task=SIM_TASKS, split=["train", "test"]),
    log:
        R("logs/simulate_genome.log"),
    benchmark:
        R("benchmarks/simulate_genome.tsv")
    params:
        genome=config["data"]["genome"]["simulate"],
        seed=config["seed"],
        outdir=lambda wildcards, output: str(Path(output.genome).parent),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/simulate_genome.py"
