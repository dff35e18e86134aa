# k-mer counting of the two corpora NPMI is computed on (kmers/{corpus}/counts.npz).
# The genome: its records are grouped into kmers.n_shards contig groups (one streaming pass
# that also checks the FASTA), each group is counted by its own job, which reads only its
# records' bytes at their offsets in the .fai index (rule index_genome), and the counts are
# summed. The barcode corpus (what a barcode model trains on) is counted in one job.

from dnalm.kmers import memory_mb as kmer_count_mem_mb


rule plan_kmer_shards:
    input:
        fasta=genome_fasta(),
    output:
        R("kmers/genome/shards.tsv"),
    log:
        R("logs/plan_kmer_shards.log"),
    benchmark:
        R("benchmarks/plan_kmer_shards.tsv")
    conda:
        "../envs/kmers.yaml"
    threads: 2
    resources:
        mem_mb=1000,
    params:
        n_shards=config["kmers"]["n_shards"],
    script:
        "../scripts/plan_kmer_shards.py"


rule count_kmers:
    input:
        fasta=genome_fasta(),
        fai=genome_index(),
        plan=R("kmers/genome/shards.tsv"),
    output:
        R("kmers/genome/shards/{shard}.npz"),
    log:
        R("logs/count_kmers/{shard}.log"),
    benchmark:
        R("benchmarks/count_kmers/{shard}.tsv")
    conda:
        "../envs/kmers.yaml"
    threads: config["kmers"]["threads"]
    resources:
        mem_mb=lambda wildcards, threads: kmer_count_mem_mb(config["kmers"]["k_max"], threads),
    params:
        k_max=config["kmers"]["k_max"],
        both_strands=config["kmers"]["both_strands"],
    script:
        "../scripts/count_kmers.py"


rule merge_kmers:
    input:
        expand(R("kmers/genome/shards/{shard}.npz"), shard=SHARDS),
    output:
        kmer_counts("genome"),
    log:
        R("logs/merge_kmers.log"),
    benchmark:
        R("benchmarks/merge_kmers.tsv")
    conda:
        "../envs/kmers.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards: kmer_count_mem_mb(config["kmers"]["k_max"], 1),
    script:
        "../scripts/merge_kmers.py"


rule count_barcode_kmers:
    input:
        corpus_file("barcodes"),
    output:
        kmer_counts("barcodes"),
    log:
        R("logs/count_barcode_kmers.log"),
    benchmark:
        R("benchmarks/count_barcode_kmers.tsv")
    conda:
        "../envs/kmers.yaml"
    threads: config["kmers"]["threads"]
    resources:
        mem_mb=lambda wildcards, threads: kmer_count_mem_mb(config["kmers"]["k_max"], threads),
    params:
        k_max=config["kmers"]["k_max"],
        both_strands=config["kmers"]["both_strands"],
    script:
        "../scripts/count_corpus_kmers.py"
