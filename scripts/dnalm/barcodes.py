"""Real DNA-barcode tables converted into the pipeline's barcode table.

Input layouts (detected from the header, or forced with ``layout=``):

* ``bold``: BOLD's TSV export: ``processid, sampleid, bin_uri, phylum_name, class_name,
  order_name, family_name, genus_name, species_name, nucleotides`` (others ignored; where a
  ``markercode`` column exists, only rows of ``marker`` are kept).
* ``bioscan5m``: BIOSCAN-5M's metadata CSV (``processid, dna_barcode, order, family,
  genus, species, split`` among others). The pipeline's own ``barcodes.tsv`` has the same
  column names, tab-separated, and is read the same way.

The output has exactly the columns the simulator writes (:data:`BARCODE_COLUMNS`):
barcodes upper-cased with gaps and white space removed (optionally cut to
``max_length``), rows without a barcode dropped. A missing rank is an empty string, the
pipeline's one spelling of "missing" (never a class): empty or blank fields and the
placeholders of :data:`MISSING_LABELS` (``None``, ``NA``, ``not_classified``, ...) all
become ``""``, and :func:`convert` logs how many there are per rank.

Tables without a ``split`` column get BIOSCAN-5M-style splits (:func:`build_splits`); a
table's own split names must be BIOSCAN-5M's (:data:`KNOWN_SPLITS`).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .archives import archive_kind
from .io import InputError, open_text
from .simulate.defaults import BARCODE_COLUMNS, KNOWN_SPLITS, SEEN_SPLITS, UNSEEN_SPLITS

log = logging.getLogger("dnalm.barcodes")

RANKS = ("order", "family", "genus", "species")

#: input column -> output column, per layout (the first four of each are required)
LAYOUTS: dict[str, dict[str, str]] = {
    "bold": {
        "processid": "processid",
        "nucleotides": "dna_barcode",
        "order_name": "order",
        "family_name": "family",
        "genus_name": "genus",
        "species_name": "species",
    },
    "bioscan5m": {
        "processid": "processid",
        "dna_barcode": "dna_barcode",
        "order": "order",
        "family": "family",
        "genus": "genus",
        "species": "species",
    },
}
#: Default split fractions of labelled specimens, close to BIOSCAN-5M's split sizes
#: (train 289 k, val 14.8 k, test 39.4 k; key_unseen 36.5 k, val_unseen 8.8 k, test_unseen 7.9 k).
#: Spellings of "no label" in BOLD / BIOSCAN exports and spreadsheets (compared after
#: stripping, case-insensitively); such a rank becomes missing ("").
MISSING_LABELS = frozenset(
    {"", "none", "na", "n/a", "nan", "null", "not_classified", "not classified", "unclassified", "unknown", "-", "?"}
)
DEFAULT_SEEN = {"train": 0.8, "val": 0.05, "test": 0.15}
DEFAULT_UNSEEN = {"key_unseen": 0.7, "val_unseen": 0.15, "test_unseen": 0.15}
_NOT_IUPAC = r"[^ACGTRYSWKMBDHVN]"


# --------------------------------------------------------------------------- reading


def sniff(path) -> tuple[str, str, list[str]]:
    """``(layout, separator, columns)`` of a barcode table, from its header line."""
    kind = archive_kind(path)
    if kind is not None:
        raise InputError(path, f"is a {kind} archive, not a table; set data.barcodes.member to the table inside it")
    with open_text(path) as fh:
        try:
            header = fh.readline()
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise InputError(path, f"cannot read the header: {exc}") from exc
    header = header.lstrip("\ufeff").rstrip("\r\n")
    if not header:
        raise InputError(path, "file is empty")
    sep = "\t" if "\t" in header else ","
    columns = [c.strip() for c in next(csv.reader([header], delimiter=sep))]
    for layout, mapping in LAYOUTS.items():
        if all(c in columns for c in mapping):
            return layout, sep, columns
    raise InputError(
        path,
        f"not a barcode table I know: columns {columns[:12]}{' ...' if len(columns) > 12 else ''}; expected BOLD's "
        f"TSV ({', '.join(LAYOUTS['bold'])}) or BIOSCAN-5M's CSV ({', '.join(LAYOUTS['bioscan5m'])}, split)",
    )


def read_table(path, layout: str = "auto", marker: str | None = "COI-5P", max_length: int | None = None) -> pd.DataFrame:
    """The table at ``path`` in the pipeline's columns; ``split`` only if the file has one.

    Raises :class:`InputError` naming the file (and the record, by processid) for an
    unreadable or unknown layout, a missing column, a missing or repeated processid, or a
    barcode with a letter that is not an IUPAC nucleotide code.
    """
    found, sep, columns = sniff(path)
    if layout == "auto":
        layout = found
    if layout not in LAYOUTS:
        raise ValueError(f"unknown barcode layout {layout!r}; known: {sorted(LAYOUTS)} or 'auto'")
    mapping = dict(LAYOUTS[layout])
    missing = [c for c in mapping if c not in columns]
    if missing:
        raise InputError(path, f"missing column(s) {missing} of the {layout} layout; found {columns}")
    if "split" in columns:
        mapping["split"] = "split"
    use_marker = layout == "bold" and marker and "markercode" in columns
    wanted = set(mapping) | ({"markercode"} if use_marker else set())
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    try:
        df = pd.read_csv(
            path,
            sep=sep,
            usecols=lambda c: c.strip().lstrip("\ufeff") in wanted,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL,
            encoding="utf-8-sig",
            encoding_errors="replace",
            compression="gzip" if gz else None,
        )
    except (pd.errors.ParserError, ValueError, OSError, EOFError) as exc:
        raise InputError(path, f"cannot parse the {layout} table: {exc}") from exc
    df.columns = [c.strip().lstrip("\ufeff") for c in df.columns]
    n_read = len(df)
    if use_marker:
        df = df[df["markercode"].str.strip() == marker]
        log.info("%s: kept %d of %d rows with markercode %s", path, len(df), n_read, marker)
    df = df.rename(columns=mapping)[[mapping[c] for c in mapping]]
    for col in df.columns:
        df[col] = df[col].astype(str).str.strip()
    for rank in RANKS:  # placeholders of "no label" are missing, not a taxon called "None"
        df.loc[df[rank].str.lower().isin(MISSING_LABELS), rank] = ""

    seqs = df["dna_barcode"].str.replace(r"[\s\-]", "", regex=True).str.upper()
    bad = seqs.str.contains(_NOT_IUPAC, regex=True)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        letter = pd.Series([seqs.iloc[i]]).str.extract(f"({_NOT_IUPAC})")[0].iloc[0]
        raise InputError(
            path, f"barcode contains {letter!r}, which is not a nucleotide (IUPAC) letter", record=df["processid"].iloc[i]
        )
    if max_length is not None:
        seqs = seqs.str.slice(0, int(max_length))
    df["dna_barcode"] = seqs
    empty = df["dna_barcode"] == ""
    if empty.any():
        log.info("%s: dropped %d rows without a barcode", path, int(empty.sum()))
        df = df[~empty]
    if (df["processid"] == "").any():
        raise InputError(path, "row without a processid", record=f"barcode {df.loc[df['processid'] == '', 'dna_barcode'].iloc[0][:20]}...")
    dup = df["processid"].duplicated()
    if dup.any():
        raise InputError(path, f"processid repeated ({int(dup.sum())} repeats)", record=df.loc[dup, "processid"].iloc[0])
    if "split" in df.columns and (df["split"] == "").any():
        raise InputError(path, "empty split", record=df.loc[df["split"] == "", "processid"].iloc[0])
    if df.empty:
        raise InputError(path, "no barcodes left after dropping rows without a sequence")
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------- splits


def _check_fractions(fractions: Mapping[str, float], allowed, required, what: str) -> dict[str, float]:
    fractions = {str(k): float(v) for k, v in fractions.items()}
    unknown = sorted(set(fractions) - set(allowed))
    if unknown:
        raise ValueError(f"{what}: unknown split(s) {unknown}; allowed: {list(allowed)}")
    for name in required:
        if fractions.get(name, 0) <= 0:
            raise ValueError(f"{what}: split {name!r} needs a fraction > 0")
    if any(v < 0 for v in fractions.values()):
        raise ValueError(f"{what}: fractions must be >= 0")
    return fractions


def assign_groups(sizes, fractions: Mapping[str, float], first: list[str]) -> list[str]:
    """Split names for groups of ``sizes`` specimens: ``first`` as listed, then greedily
    towards the ``fractions`` of the specimen count (the split furthest below its target
    gets the next group). Used by :func:`build_splits` and the barcode simulator."""
    names = list(fractions)
    target = np.array([fractions[s] for s in names], dtype=float)
    target = target / target.sum() * float(np.sum(sizes))
    have = np.zeros(len(names))
    out = []
    for j, size in enumerate(sizes):
        name = first[j] if j < len(first) else names[int(np.argmax(target - have))]
        have[names.index(name)] += size
        out.append(name)
    return out


def _components(n_species: int, links: list[np.ndarray]) -> np.ndarray:
    """Connected components (union-find) of species linked by shared barcodes."""
    parent = np.arange(n_species)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for members in links:
        r0 = find(int(members[0]))
        for s in members[1:]:
            r = find(int(s))
            if r != r0:
                parent[r] = r0
    return np.array([find(i) for i in range(n_species)], dtype=np.int64)


def build_splits(
    table: pd.DataFrame,
    seed: int,
    unseen_fraction: float = 0.25,
    seen: Mapping[str, float] | None = None,
    unseen: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, dict]:
    """BIOSCAN-5M-style splits for a barcode table; returns ``(split per row, summary)``.

    * Rows without a species label go to ``pretrain``.
    * In every genus a stochastically rounded ``unseen_fraction`` of the species is held
      out as *unseen* (never all: a genus always keeps a seen species, so open-world genus
      classification has a reference). Specimens of seen species go to train/val/test
      (each seen species gets a train group first, then a test group), of unseen species
      to key_unseen/val_unseen/test_unseen (key_unseen first, then test_unseen), in
      the proportions ``seen`` / ``unseen`` of the specimen count.
    * Splits are assigned to groups of identical barcode strings, so an identical barcode
      never straddles two of the splits above: species that share a barcode are kept
      together (and seen), and an unlabelled row whose barcode also occurs among labelled
      rows goes to ``other_heldout`` (BIOSCAN-5M's split that no benchmark uses) rather
      than ``pretrain``. Species without a genus stay seen.

    Deterministic for a given table and ``seed``.
    """
    seen = _check_fractions(seen or DEFAULT_SEEN, SEEN_SPLITS, ("train", "test"), "seen split fractions")
    unseen = _check_fractions(
        unseen or DEFAULT_UNSEEN, UNSEEN_SPLITS, ("key_unseen", "test_unseen"), "unseen split fractions"
    )
    if not 0 <= unseen_fraction < 1:
        raise ValueError(f"unseen_fraction must be in [0, 1), got {unseen_fraction}")
    rng = np.random.default_rng(seed)
    n = len(table)
    species = table["species"].astype(str).to_numpy(dtype=object)
    genus = table["genus"].astype(str).to_numpy(dtype=object)
    labelled = species != ""
    gid, _ = pd.factorize(table["dna_barcode"].astype(str).to_numpy(dtype=object))
    lab = np.flatnonzero(labelled)
    split = np.full(n, "pretrain", dtype=object)
    if lab.size == 0:
        split[:] = "pretrain"
        return split, {"species_seen": 0, "species_unseen": 0, "rows": {"pretrain": n}}

    sid_lab, sp_names = pd.factorize(species[lab])
    n_sp = len(sp_names)
    pairs = pd.DataFrame({"g": gid[lab], "s": sid_lab}).drop_duplicates()
    shared = pairs[pairs.groupby("g")["s"].transform("size") > 1]
    links = [grp.to_numpy() for _, grp in shared.groupby("g")["s"]]
    comp = _components(n_sp, links)
    comp_size = np.bincount(comp, minlength=n_sp)
    # genus of each species: its most common genus label
    sp_genus = (
        pd.DataFrame({"s": sid_lab, "genus": genus[lab]})
        .groupby("s")["genus"]
        .agg(lambda g: g.value_counts().index[0])
        .reindex(range(n_sp))
        .to_numpy(dtype=object)
    )

    is_unseen = np.zeros(n_sp, dtype=bool)
    by_genus = pd.Series(np.arange(n_sp)).groupby(sp_genus)
    for g in sorted(by_genus.groups):
        if g == "":
            continue
        members = sorted(by_genus.groups[g], key=lambda s: sp_names[s])
        k = int(np.floor(unseen_fraction * len(members) + rng.random()))
        k = min(k, len(members) - 1)
        candidates = [s for s in members if comp_size[comp[s]] == 1]
        k = min(k, len(candidates))
        if k > 0:
            is_unseen[rng.permutation(np.array(candidates))[:k]] = True

    # groups of identical barcodes per unit (connected species), in order of appearance
    unit = comp[sid_lab]
    sizes = pd.DataFrame({"unit": unit, "g": gid[lab]}).groupby(["unit", "g"], sort=False).size()
    group_split: dict[int, str] = {}
    for u, part in sizes.groupby(level="unit", sort=True):
        groups = part.index.get_level_values("g").to_numpy()
        order = rng.permutation(len(groups))
        if is_unseen[u]:  # a unit with an unseen species holds only that species (u is its root)
            names = assign_groups(part.to_numpy()[order], unseen, ["key_unseen", "test_unseen"])
        else:
            names = assign_groups(part.to_numpy()[order], seen, ["train", "test"])
        group_split.update(zip(groups[order].tolist(), names))
    split[lab] = [group_split[g] for g in gid[lab].tolist()]
    labelled_groups = np.zeros(gid.max() + 1, dtype=bool)
    labelled_groups[gid[lab]] = True
    unl = np.flatnonzero(~labelled)
    split[unl[labelled_groups[gid[unl]]]] = "other_heldout"

    summary = {
        "species_seen": int(n_sp - is_unseen.sum()),
        "species_unseen": int(is_unseen.sum()),
        "genera": int(len([g for g in by_genus.groups if g != ""])),
        "rows": pd.Series(split).value_counts().to_dict(),
    }
    return split, summary


def convert(
    path,
    layout: str = "auto",
    marker: str | None = "COI-5P",
    max_length: int | None = None,
    rebuild_splits: bool = False,
    seed: int = 0,
    unseen_fraction: float = 0.25,
    seen: Mapping[str, float] | None = None,
    unseen: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Read a barcode table (:func:`read_table`) and give it splits if it has none
    (or ``rebuild_splits``); returns the pipeline's barcode table (:data:`BARCODE_COLUMNS`)."""
    df = read_table(path, layout=layout, marker=marker, max_length=max_length)
    missing = missing_ranks(df)
    log.info(
        "%s: %d barcodes; missing labels (empty, or a placeholder such as 'None' or 'NA'; kept missing, "
        "never a class) per rank: %s",
        path, len(df), ", ".join(f"{rank} {n}" for rank, n in missing.items()),
    )
    if "split" not in df.columns or rebuild_splits:
        split, summary = build_splits(df, seed, unseen_fraction, seen, unseen)
        df["split"] = split
        log.info("%s: built splits (seed %d): %s", path, seed, summary)
    else:
        check_split_names(df, path)
        log.info("%s: splits from the file: %s", path, df["split"].value_counts().to_dict())
    return df[BARCODE_COLUMNS]


def missing_ranks(table: pd.DataFrame) -> dict[str, int]:
    """Rows without a label (``""``), per rank."""
    return {rank: int((table[rank] == "").sum()) for rank in RANKS}


def check_split_names(table: pd.DataFrame, path) -> None:
    """InputError unless every ``split`` value is one of :data:`KNOWN_SPLITS`."""
    unknown = table.loc[~table["split"].isin(KNOWN_SPLITS), "split"]
    if unknown.empty:
        return
    counts = unknown.value_counts()
    first = table.loc[unknown.index[0], "processid"]
    raise InputError(
        path,
        f"unknown split name(s) {', '.join(f'{v!r} ({n} rows)' for v, n in counts.items())}; known: "
        f"{', '.join(KNOWN_SPLITS)}. Rename them in the table, or set data.barcodes.splits.rebuild: true "
        "to build BIOSCAN-5M-style splits instead",
        record=first,
    )
