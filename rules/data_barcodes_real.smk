# Real barcodes (included by rules/data.smk when data.barcodes names a url or path): a BOLD
# TSV or BIOSCAN-5M CSV (downloaded, local, or a member of an archive) as barcodes.tsv, with
# BIOSCAN-5M-style splits built when the table has none.

_split_seed = config["data"]["barcodes"]["splits"]["seed"]
BARCODE_SPLIT_SEED = config["seed"] if _split_seed is None else _split_seed


rule prepare_barcodes:
    input:
        DATA.barcodes_input(),
    output:
        barcode_table(),
    log:
        R("logs/prepare_barcodes.log"),
    benchmark:
        R("benchmarks/prepare_barcodes.tsv")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input: max(2000, int(8 * input.size_mb)),
    params:
        layout=config["data"]["barcodes"]["layout"],
        marker=config["data"]["barcodes"]["marker"],
        max_length=config["data"]["barcodes"]["max_length"],
        splits=config["data"]["barcodes"]["splits"],
        seed=BARCODE_SPLIT_SEED,
        checksums={} if DATA.barcodes_member else local_checksums(DATA.barcodes),
    script:
        "../scripts/prepare_barcodes.py"
