"""Rule barcode_corpus: barcodes of the pretraining split(s), trimmed to a fixed length."""

import pandas as pd

from dnalm import corpus, logs

log = logs.to_file(snakemake.log[0])
table = pd.read_csv(snakemake.input[0], sep="\t")
windows = corpus.barcode_windows(table, splits=tuple(snakemake.params.splits), length=snakemake.params.length)
corpus.save_corpus(snakemake.output[0], windows)
log.info("%d barcodes, %d bp", len(windows), len(windows.bases))
