"""Rule extract_member: unpack one file of a zip/tar archive (paths checked) and verify it."""

import tempfile
from pathlib import Path

from dnalm import download, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
out = Path(snakemake.output[0])
out.parent.mkdir(parents=True, exist_ok=True)
download.verify_checksums(snakemake.input[0], p.archive_checksums)
with tempfile.TemporaryDirectory(dir=out.parent, prefix=".extract.") as tmp:
    (member,) = download.extract(snakemake.input[0], tmp, members=[p.member])
    download.verify_checksums(member, {"md5": p.md5} if p.md5 else None, name=f"{snakemake.input[0]}:{p.member}")
    member.replace(out)  # same file system: an atomic rename of the verified file
log.info("extracted %s from %s", p.member, snakemake.input[0])
