# k-mer counting: scattered over contig groups (one job per shard), then merged.


rule count_kmers:
    input:
        fasta=genome_fasta(),
        fai=R("data/genome.fa.fai"),
    output:
        R("kmers/shards/{shard}.npz"),
    log:
        R("logs/count_kmers/{shard}.log"),
    benchmark:
        R("benchmarks/count_kmers/{shard}.tsv")
    params:
        k_max=config["kmers"]["k_max"],
        both_strands=config["kmers"]["both_strands"],
        n_shards=config["kmers"]["n_shards"],
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/kmers.yaml"
    script:
        "../scripts/count_kmers.py"


rule merge_kmers:
    input:
        expand(R("kmers/shards/{shard}.npz"), shard=SHARDS),
    output:
        R("kmers/counts.npz"),
    log:
        R("logs/merge_kmers.log"),
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/kmers.yaml"
    script:
        "../scripts/merge_kmers.py"
