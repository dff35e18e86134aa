# NPMI table of all n-grams (generalised PMI over segmentations, normalised) of a corpus:
# the genome, and the barcode corpus for genemask models that train on barcodes
# (npmi/{corpus}.tsv); and the comparison of the genome's top-ranked k-mers with known motifs.


rule npmi_table:
    input:
        kmer_counts(),
    output:
        npmi_file(),
    log:
        R("logs/npmi_table/{corpus}.log"),
    benchmark:
        R("benchmarks/npmi_table/{corpus}.tsv")
    conda:
        "../envs/kmers.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards: 1000 + 3 * kmer_count_mem_mb(config["kmers"]["k_max"], 1),
    params:
        min_count=config["npmi"]["min_count"],
    script:
        "../scripts/npmi_table.py"


rule motif_recovery:
    input:
        npmi=npmi_file("genome"),
        motifs=known_motifs(),
    output:
        recovery=R("npmi/motif_recovery.tsv"),
        top=R("npmi/top_kmers.tsv"),
    log:
        R("logs/motif_recovery.log"),
    conda:
        "../envs/kmers.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        k=config["npmi"]["motif_k"],
        top=config["npmi"]["motif_top"],
        source=config["npmi"]["motifs"],
        min_score=config["npmi"]["motif_min_score"],
    script:
        "../scripts/motif_recovery.py"
