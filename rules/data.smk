# Input data. Each input is simulated (the embedded demo) or real: downloaded with checksums
# or read from a local path, then converted into the same files the simulator writes
# (results/data/genome.fa, barcodes.tsv, tasks/<task>/{train,test}.tsv), so everything
# downstream is independent of where the data came from. Which rules exist depends on the
# config (DATA, from dnalm.sources.plan in common.smk), so no two rules ever make one file.


if DATA.genome is None:

    include: "data_genome_simulated.smk"

else:

    include: "data_genome_real.smk"


if DATA.barcodes is None:

    include: "data_barcodes_simulated.smk"

else:

    include: "data_barcodes_real.smk"


rule download:
    output:
        DL("{download}"),
    log:
        R("logs/download/{download}.log"),
    benchmark:
        R("benchmarks/download/{download}.tsv")
    wildcard_constraints:
        download=_alternatives(DATA.downloads),
    localrule: True
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=500,
    params:
        url=lambda wildcards: DATA.downloads[wildcards.download].url,
        checksums=lambda wildcards: DATA.downloads[wildcards.download].checksums,
        retries=config["data"]["download"]["retries"],
        backoff=config["data"]["download"]["backoff"],
        timeout=config["data"]["download"]["timeout"],
        allow_unverified=config["data"]["download"]["allow_unverified"],
        config_key=lambda wildcards: DATA.downloads[wildcards.download].config_key,
    script:
        "../scripts/download.py"


rule extract_member:
    input:
        lambda wildcards: DATA.extracts[wildcards.extracted]["archive"],
    output:
        temp(DL("{extracted}")),
    log:
        R("logs/extract_member/{extracted}.log"),
    benchmark:
        R("benchmarks/extract_member/{extracted}.tsv")
    wildcard_constraints:
        extracted=_alternatives(DATA.extracts),
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        member=lambda wildcards: DATA.extracts[wildcards.extracted]["member"],
        md5=lambda wildcards: DATA.extracts[wildcards.extracted]["md5"],
        archive_checksums=lambda wildcards: local_checksums(DATA.barcodes),
    script:
        "../scripts/download_extract.py"


rule prepare_task:
    input:
        unpack(task_sources),
    output:
        train=task_file("train"),
        test=task_file("test"),
    log:
        R("logs/prepare_task/{task}.log"),
    benchmark:
        R("benchmarks/prepare_task/{task}.tsv")
    wildcard_constraints:
        task=_alternatives(REAL_TASKS),
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        format=lambda wildcards: config["data"]["tasks"][wildcards.task]["format"],
        checksums=lambda wildcards: {
            role: local_checksums(DATA.tasks[wildcards.task][role]) for role in ("train", "test")
        },
    script:
        "../scripts/prepare_task.py"


rule index_genome:
    input:
        genome_fasta(),
    output:
        genome_index(),
    log:
        R("logs/index_genome.log"),
    benchmark:
        R("benchmarks/index_genome.tsv")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../scripts/index_genome.py"
