# The demo genome (included by rules/data.smk when data.genome names no url or path).


rule simulate_genome:
    output:
        genome=genome_fasta(),
        motifs=planted_motifs(),
        instances=R("data/motif_instances.tsv"),
        tasks=[task_file(split, task) for task in SIM_TASKS for split in ("train", "test")],
    log:
        R("logs/simulate_genome.log"),
    benchmark:
        R("benchmarks/simulate_genome.tsv")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        genome=config["data"]["genome"]["simulate"],
        seed=config["seed"],
        outdir=lambda wildcards, output: str(Path(output.genome).parent),
    script:
        "../scripts/simulate_genome.py"
