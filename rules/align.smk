# Alignment baseline (model `align`): each barcode query takes the label of its nearest
# reference by pairwise identity (vsearch --usearch_global, exhaustive), for closed-world
# species (closed_train -> closed_test) and open-world genus (open_reference -> open_query).
# Scattered over query chunks (evaluation.align.chunks), gathered into the same taxonomy and
# bias tables as every other model (eval/taxonomy/align.tsv, eval/bias/align.tsv).

ALIGN = config["evaluation"]["align"]
ALIGN_PROTOCOLS = ["closed_world", "open_world"]
ALIGN_CHUNKS = [str(i) for i in range(ALIGN["chunks"])]


def align_splits():
    """Query and reference split of each protocol (evaluation.taxonomy)."""
    tax = config["evaluation"]["taxonomy"]
    return {
        "closed_world": {"query": tax["closed_test"], "reference": tax["closed_train"]},
        "open_world": {"query": tax["open_query"], "reference": tax["open_reference"]},
    }


def align_settings():
    """Search settings the align_chunk results depend on (dnalm.align.Settings; the thread
    count does not change them and comes from the job)."""
    return {key: ALIGN[key] for key in ("tool", "maxaccepts", "maxrejects", "min_identity")}


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
    params:
        protocols=ALIGN_PROTOCOLS,
        splits=align_splits(),
        max_n_fraction=ALIGN["max_n_fraction"],
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/align.yaml"
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
    params:
        chunks=ALIGN["chunks"],
        settings=align_settings(),
    wildcard_constraints:
        protocol="closed_world|open_world",
        chunk=r"\d+",
    threads: ALIGN["threads"]
    resources:
        mem_mb=ALIGN["mem_mb"],
        runtime=ALIGN["runtime"],
    conda:
        "../envs/align.yaml"
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
    params:
        protocols=ALIGN_PROTOCOLS,
        chunks=ALIGN["chunks"],
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/align.yaml"
    script:
        "../scripts/align_taxonomy.py"
