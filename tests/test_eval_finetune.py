"""Tests of dnalm.finetune: the optional fine-tuning learner of the few-shot protocol."""

import json

import numpy as np
import pytest
import torch

from dnalm import evaluate as ev
from dnalm import finetune
from dnalm import seq as dseq

K = 3


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=dseq.vocab_size(K), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
    )
    directory = tmp_path_factory.mktemp("enc")
    BertModel(config).save_pretrained(str(directory))
    (directory / "dnalm.json").write_text(json.dumps({"k": K, "tokenization": "overlapping", "max_tokens": 64}))
    return directory


def _task(rng, n_per_class):
    """Class "gc": GC-rich sequences; class "at": AT-rich ones (learnable from 3-mers)."""
    seqs, labels = [], []
    for label, probs in (("gc", [0.1, 0.4, 0.4, 0.1]), ("at", [0.4, 0.1, 0.1, 0.4])):
        for _ in range(n_per_class):
            seqs.append("".join(rng.choice(list("ACGT"), size=40, p=probs)))
            labels.append(label)
    return seqs, np.array(labels)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_fewshot_finetune_learns_reproducibly_with_the_probe_draws(encoder_dir, monkeypatch):
    rng = np.random.default_rng(0)
    train, y_train = _task(rng, 30)
    test, y_test = _task(rng, 20)
    settings = {"lr": 3e-3, "epochs": 8, "batch_size": 8}
    draws = []
    original = ev.sample_per_class
    monkeypatch.setattr(ev, "sample_per_class", lambda y, k, g: draws.append(original(y, k, g)) or draws[-1])
    df = finetune.fewshot_finetune(encoder_dir, train, y_train, test, y_test, shots=[8], n_repeats=2, seed=5,
                                   settings=settings, device="cpu", progress=False)
    assert list(df.columns) == ev.FEWSHOT_COLUMNS and (df["per_class"] == 8).all()
    assert set(df["protocol"]) == {"fewshot"} and set(df["level"]) == {"finetune"}
    assert set(df["metric"]) == set(ev.FEWSHOT_METRICS) and set(df["repeat"]) == {0, 1}
    assert df.loc[df["metric"] == "accuracy", "value"].min() >= 0.9  # an easy task, learnt from 16 examples
    # the examples are the probe's: same generator, same indices
    assert len(draws) == 2
    for r, idx in enumerate(list(draws)):
        np.testing.assert_array_equal(idx, original(y_train, 8, ev.fewshot_rng(5, 8, r)))
    monkeypatch.undo()
    again = finetune.fewshot_finetune(encoder_dir, train, y_train, test, y_test, shots=[8], n_repeats=2, seed=5,
                                      settings=settings, device="cpu", progress=False)
    np.testing.assert_allclose(df["value"], again["value"])


def test_fewshot_finetune_skips_and_checks(encoder_dir):
    rng = np.random.default_rng(1)
    train, y_train = _task(rng, 5)
    test, y_test = _task(rng, 3)
    with pytest.warns(UserWarning, match="K=10 skipped"):
        df = finetune.fewshot_finetune(encoder_dir, train, y_train, test, y_test, shots=[10], n_repeats=1, seed=0,
                                       settings={"epochs": 1}, device="cpu", progress=False)
    assert df.empty and list(df.columns) == ev.FEWSHOT_COLUMNS
    with pytest.raises(ValueError, match="unknown fine-tuning setting"):
        finetune.fewshot_finetune(encoder_dir, train, y_train, test, y_test, [2], 1, 0, settings={"lr0": 1})
    with pytest.raises(ValueError, match="do not occur"):
        finetune.fewshot_finetune(encoder_dir, train, y_train, test, np.array(["x"] * len(test)), [2], 1, 0)


def test_learning_rate_schedule_warms_up_and_decays(encoder_dir):
    """One epoch of 4 batches with warm-up 0.25: lr rises over one step, then falls to 0."""
    from dnalm import embed

    encoder, meta = embed.load_encoder(encoder_dir, device="cpu")
    tokens = embed.sequence_windows(["ACGTACGTAC"] * 8, K, "overlapping", 64)
    seen = []
    original = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = spy
    try:
        finetune.train_classifier(encoder, tokens, np.array([0, 1] * 4), 2,
                                  {**finetune.DEFAULTS, "lr": 1.0, "epochs": 1, "batch_size": 2, "warmup_ratio": 0.25},
                                  torch_seed=0)
    finally:
        torch.optim.AdamW.step = original
    np.testing.assert_allclose(seen, [0.5, 1.0, 2 / 3, 1 / 3])


def test_shots_scale_draws_k_times_scale(encoder_dir, monkeypatch):
    rng = np.random.default_rng(2)
    train, y_train = _task(rng, 12)
    test, y_test = _task(rng, 4)
    draws = []
    original = ev.sample_per_class
    monkeypatch.setattr(ev, "sample_per_class", lambda y, k, g: draws.append(original(y, k, g)) or draws[-1])
    with pytest.warns(UserWarning, match=r"K=3 \(15 per class with shots_scale 5\) skipped"):
        df = finetune.fewshot_finetune(encoder_dir, train, y_train, test, y_test, shots=[2, 3], n_repeats=1, seed=1,
                                       settings={"epochs": 1, "batch_size": 8}, device="cpu", progress=False,
                                       shots_scale=5)
    assert set(zip(df["shots"], df["per_class"])) == {(2.0, 10)}
    assert len(draws) == 1 and sorted(np.unique(y_train[draws[0]], return_counts=True)[1]) == [10, 10]
    np.testing.assert_array_equal(draws[0], original(y_train, 10, ev.fewshot_rng(1, 10, 0)))  # the probe's draw


def test_long_sequences_are_windowed_as_the_embeddings(tmp_path):
    """A sequence longer than the training crop (dnalm.json max_tokens) is split into
    windows and the head reads the mean over all their k-mer tokens: before any training,
    the classifier's pooled features equal embed_sequences(long="chunk") of the same encoder,
    and bases beyond the first window change the prediction input."""
    from transformers import BertConfig, BertModel

    from dnalm import embed

    torch.manual_seed(1)
    config = BertConfig(vocab_size=dseq.vocab_size(K), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(str(tmp_path))
    (tmp_path / "dnalm.json").write_text(json.dumps({"k": K, "tokenization": "overlapping", "max_tokens": 12}))
    encoder, meta = embed.load_encoder(tmp_path, device="cpu")
    rng = np.random.default_rng(3)
    seqs = ["".join(rng.choice(list("ACGT"), size=n)) for n in (9, 30, 57)] + ["ACGTACGTACGTA" + "N" * 14, "N" * 17]
    windows = embed.sequence_windows(seqs, K, "overlapping", embed.max_input_tokens(encoder, meta["max_tokens"]))
    assert [len(w) for w in windows] == [1, 3, 6, 3, 2] and all(len(t) <= 12 for ws in windows for t in ws)
    model = finetune._classifier(encoder, 2, 0.0).eval()
    with torch.no_grad():
        ids, mask, owner = finetune._batch(windows, np.arange(len(seqs)), "cpu")
        pooled = model.pool(ids, mask, owner, len(seqs)).numpy()
    expected = embed.embed_sequences(encoder, meta, seqs, batch_size=2, progress=False,
                                     max_tokens=meta["max_tokens"], long="chunk")
    np.testing.assert_allclose(pooled, expected, atol=1e-5)
    # fewshot_finetune tokenises this way: a change after the first window reaches the model
    tail = seqs[2][:-1] + ("A" if seqs[2][-1] != "A" else "C")
    with torch.no_grad():
        w2 = embed.sequence_windows([seqs[2], tail], K, "overlapping", 12)
        ids, mask, owner = finetune._batch(w2, np.arange(2), "cpu")
        a, b = model.pool(ids, mask, owner, 2).numpy()
    assert not np.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "cls"])
def test_fine_tuning_pools_as_the_models_dnalm_json_says(tmp_path, monkeypatch, pooling):
    """dnalm.json ``pooling`` reaches the classifier (it always took the mean before): the
    head reads the same pooled vector as embed_sequences with that pooling."""
    from transformers import BertConfig, BertModel

    from dnalm import embed

    torch.manual_seed(2)
    config = BertConfig(vocab_size=dseq.vocab_size(K), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0)
    BertModel(config).save_pretrained(str(tmp_path))
    (tmp_path / "dnalm.json").write_text(json.dumps({"k": K, "tokenization": "overlapping", "max_tokens": 12,
                                                     "pooling": pooling}))
    seen = []
    original = embed.window_weights
    monkeypatch.setattr(embed, "window_weights", lambda *a, **kw: seen.append(a[2] if len(a) > 2 else "mean")
                        or original(*a, **kw))
    rng = np.random.default_rng(4)
    train, y_train = _task(rng, 6)
    test, y_test = _task(rng, 4)
    finetune.fewshot_finetune(tmp_path, train, y_train, test, y_test, shots=[4], n_repeats=1, seed=0,
                              settings={"epochs": 1, "batch_size": 4}, device="cpu", progress=False)
    assert seen and set(seen) == {pooling}
    # the classifier's pooled features before training: embed_sequences with the same pooling
    monkeypatch.undo()
    encoder, meta = embed.load_encoder(tmp_path, device="cpu")
    seqs = train[:3] + ["ACGT" * 9]  # the last one is split into windows
    windows = embed.sequence_windows(seqs, K, "overlapping", 12)
    model = finetune._classifier(encoder, 2, 0.0, pooling).eval()
    with torch.no_grad():
        ids, mask, owner = finetune._batch(windows, np.arange(len(seqs)), "cpu")
        pooled = model.pool(ids, mask, owner, len(seqs)).numpy()
    expected = embed.embed_sequences(encoder, meta, seqs, progress=False, max_tokens=12, long="chunk")
    np.testing.assert_allclose(pooled, expected, atol=1e-5)
