# Input data. The demo simulates a genome (with planted motifs), few-shot tasks built from
# it, and COI-like barcodes on a taxonomy tree; later sources (downloads, user files) write
# the same files, so everything downstream is independent of where the data came from.


rule simulate_genome:
    output:
        genome=R("data/genome.fa"),
        motifs=R("data/motifs.tsv"),
        instances=R("data/motif_instances.tsv"),
        tasks=expand(R("data/tasks/{task}/{split}.tsv"), task=SIM_TASKS, split=["train", "test"]),
    log:
        R("logs/simulate_genome.log"),
    params:
        genome=config["data"]["genome"],
        seed=config["seed"],
        outdir=lambda wildcards, output: str(Path(output.genome).parent),
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/simulate_genome.py"


rule simulate_barcodes:
    output:
        barcodes=R("data/barcodes.tsv"),
        taxonomy=R("data/taxonomy.tsv"),
        tree=R("data/taxonomy.nwk"),
    log:
        R("logs/simulate_barcodes.log"),
    params:
        barcodes=config["data"]["barcodes"],
        seed=config["seed"],
        outdir=lambda wildcards, output: str(Path(output.barcodes).parent),
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/simulate_barcodes.py"


rule index_genome:
    input:
        genome_fasta(),
    output:
        R("data/genome.fa.fai"),
    log:
        R("logs/index_genome.log"),
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/index_genome.py"
