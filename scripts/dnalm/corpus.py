"""Pretraining corpora: DNA windows stored compactly as 2-bit-style codes, not text.

A :class:`Corpus` is one ``uint8`` array of base codes (``dnalm.seq.encode``: A0 C1 G2 T3,
other 4) holding every window back to back, and an ``int64`` offsets array (n + 1 entries):
window i is ``bases[offsets[i]:offsets[i + 1]]``. It is saved as an uncompressed ``.npz``
with exactly two members, ``bases`` and ``offsets``; :func:`load_corpus` memory-maps both,
so a multi-gigabyte corpus costs no RAM until windows are read.

Two builders:

* :func:`genome_windows` (GeneMask/DNABERT style): random-length chunks of a genome.
* :func:`barcode_windows` (BarcodeBERT/MAE style): one window per DNA barcode;
  :func:`barcode_corpus` first chooses the splits (``corpus.barcodes.splits``, by default
  ``auto``: :func:`pretraining_splits`) and refuses an empty corpus.

:func:`validation_split` holds a few windows of a corpus out of pretraining (the
validation slice of :mod:`dnalm.validation`).
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .fasta import read_fasta
from .io import InputError, atomic_open
from .seq import encode

log = logging.getLogger("dnalm.corpus")

#: Splits that evaluation scores or holds out: an ``auto`` barcode corpus never uses them.
EVALUATION_SPLITS = ("val", "test", "key_unseen", "val_unseen", "test_unseen", "other_heldout")


@dataclass
class Corpus:
    """Windows of base codes, concatenated: ``bases`` uint8, ``offsets`` int64 (n + 1)."""

    bases: np.ndarray
    offsets: np.ndarray

    def __post_init__(self):
        if self.offsets.ndim != 1 or self.offsets.shape[0] < 1:
            raise ValueError("offsets must be a 1-D array with at least one entry")
        if int(self.offsets[0]) != 0 or int(self.offsets[-1]) != self.bases.shape[0]:
            raise ValueError("offsets must start at 0 and end at len(bases)")

    def __len__(self) -> int:
        return self.offsets.shape[0] - 1

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for a corpus of {len(self)}")
        i = i % len(self)
        return self.bases[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_arrays(cls, windows: list[np.ndarray]) -> "Corpus":
        lengths = np.array([len(w) for w in windows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        bases = np.concatenate(windows).astype(np.uint8) if windows else np.zeros(0, np.uint8)
        return cls(bases, offsets)


#: seeds the validation split apart from every other generator of a run
VALIDATION_STREAM = 0x76616C  # "val"


def validation_split(n_windows: int, fraction: float, max_windows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(validation, training)``: sorted window indices of a corpus of ``n_windows``.

    The validation slice is ``min(max_windows, ceil(fraction * n_windows))`` windows (none
    when ``fraction`` is 0; always at least one training window), the first ones of
    ``np.random.default_rng([seed, VALIDATION_STREAM, 0]).permutation(n_windows)``: a
    generator of its own, so the split depends on nothing but these four numbers. The two
    index arrays are disjoint and together cover every window.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    n_val = min(int(max_windows), math.ceil(fraction * n_windows), max(0, n_windows - 1)) if fraction > 0 else 0
    if n_val == 0:
        return np.zeros(0, dtype=np.int64), np.arange(n_windows, dtype=np.int64)
    order = np.random.default_rng([seed, VALIDATION_STREAM, 0]).permutation(n_windows)
    held = np.zeros(n_windows, dtype=bool)
    held[order[:n_val]] = True
    return np.flatnonzero(held).astype(np.int64), np.flatnonzero(~held).astype(np.int64)


def _acgt_runs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the maximal runs of ACGT (code < 4) in ``codes``."""
    good = np.concatenate([[False], codes < 4, [False]])
    edges = np.flatnonzero(np.diff(good.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    return starts.astype(np.int64), (ends - starts).astype(np.int64)


def genome_windows(fasta_path, n_windows: int, min_len: int, max_len: int, seed: int) -> Corpus:
    """Random genome chunks of ``min_len`` .. ``max_len`` bp, never containing N.

    Any non-ACGT letter (N gaps, IUPAC codes) splits a contig into maximal ACGT-only runs;
    runs shorter than ``min_len`` are never sampled. Soft-masked (lowercase) bases are used
    as upper case. For each window, in this order of draws from
    ``np.random.default_rng(seed)``:

    1. a run, with probability proportional to its length (so, as in GeneMask, contigs
       contribute in proportion to their length): a uniform base position over all
       eligible runs, and the run that holds it;
    2. a length L uniform in ``[min_len, min(max_len, run length)]`` (a run shorter than
       ``max_len`` caps the length of its windows);
    3. a start uniform over the run's ``run length - L + 1`` possible starts.

    The FASTA is read twice (runs first, then the windows contig by contig), so memory
    holds one contig plus the windows. Windows are returned in the order they were drawn.
    """
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    if n_windows < 0:
        raise ValueError(f"n_windows must be >= 0, got {n_windows}")

    # pass 1: eligible ACGT runs of every contig
    run_contig, run_start, run_len = [], [], []
    contigs: list[str] = []
    for name, sequence in read_fasta(fasta_path):
        starts, lengths = _acgt_runs(encode(sequence))
        keep = lengths >= min_len
        run_contig.append(np.full(int(keep.sum()), len(contigs), dtype=np.int64))
        run_start.append(starts[keep])
        run_len.append(lengths[keep])
        contigs.append(name)
    run_contig = np.concatenate(run_contig)
    run_start = np.concatenate(run_start)
    run_len = np.concatenate(run_len)
    if run_len.size == 0:
        raise InputError(
            fasta_path, f"no run of at least min_len={min_len} ACGT bases (without N) to sample windows from"
        )

    # draws: run (proportional to length), length, start
    rng = np.random.default_rng(seed)
    cum = np.cumsum(run_len)
    run = np.searchsorted(cum, rng.integers(0, cum[-1], size=n_windows), side="right")
    length = rng.integers(min_len, np.minimum(max_len, run_len[run]) + 1)
    start = run_start[run] + rng.integers(0, run_len[run] - length + 1)
    contig = run_contig[run]

    # pass 2: cut the windows, contig by contig, into their places in draw order
    offsets = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
    bases = np.empty(int(offsets[-1]), dtype=np.uint8)
    by_contig = np.argsort(contig, kind="stable")
    bounds = np.searchsorted(contig[by_contig], np.arange(len(contigs) + 1))
    for ci, (_, sequence) in enumerate(read_fasta(fasta_path)):
        todo = by_contig[bounds[ci] : bounds[ci + 1]]
        if todo.size == 0:
            continue
        codes = encode(sequence)
        for w in todo.tolist():
            bases[offsets[w] : offsets[w + 1]] = codes[start[w] : start[w] + length[w]]
    return Corpus(bases, offsets)


def barcode_windows(barcodes, splits=("pretrain",), length: int = 660) -> Corpus:
    """One window per DNA barcode of the chosen splits (BIOSCAN-5M style table).

    ``barcodes`` is a DataFrame with a ``dna_barcode`` column and, unless ``splits`` is
    None (= all rows), a ``split`` column. Gaps ('-') and whitespace are removed, letters
    upper-cased, and each barcode trimmed to its first ``length`` nt (shorter ones are not
    padded: the batcher pads with [PAD]). Ambiguous letters (N, R, Y, ...) are kept as code 4
    and tokenize to [UNK]. Rows whose barcode is missing or empty after cleaning are
    dropped. Windows keep the table's row order.
    """
    if "dna_barcode" not in barcodes.columns:
        raise ValueError("barcode table has no 'dna_barcode' column")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    table = barcodes
    if splits is not None:
        if "split" not in barcodes.columns:
            raise ValueError("barcode table has no 'split' column (pass splits=None to use every row)")
        if isinstance(splits, str):
            splits = (splits,)
        table = barcodes[barcodes["split"].isin(list(splits))]
    text = table["dna_barcode"].dropna().astype(str)
    text = text.str.replace(r"[\s\-]", "", regex=True).str.upper().str.slice(0, length)
    text = text[text.str.len() > 0]
    lengths = text.str.len().to_numpy(dtype=np.int64)
    bases = encode("".join(text.tolist()))
    if bases.shape[0] != lengths.sum():  # non-ASCII letters are one code each, so never
        raise ValueError("internal error: encoded barcode lengths disagree")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Corpus(bases, offsets)


def pretraining_splits(table, splits="auto") -> tuple[tuple[str, ...], str]:
    """The splits of a barcode table to pretrain on, and the reason (for the log).

    ``"auto"``: the ``pretrain`` split (BIOSCAN-5M's specimens without a species label), plus
    ``train`` (the seen species' training specimens, whose labels only the probes use) when
    ``pretrain`` holds fewer barcodes than ``train``, as in a fully labelled table, whose
    ``pretrain`` split is empty. Never ``val``, ``test``, the unseen-species splits or
    ``other_heldout`` (:data:`EVALUATION_SPLITS`). A list is used as given.
    """
    counts = table["split"].value_counts() if "split" in table.columns else None
    if isinstance(splits, str) and splits != "auto":
        splits = (splits,)
    if splits != "auto":
        chosen = tuple(splits)
        scored = [s for s in chosen if s in EVALUATION_SPLITS]
        if scored:
            log.warning(
                "corpus.barcodes.splits includes %s: the models are pretrained on barcodes they are evaluated on",
                scored,
            )
        return chosen, "corpus.barcodes.splits as configured"
    if counts is None:
        raise ValueError("barcode table has no 'split' column; corpus.barcodes.splits: auto needs one")
    n_pretrain, n_train = int(counts.get("pretrain", 0)), int(counts.get("train", 0))
    if n_pretrain >= n_train:
        return ("pretrain",), f"auto: the pretrain split ({n_pretrain} barcodes, train has {n_train})"
    return ("pretrain", "train"), (
        f"auto: the pretrain split holds {n_pretrain} barcodes, fewer than train ({n_train}), so the seen "
        "species' train split is added (never val, test or the unseen-species splits)"
    )


def barcode_corpus(table, splits="auto", length: int = 660, source="the barcode table") -> tuple[Corpus, tuple[str, ...], str]:
    """``(corpus, splits used, reason)``: :func:`barcode_windows` of the
    :func:`pretraining_splits`. An empty corpus raises :class:`InputError` naming ``source``,
    the config key ``corpus.barcodes.splits`` and the splits the table has."""
    chosen, why = pretraining_splits(table, splits)
    windows = barcode_windows(table, chosen, length)
    if len(windows) == 0:
        have = table["split"].value_counts().to_dict() if "split" in table.columns else {}
        raise InputError(
            source,
            f"no barcodes to pretrain on: config key 'corpus.barcodes.splits' ({splits!r}) selects {list(chosen)}, "
            f"which hold no barcode; the table's splits: {have}. Name splits that hold barcodes "
            "(e.g. [pretrain, train]), or use auto",
        )
    return windows, chosen, why


def save_corpus(path: str | os.PathLike, corpus: Corpus) -> None:
    """Write ``corpus`` as an uncompressed ``.npz`` (members ``bases``, ``offsets``), atomically."""
    with atomic_open(path, "wb") as handle:
        np.savez(
            handle, bases=np.asarray(corpus.bases, dtype=np.uint8), offsets=np.asarray(corpus.offsets, dtype=np.int64)
        )


def _mmap_member(path: Path, zf: zipfile.ZipFile, name: str) -> np.ndarray | None:
    """Memory-map one stored (uncompressed) ``.npy`` member of an ``.npz``; None if impossible."""
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        member_start = info.header_offset + 30 + name_len + extra_len
        fh.seek(member_start)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            return None
        data_start = fh.tell()
    if fortran or dtype.hasobject:
        return None
    if int(np.prod(shape)) == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=data_start, shape=shape)


def load_corpus(path: str | os.PathLike) -> Corpus:
    """Read a corpus written by :func:`save_corpus`, memory-mapping its arrays (read-only).

    Falls back to reading into memory for a compressed ``.npz``. A file that is not a
    corpus raises :class:`dnalm.io.InputError` naming it.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if not {"bases.npy", "offsets.npy"} <= names:
                raise InputError(path, f"not a dnalm corpus (members {sorted(names)}, expected bases.npy, offsets.npy)")
            arrays = {}
            for key in ("bases", "offsets"):
                arr = _mmap_member(path, zf, f"{key}.npy")
                if arr is None:
                    with zf.open(f"{key}.npy") as member:
                        arr = np.lib.format.read_array(member, allow_pickle=False)
                arrays[key] = arr
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(path, f"cannot read corpus: {exc}") from exc
    bases, offsets = arrays["bases"], arrays["offsets"]
    if bases.dtype != np.uint8 or offsets.dtype != np.int64 or bases.ndim != 1 or offsets.ndim != 1:
        raise InputError(path, f"corpus arrays have the wrong type ({bases.dtype}, {offsets.dtype})")
    if offsets.shape[0] < 1 or offsets[0] != 0 or offsets[-1] != bases.shape[0] or np.any(np.diff(offsets) < 0):
        raise InputError(path, "corpus offsets are inconsistent (not 0 .. len(bases), non-decreasing)")
    return Corpus(bases, offsets)
