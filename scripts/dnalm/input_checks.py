"""Checks of what the configured inputs can deliver, run when the workflow starts (after the
schema, :func:`dnalm.config.validate_config`, and the model resolution): simulation
parameters, local files, the barcode splits a table can hold, few-shot pools large enough
for the largest K. Each failure is a :class:`dnalm.config.ConfigError` naming the key."""

from __future__ import annotations

import copy
import csv
import gzip
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

from .config import SPLIT_KEYS, ConfigError, _get, _number_advice


def check_inputs(
    config: dict,
    plan,
    genome_defaults: Mapping,
    barcode_defaults: Mapping,
    prepared_task: Callable[[str], str] | None = None,
) -> None:
    """Checks of a validated config against its data sources, before any job runs.

    ``plan`` is the :class:`dnalm.sources.DataPlan` of the config; ``genome_defaults`` /
    ``barcode_defaults`` the simulator defaults (``dnalm.simulate.defaults``);
    ``prepared_task(task)`` the path of a task's converted train table (read when the
    task's own file is not on disk yet, e.g. a download). Checks: numbers in the simulation
    overrides, local files, the motif source, the barcode split names every key asks for,
    and the few-shot pool of every task (two classes or more, K x shots_scale examples of
    each). Raises :class:`ConfigError` naming the key.
    """
    for name, defaults in (("genome", genome_defaults), ("barcodes", barcode_defaults)):
        overrides = _get(config, f"data.{name}.simulate") or {}
        _check_numbers(overrides, defaults, f"data.{name}.simulate")
    _check_local_files(config, plan)
    if config["npmi"]["motifs"] == "planted" and plan.genome is not None:
        raise ConfigError(
            "config key 'npmi.motifs': 'planted' needs the simulated genome; use 'jaspar' or the path of a "
            "motif TSV (motif_id, consensus)"
        )
    _check_barcode_splits(config, plan)
    fewshot = config["evaluation"]["fewshot"]
    for task in fewshot["tasks"]:
        if task in plan.simulated_tasks:
            per_class = _simulation(genome_defaults, _get(config, "data.genome.simulate"))["train_per_class"]
            source = "the simulated task"
            check_fewshot_pool(task, int(per_class), fewshot, source, "data.genome.simulate.train_per_class")
            continue
        candidates = [plan.local(plan.tasks[task]["train"])] if task in plan.tasks else []
        if prepared_task is not None:
            candidates.append(prepared_task(task))
        for path in candidates:
            counts = task_label_counts(path)
            if counts is not None:
                check_fewshot_pool(task, counts, fewshot, f"its train file {path}", f"data.tasks.{task}.train")
                break


def _simulation(defaults: Mapping, overrides: Mapping | None) -> dict:
    """Simulator parameters: ``defaults`` overridden key by key (mappings one level deep),
    as ``dnalm.simulate`` merges them."""
    out = copy.deepcopy(dict(defaults))
    for key, value in (overrides or {}).items():
        if isinstance(out.get(key), dict) and isinstance(value, Mapping):
            out[key].update(value)
        else:
            out[key] = value
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_numbers(value, default, key: str) -> None:
    """A simulation override given as text where the default is a number (``1e-3``)."""
    if isinstance(value, Mapping) and isinstance(default, Mapping):
        for sub, v in value.items():
            if sub in default:
                _check_numbers(v, default[sub], f"{key}.{sub}")
    elif isinstance(value, list) and isinstance(default, list) and default:
        for i, v in enumerate(value):
            _check_numbers(v, default[min(i, len(default) - 1)], f"{key}.{i}")
    elif _is_number(default) and isinstance(value, str):
        advice = _number_advice(value, integer=isinstance(default, int))
        raise ConfigError(f"config key '{key}': {value!r} is not a number{advice}")


def _check_local_files(config: dict, plan) -> None:
    """Every local input named in the config exists (relative paths: the working directory)."""
    files = []
    for name, source in (("genome", plan.genome), ("barcodes", plan.barcodes)):
        if source is not None and not source.is_download:
            files.append((f"data.{name}.path", source.path))
    for task, roles in plan.tasks.items():
        for role, source in roles.items():
            if not source.is_download:
                files.append((f"data.tasks.{task}.{role}.path", source.path))
    if config["npmi"]["motifs"] not in ("planted", "jaspar"):
        files.append(("npmi.motifs", config["npmi"]["motifs"]))
    for key, path in files:
        if not Path(path).is_file():
            where = "" if Path(path).is_absolute() else f" (relative to the working directory {Path.cwd()})"
            raise ConfigError(f"config key '{key}': file {path!r} does not exist{where}")


def _barcode_splits_possible(config: dict, plan) -> tuple[set, str]:
    """The split names the barcode table can hold, and where they come from."""
    if plan.barcodes is None:
        return set(plan.barcode_splits), "the simulated barcodes (data.barcodes.simulate: split_seen, split_unseen, unseen_fraction)"
    splits = config["data"]["barcodes"]["splits"]
    if splits["rebuild"]:
        built = {"pretrain", "other_heldout"} | {n for n, f in splits["seen"].items() if f > 0}
        if splits["unseen_fraction"] > 0:
            built |= {n for n, f in splits["unseen"].items() if f > 0}
        return built, "the splits built for the barcode table (data.barcodes.splits: seen, unseen, unseen_fraction)"
    return set(plan.barcode_splits), "a barcode table (BIOSCAN-5M's split names, or splits built by data.barcodes.splits)"


def _check_barcode_splits(config: dict, plan) -> None:
    possible, source = _barcode_splits_possible(config, plan)
    for key in SPLIT_KEYS:
        value = _get(config, key)
        if key == "corpus.barcodes.splits" and value == "auto":
            continue  # dnalm.corpus picks among the training splits
        for name in [value] if isinstance(value, str) else value or []:
            if name not in possible:
                raise ConfigError(
                    f"config key '{key}': split {name!r} cannot occur in {source}; its splits: {sorted(possible)}"
                )


def task_label_counts(path, max_bytes: int = 200_000_000) -> Counter | None:
    """Rows per value of the ``label`` column of a task file (GeneMask or plain, tab- or
    comma-separated, optionally gzipped); None when the file is missing, larger than
    ``max_bytes`` or not a readable table (the conversion job then reports it)."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > max_bytes:
            return None
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
            delimiter = "\t" if "\t" in first else ","
            header = [h.strip() for h in next(csv.reader([first], delimiter=delimiter), [])]
            if "label" not in header:
                return None
            col = header.index("label")
            return Counter(
                row[col].strip() for row in csv.reader(fh, delimiter=delimiter) if len(row) > col and row[col].strip()
            )
    except (OSError, UnicodeDecodeError, EOFError, csv.Error):
        return None


def check_fewshot_pool(task: str, class_counts, fewshot: Mapping, source: str, pool_key: str) -> None:
    """A few-shot task needs two classes or more and, for every K of ``fewshot['shots']``,
    K x shots_scale examples of each class in its train pool. ``class_counts``: examples
    per class of ``source`` (a mapping), or one int when every class has that many (the
    simulated tasks); ``pool_key`` names where the pool is configured. Tasks that are not
    in ``fewshot['tasks']`` are not checked."""
    if task not in fewshot["tasks"]:
        return
    if isinstance(class_counts, Mapping):
        counts = {str(k): int(v) for k, v in class_counts.items()}
        if len(counts) < 2:
            only = f" (only {next(iter(counts))!r})" if counts else ""
            raise ConfigError(
                f"config key '{pool_key}': task {task!r} has {len(counts)} class{only} in {source}; few-shot "
                "probes and probing need at least two classes"
            )
        label = min(counts, key=counts.get)
        smallest, which = counts[label], f" examples of class {label!r}"
    else:
        smallest, which = int(class_counts), " examples per class"
    scale = int(fewshot.get("shots_scale", {}).get(task, 1))
    too_many = [k for k in fewshot["shots"] if k * scale > smallest]
    if too_many:
        fitting = [k for k in fewshot["shots"] if k * scale <= smallest]
        drawn = f" (x shots_scale {scale}: {[k * scale for k in too_many]})" if scale != 1 else ""
        raise ConfigError(
            f"config key 'evaluation.fewshot.shots': K = {too_many}{drawn} examples per class for task {task!r}, but "
            f"its train pool has only {smallest}{which} in {source}; use shots that fit ({fitting or 'none'}) or a "
            f"larger pool ({pool_key})"
        )
