# NPMI table of all n-grams (generalised PMI over segmentations, normalised) of the genome
# and of the barcode corpus (for genemask models that train on barcodes), and the
# comparison of the genome's top-ranked k-mers with known motifs.


rule npmi_table:
    input:
        R("kmers/counts.npz"),
    output:
        R("npmi/npmi.tsv"),
    log:
        R("logs/npmi_table.log"),
    benchmark:
        R("benchmarks/npmi_table.tsv")
    params:
        min_count=config["npmi"]["min_count"],
    threads: 1
    resources:
        mem_mb=lambda wildcards: 1000 + 3 * kmer_count_mem_mb(config["kmers"]["k_max"], 1),
    conda:
        "../envs/kmers.yaml"
    script:
        "../scripts/npmi_table.py"


rule npmi_table_barcodes:
    input:
        R("kmers/barcodes/counts.npz"),
    output:
        R("npmi/barcodes/npmi.tsv"),
    log:
        R("logs/npmi_table_barcodes.log"),
    benchmark:
        R("benchmarks/npmi_table_barcodes.tsv")
    params:
        min_count=config["npmi"]["min_count"],
    threads: 1
    resources:
        mem_mb=lambda wildcards: 1000 + 3 * kmer_count_mem_mb(config["kmers"]["k_max"], 1),
    conda:
        "../envs/kmers.yaml"
    script:
        "../scripts/npmi_table.py"


rule motif_recovery:
    input:
        npmi=R("npmi/npmi.tsv"),
        motifs=known_motifs(),
    output:
        recovery=R("npmi/motif_recovery.tsv"),
        top=R("npmi/top_kmers.tsv"),
    log:
        R("logs/motif_recovery.log"),
    params:
        k=config["npmi"]["motif_k"],
        top=config["npmi"]["motif_top"],
        source=config["npmi"]["motifs"],
        min_score=config["npmi"]["motif_min_score"],
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/kmers.yaml"
    script:
        "../scripts/motif_recovery.py"
