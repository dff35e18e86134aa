"""External pretrained checkpoints: published models evaluated as they are, never trained here.

A ``models:`` entry with ``pretrained: <local folder or hub id>`` names a checkpoint that
``transformers`` loads (``save_pretrained`` output, or a Hugging Face hub repository). Three
stages use this module:

* config time (:func:`source_of`, :func:`folder_problem`; no torch import): whether the
  entry is a local folder or a hub id, and for a local folder whether it has a config, a
  tokenizer, and custom code that needs ``trust_remote_code``;
* the ``fetch_pretrained`` job (:func:`fetch`): a hub id is resolved through the normal
  ``huggingface_hub`` cache (``snapshot_download``, pinned to ``revision``), a local folder
  is checked again, the tokenizer is loaded and tried on DNA; the job writes a manifest,
  ``dnalm.json`` in the model's results folder (source, resolved path, commit, tokenizer,
  pooling, window length, ``provenance``) that the embedding and fine-tuning jobs read;
* the embedding and fine-tuning jobs (:func:`load`, :class:`Feeder`, :func:`embed_sequences`).

How DNA reaches the model (``tokenizer``): ``auto`` gives the cleaned sequence (upper case,
no gaps) to the checkpoint's own tokenizer (BPE, NT's 6-mers, character tokenizers);
``kmer`` gives it as space-separated k-mers (DNABERT, and this project's own models);
``char`` gives it as single bases, one word each. A sequence longer than ``max_tokens``
tokens (the tokenizer's special tokens included) is split into consecutive windows that
each fit, every window wrapped in the tokenizer's own special tokens, as
:func:`dnalm.embed.chunk_tokens` does for the project's models. The embedding pools the last
hidden layer over the tokens that are not special tokens of the tokenizer
(``all_special_ids``, so unknown tokens do not count either; :func:`dnalm.embed.window_weights`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import seq as dseq

MANIFEST = "dnalm.json"  # the same file name as a trained model's metadata (dnalm.embed.META_FILE)
TOKENIZER_KINDS = ("auto", "kmer", "char")
DTYPES = ("float32", "bfloat16", "float16")
#: Files of which at least one is present next to a saved tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
)
#: Weights in other frameworks that a hub download skips (transformers loads PyTorch weights).
SKIP_PATTERNS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "onnx/*", "flax_model*", "tf_model*", "rust_model*",
                 "coreml/*", "*.tflite"]
#: Auto classes tried, in order, when a checkpoint's custom code has no ``AutoModel`` entry.
HEAD_CLASSES = ("AutoModelForMaskedLM", "AutoModelForCausalLM")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_PATH_START = ("/", "./", "../", "~", ".\\", "..\\")


class ExternalModelError(ValueError):
    """An external model entry that cannot be used; the message names ``models.<name>``."""


# --------------------------------------------------------------------------- config time


def source_of(pretrained: str) -> str:
    """``local`` when ``pretrained`` is an existing folder or spelled as a path (``/``,
    ``./``, ``../``, ``~``), ``hub`` when it is a hub id (``org/name``), else ``invalid``."""
    if Path(pretrained).expanduser().exists() or pretrained.startswith(_PATH_START):
        return "local"
    return "hub" if _HUB_ID.match(pretrained) and ".." not in pretrained else "invalid"


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExternalModelError(f"{path}: not readable JSON ({exc})") from exc
    return value if isinstance(value, dict) else {}


def remote_code_files(folder: str | os.PathLike) -> list[str]:
    """The files of a checkpoint folder that ask for custom code (an ``auto_map`` entry in
    ``config.json`` or ``tokenizer_config.json``)."""
    folder = Path(folder)
    return [
        name
        for name in ("config.json", "tokenizer_config.json")
        if (folder / name).is_file() and _read_json(folder / name).get("auto_map")
    ]


def folder_problem(folder: str | os.PathLike, trust_remote_code: bool) -> str | None:
    """What keeps ``folder`` from being loaded as a checkpoint (no folder, no
    ``config.json``, no tokenizer file, custom code without ``trust_remote_code``), or None."""
    shown = str(folder)
    folder = Path(folder).expanduser()
    if not folder.exists():
        rel = "" if folder.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        return f"folder {shown!r} does not exist{rel}"
    if not folder.is_dir():
        return f"{shown!r} is a file, not a checkpoint folder"
    if not (folder / "config.json").is_file():
        return f"folder {shown!r} has no config.json: not a transformers checkpoint (save_pretrained writes one)"
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return (
            f"folder {shown!r} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); save the tokenizer the "
            "model was trained with next to it (tokenizer.save_pretrained(folder))"
        )
    try:
        remote = remote_code_files(folder)
    except ExternalModelError as exc:
        return str(exc)
    if remote and not trust_remote_code:
        return (
            f"folder {shown!r} needs custom code ('auto_map' in {' and '.join(remote)}), which runs only with "
            "trust_remote_code: true (it executes Python files of the checkpoint: read them first)"
        )
    return None


def resolve_entry(name: str, entry: dict) -> dict:
    """The settings of the external ``models.<name>`` entry ``entry`` (never merged with
    the training defaults): ``external`` (True), ``pretrained``, ``source`` (``local`` /
    ``hub``), ``path`` (a local folder, absolute), ``revision``, ``tokenizer``, ``k``,
    ``tokenization``, ``pooling``, ``max_tokens`` (None: from the checkpoint),
    ``trust_remote_code``, ``dtype``, ``gpus``.

    Checks what can be checked offline: the tokenizer keys agree; a local folder exists,
    holds a config and a tokenizer, and uses custom code (``auto_map``) only with
    ``trust_remote_code: true``. A hub id without ``revision`` is allowed with a warning on
    stderr (the manifest records the commit it resolved to). Raises
    :class:`ExternalModelError` ``"models.<name>.<key>: <problem>"``.
    """
    key = f"models.{name}"
    kind = entry.get("tokenizer", "auto")
    for sub in ("k", "tokenization"):
        if kind == "kmer" and entry.get(sub) is None:
            raise ExternalModelError(
                f"{key}.{sub}: required with tokenizer: kmer (k-mer length and overlapping | non-overlapping; "
                "DNABERT: k 6, overlapping)"
            )
        if kind != "kmer" and entry.get(sub) is not None:
            raise ExternalModelError(
                f"{key}.{sub}: applies to tokenizer: kmer only; with tokenizer: {kind} the checkpoint's tokenizer "
                "reads the DNA itself (remove the key, or set tokenizer: kmer)"
            )
    pretrained = str(entry["pretrained"])
    trust = bool(entry.get("trust_remote_code", False))
    source = source_of(pretrained)
    settings = {
        "external": True, "pretrained": pretrained, "source": source, "path": None,
        "revision": entry.get("revision"), "tokenizer": kind, "k": entry.get("k"),
        "tokenization": entry.get("tokenization"), "pooling": entry.get("pooling", "mean"),
        "max_tokens": entry.get("max_tokens"), "trust_remote_code": trust,
        "dtype": entry.get("dtype", "float32"), "gpus": int(entry.get("gpus", 0)),
    }
    if source == "invalid":
        raise ExternalModelError(
            f"{key}.pretrained: {pretrained!r} is neither an existing folder nor a hub id ('organisation/name'); "
            "a folder path starts with / ./ or ../"
        )
    if source == "local":
        if settings["revision"] is not None:
            raise ExternalModelError(f"{key}.revision: applies to hub ids only; {pretrained!r} is a local folder")
        problem = folder_problem(pretrained, trust)
        if problem:
            raise ExternalModelError(f"{key}.{'trust_remote_code' if 'trust_remote_code' in problem else 'pretrained'}: {problem}")
        settings["path"] = str(Path(pretrained).expanduser().resolve())
    elif settings["revision"] is None:
        print(
            f"Warning: config key '{key}.revision' is not set: hub model {pretrained!r} is fetched at the latest "
            f"commit of 'main' and not fetched again when that moves; pin a commit hash for a reproducible "
            f"comparison (results/models/{name}/dnalm.json records the commit fetched)",
            file=sys.stderr,
        )
    return settings


# --------------------------------------------------------------------------- fetch job


def _hub_download(name: str, repo_id: str, revision: str | None) -> Path:
    """``snapshot_download`` into the huggingface_hub cache; errors name the model entry
    and say how to pre-download."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    rev = revision or "main"
    try:
        return Path(snapshot_download(repo_id, revision=revision, ignore_patterns=SKIP_PATTERNS))
    except RevisionNotFoundError as exc:
        raise ExternalModelError(
            f"models.{name}.revision: hub model {repo_id!r} has no revision {rev!r} ({_first_line(exc)})"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ExternalModelError(
            f"models.{name}.pretrained: no hub model {repo_id!r} (or it is private or gated: log in with `hf auth "
            f"login`); a local folder must exist or start with ./ or / ({_first_line(exc)})"
        ) from exc
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise ExternalModelError(
            f"models.{name}.pretrained: could not fetch hub model {repo_id!r} at revision {rev!r}: "
            f"{_first_line(exc)}. Without network access, download it where there is one, into the "
            f"huggingface_hub cache this job reads (HF_HOME, HF_HUB_CACHE): `hf download {repo_id} --revision "
            f"{rev}` (older huggingface_hub: `huggingface-cli download ...`); or download it into a folder "
            f"(`hf download {repo_id} --revision {rev} --local-dir DIR`) and set models.{name}.pretrained: DIR"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def folder_digest(folder: str | os.PathLike) -> str:
    """sha256 over the names and bytes of the regular files at the top of ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and not path.name.startswith("."):
            digest.update(path.name.encode() + b"\0")
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def fetch(name: str, settings: dict, out_dir: str | os.PathLike, log=None) -> dict:
    """Resolve and check the checkpoint of external model ``name``; write its manifest.

    ``settings``: the resolved entry (:func:`dnalm.config.resolve_external`): ``pretrained``,
    ``source`` (``local`` / ``hub``), ``revision``, ``tokenizer``, ``k``, ``tokenization``,
    ``pooling``, ``max_tokens`` (None: from the checkpoint), ``trust_remote_code``,
    ``dtype``. The tokenizer is loaded and tried on DNA (:class:`Feeder`), the weights are
    not loaded (the embedding job does). ``out_dir`` receives ``dnalm.json`` atomically.
    Returns the manifest. Raises :class:`ExternalModelError` naming ``models.<name>``.
    """
    from .io import atomic_dir

    pretrained = settings["pretrained"]
    trust = bool(settings.get("trust_remote_code", False))
    commit = digest = None
    if settings["source"] == "hub":
        path = _hub_download(name, pretrained, settings.get("revision"))
        commit = path.name if re.fullmatch(r"[0-9a-f]{40}", path.name) else None
        where = f"hub model {pretrained!r}"
    else:
        path = Path(pretrained).expanduser().resolve()
        where = f"folder {str(path)!r}"
    problem = folder_problem(path, trust)
    if problem:
        raise ExternalModelError(f"models.{name}.pretrained: {problem}" + (f" ({where})" if commit else ""))
    if commit is None and settings["source"] == "local":
        digest = folder_digest(path)
    tokenizer = _load_tokenizer(name, path, trust)
    config = _load_config(name, path, trust)
    max_tokens = settings.get("max_tokens") or default_max_tokens(config, tokenizer)
    if max_tokens is None:
        raise ExternalModelError(
            f"models.{name}.max_tokens: {where} states no maximum input length (config max_position_embeddings "
            "or the tokenizer's model_max_length); set max_tokens (the window length in tokens)"
        )
    feeder = Feeder.from_settings(name, tokenizer, settings, int(max_tokens))
    if settings["source"] == "hub":
        pin = settings.get("revision")
        provenance = f"external: {pretrained}@{commit or pin}" + ("" if pin else " (revision not pinned)")
    else:
        provenance = f"external: {path} (folder sha256 {digest[:12]})"
    manifest = {
        "external": True,
        "model": name,
        "source": settings["source"],
        "pretrained": pretrained,
        "path": str(path),
        "revision": settings.get("revision"),
        "commit": commit,
        "folder_sha256": digest,
        "tokenizer": settings["tokenizer"],
        "k": settings.get("k"),
        "tokenization": settings.get("tokenization"),
        "pooling": settings.get("pooling", "mean"),
        "max_tokens": int(max_tokens),
        "trust_remote_code": trust,
        "dtype": settings.get("dtype", "float32"),
        "model_class": model_class_name(config),
        "model_type": getattr(config, "model_type", None),
        "special_tokens": len(feeder.prefix) + len(feeder.suffix),
        "provenance": provenance,
    }
    with atomic_dir(out_dir) as tmp:
        (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if log is not None:
        log.info("%s: %s", name, provenance)
    return manifest


def _load_tokenizer(name: str, path: Path, trust: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust)
    except Exception as exc:  # transformers raises many kinds (OSError, ValueError, ImportError, ...)
        raise ExternalModelError(f"models.{name}.pretrained: could not load the tokenizer of {path}: {exc}") from exc


def _load_config(name: str, path: Path, trust: bool):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path), trust_remote_code=trust)
    except Exception as exc:
        raise ExternalModelError(f"models.{name}.pretrained: could not load the config of {path}: {exc}") from exc


def model_class_name(config) -> str:
    """The ``transformers`` auto class that loads the encoder: ``AutoModel``, or, for custom
    code that registers no ``AutoModel`` (e.g. Nucleotide Transformer v2), the first of
    :data:`HEAD_CLASSES` it registers (its last hidden layer is then the embedding)."""
    auto_map = getattr(config, "auto_map", None) or {}
    if not auto_map or "AutoModel" in auto_map:
        return "AutoModel"
    for name in HEAD_CLASSES:
        if name in auto_map:
            return name
    return "AutoModel"


#: model types whose position ids start after the padding index (RoBERTa-style embeddings)
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "esm", "longformer", "mpnet"}


def default_max_tokens(config, tokenizer) -> int | None:
    """Longest input the checkpoint states: its position table (``max_position_embeddings``,
    ``n_positions`` or ``max_seq_len``; minus the padding offset of RoBERTa/ESM-style
    positions), capped by the tokenizer's ``model_max_length`` when that is a real limit."""
    limit = None
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            limit = value
            break
    if limit is not None and getattr(config, "model_type", None) in _OFFSET_POSITIONS:
        limit -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:
        limit = tok_limit if limit is None else min(limit, tok_limit)
    return limit


# --------------------------------------------------------------------------- tokens


@dataclass
class Feeder:
    """DNA -> token windows for one checkpoint's tokenizer (see the module docstring).

    ``prefix`` / ``suffix``: the special tokens the tokenizer puts around one sequence,
    found by tokenizing a probe with and without them; ``special_ids``: the tokenizer's
    ``all_special_ids`` (not pooled); ``pad_id``: its padding id (0 when it has none).
    """

    tokenizer: object
    kind: str
    max_tokens: int
    k: int | None = None
    tokenization: str | None = None
    prefix: list[int] = field(default_factory=list)
    suffix: list[int] = field(default_factory=list)
    special_ids: tuple[int, ...] = ()
    pad_id: int = 0
    name: str = "?"

    @classmethod
    def from_settings(cls, name: str, tokenizer, settings: dict, max_tokens: int) -> Feeder:
        """Build and check a feeder (raises :class:`ExternalModelError` naming ``models.<name>``
        when the tokenizer does not read DNA the way ``tokenizer`` says)."""
        kind = settings.get("tokenizer", "auto")
        if kind not in TOKENIZER_KINDS:
            raise ExternalModelError(f"models.{name}.tokenizer: {kind!r} is not one of {TOKENIZER_KINDS}")
        pad = getattr(tokenizer, "pad_token_id", None)
        special = tuple(int(i) for i in (getattr(tokenizer, "all_special_ids", None) or []) if i is not None)
        feeder = cls(
            tokenizer, kind, int(max_tokens), settings.get("k"), settings.get("tokenization"),
            special_ids=special, pad_id=int(pad) if pad is not None else 0, name=name,
        )
        feeder._probe()
        return feeder

    # the text form of each kind
    def _texts(self, sequences: Sequence[str]):
        if self.kind == "kmer":
            return [dseq.kmer_text(s, int(self.k), self.tokenization) for s in sequences]
        if self.kind == "char":
            return [list(dseq.clean(s)) for s in sequences]
        return [dseq.clean(s) for s in sequences]

    def _call(self, texts, special: bool) -> list[list[int]]:
        kwargs = {"is_split_into_words": True} if self.kind == "char" else {}
        out = self.tokenizer(texts, add_special_tokens=special, **kwargs)
        ids = out["input_ids"] if hasattr(out, "keys") else out
        ids = [list(map(int, row.tolist() if hasattr(row, "tolist") else row)) for row in ids]
        if len(ids) != len(texts):
            raise ExternalModelError(
                f"models.{self.name}.tokenizer: the tokenizer returned {len(ids)} token lists for {len(texts)} "
                "sequences; it does not follow the transformers tokenizer API for batches"
            )
        return ids

    def _probe(self) -> None:
        probe = "ACGTTGCAAGCTTCGAACCGGTTAAC"  # 26 bases, every base and many k-mers
        text = self._texts([probe])
        try:
            body = self._call(text, False)[0]
            full = self._call(text, True)[0]
        except ExternalModelError:
            raise
        except Exception as exc:
            raise ExternalModelError(f"models.{self.name}.tokenizer: the tokenizer fails on DNA: {exc}") from exc
        key = f"models.{self.name}.tokenizer"
        if not body:
            raise ExternalModelError(f"{key}: the tokenizer gives no token for DNA ({self.kind} input); try another kind")
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if unk is not None and all(t == unk for t in body):
            hint = {
                "auto": "tokenizer: kmer with the checkpoint's k (a k-mer vocabulary) or char (single bases)",
                "kmer": f"another k (k={self.k} k-mers are not in its vocabulary), or tokenizer: auto",
                "char": "tokenizer: auto or kmer",
            }[self.kind]
            raise ExternalModelError(f"{key}: the tokenizer reads {self.kind} DNA input as unknown tokens only; use {hint}")
        expected = len(text[0].split()) if self.kind == "kmer" else len(probe) if self.kind == "char" else None
        if expected is not None and len(body) != expected:
            raise ExternalModelError(
                f"{key}: {expected} {'k-mers' if self.kind == 'kmer' else 'bases'} became {len(body)} tokens, so "
                f"the vocabulary does not hold them as single tokens (tokenizer: {self.kind}"
                + (f", k={self.k})" if self.kind == "kmer" else ")")
                + "; check k, or use tokenizer: auto"
            )
        at = next((i for i in range(len(full) - len(body) + 1) if full[i : i + len(body)] == body), None)
        if at is None:
            raise ExternalModelError(
                f"{key}: the tokenizer's special tokens are not a plain prefix/suffix of a sequence's tokens; "
                "windowing needs them to be"
            )
        self.prefix, self.suffix = full[:at], full[at + len(body) :]
        if self.max_tokens - len(self.prefix) - len(self.suffix) < 1:
            raise ExternalModelError(
                f"models.{self.name}.max_tokens: {self.max_tokens} leaves no room for DNA tokens next to the "
                f"{len(self.prefix) + len(self.suffix)} special tokens of every window"
            )

    def body_ids(self, sequences: Sequence[str], chunk: int = 2048) -> list[np.ndarray]:
        """Token ids of each sequence without special tokens."""
        out = []
        for lo in range(0, len(sequences), chunk):
            texts = self._texts(sequences[lo : lo + chunk])
            out += [np.asarray(ids, dtype=np.int64) for ids in self._call(texts, False)]
        return out

    def windows(self, sequences: Sequence[str]) -> list[list[np.ndarray]]:
        """Per sequence, its windows of at most ``max_tokens`` tokens, each wrapped in the
        tokenizer's special tokens (a sequence that fits is one window)."""
        step = self.max_tokens - len(self.prefix) - len(self.suffix)
        pre, suf = np.asarray(self.prefix, dtype=np.int64), np.asarray(self.suffix, dtype=np.int64)
        out = []
        for body in self.body_ids(sequences):
            pieces = [body[i : i + step] for i in range(0, len(body), step)] or [body]
            out.append([np.concatenate([pre, p, suf]) for p in pieces])
        return out

    def feed(self):
        """The :class:`dnalm.embed.Feed` (padding id, special tokens) of this tokenizer."""
        from .embed import Feed

        return Feed(pad_id=self.pad_id, special_ids=self.special_ids)


# --------------------------------------------------------------------------- embedding jobs


def is_external(model_dir: str | os.PathLike) -> bool:
    """Whether ``model_dir`` holds an external model's manifest (not a trained model)."""
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text()).get("external"))
    except (OSError, json.JSONDecodeError):
        return False


def read_manifest(model_dir: str | os.PathLike) -> dict:
    from .io import InputError

    path = Path(model_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable external-model manifest: {exc}") from exc
    missing = [k for k in ("model", "path", "tokenizer", "pooling", "max_tokens") if k not in manifest]
    if missing or not manifest.get("external"):
        raise InputError(path, f"not an external-model manifest (missing {missing or ['external']})")
    return manifest


def load(model_dir: str | os.PathLike, device: str = "auto"):
    """Load the checkpoint that the manifest in ``model_dir`` points at.

    Returns ``(model, feeder, manifest)``: the model in eval mode on ``device`` (``auto``:
    CUDA when available), loaded by :func:`model_class_name`'s auto class with the
    manifest's ``dtype`` and ``trust_remote_code``; the :class:`Feeder` of its tokenizer.
    """
    import torch
    import transformers

    from .device import resolve_device
    from .io import InputError

    manifest = read_manifest(model_dir)
    name, path, trust = manifest["model"], manifest["path"], bool(manifest.get("trust_remote_code"))
    if not Path(path).is_dir():
        raise InputError(
            Path(model_dir) / MANIFEST,
            f"models.{name}: checkpoint folder {path} is gone (cleared cache?); delete {model_dir} and rerun to fetch it again",
        )
    tokenizer = _load_tokenizer(name, Path(path), trust)
    feeder = Feeder.from_settings(name, tokenizer, manifest, int(manifest["max_tokens"]))
    auto = getattr(transformers, manifest.get("model_class") or "AutoModel")
    try:
        model = auto.from_pretrained(path, trust_remote_code=trust, dtype=getattr(torch, manifest.get("dtype", "float32")))
    except Exception as exc:
        raise ExternalModelError(f"models.{name}.pretrained: could not load the model in {path}: {exc}") from exc
    model.to(resolve_device(device)).eval()
    return model, feeder, manifest


def embed_sequences(model, feeder: Feeder, sequences: Sequence[str], pooling: str = "mean", batch_size: int = 64,
                    progress: bool = True) -> np.ndarray:
    """Pooled last-hidden-layer embeddings ``(len(sequences), hidden)`` of an external model:
    the windows of :meth:`Feeder.windows`, pooled over the tokens that are not special
    tokens (``mean``: over every window's such tokens; ``cls``, ``last``: the mean of the
    windows' pooled vectors), as :func:`dnalm.embed.pool_windows`."""
    from .embed import pool_windows

    per_sequence = feeder.windows(list(sequences))
    windows = [w for ws in per_sequence for w in ws]
    owner = np.repeat(np.arange(len(per_sequence)), [len(ws) for ws in per_sequence])
    return pool_windows(
        model, windows, owner, len(per_sequence), pooling=pooling, chunked=True, batch_size=batch_size,
        progress=progress, feed=feeder.feed(),
    )
