"""Rule align_chunk: best reference hit of one chunk of the queries (alignment baseline)."""

import time

from dnalm import align, io, logs

log = logs.to_file(snakemake.log[0])
settings = align.Settings(**snakemake.params.settings, threads=snakemake.threads)
started = time.perf_counter()
hits = align.search_chunk(
    snakemake.input.queries, snakemake.input.references, int(snakemake.wildcards.chunk), snakemake.params.chunks, settings
)
io.write_tsv(hits, snakemake.output[0])
log.info("%d queries, %d without a hit, %.1f s", len(hits), int((hits["reference"] < 0).sum()), time.perf_counter() - started)
