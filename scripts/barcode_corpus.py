"""Rule barcode_corpus: barcodes of the pretraining split(s), trimmed to a fixed length."""

import pandas as pd

from dnalm import corpus, logs

log = logs.to_file(snakemake.log[0])
table = pd.read_csv(snakemake.input[0], sep="\t")
splits = snakemake.params.splits
windows, chosen, why = corpus.barcode_corpus(table, splits, snakemake.params.length, source=snakemake.input[0])
corpus.save_corpus(snakemake.output[0], windows)
log.info("splits %s (%s): %d barcodes, %d bp", list(chosen), why, len(windows), len(windows.bases))
