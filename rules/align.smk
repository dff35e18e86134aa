# Alignment baseline (model `align`): each barcode query takes the label of its nearest
# reference by pairwise identity (vsearch --usearch_global, exhaustive), for closed-world
# species (closed_train -> closed_test) and open-world genus (open_reference -> open_query).
# Scattered over query chunks (evaluation.align.chunks), gathered into the same taxonomy and
# bias tables as every other model (eval/taxonomy/align.tsv, eval/bias/align.tsv).


rule align_inputs:
    input:
        barcodes=barcode_table(),
    output:
        queries=expand(R("align/{protocol}/queries.fa"), protocol=ALIGN_PROTOCOLS),
        references=expand(R("align/{protocol}/references.fa"), protocol=ALIGN_PROTOCOLS),
        members=expand(R("align/{protocol}/members.tsv"), protocol=ALIGN_PROTOCOLS),
    log:
        R("logs/align_inputs.log"),
    benchmark:
        R("benchmarks/align_inputs.tsv")
    conda:
        "../envs/align.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        protocols=ALIGN_PROTOCOLS,
        splits=align_splits(),
        max_n_fraction=ALIGN["max_n_fraction"],
    script:
        "../scripts/align_inputs.py"


rule align_chunk:
    input:
        queries=R("align/{protocol}/queries.fa"),
        references=R("align/{protocol}/references.fa"),
    output:
        R("align/{protocol}/hits/{chunk}.tsv"),
    log:
        R("logs/align_chunk/{protocol}/{chunk}.log"),
    benchmark:
        R("benchmarks/align_chunk/{protocol}/{chunk}.tsv")
    wildcard_constraints:
        protocol="closed_world|open_world",
        chunk=r"\d+",
    conda:
        "../envs/align.yaml"
    threads: ALIGN["threads"]
    resources:
        mem_mb=ALIGN["mem_mb"],
        runtime=ALIGN["runtime"],
    params:
        chunks=ALIGN["chunks"],
        settings=align_settings(),
    script:
        "../scripts/align_chunk.py"


rule align_taxonomy:
    input:
        members=expand(R("align/{protocol}/members.tsv"), protocol=ALIGN_PROTOCOLS),
        hits=expand(R("align/{protocol}/hits/{chunk}.tsv"), protocol=ALIGN_PROTOCOLS, chunk=ALIGN_CHUNKS),
    output:
        metrics=R("eval/taxonomy/align.tsv"),
        per_class=R("eval/bias/align.tsv"),
    log:
        R("logs/align_taxonomy.log"),
    benchmark:
        R("benchmarks/align_taxonomy.tsv")
    conda:
        "../envs/align.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        protocols=ALIGN_PROTOCOLS,
        chunks=ALIGN["chunks"],
    script:
        "../scripts/align_taxonomy.py"
