# A real genome (included by rules/data.smk when data.genome names a url or path): the
# downloaded or local FASTA (plain or gzip), restricted to data.genome.contigs, as genome.fa.


rule prepare_genome:
    input:
        source_file(DATA.genome),
    output:
        genome_fasta(),
    log:
        R("logs/prepare_genome.log"),
    benchmark:
        R("benchmarks/prepare_genome.tsv")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        contigs=config["data"]["genome"]["contigs"],
        checksums=local_checksums(DATA.genome),
    script:
        "../scripts/prepare_genome.py"
