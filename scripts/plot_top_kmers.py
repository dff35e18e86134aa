"""Rule plot_top_kmers: the top-NPMI k-mers, highlighting those that match known motifs."""

import pandas as pd

from dnalm import logs, plots

log = logs.to_file(snakemake.log[0])
top = pd.read_csv(snakemake.input[0], sep="\t", keep_default_na=False)
plots.plot_top_kmers(top, snakemake.output[0], top_n=snakemake.params.top)
