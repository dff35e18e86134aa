# Training corpora, stored as base codes (uint8 + offsets, memory-mapped by the trainer):
# GeneMask-style windows sampled from the genome, and the barcodes of the pretraining splits.


rule genome_corpus:
    input:
        genome_fasta(),
    output:
        corpus_file("genome"),
    log:
        R("logs/genome_corpus.log"),
    benchmark:
        R("benchmarks/genome_corpus.tsv")
    conda:
        "../envs/pretrain.yaml"
    threads: 1
    resources:
        # one contig at a time (~7 bytes per bp as text + codes; the FASTA's size, capped at a
        # 400 Mbp chromosome) plus the windows (mean length + ~70 bytes of draws each);
        # measured: a 250 Mbp contig + 2.5 M windows (hg38 in full.yaml) peaks at 1.85 GB
        mem_mb=lambda wildcards, input: int(
            500
            + 7 * min(input.size_mb, 400)
            + config["corpus"]["genome"]["n_windows"]
            * ((config["corpus"]["genome"]["min_len"] + config["corpus"]["genome"]["max_len"]) / 2 + 70)
            / 1e6
        ),
    params:
        n_windows=config["corpus"]["genome"]["n_windows"],
        min_len=config["corpus"]["genome"]["min_len"],
        max_len=config["corpus"]["genome"]["max_len"],
        seed=config["seed"],
    script:
        "../scripts/genome_corpus.py"


rule barcode_corpus:
    input:
        barcode_table(),
    output:
        corpus_file("barcodes"),
    log:
        R("logs/barcode_corpus.log"),
    benchmark:
        R("benchmarks/barcode_corpus.tsv")
    conda:
        "../envs/pretrain.yaml"
    threads: 1
    resources:
        # the whole table in pandas plus cleaned copies: ~6x the TSV (measured, 210 MB table)
        mem_mb=lambda wildcards, input: max(2000, int(7 * input.size_mb)),
    params:
        splits=config["corpus"]["barcodes"]["splits"],
        length=config["corpus"]["barcodes"]["length"],
    script:
        "../scripts/barcode_corpus.py"
