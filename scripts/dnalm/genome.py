"""A real genome (any FASTA, plain or gzip) converted into the pipeline's ``genome.fa``.

The output is plain FASTA (so that pyfaidx indexes it and every later stage reads it as it
reads the simulated genome), soft-masking (lowercase) kept, restricted to the records whose
name fully matches one of ``contigs`` (e.g. ``chr([0-9]+|X|Y)`` keeps hg38's primary
chromosomes and drops alternate haplotypes, unplaced contigs and chrM).

Letters are checked with the k-mer counter's rules (:func:`dnalm.fasta.sequence_problem`),
so a genome that passes here also passes ``plan_kmer_shards``: ACGT are kept; U (RNA) is
written as T (u as t), as the counter reads it; the other IUPAC codes, X and '.' are kept
(they break k-mers and tokenize to [UNK], docs/design.md#sequences); alignment gaps ('-') are
removed, as everywhere in the pipeline; anything else (a protein letter, a digit, binary
data) or a record that is more than 10 % ambiguity codes (a protein spelled in letters that
double as nucleotide codes) is an error naming the file and the record.
"""

from __future__ import annotations

import logging
import re

from .download import verify_checksums
from .fasta import read_fasta, sequence_problem, write_fasta
from .io import InputError

log = logging.getLogger("dnalm.genome")
_CHANGED = "-Uu"  # read_fasta has removed whitespace already
_TO_DNA = str.maketrans({"-": None, "U": "T", "u": "t"})


def prepare_genome(src, dst, contigs=None, checksums=None) -> dict:
    """Write the records of ``src`` kept by ``contigs`` (regexes) to ``dst``, atomically.

    ``checksums`` (``{"md5": ...}``) are verified first when given. Raises
    :class:`InputError` naming the file and record for a malformed FASTA, a letter that is
    not a nucleotide code, a probable protein, or when no record is kept. Gaps ('-') are
    removed, U becomes T. Returns ``{"kept": [...], "dropped": n, "bases": n}`` (bases:
    after removing gaps).
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
            problem = sequence_problem(seq)
            if problem:
                raise InputError(src, problem, record=name)
            if any(c in seq for c in _CHANGED):
                seq = seq.translate(_TO_DNA)
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
