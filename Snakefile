# dnalm-workflow: pretrain DNA language models with different masking strategies and
# measure what their embeddings know. See README.md; the science is in docs/design.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "rules/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/corpus.smk"
include: "rules/kmers.smk"
include: "rules/npmi.smk"
include: "rules/pretrain.smk"
include: "rules/external.smk"
include: "rules/embed.smk"
include: "rules/evaluate.smk"
include: "rules/align.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
