"""Model architectures (DESIGN.md "Architectures"): BERT MLM and a BERT masked autoencoder.

Both are plain ``transformers`` BERT modules (SDPA attention), so the saved encoder loads
with ``AutoModel.from_pretrained(path)`` and no custom code.

Both objectives return the same dict from their forward pass:
``{"loss", "logits_masked", "labels_masked"}``: the cross-entropy over masked positions,
the vocabulary logits at those positions only (row-major order over the batch), and the
original token ids there.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertModel

from .seq import PAD_ID

SIZE_KEYS = {"layers", "hidden", "heads", "intermediate", "dropout", "attention_dropout"}


def bert_config(size: dict, vocab_size: int, max_position: int) -> BertConfig:
    """A ``BertConfig`` from a size dict: layers, hidden, heads, intermediate (default
    4 * hidden), dropout (default 0.1, BERT's, on hidden states), attention_dropout (on
    attention probabilities; default = dropout).

    On CPU, dropout is costly: attention dropout > 0 forces SDPA off its fused kernel
    onto the math path (the B x heads x L x L probabilities are materialised and a Bernoulli
    mask drawn), which roughly halves training throughput for small models.
    """
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
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=int(size["layers"]),
        num_attention_heads=heads,
        intermediate_size=int(size.get("intermediate") or 4 * hidden),
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


def _masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in fp32; 0 (with a graph) when nothing is masked."""
    if labels.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels)


def mlm_forward(model: BertForMaskedLM, input_ids, attention_mask, mask, labels) -> dict:
    """MLM loss with the LM head evaluated at the masked positions only.

    ``input_ids`` are the corrupted ids (80/10/10), ``mask`` the positions to predict and
    ``labels`` the original ids (-100 elsewhere). Equal to ``BertForMaskedLM(...,
    labels=labels).loss`` but skips the (vocab x hidden) projection at ~85 % of positions.
    """
    hidden = model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    logits = model.cls(hidden[mask])
    labels_masked = labels[mask]
    return {
        "loss": _masked_cross_entropy(logits, labels_masked),
        "logits_masked": logits,
        "labels_masked": labels_masked,
    }


def pack_visible(input_ids, attention_mask, mask):
    """Gather each row's visible tokens (real and not masked), left-packed.

    Returns ``(ids, position_ids, attention)``: (B, Lv) tensors where Lv is the largest
    number of visible tokens in a row; ``position_ids`` are the tokens' ORIGINAL positions
    (in order) and ``attention`` marks real entries (the rest is [PAD]). The position ids of
    the padding entries are distinct non-visible positions of the row, so scattering by
    them never collides with a visible token.
    """
    visible = attention_mask.bool() & ~mask.bool()
    order = torch.argsort((~visible).to(torch.int8), dim=1, stable=True)
    n_visible = visible.sum(dim=1)
    width = max(int(n_visible.max()), 1) if visible.shape[0] else 1
    positions = order[:, :width]
    attention = torch.arange(width, device=input_ids.device)[None, :] < n_visible[:, None]
    ids = torch.where(attention, torch.gather(input_ids, 1, positions), PAD_ID)
    return ids, positions, attention.long()


class BertMAE(nn.Module):
    """Masked autoencoder (BarcodeMAE): the encoder never sees masked positions.

    * encoder: ``BertModel`` over the visible tokens only, left-packed, each keeping its
      original position id (so positions mean the same as at inference);
    * ``enc_to_dec``: Linear(hidden -> decoder hidden);
    * decoder input: projected encoder outputs scattered back to their positions, the
      learned ``mask_embedding`` at masked (and padding) positions, plus the decoder's own
      position embeddings; the decoder is a small ``BertModel`` fed ``inputs_embeds`` (its
      word-embedding table has a single unused row; its embedding block adds the position
      embeddings and a LayerNorm);
    * head: Linear(decoder hidden -> vocab); loss: cross-entropy on masked positions only.

    Only the encoder is kept after pretraining (:meth:`save_encoder`).
    """

    def __init__(self, size: dict, decoder_size: dict, vocab_size: int, max_position: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.encoder = BertModel(bert_config(size, vocab_size, max_position), add_pooling_layer=False)
        dec_config = bert_config(decoder_size, 1, max_position)
        self.enc_to_dec = nn.Linear(self.encoder.config.hidden_size, dec_config.hidden_size)
        self.mask_embedding = nn.Parameter(torch.zeros(dec_config.hidden_size))
        self.decoder = BertModel(dec_config, add_pooling_layer=False)
        self.head = nn.Linear(dec_config.hidden_size, vocab_size)
        std = self.encoder.config.initializer_range
        for layer in (self.enc_to_dec, self.head):
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.mask_embedding, std=std)

    def encode_visible(self, input_ids, attention_mask, mask):
        """Encoder outputs of the visible tokens: ``(hidden (B, Lv, H), position_ids, attention)``."""
        ids, positions, attention = pack_visible(input_ids, attention_mask, mask)
        hidden = self.encoder(input_ids=ids, attention_mask=attention, position_ids=positions).last_hidden_state
        return hidden, positions, attention

    def forward(self, input_ids, attention_mask, mask) -> dict:
        """``input_ids``/``attention_mask``: (B, L) uncorrupted ids and real-token mask;
        ``mask``: (B, L) bool, the positions to hide and predict."""
        mask = mask.bool() & attention_mask.bool()
        hidden, positions, _ = self.encode_visible(input_ids, attention_mask, mask)
        projected = self.enc_to_dec(hidden)  # (B, Lv, D)
        batch, length = input_ids.shape
        dim = projected.shape[-1]
        # scatter back: entry j of a row goes to its original position positions[j] (distinct,
        # so no collisions); padding entries land on masked/pad positions and are replaced by
        # the mask embedding below.
        full = projected.new_zeros(batch, length, dim)
        full = full.scatter(1, positions[..., None].expand(-1, -1, dim), projected)
        visible = attention_mask.bool() & ~mask
        dec_in = torch.where(visible[..., None], full, self.mask_embedding.to(full.dtype))
        decoded = self.decoder(inputs_embeds=dec_in, attention_mask=attention_mask).last_hidden_state
        logits = self.head(decoded[mask])
        labels = input_ids[mask]
        return {"loss": _masked_cross_entropy(logits, labels), "logits_masked": logits, "labels_masked": labels}

    def save_encoder(self, directory: str | os.PathLike) -> None:
        """``save_pretrained`` (safetensors) of the encoder ``BertModel`` alone."""
        self.encoder.save_pretrained(str(directory))
