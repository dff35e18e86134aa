# k-mer counting: the records are grouped into kmers.n_shards contig groups (one streaming
# pass that also checks the FASTA), each group is counted by its own job, which reads only
# its records' bytes at their offsets in the .fai index (rule index_genome), and the counts
# are summed. The barcode corpus gets its own counts (NPMI of the corpus a model trains on).

from dnalm.kmers import memory_mb as kmer_count_mem_mb


rule plan_kmer_shards:
    input:
        fasta=genome_fasta(),
    output:
        R("kmers/shards.tsv"),
    log:
        R("logs/plan_kmer_shards.log"),
    benchmark:
        R("benchmarks/plan_kmer_shards.tsv")
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
        fai=R("data/genome.fa.fai"),
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
    benchmark:
        R("benchmarks/merge_kmers.tsv")
    threads: 1
    resources:
        mem_mb=lambda wildcards: kmer_count_mem_mb(config["kmers"]["k_max"], 1),
    conda:
        "../envs/kmers.yaml"
    script:
        "../scripts/merge_kmers.py"


rule count_barcode_kmers:
    input:
        R("corpus/barcodes.npz"),
    output:
        R("kmers/barcodes/counts.npz"),
    log:
        R("logs/count_barcode_kmers.log"),
    benchmark:
        R("benchmarks/count_barcode_kmers.tsv")
    params:
        k_max=config["kmers"]["k_max"],
        both_strands=config["kmers"]["both_strands"],
    threads: config["kmers"]["threads"]
    resources:
        mem_mb=lambda wildcards, threads: kmer_count_mem_mb(config["kmers"]["k_max"], threads),
    conda:
        "../envs/kmers.yaml"
    script:
        "../scripts/count_corpus_kmers.py"
