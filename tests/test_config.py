"""Config schema validation and model-preset resolution."""

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dnalm.config import PRESETS, ConfigError, resolve_model, train_settings, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"


@pytest.fixture
def demo():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_demo_config_is_valid_and_defaults_filled(demo):
    del demo["kmers"]["n_shards"]
    del demo["evaluation"]["clustering"]
    validate_config(demo, SCHEMA)
    assert demo["kmers"]["n_shards"] == 2
    assert demo["evaluation"]["clustering"]["method"] == "agglomerative"


def test_empty_config_gets_every_default():
    cfg = {}
    validate_config(cfg, SCHEMA)
    assert cfg["kmers"]["k_max"] == 6 and cfg["npmi"]["min_count"] == 10
    assert set(cfg["models"]) == {"dnabert", "genemask"}


@pytest.mark.parametrize(
    "mutate,key,words",
    [
        (lambda c: c["kmers"].update(k_max="six"), "kmers.k_max", "not of type 'integer'"),
        (lambda c: c["kmers"].update(k_max=13), "kmers.k_max", "maximum"),
        (lambda c: c["models"].update(foo={"preset": "gpt"}), "models.foo.preset", "unknown model preset 'gpt'"),
        (lambda c: c["models"]["dnabert"].update(architecture="gpt"), "models.dnabert.architecture", "'gpt' is not one of"),
        (lambda c: c["models"]["dnabert"].update(size={"layers": "two"}), "models.dnabert.size.layers", "not of type"),
        (lambda c: c["evaluation"]["fewshot"].update(shots=10), "evaluation.fewshot.shots", "not of type 'array'"),
        (lambda c: c["evaluation"]["fewshot"].update(n_repeat=3), "evaluation.fewshot", "n_repeat"),
        (lambda c: c.update(report={"models": ["nope"]}), "report.models", "unknown model name 'nope'"),
        (lambda c: c["models"].update(kmer={"preset": "dnabert"}), "models.kmer", "reserved"),
        (lambda c: c["models"].update(align={"preset": "dnabert"}), "models.align", "reserved for the alignment baseline"),
        (lambda c: c["models"].update({"bad name": {"preset": "dnabert"}}), "models", "does not match"),
    ],
)
def test_bad_config_names_the_key(demo, mutate, key, words):
    mutate(demo)
    with pytest.raises(ConfigError) as err:
        validate_config(demo, SCHEMA)
    msg = str(err.value)
    assert f"'{key}'" in msg and words in msg, msg


def test_resolve_model_layers_defaults_preset_entry(demo):
    demo["models"]["custom"] = {"preset": "genemask", "steps": 7, "masking_params": {"span": 9}}
    validate_config(demo, SCHEMA)
    r = resolve_model(demo, "custom")
    assert r["steps"] == 7  # entry wins
    assert r["masking_params"] == {"center_prob": 0.0176, "span": 9, "keep_fraction": 0.5, "min_keep": 5}
    assert r["size"] == demo["training"]["size"]  # training defaults
    assert r["seed"] == demo["seed"]
    assert "corpus" not in train_settings(r) and "preset" not in train_settings(r)
    for name, preset in PRESETS.items():
        assert {"architecture", "masking", "tokenization", "k", "corpus"} <= set(preset), name


def test_model_without_preset_must_be_explicit(demo):
    demo["models"]["bare"] = {"steps": 3}
    validate_config(demo, SCHEMA)
    with pytest.raises(ConfigError, match="models.bare.architecture"):
        resolve_model(demo, "bare")


def test_resolved_settings_are_accepted_by_trainconfig(demo):
    from dnalm import train

    validate_config(demo, SCHEMA)
    for name in demo["models"]:
        settings = train_settings(resolve_model(demo, name))
        settings.pop("threads", None)
        settings.pop("gpus", None)
        train.TrainConfig.from_dict(settings)


def test_every_preset_and_loop_option_resolves_to_a_train_config(demo):
    from dnalm import train

    demo["models"] = {name: {"preset": name} for name in PRESETS}
    demo["models"]["custom"] = {
        "architecture": "mae", "masking": "genemask", "tokenization": "overlapping", "k": 4, "corpus": "genome",
        "packing": False, "prefetch": 0, "grad_accum": 2, "gpus": 2, "threads": 4,
    }  # fmt: skip
    validate_config(demo, SCHEMA)
    for name in demo["models"]:
        cfg = train.TrainConfig.from_dict(train_settings(resolve_model(demo, name)))
        assert cfg.lr == demo["training"]["lr"] and cfg.size == demo["training"]["size"]
    custom = train.TrainConfig.from_dict(train_settings(resolve_model(demo, "custom")))
    assert (custom.packing, custom.prefetch, custom.grad_accum, custom.k) == (False, 0, 2, 4)
    assert resolve_model(demo, "barcodemae")["masking_params"] == {"mask_ratio": 0.5}
    demo["models"]["custom"]["prefetch"] = -1
    with pytest.raises(ConfigError, match="models.custom.prefetch"):
        validate_config(demo, SCHEMA)


# --------------------------------------------------------------------------- config-time checks


def _table():
    """A tiny barcode table: 2 genera x 4 species x 3 specimens, distinct barcodes."""
    rows = []
    for g in range(2):
        for s in range(4):
            for i in range(3):
                rows.append({"processid": f"P{g}{s}{i}", "genus": f"G{g}", "species": f"G{g} s{s}",
                             "dna_barcode": "ACGT" * 5 + "ACGT"[g] + "ACGT"[s] + "ACGT"[i]})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    "which,fractions,key,words",
    [
        ("seen", {"train": 0.8, "val": 0.2}, "seen", "'test' is a required property"),
        ("seen", {"val": 0.5, "test": 0.5}, "seen", "'train' is a required property"),
        ("seen", {"train": 0.8, "test": 0}, "seen.test", "less than or equal to the minimum of 0"),
        ("unseen", {"val_unseen": 0.5, "test_unseen": 0.5}, "unseen", "'key_unseen' is a required property"),
        ("unseen", {"key_unseen": 1.0}, "unseen", "'test_unseen' is a required property"),
    ],
)
def test_split_fractions_without_a_required_split_fail_at_config_time(demo, which, fractions, key, words):
    from dnalm import barcodes

    demo.setdefault("data", {}).setdefault("barcodes", {})["splits"] = {which: fractions}
    with pytest.raises(ConfigError) as err:
        validate_config(demo, SCHEMA)
    msg = str(err.value)
    assert f"config key 'data.barcodes.splits.{key}'" in msg and words in msg, msg
    # the schema rejects exactly what the split builder (prepare_barcodes) would reject later
    with pytest.raises(ValueError, match="needs a fraction > 0"):
        barcodes.build_splits(_table(), seed=0, **{which: fractions})


def test_split_fractions_with_the_required_splits_are_valid(demo):
    from dnalm import barcodes

    splits = {"seen": {"train": 0.7, "test": 0.3}, "unseen": {"key_unseen": 0.5, "test_unseen": 0.5, "pretrain": 0.1}}
    demo.setdefault("data", {}).setdefault("barcodes", {})["splits"] = copy.deepcopy(splits)
    validate_config(demo, SCHEMA)
    assert demo["data"]["barcodes"]["splits"]["seen"] == splits["seen"]  # not mixed with the default
    split, _ = barcodes.build_splits(_table(), seed=0, unseen_fraction=0.5, **splits)
    assert {"train", "test"} <= set(split) and not {"val", "val_unseen"} & set(split)


@pytest.mark.parametrize(
    "training,model,key",
    [
        ({"device": "cuda", "gpus": 0}, {}, "training.device"),
        ({"device": "cuda"}, {}, "training.device"),  # gpus defaults to 0
        ({"device": "auto", "gpus": 0}, {"device": "cuda"}, "models.dnabert.device"),
        ({"device": "cuda", "gpus": 1}, {"gpus": 0}, "training.device"),
    ],
)
def test_cuda_without_gpus_fails_at_config_time(demo, training, model, key):
    demo["training"].pop("gpus", None)
    demo["training"].update(training)
    demo["models"]["dnabert"].update(model)
    validate_config(demo, SCHEMA)  # the schema alone cannot see the combination
    with pytest.raises(ConfigError) as err:
        resolve_model(demo, "dnabert")
    msg = str(err.value)
    assert msg.startswith(f"config key '{key}'") and "needs a GPU" in msg and "'dnabert'" in msg, msg
    gpus_key = "models.dnabert.gpus" if "gpus" in model else "training.gpus"
    assert f"'{gpus_key}' is 0" in msg, msg
    if model:  # the clash is in dnabert's entry only: genemask (training defaults) resolves
        assert resolve_model(demo, "genemask")["device"] == training["device"]
    else:
        with pytest.raises(ConfigError, match="'genemask' needs a GPU"):
            resolve_model(demo, "genemask")


def test_cuda_with_gpus_and_cpu_without_gpus_resolve(demo):
    demo["training"].update(device="cuda", gpus=1)
    demo["models"]["dnabert"].update(device="cpu", gpus=0)
    validate_config(demo, SCHEMA)
    assert resolve_model(demo, "genemask")["device"] == "cuda" and resolve_model(demo, "genemask")["gpus"] == 1
    assert resolve_model(demo, "dnabert")["device"] == "cpu"
    full = yaml.safe_load((ROOT / "config" / "full.yaml").read_text())
    merged = copy.deepcopy(demo)
    merged.update({k: v for k, v in full.items() if k not in ("data", "npmi")})
    validate_config(merged, SCHEMA)
    assert all(resolve_model(merged, m)["device"] == "cuda" for m in merged["models"])  # full.yaml: gpus 1


@pytest.mark.parametrize(
    "overlay,key",
    [
        (yaml.safe_dump({"training": {"device": "cuda", "gpus": 0}}), "training.device"),
        ("training:\n  lr: 1e-3\n", "training.lr"),  # YAML text, as a user writes it
        (yaml.safe_dump({"evaluation": {"fewshot": {"shots": [10, 700]}}}), "evaluation.fewshot.shots"),
        (yaml.safe_dump({"npmi": {"motif_k": 8}}), "npmi.motif_k"),
        (yaml.safe_dump({"npmi": {"motifs": "no/such/motifs.tsv"}}), "npmi.motifs"),
    ],
    ids=["cuda-without-gpus", "lr-1e-3", "shots-over-pool", "motif-k", "missing-motifs"],
)
def test_workflow_rejects_bad_config_before_any_job(tmp_path, overlay, key):
    import os
    import subprocess
    import sys

    (tmp_path / "bad.yaml").write_text(overlay)
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        [snakemake, "-n", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(ROOT / "config" / "config.yaml"), str(tmp_path / "bad.yaml")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"Invalid configuration: config key '{key}'" in out, out[-3000:]
    assert "Building DAG of jobs" not in out and not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- checks across keys (issue 12)


def _plan(cfg):
    """Validate, plan the data and check the inputs, as rules/common.smk does."""
    from dnalm import simulate, sources
    from dnalm.input_checks import check_inputs

    validate_config(cfg, SCHEMA)
    plan = sources.plan(cfg, simulate.DEFAULT_GENOME, simulate.DEFAULT_BARCODES)
    for name in cfg["models"]:
        resolve_model(cfg, name)
    check_inputs(cfg, plan, simulate.DEFAULT_GENOME, simulate.DEFAULT_BARCODES)
    return plan


def _raises(cfg, key, *words, check=_plan):
    with pytest.raises(ConfigError) as err:
        check(cfg)
    msg = str(err.value)
    assert msg.startswith(f"config key '{key}'") and all(w in msg for w in words), msg
    return msg


def test_demo_and_full_configs_pass_every_check(demo):
    _plan(demo)
    full = yaml.safe_load((ROOT / "config" / "full.yaml").read_text())
    validate_config(full, SCHEMA)
    for name in full["models"]:
        resolve_model(full, name)


def test_genome_window_lengths_must_be_ordered(demo):
    demo["corpus"]["genome"].update(min_len=600, max_len=511)
    _raises(demo, "corpus.genome.min_len", "600", "corpus.genome.max_len (511)")
    demo["corpus"]["genome"].update(min_len=511)
    _plan(demo)  # equal lengths are fine


def test_motif_k_must_not_exceed_k_max(demo):
    demo["npmi"]["motif_k"] = 8
    _raises(demo, "npmi.motif_k", "kmers.k_max (6)", "no 8-mers")
    demo["kmers"]["k_max"] = 8
    _plan(demo)


@pytest.mark.parametrize(
    "where,size,key",
    [
        ("training", {"hidden": 64, "heads": 3}, "training.size"),
        ("model", {"hidden": 100, "heads": 8}, "models.dnabert.size"),
        ("model", {"heads": 5}, "models.dnabert.size"),  # hidden 64 from training.size
    ],
)
def test_hidden_must_be_a_multiple_of_heads(demo, where, size, key):
    if where == "training":
        demo["training"]["size"].update(size)
    else:
        demo["models"]["dnabert"]["size"] = size
    msg = _raises(demo, key, "is not a multiple of heads", "'dnabert'")
    hidden = {**demo["training"]["size"], **size}["hidden"]
    heads = {**demo["training"]["size"], **size}["heads"]
    assert f"hidden {hidden} is not a multiple of heads {heads}" in msg


def test_decoder_size_is_checked_for_the_autoencoder_only(demo):
    demo["training"]["decoder_size"]["heads"] = 3  # 64 / 3
    del demo["models"]["barcodemae"]
    _plan(demo)  # MLM models have no decoder
    demo["models"]["mae"] = {"preset": "barcodemae"}
    _raises(demo, "training.decoder_size", "hidden 64 is not a multiple of heads 3", "'mae'")
    demo["models"]["mae"]["decoder_size"] = {"heads": 4}
    _plan(demo)


def test_size_without_heads_fails_at_config_time(demo):
    del demo["training"]["size"]
    demo["models"]["dnabert"]["size"] = {"layers": 2, "hidden": 64}
    _raises(demo, "models.dnabert.size", "lacks ['heads']")


def test_genemask_token_k_must_be_counted(demo):
    demo["models"]["g8"] = {"preset": "genemask", "k": 7}
    _raises(demo, "models.g8.k", "7-mer tokens", "kmers.k_max is 6")
    demo["models"]["g8"]["masking"] = "random"  # random masking needs no NPMI table
    _plan(demo)


@pytest.mark.parametrize(
    "text,key,spelled",
    [
        ("training:\n  lr: 1e-3\n", "training.lr", "1.0e-3"),
        ("models:\n  dnabert: {preset: dnabert, lr: 5E-4}\n", "models.dnabert.lr", "5.0e-4"),
        ("evaluation:\n  fewshot:\n    finetune_settings: {lr: 2.5e5}\n", "evaluation.fewshot.finetune_settings.lr", "2.5e+5"),
        ("corpus:\n  genome: {n_windows: 4e3}\n", "corpus.genome.n_windows", "4000"),
        ("kmers:\n  k_max: '6'\n", "kmers.k_max", "6"),
        ("evaluation:\n  fewshot:\n    shots: [10, 1e2]\n", "evaluation.fewshot.shots.1", "100"),
    ],
)
def test_numbers_yaml_reads_as_text_get_their_yaml_spelling(demo, text, key, spelled):
    overlay = yaml.safe_load(text)

    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    cfg = merge(demo, overlay)
    why = {"6": "without quotes", "4000": "an integer written out", "100": "an integer written out"}.get(
        spelled, "YAML needs a decimal point and a signed exponent"
    )
    _raises(cfg, key, f"write {spelled} ({why}", "as text, not a number")
    assert yaml.safe_load(f"x: {spelled}")["x"] == float(spelled)  # the advice is right


def _number_keys(schema, node, path):
    """(dotted key path, integer only) of every number-typed key of the schema."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    for sub in node.get("allOf", []):
        yield from _number_keys(schema, sub, path)
    types = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
    if {"number", "integer"} & set(types):
        yield path, "number" not in types
    for name, sub in node.get("properties", {}).items():
        if isinstance(sub, dict):
            yield from _number_keys(schema, sub, [*path, name])
    if isinstance(node.get("additionalProperties"), dict):
        placeholder = {"models": "dnabert", "shots_scale": "prom", "seen": "val", "unseen": "val_unseen"}
        yield from _number_keys(schema, node["additionalProperties"], [*path, placeholder.get(path[-1], "x")])
    if isinstance(node.get("items"), dict):
        yield from _number_keys(schema, node["items"], [*path, 0])


def test_every_number_key_explains_yaml_exponents(demo):
    schema = yaml.safe_load(SCHEMA.read_text())
    keys = sorted({(tuple(map(str, p)), i) for p, i in _number_keys(schema, schema, [])})
    assert len(keys) > 40 and (("training", "lr"), False) in keys and (("kmers", "k_max"), True) in keys
    validate_config(demo, SCHEMA)  # every default filled in: only the one key is wrong below
    for path, integer in keys:
        cfg = copy.deepcopy(demo)
        node = cfg
        for i, part in enumerate(path[:-1]):
            nxt = path[i + 1]
            if nxt == "0":
                node[part] = ["1e3" if integer else "1e-3"]
                break
            node = node.setdefault(part, {}) if isinstance(node.get(part), dict) or part not in node else node[part]
        else:
            node[path[-1]] = "1e3" if integer else "1e-3"
        key = ".".join(path)
        with pytest.raises(ConfigError) as err:
            validate_config(cfg, SCHEMA)
        msg = str(err.value)
        assert f"config key '{key}'" in msg and ("write 1000 " if integer else "write 1.0e-3 ") in msg, (key, msg)


def test_simulation_overrides_must_be_numbers(demo):
    demo["data"]["genome"]["simulate"] = {"gc": "4e-1"}
    _raises(demo, "data.genome.simulate.gc", "write 4.0e-1 ")
    demo["data"]["genome"]["simulate"] = {"contig_lengths": [300000, "2e5"]}
    _raises(demo, "data.genome.simulate.contig_lengths.1", "write 200000 ")
    demo["data"]["genome"]["simulate"] = {}
    demo["data"]["barcodes"]["simulate"] = {"split_seen": {"val": "5e-2"}}
    _raises(demo, "data.barcodes.simulate.split_seen.val", "write 5.0e-2 ")


@pytest.mark.parametrize(
    "simulate,key,value",
    [
        ({}, "evaluation.taxonomy.closed_test", "validation"),
        ({"unseen_fraction": 0}, "evaluation.taxonomy.open_query", "test_unseen"),
        ({"split_seen": {"val": 0}}, "embedding.barcode_splits", ["train", "val"]),
        ({}, "evaluation.clustering.split", "other_heldout"),
        ({"split_seen": {"pretrain": 0}, "split_unseen": {"pretrain": 0}}, "corpus.barcodes.splits", ["pretrain"]),
        ({}, "report.embedding_map.split", "key"),
    ],
)
def test_split_names_the_simulated_barcodes_cannot_have(demo, simulate, key, value):
    demo["data"]["barcodes"]["simulate"] = simulate
    *parents, last = key.split(".")
    node = demo
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    bad = value if isinstance(value, str) else value[-1]
    msg = _raises(demo, key, f"split {bad!r} cannot occur in the simulated barcodes")
    assert "'train'" in msg  # the possible names are listed


def test_split_names_of_a_real_table(demo, tmp_path):
    table = tmp_path / "bold.tsv"
    table.write_text("processid\tnucleotides\n")
    demo["data"]["barcodes"] = {"path": str(table)}
    demo["evaluation"]["clustering"]["split"] = "val"
    _plan(demo)  # a BIOSCAN-5M split name: the table may have it
    demo["evaluation"]["clustering"]["split"] = "validation"
    _raises(demo, "evaluation.clustering.split", "split 'validation' cannot occur in a barcode table")
    # splits rebuilt without a val share: 'val' cannot occur
    demo["evaluation"]["clustering"]["split"] = "val"
    demo["data"]["barcodes"]["splits"] = {"rebuild": True, "seen": {"train": 0.8, "test": 0.2}}
    _raises(demo, "evaluation.clustering.split", "split 'val' cannot occur in the splits built")
    demo["data"]["barcodes"]["splits"]["seen"]["val"] = 0.1
    _plan(demo)


def test_shots_larger_than_the_simulated_pool(demo):
    demo["evaluation"]["fewshot"]["shots"] = [10, 500, 700]
    msg = _raises(demo, "evaluation.fewshot.shots", "K = [700]", "'prom'", "only 600 examples per class")
    assert "[10, 500]" in msg and "data.genome.simulate.train_per_class" in msg
    demo["data"]["genome"]["simulate"] = {"train_per_class": 700}
    _plan(demo)
    demo["evaluation"]["fewshot"]["shots_scale"] = {"splice": 2}
    _raises(demo, "evaluation.fewshot.shots", "'splice'", "x shots_scale 2")


def _task_file(path, labels, quote=False):
    """A plain task file (sequence, label), fields quoted as GeneMask's are if ``quote``."""
    q = '"' if quote else ""
    rows = [f"{q}ACGTACGT{'ACGT'[i % 4]}{q}\t{q}{label}{q}" for i, label in enumerate(labels)]
    path.write_text("\n".join([f"{q}sequence{q}\t{q}label{q}", *rows]) + "\n")
    return str(path)


def test_shots_larger_than_a_real_task_pool(demo, tmp_path):
    demo["data"]["genome"] = {"path": _fasta(tmp_path)}
    demo["npmi"]["motifs"] = "jaspar"
    train = _task_file(tmp_path / "train.tsv", ["a"] * 5 + ["b"] * 3, quote=True)
    test = _task_file(tmp_path / "test.tsv", ["a", "b"])
    demo["data"]["tasks"] = {"t": {"train": {"path": train}, "test": {"path": test}}}
    demo["evaluation"]["fewshot"].update(tasks=["t"], shots=[2, 3, 4, 8])
    msg = _raises(demo, "evaluation.fewshot.shots", "K = [4, 8]", "task 't'", "only 3 examples of class 'b'", train)
    assert "[2, 3]" in msg and "data.tasks.t.train" in msg
    demo["evaluation"]["fewshot"]["shots"] = [1, 3]
    _plan(demo)
    demo["evaluation"]["fewshot"]["shots_scale"] = {"t": 2}
    _raises(demo, "evaluation.fewshot.shots", "K = [3]", "x shots_scale 2: [6]")


def test_a_real_task_with_one_class(demo, tmp_path):
    demo["data"]["genome"] = {"path": _fasta(tmp_path)}
    demo["npmi"]["motifs"] = "jaspar"
    train = _task_file(tmp_path / "train.tsv", ["1"] * 6)
    demo["data"]["tasks"] = {"one": {"train": {"path": train}, "test": {"path": train}}}
    demo["evaluation"]["fewshot"].update(tasks=["one"], shots=[2])
    _raises(demo, "data.tasks.one.train", "task 'one' has 1 class (only '1')", "at least two classes")


def test_a_downloaded_task_is_checked_from_its_prepared_table(demo, tmp_path):
    """Before the download nothing can be counted; once the converted table exists, it is."""
    from dnalm import simulate, sources
    from dnalm.input_checks import check_inputs

    demo["data"]["genome"] = {"path": _fasta(tmp_path)}
    demo["npmi"]["motifs"] = "jaspar"
    demo["data"]["tasks"] = {"d": {"train": {"url": "https://example.org/t.tsv"}, "test": {"url": "https://example.org/u.tsv"}}}
    demo["evaluation"]["fewshot"].update(tasks=["d"], shots=[4])
    validate_config(demo, SCHEMA)
    plan = sources.plan(demo, simulate.DEFAULT_GENOME, simulate.DEFAULT_BARCODES)
    prepared = tmp_path / "prepared" / "d-train.tsv"
    check_inputs(demo, plan, simulate.DEFAULT_GENOME, simulate.DEFAULT_BARCODES, prepared_task=lambda t: str(prepared))
    prepared.parent.mkdir()
    prepared.write_text("id\tsequence\tlabel\n" + "".join(f"r{i}\tACGT\t{i % 2}\n" for i in range(6)))
    with pytest.raises(ConfigError, match=r"'evaluation.fewshot.shots': K = \[4\].*only 3 examples of class '0'"):
        check_inputs(demo, plan, simulate.DEFAULT_GENOME, simulate.DEFAULT_BARCODES, prepared_task=lambda t: str(prepared))


def _fasta(tmp_path):
    path = tmp_path / "genome.fa"
    path.write_text(">chr1\nACGTACGTAC\n")
    return str(path)


@pytest.mark.parametrize(
    "key,value",
    [
        ("data.genome.path", "missing.fa"),
        ("data.barcodes.path", "missing.tsv"),
        ("npmi.motifs", "missing-motifs.tsv"),
        ("data.tasks.t.train.path", "missing-train.tsv"),
        ("data.tasks.t.test.path", "missing-test.tsv"),
    ],
)
def test_missing_local_files_name_the_key(demo, tmp_path, monkeypatch, key, value):
    """Real inputs read from local paths (relative: the working directory) must exist."""
    monkeypatch.chdir(tmp_path)
    train = _task_file(tmp_path / "train.tsv", ["a", "b"] * 10)
    demo["data"]["genome"] = {"path": _fasta(tmp_path)}
    demo["data"]["tasks"] = {"t": {"train": {"path": train}, "test": {"path": train}}}
    demo["evaluation"]["fewshot"].update(tasks=["t"], shots=[10])
    demo["npmi"]["motifs"] = "jaspar"
    _plan(demo)  # every file there
    *parents, last = key.split(".")
    node = demo
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    _raises(demo, key, f"file {value!r} does not exist", str(tmp_path))
    (tmp_path / value).write_text((tmp_path / "train.tsv").read_text() if "train" in value else ">x\nACGT\n")
    if key != "npmi.motifs":  # (a motif file's content is read by its job)
        _plan(demo)


def test_planted_motifs_need_the_simulated_genome(demo, tmp_path):
    demo["data"]["genome"] = {"path": _fasta(tmp_path)}
    demo["evaluation"]["fewshot"]["tasks"] = ["t"]
    train = _task_file(tmp_path / "train.tsv", ["a", "b"] * 10)
    demo["data"]["tasks"] = {"t": {"train": {"path": train}, "test": {"path": train}}}
    demo["evaluation"]["fewshot"]["shots"] = [10]
    _raises(demo, "npmi.motifs", "'planted' needs the simulated genome")


# --------------------------------------------------------------------------- untrained controls, eval_every


def test_control_names_are_reserved_and_listed(demo):
    from dnalm.config import control_models, control_name, control_of

    demo["models"]["dnabert@init"] = {"preset": "dnabert"}
    _raises(demo, "models.dnabert@init", "reserved for the untrained control of model 'dnabert'", check=_plan)
    del demo["models"]["dnabert@init"]
    validate_config(demo, SCHEMA)
    assert demo["evaluation"]["controls"] is True
    assert control_models(demo, ["dnabert", "genemask"]) == ["dnabert@init", "genemask@init"]
    assert control_name("x") == "x@init" and control_of("x@init") == "x"
    assert control_of("x") is None and control_of("@init") is None
    demo["evaluation"]["controls"] = False
    assert control_models(demo, ["dnabert"]) == []


def test_report_models_may_name_controls(demo):
    demo["report"] = {"models": ["dnabert", "dnabert@init", "kmer", "align"]}
    _plan(copy.deepcopy(demo))
    off = copy.deepcopy(demo)
    off["evaluation"]["controls"] = False
    _raises(off, "report.models", "'dnabert@init' is the untrained control", "evaluation.controls is false")
    demo["report"]["models"] = ["nothere@init"]
    _raises(demo, "report.models", "unknown model name 'nothere@init'")


@pytest.mark.parametrize(
    "training,model,key,words",
    [
        ({"eval_every": 25}, {}, "training.eval_every", ["eval_every 25 of model 'dnabert'", "log_every 10",
                                                         "'training.log_every'", "20 or 30"]),
        ({}, {"eval_every": 7}, "models.dnabert.eval_every", ["eval_every 7", "use e.g. 10"]),
        ({"eval_every": 20}, {"log_every": 15}, "training.eval_every", ["log_every 15", "'models.dnabert.log_every'"]),
    ],
)
def test_eval_every_must_be_a_multiple_of_log_every(demo, training, model, key, words):
    demo["training"].update(training)
    demo["models"]["dnabert"].update(model)
    _raises(demo, key, *words)


@pytest.mark.parametrize(
    "training,model,key,words",
    [
        ({"max_position": 100}, {"max_tokens": 128}, "training.max_position",
         ["max_position 100 of model 'dnabert'", "max_tokens 128 ('models.dnabert.max_tokens')", "at least 128"]),
        ({}, {"max_position": 64}, "models.dnabert.max_position", ["max_position 64", "at least"]),
        ({}, {"architecture": "clm", "masking": "genemask"}, "models.dnabert.masking",
         ["causal model", "masking 'genemask' does not apply"]),
        ({}, {"preset": "barcodegpt", "masking": "genemask"}, "models.dnabert.masking", ["architecture clm"]),
    ],
)
def test_window_longer_than_positions_and_masked_causal_model_refused_at_config_time(demo, training, model, key, words):
    demo["training"].update(training)
    demo["models"]["dnabert"].update(model)
    _raises(demo, key, *words)


def test_causal_preset_keeps_random_masking_over_a_genemask_training_default(demo):
    demo["training"].update(masking="genemask")
    demo["models"]["dnabert"] = {"preset": "barcodegpt"}
    _plan(demo)
    assert resolve_model(demo, "dnabert")["masking"] == "random"


def test_eval_every_multiples_and_zero_resolve(demo):
    demo["training"].update(eval_every=30)
    demo["models"]["dnabert"].update(eval_every=0)
    _plan(demo)
    assert resolve_model(demo, "genemask")["eval_every"] == 30
