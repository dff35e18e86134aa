# The demo barcodes (included by rules/data.smk when data.barcodes names no url or path).


rule simulate_barcodes:
    output:
        barcodes=barcode_table(),
        taxonomy=R("data/taxonomy.tsv"),
        tree=R("data/taxonomy.nwk"),
    log:
        R("logs/simulate_barcodes.log"),
    benchmark:
        R("benchmarks/simulate_barcodes.tsv")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        barcodes=config["data"]["barcodes"]["simulate"],
        seed=config["seed"],
        outdir=lambda wildcards, output: str(Path(output.barcodes).parent),
    script:
        "../scripts/simulate_barcodes.py"
