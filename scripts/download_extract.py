"""Rule extract_member: unpack one file of a zip/tar archive (paths checked) and verify it."""

import shutil
from pathlib import Path

from dnalm import archives, download, logs

log = logs.to_file(snakemake.log[0])
p = snakemake.params
out = Path(snakemake.output[0])
# a folder of this output only (one job per output), so what a killed run left is removed here
tmp = out.parent / f".{out.name}.extract"
shutil.rmtree(tmp, ignore_errors=True)
tmp.mkdir(parents=True)
try:
    download.verify_checksums(snakemake.input[0], p.archive_checksums)
    (member,) = archives.extract(snakemake.input[0], tmp, members=[p.member])
    download.verify_checksums(member, {"md5": p.md5} if p.md5 else None, name=f"{snakemake.input[0]}:{p.member}")
    member.replace(out)  # same file system: an atomic rename of the verified file
finally:
    shutil.rmtree(tmp, ignore_errors=True)
log.info("extracted %s from %s", p.member, snakemake.input[0])
