"""dnalm.device: one choice of device and precision for training, embedding and fine-tuning;
bf16 autocast only on GPUs that support bf16 (a pre-Ampere GPU runs fp32)."""

import contextlib

import numpy as np
import pytest
import torch

from dnalm import device as D
from dnalm import seq as dseq

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_cuda(monkeypatch, bf16: bool):
    """This CPU-only machine, made to look like one with a CUDA GPU (bf16 or not)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **kw: bf16)


def test_resolve_device(monkeypatch):
    assert D.resolve_device("auto", cuda_available=False) == torch.device("cpu")
    assert D.resolve_device("cuda", local_rank=3, cuda_available=True) == torch.device("cuda:3")
    assert D.resolve_device("cuda:1", local_rank=3, cuda_available=True) == torch.device("cuda:1")
    with pytest.raises(RuntimeError, match="'cuda:1' requested but CUDA is not available"):
        D.resolve_device("cuda:1", cuda_available=False)
    fake_cuda(monkeypatch, bf16=False)
    assert D.resolve_device() == torch.device("cuda:0")


def test_no_bf16_autocast_on_a_gpu_without_bf16(monkeypatch):
    fake_cuda(monkeypatch, bf16=False)  # e.g. a V100 or a T4
    gpu = D.resolve_device("auto")
    assert D.autocast_dtype(gpu) is None
    assert isinstance(D.autocast(gpu), contextlib.nullcontext)

    fake_cuda(monkeypatch, bf16=True)  # Ampere and later
    assert D.autocast_dtype(gpu) == torch.bfloat16
    ctx = D.autocast(gpu)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16 and ctx.device == "cuda"
    assert isinstance(D.autocast(torch.device("cpu")), contextlib.nullcontext)  # the CPU: fp32


@pytest.fixture
def asked(monkeypatch):
    """Devices whose precision was asked of dnalm.device.autocast, answered as for a CUDA
    GPU without bf16 support."""
    seen = []
    real = D.autocast

    def spy(device):
        seen.append(torch.device(device))
        return real(torch.device("cuda:0"))

    fake_cuda(monkeypatch, bf16=False)
    monkeypatch.setattr(D, "autocast", spy)
    return seen


def test_embedding_and_finetuning_take_their_precision_from_the_helper(asked):
    """Before the shared helper, embedding and fine-tuning enabled bf16 on any CUDA device;
    now they ask dnalm.device.autocast, which says no on a GPU without bf16."""
    from transformers import BertConfig, BertModel

    from dnalm import embed, finetune

    torch.manual_seed(0)
    config = BertConfig(vocab_size=dseq.vocab_size(3), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    model = BertModel(config).eval()
    meta = {"k": 3, "tokenization": "overlapping", "max_tokens": 64}
    vectors = embed.embed_sequences(model, meta, ["ACGTACGTAA", "GGGCCCAT"], progress=False)
    assert vectors.shape == (2, 16) and np.isfinite(vectors).all()
    assert asked == [torch.device("cpu")]

    tokens = embed.sequence_windows(["ACGTACGTAC", "TTTTGGGGCC"] * 2, 3, "overlapping", 64)
    clf = finetune.train_classifier(model, tokens, np.array([0, 1, 0, 1]), 2,
                                    {**finetune.DEFAULTS, "epochs": 1, "batch_size": 2}, torch_seed=0)  # fmt: skip
    assert len(asked) == 2
    assert finetune.predict(clf, tokens).shape == (4,)
    assert asked == [torch.device("cpu")] * 3
