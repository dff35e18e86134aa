"""Rule index_genome: a samtools-compatible .fai index (pyfaidx); count_kmers reads each
shard's records through it. Written to a temporary name, then renamed (temporaries that a
killed run left are removed first)."""

import pyfaidx

from dnalm import io, logs

log = logs.to_file(snakemake.log[0])
io.remove_stale_temps(snakemake.output[0], suffix=".fai")
with io.atomic_path(snakemake.output[0], suffix=".fai") as tmp:
    tmp.unlink()  # pyfaidx writes the index itself
    index = pyfaidx.Faidx(snakemake.input[0], indexname=str(tmp), rebuild=True, build_index=True)
    n_records = len(index.index)
    index.close()
    if not tmp.exists():
        raise RuntimeError(f"{snakemake.input[0]}: pyfaidx wrote no index")
log.info("indexed %d records of %s", n_records, snakemake.input[0])
