"""Rule motif_recovery: do the top-NPMI k-mers match the known (planted) motifs?"""

import pandas as pd

from dnalm import io, logs, motifs, npmi

log = logs.to_file(snakemake.log[0])
p = snakemake.params
table = npmi.read_npmi_table(snakemake.input.npmi)
known = pd.read_csv(snakemake.input.motifs, sep="\t")
recovery = motifs.motif_recovery(table, known, n=p.k, top=p.top)
io.write_tsv(recovery, snakemake.output.recovery)
io.write_tsv(motifs.annotate_top_kmers(table, known, n=p.k, top=max(p.top)), snakemake.output.top)
log.info("motif recovery:\n%s", recovery.to_string(index=False))
