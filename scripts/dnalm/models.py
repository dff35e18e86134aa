"""Model architectures (docs/design.md#architectures): BERT MLM, a BERT masked autoencoder and
a GPT-2 causal language model.

All are built from plain ``transformers`` modules (SDPA attention), so the saved model
loads with ``AutoModel.from_pretrained(path)`` and no custom code.

The training modules, :class:`BertMLM`, :class:`BertMAE` and :class:`GPTCLM`, take the same
batch (the tensors of ``dnalm.batches.Batch``) and return the same dict from their forward
pass: ``{"loss", "logits_masked", "labels_masked"}``: the cross-entropy over the predicted
positions (``mask``: the masked tokens; for the causal model every k-mer token, predicted
from the tokens before it), the vocabulary logits at those positions only (row-major order
over the batch), and the original token ids there. ``save_pretrained(directory)`` writes
what a user loads: the ``BertForMaskedLM`` (MLM), the encoder ``BertModel`` alone (MAE) or
the ``GPT2LMHeadModel`` (CLM; ``AutoModel`` loads its decoder ``GPT2Model``).

Packed rows. A batch row may hold several training windows back to back (``segments``:
1, 2, ... per window, 0 for padding), each with its own position ids (``position_ids``
restart at 0 for every window). Attention is then restricted to the window
(:func:`segment_attention`), so a packed batch computes exactly what the same windows
would give one per row, without the padding; for the causal model attention is also
causal within the window (:func:`causal_segment_attention`).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AttentionInterface,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    PreTrainedModel,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .seq import CLS_ID, PAD_ID, SEP_ID

SIZE_KEYS = {"layers", "hidden", "heads", "intermediate", "dropout", "attention_dropout"}


def _size(size: dict) -> tuple[int, int, int, int, float, float]:
    """(layers, hidden, heads, intermediate, dropout, attention_dropout) of a size dict."""
    unknown = sorted(set(size) - SIZE_KEYS)
    if unknown:
        raise ValueError(f"unknown model size key(s) {unknown}; expected {sorted(SIZE_KEYS)}")
    missing = sorted({"layers", "hidden", "heads"} - set(size))
    if missing:
        raise ValueError(f"model size lacks {missing}")
    hidden, heads = int(size["hidden"]), int(size["heads"])
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    dropout = float(size.get("dropout", 0.1))
    attention_dropout = float(size.get("attention_dropout", dropout))
    intermediate = int(size.get("intermediate") or 4 * hidden)
    return int(size["layers"]), hidden, heads, intermediate, dropout, attention_dropout


def bert_config(size: dict, vocab_size: int, max_position: int) -> BertConfig:
    """A ``BertConfig`` from a size dict: layers, hidden, heads, intermediate (default
    4 * hidden), dropout (default 0.1, BERT's, on hidden states), attention_dropout (on
    attention probabilities; default = dropout).

    On CPU, dropout is costly: drawing the Bernoulli masks takes ~15 % of a training step of
    a small BERT, and attention dropout > 0 forces SDPA off its fused kernel onto the math
    path (the B x heads x L x L probabilities are materialised).
    """
    layers, hidden, heads, intermediate, dropout, attention_dropout = _size(size)
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=attention_dropout,
        max_position_embeddings=max_position,
        type_vocab_size=1,
        pad_token_id=PAD_ID,
        attn_implementation="sdpa",
    )


def build_mlm(size: dict, vocab_size: int, max_position: int) -> BertForMaskedLM:
    """A freshly initialised ``BertForMaskedLM`` (output layer tied to the input embeddings)."""
    return BertForMaskedLM(bert_config(size, vocab_size, max_position))


# ----------------------------------------------------------------------------------------
# dropout with a cheaper random mask (CPU training)
# ----------------------------------------------------------------------------------------

FAST_DROPOUT_ATTENTION = "dnalm_fast_dropout"


def dropout_scale(shape, p: float, dtype: torch.dtype, device) -> torch.Tensor:
    """The multiplier of inverted dropout: 1 / (1 - p') where kept, 0 where dropped.

    Each element is dropped when a 16-bit integer drawn from torch's generator (one 64-bit
    ``random_`` word serves four elements) is below ``round(p * 65536)``, so p' is p rounded
    to a multiple of 1/65536 (0.1 -> 0.100006) and the scale keeps the expectation exact. On
    the CPU this mask costs about a third of ``torch.bernoulli_``, which draws one 32-bit
    number per element on a single thread.
    """
    n = math.prod(shape)
    cut = round(p * 65536)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    keep = words.view(torch.int16)[:n].view(shape) >= cut - 32768
    return keep.to(dtype) * (65536.0 / (65536 - cut))


class FastDropout(nn.Module):
    """``nn.Dropout`` (in training mode only) with the mask of :func:`dropout_scale`."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * dropout_scale(x.shape, self.p, x.dtype, x.device)


def _attention_fast_dropout(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """A ``transformers`` attention function: SDPA's fused kernel without dropout; with
    dropout, attention written out (as the SDPA math path computes it) with the mask of
    :func:`dropout_scale` on the probabilities. Returns ``(output (B, L, heads, d), None)``."""
    if dropout == 0.0 or not module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=scaling, **kwargs)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    probs = probs * dropout_scale(probs.shape, dropout, probs.dtype, probs.device)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(FAST_DROPOUT_ATTENTION, _attention_fast_dropout)
AttentionMaskInterface.register(FAST_DROPOUT_ATTENTION, sdpa_mask)  # the masks SDPA gets


def use_fast_dropout(module: nn.Module) -> nn.Module:
    """Train ``module`` with :class:`FastDropout`: every ``nn.Dropout`` is replaced (same p)
    and the BERT attention goes through :func:`_attention_fast_dropout`. Only the random
    masks change (a different stream of torch's generator); weights, saved models and
    evaluation are untouched. Meant for the CPU, where ``torch.bernoulli_`` is a sizeable
    part of a training step; CUDA's fused dropout kernels are faster as they are."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
    for sub in module.modules():
        if isinstance(sub, PreTrainedModel):
            sub.set_attn_implementation(FAST_DROPOUT_ATTENTION)
    return module


def segment_attention(segments: torch.Tensor, packed: bool) -> torch.Tensor:
    """The ``attention_mask`` argument of ``BertModel`` for rows of windows.

    ``segments`` (B, L): 1, 2, ... for the tokens of each window of a row, 0 for padding.
    Not ``packed`` (at most one window per row): the usual 2-D mask (B, L), 1 on real
    tokens. ``packed``: a 4-D boolean mask (B, 1, L, L), True where query and key belong to
    the same window; padding attends to padding only (so that no query row is empty, which
    would give NaN), and no real token attends to padding or to another window.
    """
    if not packed:
        return (segments > 0).long()
    return (segments[:, :, None] == segments[:, None, :])[:, None]


def _masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in fp32; 0 (with a graph) when nothing is masked."""
    if labels.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels)


def _prediction(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, where: torch.Tensor) -> dict:
    """The output of every training module: ``head`` applied to the hidden states at the
    positions ``where`` (bool), scored against ``labels`` at the same positions."""
    logits = head(hidden[where])
    labels_masked = labels[where]
    return {"loss": _masked_cross_entropy(logits, labels_masked), "logits_masked": logits, "labels_masked": labels_masked}


class BertMLM(nn.Module):
    """BERT masked language model (DNABERT/GeneMask) as a training module.

    ``self.mlm`` is a plain ``BertForMaskedLM``; the forward pass evaluates its LM head at
    the masked positions only: equal to ``BertForMaskedLM(..., labels=labels).loss`` but
    without the (vocab x hidden) projection at the ~85 % of positions that carry no loss
    (for a 4-layer, 256-wide BERT over 4,101 tokens that projection is a quarter of the
    model's FLOPs).
    """

    def __init__(self, size: dict, vocab_size: int, max_position: int):
        super().__init__()
        self.mlm = build_mlm(size, vocab_size, max_position)

    @property
    def encoder(self) -> BertModel:
        return self.mlm.bert

    def forward(self, input_ids, labels, mask, segments, position_ids, packed: bool = False) -> dict:
        """``input_ids``: (B, L) corrupted ids (80/10/10); ``labels``: original ids; ``mask``:
        bool, the positions to predict; ``segments``/``position_ids``: see the module doc."""
        hidden = self.mlm.bert(
            input_ids=input_ids, attention_mask=segment_attention(segments, packed), position_ids=position_ids
        ).last_hidden_state
        return _prediction(self.mlm.cls, hidden, labels, mask)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """``save_pretrained`` (safetensors) of the ``BertForMaskedLM`` (encoder + LM head)."""
        self.mlm.save_pretrained(str(directory))


def pack_visible(input_ids, segments, position_ids, mask):
    """Gather each row's visible tokens (real and not masked), left-packed, in order.

    Returns ``(ids, columns, position_ids, segments)``, (B, Lv) tensors where Lv is the
    largest number of visible tokens in a row: ``columns`` are the tokens' columns in the
    input row, ``position_ids`` and ``segments`` their ORIGINAL position ids and windows
    (so positions mean the same as at inference). Entries past a row's visible tokens are
    [PAD] with segment 0; their columns are the row's remaining (masked or padding) columns,
    all distinct, so scattering back by ``columns`` never collides with a visible token.
    """
    visible = (segments > 0) & ~mask.bool()
    columns = torch.argsort((~visible).to(torch.int8), dim=1, stable=True)
    n_visible = visible.sum(dim=1)
    width = max(int(n_visible.max()), 1) if visible.shape[0] else 1
    columns = columns[:, :width]
    real = torch.arange(width, device=input_ids.device)[None, :] < n_visible[:, None]
    ids = torch.where(real, torch.gather(input_ids, 1, columns), PAD_ID)
    positions = torch.where(real, torch.gather(position_ids, 1, columns), 0)
    segs = torch.where(real, torch.gather(segments, 1, columns), 0)
    return ids, columns, positions, segs


class BertMAE(nn.Module):
    """Masked autoencoder (BarcodeMAE): the encoder never sees masked positions.

    * encoder: ``BertModel`` over the visible tokens only, left-packed, each keeping its
      original position id (so positions mean the same as at inference);
    * ``enc_to_dec``: Linear(hidden -> decoder hidden);
    * decoder input: projected encoder outputs scattered back to their positions, the
      learned ``mask_embedding`` at masked (and padding) positions, plus the decoder's own
      position embeddings; the decoder is a small ``BertModel`` fed ``inputs_embeds`` (its
      word-embedding table has a single row, unused and frozen; its embedding block adds
      the position embeddings and a LayerNorm);
    * head: Linear(decoder hidden -> vocab); loss: cross-entropy on masked positions only.

    Only the encoder is kept after pretraining (:meth:`save_pretrained`).
    """

    def __init__(self, size: dict, decoder_size: dict, vocab_size: int, max_position: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.encoder = BertModel(bert_config(size, vocab_size, max_position), add_pooling_layer=False)
        dec_config = bert_config(decoder_size, 1, max_position)
        self.enc_to_dec = nn.Linear(self.encoder.config.hidden_size, dec_config.hidden_size)
        self.mask_embedding = nn.Parameter(torch.zeros(dec_config.hidden_size))
        self.decoder = BertModel(dec_config, add_pooling_layer=False)
        self.decoder.embeddings.word_embeddings.weight.requires_grad_(False)  # inputs_embeds only
        self.head = nn.Linear(dec_config.hidden_size, vocab_size)
        std = self.encoder.config.initializer_range
        for layer in (self.enc_to_dec, self.head):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.mask_embedding, std=std)

    def encode_visible(self, input_ids, segments, position_ids, mask, packed: bool = False):
        """Encoder outputs of the visible tokens: ``(hidden (B, Lv, H), columns, segments)``."""
        ids, columns, positions, segs = pack_visible(input_ids, segments, position_ids, mask)
        hidden = self.encoder(
            input_ids=ids, attention_mask=segment_attention(segs, packed), position_ids=positions
        ).last_hidden_state
        return hidden, columns, segs

    def forward(self, input_ids, labels, mask, segments, position_ids, packed: bool = False) -> dict:
        """``input_ids`` and ``labels``: (B, L) uncorrupted ids (the encoder reads the first at
        visible positions, the loss the second at masked ones); ``mask``: bool, the positions
        to hide and predict; ``segments``/``position_ids``: see the module doc."""
        mask = mask.bool() & (segments > 0)
        hidden, columns, _ = self.encode_visible(input_ids, segments, position_ids, mask, packed)
        projected = self.enc_to_dec(hidden)  # (B, Lv, D)
        batch, length = input_ids.shape
        dim = projected.shape[-1]
        # scatter back: entry j of a row goes to its column columns[j] (distinct, so no
        # collisions); padding entries land on masked/pad columns, replaced just below
        full = projected.new_zeros(batch, length, dim)
        full = full.scatter(1, columns[..., None].expand(-1, -1, dim), projected)
        visible = (segments > 0) & ~mask
        dec_in = torch.where(visible[..., None], full, self.mask_embedding.to(full.dtype))
        decoded = self.decoder(
            inputs_embeds=dec_in, attention_mask=segment_attention(segments, packed), position_ids=position_ids
        ).last_hidden_state
        return _prediction(self.head, decoded, labels, mask)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """``save_pretrained`` (safetensors) of the encoder ``BertModel`` alone."""
        self.encoder.save_pretrained(str(directory))


def gpt2_config(size: dict, vocab_size: int, max_position: int) -> GPT2Config:
    """A ``GPT2Config`` from the same size dict as :func:`bert_config` (dropout on the
    embeddings and residual branches, attention_dropout on the attention probabilities);
    everything else is GPT-2's (pre-LayerNorm blocks, GELU, learned absolute positions, LM
    head tied to the token embeddings). [CLS] serves as the beginning-of-sequence token,
    [SEP] as the end."""
    layers, hidden, heads, intermediate, dropout, attention_dropout = _size(size)
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=max_position,
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_inner=intermediate,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=attention_dropout,
        bos_token_id=CLS_ID,
        eos_token_id=SEP_ID,
        pad_token_id=PAD_ID,
        attn_implementation="sdpa",
    )


def causal_segment_attention(segments: torch.Tensor) -> torch.Tensor:
    """The 4-D boolean ``attention_mask`` (B, 1, L, L) of a causal model over rows of
    windows (``segments`` as in :func:`segment_attention`): a token attends to itself and
    the tokens before it in its own window only; padding attends to the padding before it.
    ``transformers`` uses a 4-D mask as given, so packed rows (position ids restarting per
    window) compute exactly what one window per row computes."""
    width = segments.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segments.device).tril()
    return ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]


class GPTCLM(nn.Module):
    """GPT-2 causal language model as a training module (next-token prediction).

    ``self.lm`` is a plain ``GPT2LMHeadModel``. The positions to predict (``mask``) are the
    k-mer tokens of each window; the token in column c is predicted from the decoder output
    in column c - 1, which holds the window's tokens up to c - 1 ([CLS] first, so the first
    k-mer is predicted from [CLS] alone). The LM head runs at those positions only: equal to
    ``GPT2LMHeadModel(..., labels=...).loss`` with every non-k-mer label ignored.
    """

    def __init__(self, size: dict, vocab_size: int, max_position: int):
        super().__init__()
        self.lm = GPT2LMHeadModel(gpt2_config(size, vocab_size, max_position))

    @property
    def encoder(self) -> GPT2Model:
        """The decoder stack (what ``AutoModel`` loads and embeddings use)."""
        return self.lm.transformer

    def forward(self, input_ids, labels, mask, segments, position_ids, packed: bool = False) -> dict:
        """``input_ids`` = ``labels``: (B, L) token ids; ``mask``: bool, the tokens to
        predict (never in column 0, which holds a window's [CLS]); ``segments``/
        ``position_ids``: see the module doc. ``packed`` changes nothing (the mask is 4-D
        either way)."""
        hidden = self.lm.transformer(
            input_ids=input_ids,
            attention_mask=causal_segment_attention(segments),
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state
        # position i predicts token i + 1
        return _prediction(self.lm.lm_head, hidden[:, :-1], labels[:, 1:], mask[:, 1:].bool())

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """``save_pretrained`` (safetensors) of the ``GPT2LMHeadModel`` (decoder + tied LM head)."""
        self.lm.save_pretrained(str(directory))


#: the training module of each architecture
ARCHITECTURES = ("mlm", "mae", "clm")


def build_model(architecture: str, size: dict, decoder_size: dict, vocab_size: int, max_position: int) -> nn.Module:
    """The training module of an architecture: :class:`BertMLM`, :class:`BertMAE` or
    :class:`GPTCLM`."""
    if architecture == "mlm":
        return BertMLM(size, vocab_size, max_position)
    if architecture == "mae":
        return BertMAE(size, decoder_size, vocab_size, max_position)
    if architecture == "clm":
        return GPTCLM(size, vocab_size, max_position)
    raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")


def adamw(model: nn.Module, lr: float, weight_decay: float, **kwargs) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model`` with weight decay on matrices
    (ndim >= 2) only: none on biases, LayerNorm weights or the MAE mask embedding (tied
    weights appear once). ``kwargs`` go to ``torch.optim.AdamW`` (betas, eps, fused)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, **kwargs)
