"""A real genome (any FASTA, plain or gzip) converted into the pipeline's ``genome.fa``.

The output is plain FASTA (so that pyfaidx indexes it and every later stage reads it as it
reads the simulated genome), soft-masking (lowercase) kept, restricted to the records whose
name fully matches one of ``contigs`` (e.g. ``chr([0-9]+|X|Y)`` keeps hg38's primary
chromosomes and drops alternate haplotypes, unplaced contigs and chrM).
"""

from __future__ import annotations

import logging
import re

from .download import verify_checksums
from .io import InputError, read_fasta, write_fasta

log = logging.getLogger("dnalm.genome")
_NOT_IUPAC = re.compile(r"[^ACGTRYSWKMBDHVNacgtryswkmbdhvn]")


def prepare_genome(src, dst, contigs=None, checksums=None) -> dict:
    """Write the records of ``src`` kept by ``contigs`` (regexes) to ``dst``, atomically.

    ``checksums`` (``{"md5": ...}``) are verified first when given. Raises
    :class:`InputError` naming the file and record for a malformed FASTA, a letter that is
    not an IUPAC nucleotide code, or when no record is kept. Returns
    ``{"kept": [...], "dropped": n, "bases": n}``.
    """
    if checksums:
        verify_checksums(src, checksums)
    patterns = [re.compile(p) for p in (contigs or [])]
    kept: list[str] = []
    seen: list[str] = []
    stats = {"dropped": 0, "bases": 0}

    def records():
        for name, seq in read_fasta(src):
            seen.append(name)
            if patterns and not any(p.fullmatch(name) for p in patterns):
                stats["dropped"] += 1
                continue
            bad = _NOT_IUPAC.search(seq)
            if bad:
                raise InputError(
                    src, f"letter {bad.group()!r} at position {bad.start() + 1} is not a nucleotide (IUPAC) code", record=name
                )
            kept.append(name)
            stats["bases"] += len(seq)
            log.info("%s: %d bp", name, len(seq))
            yield name, seq
        if not kept:
            shown = ", ".join(seen[:10]) + (" ..." if len(seen) > 10 else "")
            raise InputError(src, f"no record name matches data.genome.contigs {contigs}; records: {shown}")

    write_fasta(dst, records())
    log.info("%s: kept %d record(s), %d bp; dropped %d", src, len(kept), stats["bases"], stats["dropped"])
    return {"kept": kept, **stats}
