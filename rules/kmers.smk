# k-mer counting: the records are grouped into kmers.n_shards contig groups (one streaming
# pass that also checks the FASTA), each group is counted by its own job, and the counts
# are summed. Plain gzip works: no job needs a .fai index.

from dnalm.kmers import memory_mb as kmer_count_mem_mb


rule plan_kmer_shards:
    input:
        fasta=genome_fasta(),
    output:
        R("kmers/shards.tsv"),
    log:
        R("logs/plan_kmer_shards.log"),
    params:
        n_shards=config["kmers"]["n_shards"],
    threads: 2
    resources:
        mem_mb=1000,
    conda:
        "../envs/kmers.yaml"
    script:
        "../scripts/plan_kmer_shards.py"


rule count_kmers:
    input:
        fasta=genome_fasta(),
        plan=R("kmers/shards.tsv"),
    output:
        R("kmers/shards/{shard}.npz"),
    log:
        R("logs/count_kmers/{shard}.log"),
    benchmark:
        R("benchmarks/count_kmers/{shard}.tsv")
    params:
        k_max=config["kmers"]["k_max"],
        both_strands=config["kmers"]["both_strands"],
    threads: config["kmers"]["threads"]
    resources:
        mem_mb=lambda wildcards, threads: kmer_count_mem_mb(config["kmers"]["k_max"], threads),
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
        mem_mb=lambda wildcards: kmer_count_mem_mb(config["kmers"]["k_max"], 1),
    conda:
        "../envs/kmers.yaml"
    script:
        "../scripts/merge_kmers.py"
