"""Rule motif_recovery: do the top-NPMI k-mers match the known motifs (planted, JASPAR or a TSV)?"""

from dnalm import io, logs, motifs, npmi

log = logs.to_file(snakemake.log[0])
p = snakemake.params
table = npmi.read_top_rows(snakemake.input.npmi, p.k, max(p.top))
known = motifs.load_motifs(p.source, snakemake.input.motifs[0] if snakemake.input.motifs else None)
log.info("%d known motifs (%s); top %d %d-mers", len(known), p.source, max(p.top), p.k)
recovery = motifs.motif_recovery(table, known, n=p.k, top=p.top, min_score=p.min_score)
top = motifs.annotate_top_kmers(table, known, n=p.k, top=max(p.top), min_score=p.min_score)
io.write_tsv(recovery, snakemake.output.recovery)
io.write_tsv(top, snakemake.output.top)
log.info("motif recovery:\n%s", recovery.to_string(index=False))
