"""Tests of dnalm.embed: pooled encoder embeddings, the k-mer spectrum baseline, .npz files."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from dnalm import embed
from dnalm import seq as dseq
from dnalm.io import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")

K = 3
MAX_POS = 130  # the position table: the default truncation length
MAX_TOKENS = 40  # training crop length written to dnalm.json


def _config(k):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=dseq.vocab_size(k),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_POS,
    )


def _save(model, directory, k, tokenization, max_tokens):
    model.save_pretrained(str(directory))
    (directory / "dnalm.json").write_text(json.dumps({"k": k, "tokenization": tokenization, "max_tokens": max_tokens}))
    return directory


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from transformers import BertModel

    torch.manual_seed(0)
    return _save(BertModel(_config(K)), tmp_path_factory.mktemp("enc"), K, "overlapping", MAX_TOKENS)


def _random_sequences(rng, n, max_len=90):
    seqs = []
    for _ in range(n):
        s = "".join(rng.choice(list("ACGT"), size=int(rng.integers(0, max_len))))
        if s and rng.random() < 0.3:  # some N, lowercase and gaps
            pos = int(rng.integers(0, len(s)))
            s = s[:pos] + "N" + s[pos + 1 :]
        if s and rng.random() < 0.3:
            s = s.lower()
        if rng.random() < 0.2:
            s = s[:3] + "--" + s[3:]
        seqs.append(s)
    return seqs


def _reference_embedding(bert, seq, k, tokenization, max_tokens):
    """One sequence at a time, no padding: mean over positions holding a k-mer token."""
    tok = list(dseq.tokenize(seq, k, tokenization))
    if len(tok) > max_tokens:
        tok = tok[: max_tokens - 1] + [dseq.SEP_ID]
    ids = torch.tensor([tok])
    with torch.no_grad():
        h = bert(input_ids=ids).last_hidden_state[0].numpy()
    keep = np.array([t >= dseq.N_SPECIAL for t in tok])
    if not keep.any():
        keep[:] = True
    return h[keep].mean(0)


def test_batched_bucketed_equals_one_by_one(encoder_dir):
    model, meta = embed.load_encoder(encoder_dir, device="cpu")
    assert not model.training and meta["k"] == K
    rng = np.random.default_rng(1)
    seqs = _random_sequences(rng, 30) + ["ACGTACGTAC" * 20, "AC", "NNNNNNN", ""]
    got = embed.embed_sequences(model, meta, seqs, batch_size=4, progress=False)
    assert got.dtype == np.float32 and got.shape == (len(seqs), 32)
    ref = np.stack([_reference_embedding(model, s, K, "overlapping", MAX_POS) for s in seqs])
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # order preserved: a permuted input gives permuted rows
    perm = rng.permutation(len(seqs))
    got_perm = embed.embed_sequences(model, meta, [seqs[i] for i in perm], batch_size=7, progress=False)
    np.testing.assert_allclose(got_perm, got[perm], atol=1e-5, rtol=0)


def test_pooling_excludes_special_and_unknown_tokens(encoder_dir):
    model, meta = embed.load_encoder(encoder_dir, device="cpu")
    seq = "ACGTTGCANNACGGTCA"  # the N gives [UNK] tokens
    tok = dseq.tokenize(seq, K, "overlapping")
    assert (tok == dseq.UNK_ID).sum() == 4  # windows overlapping "NN"
    with torch.no_grad():
        h = model(input_ids=torch.from_numpy(tok)[None]).last_hidden_state[0].numpy()
    got = embed.embed_sequences(model, meta, [seq, "A" * 60], batch_size=2, progress=False)[0]
    np.testing.assert_allclose(got, h[tok >= dseq.N_SPECIAL].mean(0), atol=1e-5)
    assert not np.allclose(got, h.mean(0), atol=1e-3)  # would match if specials were pooled


@pytest.mark.parametrize("limit", [MAX_POS, MAX_TOKENS])
def test_truncation(encoder_dir, limit):
    """Default: cut at the position table; with max_tokens: cut there. [SEP] is kept."""
    model, meta = embed.load_encoder(encoder_dir, device="cpu")
    kwargs = {} if limit == MAX_POS else {"max_tokens": MAX_TOKENS}
    n_bases = limit - 2 + K - 1  # limit - 2 k-mers fit: the bases after these are cut
    rng = np.random.default_rng(2)
    head = "".join(rng.choice(list("ACGT"), n_bases))
    a, b = head + "A" * 50, head + "GC" * 40
    ea, eb, eh = embed.embed_sequences(model, meta, [a, b, head], progress=False, **kwargs)
    np.testing.assert_allclose(ea, eb, atol=1e-6)
    np.testing.assert_allclose(ea, eh, atol=1e-6)
    changed = head[:-1] + ("A" if head[-1] != "A" else "C")
    ec = embed.embed_sequences(model, meta, [changed], progress=False, **kwargs)[0]
    assert not np.allclose(ea, ec, atol=1e-4)  # the last base kept does matter
    ref = _reference_embedding(model, a, K, "overlapping", limit)
    np.testing.assert_allclose(ea, ref, atol=1e-5)


def test_mlm_directory_and_non_overlapping(tmp_path):
    from transformers import BertForMaskedLM, BertModel

    torch.manual_seed(3)
    mlm = BertForMaskedLM(_config(4)).eval()
    _save(mlm, tmp_path, 4, "non-overlapping", 30)
    model, meta = embed.load_encoder(tmp_path, device="cpu")
    assert isinstance(model, BertModel)
    seqs = _random_sequences(np.random.default_rng(4), 12, max_len=600)  # some beyond 128 tokens
    got = embed.embed_sequences(model, meta, seqs, batch_size=5, progress=False)
    ref = np.stack([_reference_embedding(mlm.bert, s, 4, "non-overlapping", MAX_POS) for s in seqs])
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_load_encoder_errors(tmp_path, encoder_dir):
    from transformers import BertModel

    BertModel(_config(K)).save_pretrained(str(tmp_path))
    with pytest.raises(InputError, match="dnalm.json"):
        embed.load_encoder(tmp_path, device="cpu")
    (tmp_path / "dnalm.json").write_text(json.dumps({"k": 4, "tokenization": "overlapping", "max_tokens": 20}))
    with pytest.raises(InputError, match="vocab_size"):
        embed.load_encoder(tmp_path, device="cpu")
    (tmp_path / "dnalm.json").write_text(json.dumps({"k": K, "tokenization": "overlapping"}))
    with pytest.raises(InputError, match="max_tokens"):
        embed.load_encoder(tmp_path, device="cpu")


def test_empty_input(encoder_dir):
    model, meta = embed.load_encoder(encoder_dir, device="cpu")
    out = embed.embed_sequences(model, meta, [], progress=False)
    assert out.shape == (0, 32) and out.dtype == np.float32


def _brute_spectrum(seq, k):
    s = seq.replace("-", "").upper()
    counts = Counter(s[i : i + k] for i in range(len(s) - k + 1) if set(s[i : i + k]) <= set("ACGT"))
    row = np.zeros(4**k)
    total = sum(counts.values())
    for kmer, c in counts.items():
        row[dseq.all_kmers(k).index(kmer)] = c / total
    return row


@pytest.mark.parametrize("k", [1, 2, 4])
def test_kmer_spectrum_vs_brute_force(k):
    rng = np.random.default_rng(k)
    seqs = _random_sequences(rng, 25, max_len=60) + ["", "NNNN", "acgtNacgt", "AC-GT"]
    got = embed.kmer_spectrum(seqs, k, chunk=7)  # chunk boundaries inside the list
    assert got.dtype == np.float32 and got.shape == (len(seqs), 4**k)
    ref = np.stack([_brute_spectrum(s, k) for s in seqs])
    np.testing.assert_allclose(got, ref, atol=1e-6)
    sums = got.sum(1)
    has_kmer = ref.sum(1) > 0
    np.testing.assert_allclose(sums[has_kmer], 1.0, atol=1e-5)
    assert (sums[~has_kmer] == 0).all() and (~has_kmer).sum() >= 2


def test_save_load_roundtrip(tmp_path):
    ids = ["seq1", "BIOUG123-45", "ünïcode_ä", "x" * 40]
    emb = np.random.default_rng(0).normal(size=(4, 5))
    path = tmp_path / "sub" / "emb.npz"
    embed.save_embeddings(path, ids, emb)
    assert sorted(p.name for p in path.parent.iterdir()) == ["emb.npz"]  # no temp files left
    with np.load(path, allow_pickle=False) as data:  # no pickled objects inside
        assert data["ids"].dtype.kind == "U"
    got_ids, got = embed.load_embeddings(path)
    assert got_ids.tolist() == ids
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, emb.astype(np.float32))
    embed.save_embeddings(path, [], np.zeros((0, 5)))
    ids0, emb0 = embed.load_embeddings(path)
    assert ids0.shape == (0,) and emb0.shape == (0, 5)
    with pytest.raises(ValueError):
        embed.save_embeddings(path, ["a"], np.zeros((2, 5)))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError):
        embed.load_embeddings(tmp_path / "bad.npz")


def test_chunked_long_sequences_use_every_kmer_within_trained_positions(encoder_dir):
    """long='chunk': a sequence longer than max_tokens is split into windows of at most
    max_tokens tokens; its embedding is the mean over the k-mer tokens of all windows."""
    model, meta = embed.load_encoder(encoder_dir, device="cpu")
    rng = np.random.default_rng(5)
    limit = 12
    seqs = ["".join(rng.choice(list("ACGT"), size=n)) for n in (8, 14, 40, 61)]
    seqs.append("ACGTACGTACGTA" + "N" * 14)  # windows: 10 k-mers, 1 k-mer + 9 [UNK], 5 [UNK] only
    seqs.append("N" * 17)  # no k-mer at all: two windows of different length (10 and 5 [UNK])
    got = embed.embed_sequences(model, meta, seqs, batch_size=3, progress=False, max_tokens=limit, long="chunk")
    for s, g in zip(seqs, got):
        kmers = list(dseq.tokenize(s, K, "overlapping", add_special=False))
        kmer_states, all_states = [], []
        for i in range(0, max(len(kmers), 1), limit - 2):
            tok = [dseq.CLS_ID] + kmers[i : i + limit - 2] + [dseq.SEP_ID]
            assert len(tok) <= limit
            with torch.no_grad():
                h = model(input_ids=torch.tensor([tok])).last_hidden_state[0].numpy()
            kmer_states.append(h[np.array([t >= dseq.N_SPECIAL for t in tok])])
            all_states.append(h)
        states = np.concatenate(kmer_states)
        if len(states) == 0:  # no k-mer at all: mean over every token of every window
            states = np.concatenate(all_states)
            assert len(all_states) == 2 and len(all_states[0]) != len(all_states[1])
            assert not np.allclose(all_states[0].mean(0), states.mean(0), atol=1e-4)  # both windows matter
        np.testing.assert_allclose(g, states.mean(0), atol=1e-5)
    # truncation differs from chunking on the long sequences, agrees on the short one
    trunc = embed.embed_sequences(model, meta, seqs, progress=False, max_tokens=limit, long="truncate")
    np.testing.assert_allclose(trunc[0], got[0], atol=1e-6)
    assert not np.allclose(trunc[3], got[3], atol=1e-4)


def test_batches_are_length_bucketed(encoder_dir, monkeypatch):
    """Windows go to the model longest first, batch_size at a time: each batch holds the
    longest windows not yet embedded, so padding widths never increase."""
    model, meta = embed.load_encoder(encoder_dir, device="cpu")
    seqs = _random_sequences(np.random.default_rng(6), 23, max_len=150)  # some longer than 40 tokens
    batches = []
    original = dseq.pad_batch

    def spy(tokens):
        batches.append(sorted((len(t) for t in tokens), reverse=True))
        return original(tokens)

    monkeypatch.setattr(dseq, "pad_batch", spy)
    got = embed.embed_sequences(model, meta, seqs, batch_size=4, progress=False, max_tokens=MAX_TOKENS, long="chunk")
    monkeypatch.undo()
    # independent: the window lengths of every sequence, longest first, cut into batches of 4
    lengths = []
    for s in seqs:
        n_tok = len(dseq.tokenize(s, K, "overlapping"))
        if n_tok <= MAX_TOKENS:
            lengths.append(n_tok)
        else:
            body = n_tok - 2
            lengths += [min(MAX_TOKENS - 2, body - i) + 2 for i in range(0, body, MAX_TOKENS - 2)]
    lengths.sort(reverse=True)
    assert batches == [lengths[i : i + 4] for i in range(0, len(lengths), 4)]
    widths = [b[0] for b in batches]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
    # bucketing changes only the padding, not the embeddings
    one_by_one = np.stack([embed.embed_sequences(model, meta, [s], progress=False, max_tokens=MAX_TOKENS, long="chunk")[0]
                           for s in seqs])
    np.testing.assert_allclose(got, one_by_one, atol=1e-5)


# ----------------------------------------------------------------------------------------
# pooling: mean | cls | last, and causal models
# ----------------------------------------------------------------------------------------


def test_pool_weights_on_any_attention_and_special_masks():
    """Generic over tokenizers: left padding, special tokens anywhere, rows without a kept token."""
    attention = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    keep = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0], [0, 1, 0, 1, 0, 1]]).bool()  # row 1: none kept
    mean = embed.pool_weights(attention, keep, "mean")
    assert mean.tolist() == [[0, 0, 0, 1, 1, 0], [1, 1, 1, 0, 0, 0], [0, 1, 0, 1, 0, 0]]
    cls = embed.pool_weights(attention, keep, "cls")
    assert cls.tolist() == [[0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]]
    last = embed.pool_weights(attention, keep, "last")  # row 2: position 5 is kept but not attended
    assert last.tolist() == [[0, 0, 0, 0, 1, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0]]
    # mean pooling is the pooling mask of dnalm's own tokens
    ids = torch.tensor([[2, 7, 9, 1, 3, 0]])
    att = (ids != 0).long()
    assert torch.equal(embed.pool_weights(att, ids >= dseq.N_SPECIAL, "mean"), embed.pooling_mask(ids, att))
    with pytest.raises(ValueError, match="pooling"):
        embed.pool_weights(attention, keep, "max")


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory):
    """A causal model as the trainer saves it (GPT2LMHeadModel), with pooling: last."""
    from dnalm.models import GPTCLM

    torch.manual_seed(1)
    directory = tmp_path_factory.mktemp("clm")
    GPTCLM({"layers": 2, "hidden": 32, "heads": 2}, dseq.vocab_size(K), MAX_POS).save_pretrained(directory)
    meta = {"k": K, "tokenization": "overlapping", "max_tokens": MAX_TOKENS, "pooling": "last"}
    (directory / "dnalm.json").write_text(json.dumps(meta))
    return directory


def _direct(model, tokens, pooling):
    """A plain transformers forward of one window (no padding) and the pooled vector, the
    positions chosen by hand."""
    with torch.no_grad():
        h = model(input_ids=torch.tensor([list(tokens)])).last_hidden_state[0].numpy()
    kmers = [i for i, t in enumerate(tokens) if t >= dseq.N_SPECIAL]
    if pooling == "cls":
        return h[0]
    if pooling == "last":
        return h[kmers[-1] if kmers else len(tokens) - 1]
    return h[kmers].mean(0) if kmers else h.mean(0)


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
@pytest.mark.parametrize("which", ["bert", "gpt"])
def test_pooled_embeddings_equal_a_direct_forward(encoder_dir, causal_dir, which, pooling):
    model, meta = embed.load_encoder(encoder_dir if which == "bert" else causal_dir, device="cpu")
    assert type(model).__name__ == ("BertModel" if which == "bert" else "GPT2Model")
    rng = np.random.default_rng(8)
    seqs = _random_sequences(rng, 20) + ["ACGTTGCANN", "NNNNN"]
    got = embed.embed_sequences(model, meta, seqs, batch_size=6, progress=False, pooling=pooling)
    want = [_direct(model, embed.tokenize_for_model([s], K, "overlapping", MAX_POS)[0], pooling) for s in seqs]
    np.testing.assert_allclose(got, np.stack(want), atol=1e-5, rtol=0)


def test_pooling_comes_from_dnalm_json(encoder_dir, causal_dir):
    model, meta = embed.load_encoder(causal_dir, device="cpu")
    assert meta["pooling"] == "last"
    seqs = _random_sequences(np.random.default_rng(9), 6)
    default = embed.embed_sequences(model, meta, seqs, progress=False)
    np.testing.assert_allclose(default, embed.embed_sequences(model, meta, seqs, progress=False, pooling="last"))
    assert not np.allclose(default, embed.embed_sequences(model, meta, seqs, progress=False, pooling="mean"))
    model, meta = embed.load_encoder(encoder_dir, device="cpu")  # no pooling key: mean
    np.testing.assert_allclose(
        embed.embed_sequences(model, meta, seqs, progress=False),
        embed.embed_sequences(model, meta, seqs, progress=False, pooling="mean"),
    )


def test_causal_model_chunked_last_pooling_averages_its_windows(causal_dir):
    """long='chunk' with pooling 'last': the mean over the windows of each window's last
    k-mer state (a causal model's summary of that window)."""
    model, meta = embed.load_encoder(causal_dir, device="cpu")
    limit = 12
    s = "".join(np.random.default_rng(10).choice(list("ACGT"), size=40))
    got = embed.embed_sequences(model, meta, [s], progress=False, max_tokens=limit, long="chunk")[0]
    kmers = list(dseq.tokenize(s, K, "overlapping", add_special=False))
    windows = [[dseq.CLS_ID, *kmers[i : i + limit - 2], dseq.SEP_ID] for i in range(0, len(kmers), limit - 2)]
    assert len(windows) == 4
    np.testing.assert_allclose(got, np.mean([_direct(model, w, "last") for w in windows], axis=0), atol=1e-5)


def test_bad_pooling_in_dnalm_json(tmp_path, causal_dir):
    import shutil

    shutil.copytree(causal_dir, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "dnalm.json").read_text())
    (tmp_path / "m" / "dnalm.json").write_text(json.dumps({**meta, "pooling": "max"}))
    with pytest.raises(InputError, match="pooling 'max'"):
        embed.load_encoder(tmp_path / "m", device="cpu")
