"""Rule genome_corpus: GeneMask-style training windows sampled from the genome."""

from dnalm import corpus, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
windows = corpus.genome_windows(snakemake.input[0], p.n_windows, p.min_len, p.max_len, p.seed)
corpus.save_corpus(snakemake.output[0], windows)
log.info("%d windows, %d bp", len(windows), len(windows.bases))
