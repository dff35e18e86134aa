"""Where the input data come from: the ``data:`` config section turned into a plan.

Each of the three inputs is either simulated (the embedded demo) or real:

* ``data.genome``: simulated unless it names a ``url`` (downloaded, checksum-verified) or
  a local ``path`` (any FASTA, plain or gzip); a real genome is converted into
  ``results/data/genome.fa`` (records filtered by ``contigs``).
* ``data.barcodes``: simulated unless it names a ``url`` or ``path``: a barcode table in
  BOLD's TSV layout, BIOSCAN-5M's CSV layout or the pipeline's own layout, or a zip/tar
  archive with such a table as ``member``; converted into ``results/data/barcodes.tsv``.
* ``data.tasks``: named few-shot tasks with a ``train`` and a ``test`` file (``url`` or
  ``path`` each), GeneMask's k-mer TSV or a plain table; converted into
  ``results/data/tasks/<task>/{train,test}.tsv``. The simulated genome adds the tasks
  ``prom``, ``splice`` and ``enh``.

:func:`plan` checks the section (beyond the JSON schema) and says which files to
download (keys relative to ``data.download.dir``), which archive members to extract and
where every converted input comes from. Rules read it; nothing here touches the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import unquote, urlparse

from .config import ConfigError
from .download import CHECKSUMS
from .simulate.defaults import DEFAULT_BARCODES, KNOWN_SPLITS
from .simulate.defaults import GENOME_TASKS as SIMULATED_TASKS  # tasks the simulated genome writes

TASK_ROLES = ("train", "test")


@dataclass(frozen=True)
class Source:
    """One input file: downloaded from ``url`` (to ``download_key``) or read from ``path``."""

    url: str | None = None
    path: str | None = None
    checksums: dict = field(default_factory=dict)
    download_key: str | None = None  # path of the download, relative to the download folder
    config_key: str | None = None  # where the config defines it, e.g. "data.genome" (for errors)

    @property
    def is_download(self) -> bool:
        return self.url is not None


@dataclass
class DataPlan:
    download_dir: str
    genome: Source | None  # None: simulated
    barcodes: Source | None  # None: simulated
    barcodes_member: str | None
    barcodes_member_md5: str | None
    tasks: dict[str, dict[str, Source]]
    simulated_tasks: list[str]
    barcode_simulation: dict = field(default_factory=dict)  # data.barcodes.simulate (overrides)

    # ---- derived
    def local(self, source: Source) -> str:
        """Path of a source's file on disk (the download's destination or the user's path)."""
        if source.is_download:
            return str(PurePosixPath(self.download_dir) / source.download_key)
        return source.path

    @property
    def downloads(self) -> dict[str, Source]:
        """Every file to download, by key (its path relative to the download folder)."""
        items = [self.genome, self.barcodes] + [s for roles in self.tasks.values() for s in roles.values()]
        return {s.download_key: s for s in items if s is not None and s.is_download}

    @property
    def barcodes_extract_key(self) -> str | None:
        if self.barcodes is None or not self.barcodes_member:
            return None
        return f"barcodes/extracted/{self.barcodes_member}"

    @property
    def extracts(self) -> dict[str, dict]:
        """Archive members to extract, by key (relative to the download folder)."""
        key = self.barcodes_extract_key
        if key is None:
            return {}
        return {
            key: {
                "archive": self.local(self.barcodes),
                "member": self.barcodes_member,
                "md5": self.barcodes_member_md5,
            }
        }

    def barcodes_input(self) -> str:
        """The barcode table the conversion reads (an extracted member or the source file)."""
        key = self.barcodes_extract_key
        if key is not None:
            return str(PurePosixPath(self.download_dir) / key)
        return self.local(self.barcodes)

    @property
    def barcode_splits(self) -> tuple[str, ...]:
        """The split names the barcode table can have: BIOSCAN-5M's for a real table; for
        the simulated one, those the simulation parameters give specimens."""
        if self.barcodes is not None:
            return KNOWN_SPLITS
        p = {k: self.barcode_simulation.get(k, v) for k, v in DEFAULT_BARCODES.items()}
        seen = {**DEFAULT_BARCODES["split_seen"], **p["split_seen"]}
        unseen = {**DEFAULT_BARCODES["split_unseen"], **p["split_unseen"]}
        names = {"train", "test"} | {k for k, v in seen.items() if v > 0}
        if p["unseen_fraction"] > 0 and p["species_per_genus"] > 1:
            names |= {"key_unseen", "test_unseen"} | {k for k, v in unseen.items() if v > 0}
        return tuple(s for s in KNOWN_SPLITS if s in names)

    @property
    def all_tasks(self) -> list[str]:
        return list(self.simulated_tasks) + [t for t in self.tasks if t not in self.simulated_tasks]


def _basename(url: str, fallback: str) -> str:
    name = PurePosixPath(unquote(urlparse(url).path)).name
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")
    return name or fallback


def _source(entry: dict, where: str, key_prefix: str, fallback_name: str) -> Source | None:
    url, path = entry.get("url"), entry.get("path")
    checksums = {k: str(entry[k]).lower() for k in CHECKSUMS if entry.get(k)}
    if url and path:
        raise ConfigError(f"config key '{where}': give either 'url' or 'path', not both")
    if not url and not path:
        if checksums:
            raise ConfigError(f"config key '{where}': checksums {sorted(checksums)} need a 'url' or 'path'")
        return None
    if url:
        if not re.match(r"^https?://", url):
            raise ConfigError(f"config key '{where}.url': only http(s) URLs are supported, got {url!r} (use 'path' for local files)")
        return Source(
            url=url, checksums=checksums, download_key=f"{key_prefix}/{_basename(url, fallback_name)}", config_key=where
        )
    return Source(path=str(path), checksums=checksums, config_key=where)


def _check_simulation_overrides(section: dict, defaults: dict, name: str, real: bool) -> None:
    overrides = section.get("simulate") or {}
    if real and overrides:
        raise ConfigError(
            f"config key 'data.{name}.simulate': simulation overrides given, but data.{name} names a real "
            f"{'url' if section.get('url') else 'path'}; remove one of them"
        )
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(
            f"config key 'data.{name}.simulate': unknown simulation parameter(s) {unknown}; known: {sorted(defaults)}"
        )


def _check_member(member: str) -> str:
    rel = PurePosixPath(member)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or member.endswith("/"):
        raise ConfigError(
            f"config key 'data.barcodes.member': {member!r} must be a relative file path inside the archive, without '..'"
        )
    return str(rel)


def plan(config: dict, genome_defaults: dict | None = None, barcode_defaults: dict | None = None) -> DataPlan:
    """The data plan of a validated config (defaults filled); ConfigError names the bad key.

    ``genome_defaults`` / ``barcode_defaults`` (``dnalm.simulate.defaults.DEFAULT_GENOME`` /
    ``DEFAULT_BARCODES``) let it check the simulation overrides.
    """
    data = config.get("data", {})
    genome_cfg, barcode_cfg = data.get("genome", {}), data.get("barcodes", {})
    genome = _source(genome_cfg, "data.genome", "genome", "genome.fa.gz")
    barcodes = _source(barcode_cfg, "data.barcodes", "barcodes", "barcodes.tsv")
    if genome_defaults is not None:
        _check_simulation_overrides(genome_cfg, genome_defaults, "genome", genome is not None)
    if barcode_defaults is not None:
        _check_simulation_overrides(barcode_cfg, barcode_defaults, "barcodes", barcodes is not None)
    for pattern in genome_cfg.get("contigs") or []:
        if genome is None:
            raise ConfigError("config key 'data.genome.contigs': only applies to a real genome (url or path)")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"config key 'data.genome.contigs': bad regular expression {pattern!r}: {exc}") from None
    member = barcode_cfg.get("member")
    if member is not None:
        if barcodes is None:
            raise ConfigError("config key 'data.barcodes.member': needs a 'url' or 'path' of an archive")
        member = _check_member(member)
    elif barcode_cfg.get("member_md5"):
        raise ConfigError("config key 'data.barcodes.member_md5': needs 'member'")

    simulated_tasks = list(SIMULATED_TASKS) if genome is None else []
    tasks: dict[str, dict[str, Source]] = {}
    for name, entry in (data.get("tasks") or {}).items():
        if name in simulated_tasks:
            raise ConfigError(
                f"config key 'data.tasks.{name}': the simulated genome already writes a task {name!r}; "
                "choose another name"
            )
        tasks[name] = {}
        for role in TASK_ROLES:
            src = _source(entry.get(role) or {}, f"data.tasks.{name}.{role}", f"tasks/{name}/{role}", f"{role}.tsv")
            if src is None:
                raise ConfigError(f"config key 'data.tasks.{name}.{role}': needs a 'url' or 'path'")
            tasks[name][role] = src

    result = DataPlan(
        download_dir=str(data.get("download", {}).get("dir", "resources")),
        genome=genome,
        barcodes=barcodes,
        barcodes_member=member,
        barcodes_member_md5=barcode_cfg.get("member_md5"),
        tasks=tasks,
        simulated_tasks=simulated_tasks,
        barcode_simulation=dict(barcode_cfg.get("simulate") or {}),
    )
    wanted = config.get("evaluation", {}).get("fewshot", {}).get("tasks", [])
    for task in wanted:
        if task not in result.all_tasks:
            hint = (
                "it is simulated only with the demo genome"
                if task in SIMULATED_TASKS
                else f"define data.tasks.{task} with a 'train' and a 'test' file"
            )
            raise ConfigError(
                f"config key 'evaluation.fewshot.tasks': no data for task {task!r} ({hint}); "
                f"available: {result.all_tasks}"
            )
    return result
