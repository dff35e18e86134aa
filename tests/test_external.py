"""Tests of dnalm.external: published checkpoints as `models:` entries (evaluation only).

Small checkpoints are built offline with save_pretrained in several shapes: a BERT with a
DNABERT-style k-mer vocab.txt, a BERT with a BPE tokenizer trained by `tokenizers` on the
simulated demo genome, a causal Llama with a character tokenizer, and a masked-LM checkpoint
whose custom code (auto_map) needs trust_remote_code. Each embedding is checked against a
direct `transformers` forward pass with the same tokenization and pooling.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dnalm import embed, external, finetune
from dnalm import seq as dseq
from dnalm.config import ConfigError, resolve_model, validate_config
from dnalm.io import InputError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


def _random_sequences(rng, n, min_len=0, max_len=80):
    """ACGT with some N, lowercase runs and gaps (cleaned the same way by every path)."""
    seqs = []
    for _ in range(n):
        s = "".join(rng.choice(list("ACGT"), size=int(rng.integers(min_len, max_len + 1))))
        if len(s) > 4 and rng.random() < 0.3:
            pos = int(rng.integers(0, len(s)))
            s = s[:pos] + "N" + s[pos + 1 :]
        if len(s) > 6 and rng.random() < 0.3:
            s = s[:3] + s[3:6].lower() + s[6:]
        if rng.random() < 0.2:
            s = s[:2] + "-" + s[2:]
        seqs.append(s)
    return seqs


def _fetch(tmp_path, name, entry):
    """Resolve an entry as the config does and run the fetch job's function: the manifest folder."""
    out = tmp_path / "models" / name
    external.fetch(name, external.resolve_entry(name, entry), out)
    return out


def _pool(hidden: np.ndarray, ids: list[int], special: set[int], pooling: str) -> np.ndarray:
    """Reference pooling of one window's hidden states (L, H), written out by hand."""
    keep = np.array([i not in special for i in ids])
    if pooling == "cls":
        return hidden[0]
    if not keep.any():
        keep[:] = True
    if pooling == "last":
        return hidden[np.flatnonzero(keep)[-1]]
    return hidden[keep].mean(0)


# ----------------------------------------------------------------------------------------
# (a) DNABERT style: BERT + vocab.txt of 6-mers, space-separated overlapping 6-mers
# ----------------------------------------------------------------------------------------

K6 = 6


@pytest.fixture(scope="module")
def dnabert_dir(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    directory = tmp_path_factory.mktemp("dnabert")
    kmers = ["".join(p) for p in itertools.product("ACGT", repeat=K6)]
    np.random.default_rng(3).shuffle(kmers)  # not dnalm's lexicographic layout: ids must come from vocab.txt
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + kmers) + "\n")
    BertTokenizerFast(vocab=str(directory / "vocab.txt"), do_lower_case=False).save_pretrained(str(directory))
    (directory / "tokenizer.json").unlink()  # as DNABERT's hub folder: vocab.txt and tokenizer_config.json
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(kmers) + 5, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128)
    BertForMaskedLM(config).save_pretrained(str(directory))
    return directory


def _dnabert_reference(directory, seqs, pooling):
    """Direct transformers: DNABERT's documented input (overlapping 6-mers, space-separated)."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModel.from_pretrained(str(directory)).eval()
    out = []
    for s in seqs:
        s = s.replace("-", "").upper()
        text = " ".join(s[i : i + K6] for i in range(len(s) - K6 + 1))
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0].numpy()
        out.append(_pool(h, enc["input_ids"][0].tolist(), set(tok.all_special_ids), pooling))
    return np.stack(out)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_dnabert_style_kmer_model_equals_a_direct_forward(tmp_path, dnabert_dir, pooling):
    entry = {"pretrained": str(dnabert_dir), "tokenizer": "kmer", "k": K6, "tokenization": "overlapping",
             "pooling": pooling}
    manifest_dir = _fetch(tmp_path, "dnabert6", entry)
    meta = json.loads((manifest_dir / "dnalm.json").read_text())
    assert meta["max_tokens"] == 128 and meta["special_tokens"] == 2 and meta["model_class"] == "AutoModel"
    assert meta["provenance"].startswith(f"external: {dnabert_dir} (folder sha256 ")
    seqs = _random_sequences(np.random.default_rng(1), 25, max_len=120)  # <= 117 k-mers: one window each
    model, feeder, meta = external.load(manifest_dir, device="cpu")
    got = external.embed_sequences(model, feeder, seqs, pooling=meta["pooling"], batch_size=4, progress=False)
    np.testing.assert_allclose(got, _dnabert_reference(dnabert_dir, seqs, pooling), atol=1e-5)


def test_long_sequences_are_windowed_in_the_tokenizers_special_tokens(tmp_path, dnabert_dir):
    """max_tokens 20: windows of 18 k-mers, each [CLS] ... [SEP]; the mean runs over the
    k-mer tokens of all windows of a sequence."""
    from transformers import AutoModel, AutoTokenizer

    entry = {"pretrained": str(dnabert_dir), "tokenizer": "kmer", "k": K6, "tokenization": "overlapping",
             "max_tokens": 20}
    model, feeder, _ = external.load(_fetch(tmp_path, "short", entry), device="cpu")
    seqs = _random_sequences(np.random.default_rng(2), 12, min_len=30, max_len=90)
    got = external.embed_sequences(model, feeder, seqs, batch_size=5, progress=False)

    tok = AutoTokenizer.from_pretrained(str(dnabert_dir))
    ref_model = AutoModel.from_pretrained(str(dnabert_dir)).eval()
    special = set(tok.all_special_ids)
    for s, g in zip(seqs, got):
        s = s.replace("-", "").upper()
        body = tok(" ".join(s[i : i + K6] for i in range(len(s) - K6 + 1)), add_special_tokens=False)["input_ids"]
        kept = []
        for lo in range(0, len(body), 18):
            ids = [tok.cls_token_id] + body[lo : lo + 18] + [tok.sep_token_id]
            with torch.no_grad():
                h = ref_model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
            kept += [h[j] for j, i in enumerate(ids) if i not in special]
        np.testing.assert_allclose(g, np.mean(kept, axis=0), atol=1e-5)
    assert max(len(w) for ws in feeder.windows(seqs) for w in ws) == 20


def test_project_model_read_as_external_equals_its_own_embedding(tmp_path):
    """A model saved the project's way (dnalm vocabulary, BertTokenizerFast) gives the same
    embeddings through its tokenizer (tokenizer: kmer) as through dnalm.embed's fast path,
    windows included."""
    from transformers import BertConfig, BertModel

    k, directory = 3, tmp_path / "own"
    torch.manual_seed(1)
    BertModel(BertConfig(vocab_size=dseq.vocab_size(k), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(str(directory))
    dseq.save_tokenizer(directory, k, model_max_length=64)
    (directory / "dnalm.json").write_text(json.dumps({"k": k, "tokenization": "overlapping", "max_tokens": 12}))
    seqs = _random_sequences(np.random.default_rng(4), 30, max_len=40) + ["", "AC", "NNNNNN"]
    model, meta = embed.load_encoder(directory, device="cpu")
    own = embed.embed_sequences(model, meta, seqs, max_tokens=12, long="chunk", progress=False)
    entry = {"pretrained": str(directory), "tokenizer": "kmer", "k": k, "tokenization": "overlapping", "max_tokens": 12}
    ext_model, feeder, _ = external.load(_fetch(tmp_path, "own", entry), device="cpu")
    got = external.embed_sequences(ext_model, feeder, seqs, batch_size=7, progress=False)
    np.testing.assert_allclose(got, own, atol=1e-5)


# ----------------------------------------------------------------------------------------
# (b) BPE tokenizer trained by `tokenizers` on the simulated demo genome
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from dnalm.simulate import simulate_genome

    genome = simulate_genome({"contig_lengths": [100_000, 100_000], "train_per_class": 20, "test_per_class": 10}, 1)
    chunks = [c.upper()[i : i + 1000] for c in genome.contigs.values() for i in range(0, len(c), 1000)]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(chunks, trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False))
    bpe.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", bpe.token_to_id("[CLS]")), ("[SEP]", bpe.token_to_id("[SEP]"))]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=96)
    directory = tmp_path_factory.mktemp("bpe")
    tok.save_pretrained(str(directory))
    torch.manual_seed(2)
    BertModel(BertConfig(vocab_size=bpe.get_vocab_size(), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=128)).save_pretrained(str(directory))
    return directory


def test_bpe_model_equals_a_direct_forward(tmp_path, bpe_dir):
    from transformers import AutoModel, AutoTokenizer

    manifest_dir = _fetch(tmp_path, "bpe", {"pretrained": str(bpe_dir), "tokenizer": "auto"})
    assert json.loads((manifest_dir / "dnalm.json").read_text())["max_tokens"] == 96  # the tokenizer's limit
    seqs = _random_sequences(np.random.default_rng(5), 20, min_len=20, max_len=150)
    model, feeder, meta = external.load(manifest_dir, device="cpu")
    got = external.embed_sequences(model, feeder, seqs, pooling=meta["pooling"], batch_size=6, progress=False)

    tok = AutoTokenizer.from_pretrained(str(bpe_dir))
    ref = AutoModel.from_pretrained(str(bpe_dir)).eval()
    expected = []
    for s in seqs:
        enc = tok(s.replace("-", "").upper(), return_tensors="pt")
        assert enc["input_ids"].shape[1] <= 96  # one window each
        with torch.no_grad():
            h = ref(**enc).last_hidden_state[0].numpy()
        expected.append(_pool(h, enc["input_ids"][0].tolist(), set(tok.all_special_ids), "mean"))
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)
    # really BPE: merged tokens, fewer than bases
    assert sum(len(feeder.body_ids([s])[0]) for s in seqs) < 0.7 * sum(len(s) for s in seqs)


# ----------------------------------------------------------------------------------------
# (c) a causal model (Llama) with a character tokenizer, last-token pooling
# ----------------------------------------------------------------------------------------

CHARS = ["[PAD]", "[UNK]", "[BOS]", "A", "C", "G", "T", "N"]


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = Tokenizer(models.WordLevel({t: i for i, t in enumerate(CHARS)}, unk_token="[UNK]"))
    chars.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    chars.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 2)])
    tok = PreTrainedTokenizerFast(tokenizer_object=chars, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]")
    directory = tmp_path_factory.mktemp("causal")
    tok.save_pretrained(str(directory))
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=len(CHARS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(str(directory))
    return directory


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_causal_char_model_equals_a_direct_forward(tmp_path, causal_dir, pooling):
    from transformers import AutoModel

    entry = {"pretrained": str(causal_dir), "tokenizer": "char", "pooling": pooling}
    model, feeder, meta = external.load(_fetch(tmp_path, "gpt", entry), device="cpu")
    assert meta["max_tokens"] == 64 and type(model).__name__ == "LlamaModel"
    seqs = _random_sequences(np.random.default_rng(6), 20, min_len=1, max_len=60)
    got = external.embed_sequences(model, feeder, seqs, pooling=pooling, batch_size=4, progress=False)
    ref = AutoModel.from_pretrained(str(causal_dir)).eval()
    expected = []
    for s in seqs:
        ids = [2] + [CHARS.index(c) for c in s.replace("-", "").upper()]  # [BOS] then one id per base, by hand
        with torch.no_grad():
            h = ref(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
        expected.append(_pool(h, ids, {0, 1, 2}, pooling))
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)


def test_models_without_attention_mask_never_see_padding(dnabert_dir):
    """A forward() without attention_mask (HyenaDNA, Caduceus) gets each length separately."""
    from transformers import BertModel

    class NoMaskBert(BertModel):
        def forward(self, input_ids, output_hidden_states=None, return_dict=None):
            return super().forward(input_ids=input_ids, output_hidden_states=output_hidden_states)

    model = NoMaskBert.from_pretrained(str(dnabert_dir)).eval()
    rng = np.random.default_rng(7)
    windows = [np.concatenate([[2], rng.integers(5, 100, size=int(n)), [3]]) for n in rng.integers(0, 30, size=17)]
    owner = np.arange(len(windows))
    batched = embed.pool_windows(model, windows, owner, len(windows), batch_size=8, progress=False)
    alone = np.stack([embed.pool_windows(model, [w], np.zeros(1, int), 1, progress=False)[0] for w in windows])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


# ----------------------------------------------------------------------------------------
# (d) custom code: a masked-LM checkpoint with auto_map (as Nucleotide Transformer v2)
# ----------------------------------------------------------------------------------------


def _remote_code_dir(directory: Path) -> Path:
    """A checkpoint whose config class and masked-LM class live in the folder (auto_map
    without AutoModel), with the DNABERT-style tokenizer of ``dnabert_dir``."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    directory.mkdir(parents=True)
    kmers = ["".join(p) for p in itertools.product("ACGT", repeat=3)]
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + kmers) + "\n")
    BertTokenizerFast(vocab=str(directory / "vocab.txt"), do_lower_case=False).save_pretrained(str(directory))
    torch.manual_seed(4)
    BertForMaskedLM(BertConfig(vocab_size=69, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=40)).save_pretrained(str(directory))
    (directory / "configuration_tiny.py").write_text(
        "from transformers import BertConfig\n\n\nclass TinyConfig(BertConfig):\n    model_type = 'tiny-dna'\n"
    )
    (directory / "modeling_tiny.py").write_text(
        "from transformers import BertForMaskedLM\n\nfrom .configuration_tiny import TinyConfig\n\n\n"
        "class TinyForMaskedLM(BertForMaskedLM):\n    config_class = TinyConfig\n"
    )
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = "tiny-dna"
    config["auto_map"] = {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModelForMaskedLM": "modeling_tiny.TinyForMaskedLM"}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_custom_code_needs_trust_remote_code_and_then_uses_the_masked_lm_hidden_states(tmp_path):
    directory = _remote_code_dir(tmp_path / "remote")
    entry = {"pretrained": str(directory), "tokenizer": "kmer", "k": 3, "tokenization": "overlapping"}
    with pytest.raises(external.ExternalModelError, match=r"^models\.nt\.trust_remote_code: .*auto_map.*config\.json"):
        external.resolve_entry("nt", entry)
    # with the opt-in: in a fresh process, so the custom modules go to a temporary HF_MODULES_CACHE
    script = textwrap.dedent(f"""
        import json, sys, numpy as np, torch
        sys.path.insert(0, {str(ROOT / "scripts")!r})
        torch.set_num_threads(1)
        from transformers import AutoModelForMaskedLM, AutoTokenizer
        from dnalm import external
        entry = json.loads({json.dumps(json.dumps({**entry, "trust_remote_code": True}))})
        external.fetch("nt", external.resolve_entry("nt", entry), {str(tmp_path / "models" / "nt")!r})
        model, feeder, meta = external.load({str(tmp_path / "models" / "nt")!r}, device="cpu")
        seqs = ["ACGTTGCAAGCTTNGAACC", "GGGCCCATATAT", "ACGTACGTTTGACAGATTACAGATTACA"]
        got = external.embed_sequences(model, feeder, seqs, batch_size=2, progress=False)
        tok = AutoTokenizer.from_pretrained({str(directory)!r}, trust_remote_code=True)
        ref = AutoModelForMaskedLM.from_pretrained({str(directory)!r}, trust_remote_code=True).eval()
        worst = 0.0
        for s, g in zip(seqs, got):
            enc = tok(" ".join(s[i:i + 3] for i in range(len(s) - 2)), return_tensors="pt")
            with torch.no_grad():
                h = ref(**enc, output_hidden_states=True).hidden_states[-1][0].numpy()
            keep = [i not in set(tok.all_special_ids) for i in enc["input_ids"][0].tolist()]
            worst = max(worst, float(np.abs(h[keep].mean(0) - g).max()))
        print(json.dumps({{"worst": worst, "class": meta["model_class"], "type": type(model).__name__}}))
    """)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["class"] == "AutoModelForMaskedLM" and result["type"] == "TinyForMaskedLM"
    assert result["worst"] < 1e-5


# ----------------------------------------------------------------------------------------
# fine-tuning an external model
# ----------------------------------------------------------------------------------------


def _gc_task(rng, n_per_class, length=40):
    seqs, labels = [], []
    for label, probs in (("gc", [0.1, 0.4, 0.4, 0.1]), ("at", [0.4, 0.1, 0.1, 0.4])):
        for _ in range(n_per_class):
            seqs.append("".join(rng.choice(list("ACGT"), size=length, p=probs)))
            labels.append(label)
    return seqs, np.array(labels)


def test_fewshot_finetune_of_an_external_model_learns_with_its_pooling(tmp_path, causal_dir, monkeypatch):
    """The causal char model, pooling last: fine-tuning pools with `last` (the manifest's
    setting), learns the GC/AT task, and reruns identically."""
    manifest_dir = _fetch(tmp_path, "gpt", {"pretrained": str(causal_dir), "tokenizer": "char", "pooling": "last",
                                             "max_tokens": 24})
    rng = np.random.default_rng(8)
    train, y_train = _gc_task(rng, 30)
    test, y_test = _gc_task(rng, 20)
    poolings = []
    original = embed.window_weights
    monkeypatch.setattr(embed, "window_weights", lambda *a, **kw: poolings.append(a[2]) or original(*a, **kw))
    settings = {"lr": 5e-3, "epochs": 8, "batch_size": 8}
    runs = [finetune.fewshot_finetune(manifest_dir, train, y_train, test, y_test, shots=[10], n_repeats=1, seed=3,
                                      settings=settings, device="cpu", progress=False) for _ in range(2)]
    assert set(poolings) == {"last"}
    assert runs[0].equals(runs[1])
    acc = runs[0].query("metric == 'accuracy'")["value"].iloc[0]
    assert acc >= 0.8, runs[0]


# ----------------------------------------------------------------------------------------
# config and bad input: each a clear error naming models.<name>, nothing half-written
# ----------------------------------------------------------------------------------------


def _config(models):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["models"] = models
    return cfg


def test_external_entry_is_not_merged_with_training_defaults(dnabert_dir):
    cfg = validate_config(_config({"ext": {"pretrained": str(dnabert_dir), "tokenizer": "kmer", "k": 6,
                                           "tokenization": "overlapping"}}), SCHEMA)
    settings = resolve_model(cfg, "ext")
    assert settings["external"] and settings["source"] == "local" and settings["path"] == str(dnabert_dir)
    assert not {"steps", "lr", "architecture", "masking", "corpus", "seed"} & set(settings)
    assert settings["pooling"] == "mean" and settings["trust_remote_code"] is False


@pytest.mark.parametrize("entry,key,words", [
    ({"steps": 10}, "models.ext", ["never trained", "steps"]),
    ({"preset": "dnabert"}, "models.ext", ["preset"]),
    ({"tokenizer": "kmer", "k": 6}, "models.ext.tokenization", ["required with tokenizer: kmer"]),
    ({"k": 6}, "models.ext.k", ["tokenizer: kmer only"]),
    ({"revision": "main"}, "models.ext.revision", ["hub ids only"]),
])
def test_bad_external_entries(dnabert_dir, entry, key, words):
    cfg = _config({"ext": {"pretrained": str(dnabert_dir), **entry}})
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, SCHEMA)
        resolve_model(cfg, "ext")
    assert f"config key '{key}'" in str(err.value) and all(w in str(err.value) for w in words), err.value


def test_external_keys_on_a_trained_model_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"'models\.m'.*\['revision'\] apply to external checkpoints only"):
        validate_config(_config({"m": {"preset": "dnabert", "revision": "abc"}}), SCHEMA)


def test_folder_without_tokenizer_fails_at_config_time(tmp_path, dnabert_dir):
    folder = tmp_path / "bare"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((dnabert_dir / name).read_bytes())
    cfg = validate_config(_config({"bare": {"pretrained": str(folder)}}), SCHEMA)
    with pytest.raises(ConfigError, match=r"config key 'models\.bare\.pretrained': .*has no tokenizer"):
        resolve_model(cfg, "bare")
    cfg = validate_config(_config({"gone": {"pretrained": "./no/such/folder"}}), SCHEMA)
    with pytest.raises(ConfigError, match=r"'models\.gone\.pretrained': folder './no/such/folder' does not exist"):
        resolve_model(cfg, "gone")


def test_trust_remote_code_needed_but_not_set_fails_at_config_time(tmp_path):
    directory = _remote_code_dir(tmp_path / "remote")
    cfg = validate_config(_config({"nt": {"pretrained": str(directory)}}), SCHEMA)
    with pytest.raises(ConfigError, match=r"config key 'models\.nt\.trust_remote_code': .*trust_remote_code: true"):
        resolve_model(cfg, "nt")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty huggingface_hub cache in tmp_path and offline mode (no network here anyway)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_hub_id_without_network_says_how_to_pre_download(tmp_path, offline_hub, capsys):
    settings = external.resolve_entry("dnabert2", {"pretrained": "zhihan1996/DNABERT-2-117M", "trust_remote_code": True})
    assert "'models.dnabert2.revision' is not set" in capsys.readouterr().err
    out = tmp_path / "results" / "models" / "dnabert2"
    with pytest.raises(external.ExternalModelError) as err:
        external.fetch("dnabert2", settings, out)
    msg = str(err.value)
    assert msg.startswith("models.dnabert2.pretrained: could not fetch hub model 'zhihan1996/DNABERT-2-117M'")
    assert "hf download zhihan1996/DNABERT-2-117M --revision main" in msg and "--local-dir" in msg
    assert not out.exists() and not any(out.parent.iterdir()) if out.parent.exists() else True


def test_hub_id_resolves_from_the_cache_and_records_the_commit(tmp_path, offline_hub, dnabert_dir):
    """A snapshot already in the huggingface_hub cache (as `hf download` leaves it) is used
    offline; the manifest records the commit it resolved to."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hub / "models--org--dnabert"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in dnabert_dir.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    entry = {"pretrained": "org/dnabert", "revision": commit, "tokenizer": "kmer", "k": K6,
             "tokenization": "overlapping"}
    meta = json.loads((_fetch(tmp_path, "dnabert", entry) / "dnalm.json").read_text())
    assert meta["source"] == "hub" and meta["commit"] == commit and meta["path"] == str(snapshot.resolve())
    assert meta["provenance"] == f"external: org/dnabert@{commit}"
    # a revision that is not in the cache: the same clear error
    with pytest.raises(external.ExternalModelError, match="could not fetch hub model 'org/dnabert' at revision 'v2'"):
        external.fetch("dnabert", external.resolve_entry("dnabert", {**entry, "revision": "v2"}), tmp_path / "x")


@pytest.mark.parametrize("entry,pattern", [
    ({"tokenizer": "kmer", "k": 4, "tokenization": "overlapping"}, r"models\.m\.tokenizer: .*unknown tokens only.*another k"),
    ({"tokenizer": "auto"}, r"models\.m\.tokenizer: .*unknown tokens only.*tokenizer: kmer"),
    ({"tokenizer": "kmer", "k": 6, "tokenization": "overlapping", "max_tokens": 2}, r"models\.m\.max_tokens: 2 leaves no room"),
])
def test_tokenizer_that_does_not_read_the_dna_fails_at_fetch(tmp_path, dnabert_dir, entry, pattern):
    out = tmp_path / "models" / "m"
    settings = external.resolve_entry("m", {"pretrained": str(dnabert_dir), **entry})
    if "max_tokens" in entry:  # the schema rejects max_tokens < 3; the job checks it against the special tokens too
        settings["max_tokens"] = entry["max_tokens"]
    with pytest.raises(external.ExternalModelError, match=pattern):
        external.fetch("m", settings, out)
    assert not out.exists()


def test_manifest_whose_checkpoint_is_gone(tmp_path, dnabert_dir):
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in dnabert_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    manifest_dir = _fetch(tmp_path, "m", {"pretrained": str(copy), "tokenizer": "kmer", "k": K6,
                                          "tokenization": "overlapping"})
    for f in copy.iterdir():
        f.unlink()
    copy.rmdir()
    with pytest.raises(InputError, match=r"models\.m: checkpoint folder .* is gone"):
        external.load(manifest_dir)


# ----------------------------------------------------------------------------------------
# end to end: an external entry through fetch, embed and every evaluation (snakemake)
# ----------------------------------------------------------------------------------------


def _snakemake(workdir: Path, cfg: dict, *targets: str, env_extra=None) -> subprocess.CompletedProcess:
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", **(env_extra or {}))
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(ROOT / "Snakefile"), "--directory",
           str(workdir), "--configfile", str(workdir / "config.yaml"), "--cores", "2", *targets]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)


@pytest.mark.e2e
def test_external_model_runs_through_embed_and_the_evaluations(tmp_path, dnabert_dir):
    import pandas as pd

    cfg = _config({"ext": {"pretrained": str(dnabert_dir), "tokenizer": "kmer", "k": K6,
                           "tokenization": "overlapping", "max_tokens": 64}})
    cfg["evaluation"]["fewshot"].update(tasks=["prom"], shots=[10], n_repeats=1, max_iter=200)
    cfg["evaluation"]["clustering"].update(umap=False, max_points=300)
    targets = [f"results/{p}" for p in ("eval/fewshot/ext/prom.tsv", "eval/taxonomy/ext.tsv", "eval/bias/ext.tsv",
                                        "eval/clustering/ext.tsv", "eval/probing/ext/prom.tsv")]
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = _snakemake(tmp_path, cfg, *targets, env_extra=env)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert "rule fetch_pretrained" in proc.stdout + proc.stderr
    assert "rule pretrain" not in proc.stdout + proc.stderr and not (tmp_path / "results" / "pretrain").exists()
    meta = json.loads((tmp_path / "results/models/ext/dnalm.json").read_text())
    assert meta["provenance"].startswith(f"external: {dnabert_dir}")
    for target in targets:
        table = pd.read_csv(tmp_path / target, sep="\t")
        assert len(table) and set(table["model"]) == {"ext"}, target
    ids, vectors = embed.load_embeddings(tmp_path / "results/embeddings/ext/barcodes.npz")
    assert vectors.shape == (len(ids), 16) and np.isfinite(vectors).all()

    # a hub id with no network: the fetch job fails naming the entry, nothing is written
    cfg["models"] = {"hubm": {"pretrained": "zhihan1996/DNA_bert_6", "revision": "main", "tokenizer": "kmer", "k": 6,
                              "tokenization": "overlapping"}}
    proc = _snakemake(tmp_path, cfg, "results/models/hubm", env_extra=env)
    assert proc.returncode != 0
    assert "config key 'models.hubm.pretrained': could not fetch hub model 'zhihan1996/DNA_bert_6'" in proc.stderr
    assert "hf download zhihan1996/DNA_bert_6 --revision main" in proc.stderr
    assert not (tmp_path / "results/models/hubm").exists()

    # custom code without the opt-in: refused before any job runs
    cfg["models"] = {"nt": {"pretrained": str(_remote_code_dir(tmp_path / "remote"))}}
    proc = _snakemake(tmp_path, cfg, "results/models/nt", env_extra=env)
    assert proc.returncode != 0 and "config key 'models.nt.trust_remote_code'" in proc.stderr
    assert not (tmp_path / "results/models/nt").exists()
