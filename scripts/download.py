"""Rule download: fetch one input file, resuming and retrying, and verify its checksum
(or, with none pinned, its completeness as far as its format shows)."""

from dnalm import download, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
download.download(
    p.url,
    snakemake.output[0],
    checksums=p.checksums,
    retries=p.retries,
    backoff=p.backoff,
    timeout=p.timeout,
    allow_unverified=p.allow_unverified,
    config_key=p.config_key,
)
log.info("wrote %s", snakemake.output[0])
