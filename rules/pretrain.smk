# Pretraining: training corpora stored as base codes (uint8 + offsets, memory-mapped), then
# one job per model (architecture x masking x tokenization, from the `models:` config).
# Checkpoints live outside the declared outputs, so a killed job resumes when the rule is
# rerun. A model's `gpus:` is the job's `gpu` resource; more than one GPU runs the job
# data-parallel (torchrun, one process per GPU).


rule genome_corpus:
    input:
        genome_fasta(),
    output:
        R("corpus/genome.npz"),
    log:
        R("logs/corpus_genome.log"),
    benchmark:
        R("benchmarks/genome_corpus.tsv")
    params:
        n_windows=config["corpus"]["genome"]["n_windows"],
        min_len=config["corpus"]["genome"]["min_len"],
        max_len=config["corpus"]["genome"]["max_len"],
        seed=config["seed"],
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
    conda:
        "../envs/pretrain.yaml"
    script:
        "../scripts/genome_corpus.py"


rule barcode_corpus:
    input:
        barcode_table(),
    output:
        R("corpus/barcodes.npz"),
    log:
        R("logs/corpus_barcodes.log"),
    benchmark:
        R("benchmarks/barcode_corpus.tsv")
    params:
        splits=config["corpus"]["barcodes"]["splits"],
        length=config["corpus"]["barcodes"]["length"],
    threads: 1
    resources:
        # the whole table in pandas plus cleaned copies: ~6x the TSV (measured, 210 MB table)
        mem_mb=lambda wildcards, input: max(2000, int(7 * input.size_mb)),
    conda:
        "../envs/pretrain.yaml"
    script:
        "../scripts/barcode_corpus.py"


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        model=directory(R("models/{model}")),
        metrics=R("pretrain/{model}/metrics.tsv"),
    log:
        R("logs/pretrain/{model}.log"),
    benchmark:
        R("benchmarks/pretrain/{model}.tsv")
    params:
        settings=model_settings,
        checkpoint_dir=lambda wildcards: R(f"pretrain/{wildcards.model}/checkpoints"),
    threads: pretrain_threads
    resources:
        mem_mb=8000,
        gpu=lambda wildcards: MODEL_SETTINGS[wildcards.model].get("gpus", 0),
    conda:
        "../envs/pretrain.yaml"
    script:
        "../scripts/pretrain.py"
