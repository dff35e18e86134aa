"""The training modules (dnalm.models): MLM head at masked positions only, the masked
autoencoder (encoder over visible tokens only, original positions, loss on masked positions),
the causal LM (next-token loss, causal attention), and packed rows (several windows per row)
computing exactly what unpacked rows compute."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dnalm import seq
from dnalm.batches import pack_rows
from dnalm.models import (
    GPTCLM,
    BertMAE,
    BertMLM,
    bert_config,
    causal_segment_attention,
    gpt2_config,
    pack_visible,
    segment_attention,
)

TINY = {"layers": 2, "hidden": 32, "heads": 2}
DEC = {"layers": 1, "hidden": 16, "heads": 2}
V3 = seq.vocab_size(3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bert_config_from_size():
    c = bert_config({"layers": 3, "hidden": 48, "heads": 6}, 69, 100)
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (3, 48, 6, 192)
    assert c.hidden_dropout_prob == c.attention_probs_dropout_prob == 0.1
    assert (c.vocab_size, c.max_position_embeddings, c.pad_token_id) == (69, 100, seq.PAD_ID)
    assert c._attn_implementation == "sdpa"
    c = bert_config(
        {"layers": 1, "hidden": 8, "heads": 2, "intermediate": 5, "dropout": 0.0, "attention_dropout": 0.2}, 9, 9
    )
    assert (c.intermediate_size, c.hidden_dropout_prob, c.attention_probs_dropout_prob) == (5, 0.0, 0.2)
    with pytest.raises(ValueError, match="multiple"):
        bert_config({"layers": 1, "hidden": 10, "heads": 3}, 9, 9)
    with pytest.raises(ValueError, match="hiden"):
        bert_config({"layers": 1, "hiden": 8, "heads": 2}, 9, 9)


def _rows(seed=0, lengths=(24, 17, 9)):
    """Unpacked rows: [CLS] k-mers [SEP] of the given lengths, padded; 40 % of k-mers masked.
    Returns ids, segments (1 on real tokens, 0 on padding), position ids, mask."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(5, V3, (len(lengths), width), generator=g)
    ids[:, 0] = seq.CLS_ID
    segments = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, n - 1] = seq.SEP_ID
        ids[row, n:] = seq.PAD_ID
        segments[row, :n] = 1
    positions = torch.arange(width).expand(len(lengths), -1).clone()
    mask = (torch.rand(ids.shape, generator=g) < 0.4) & (ids >= 5)
    return ids, segments, positions, mask


def test_mlm_forward_equals_full_head_loss():
    torch.manual_seed(0)
    model = BertMLM(TINY, V3, 64).eval()
    ids, segments, positions, mask = _rows()
    corrupted = torch.where(mask, seq.MASK_ID, ids)
    with torch.no_grad():
        out = model(corrupted, ids, mask, segments, positions)
        full = model.mlm(input_ids=corrupted, attention_mask=segments, labels=torch.where(mask, ids, -100))
    assert torch.allclose(out["loss"], full.loss, atol=1e-6)
    assert torch.allclose(out["logits_masked"], full.logits[mask], atol=1e-5)
    assert torch.equal(out["labels_masked"], ids[mask])


def test_segment_attention():
    segments = torch.tensor([[1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 0, 0]])
    assert torch.equal(segment_attention(segments, packed=False), (segments > 0).long())
    m = segment_attention(segments, packed=True)
    assert m.shape == (2, 1, 6, 6) and m.dtype == torch.bool
    for b in range(2):
        for q in range(6):
            for k in range(6):
                assert bool(m[b, 0, q, k]) == (int(segments[b, q]) == int(segments[b, k]))
    assert m.any(-1).all()  # no empty query row (padding attends to padding)


def test_pack_visible_keeps_original_positions():
    ids, segments, positions, mask = _rows()
    positions = positions + 3  # position ids need not equal columns
    packed, columns, pos, segs = pack_visible(ids, segments, positions, mask)
    for row in range(ids.shape[0]):
        want = torch.nonzero((segments[row] > 0) & ~mask[row]).flatten()
        n = want.numel()
        assert (segs[row, :n] == 1).all() and (segs[row, n:] == 0).all()
        assert torch.equal(columns[row, :n], want)
        assert torch.equal(pos[row, :n], positions[row, want])
        assert torch.equal(packed[row, :n], ids[row, want])
        assert (packed[row, n:] == seq.PAD_ID).all()
        assert len(set(columns[row].tolist())) == columns.shape[1]  # distinct: scatter never collides


def test_mae_encoder_sees_only_visible_tokens():
    torch.manual_seed(0)
    model = BertMAE(TINY, DEC, V3, 64).eval()
    ids, segments, positions, mask = _rows()
    other = torch.where(mask, torch.randint(5, V3, ids.shape), ids)  # change masked ids only
    assert not torch.equal(other, ids)
    with torch.no_grad():
        h, columns, segs = model.encode_visible(ids, segments, positions, mask)
        h2, _, _ = model.encode_visible(other, segments, positions, mask)
        out, out2 = model(ids, ids, mask, segments, positions), model(other, ids, mask, segments, positions)
        # reference: the encoder over the full row with masked keys hidden, ORIGINAL positions
        full = model.encoder(input_ids=ids, attention_mask=((segments > 0) & ~mask).long()).last_hidden_state
    for row in range(ids.shape[0]):
        n = int((segs[row] > 0).sum())
        assert torch.equal(h[row, :n], h2[row, :n])
        assert torch.allclose(h[row, :n], full[row, columns[row, :n]], atol=1e-5)
    # nothing about the masked tokens reaches the predictions; loss is over masked positions
    assert torch.allclose(out["logits_masked"], out2["logits_masked"], atol=1e-6)
    assert torch.equal(out["labels_masked"], ids[mask])
    assert out["logits_masked"].shape == (int(mask.sum()), V3)
    assert torch.allclose(out["loss"], F.cross_entropy(out["logits_masked"], ids[mask]), atol=1e-6)
    # padding does not leak across rows: each row alone gives the same predictions
    with torch.no_grad():
        start = 0
        for row in range(ids.shape[0]):
            n = int(segments[row].sum())
            r = slice(row, row + 1)
            alone = model(ids[r, :n], ids[r, :n], mask[r, :n], segments[r, :n], positions[r, :n])
            m = int(mask[row].sum())
            assert torch.allclose(alone["logits_masked"], out["logits_masked"][start : start + m], atol=1e-5)
            start += m


def test_mae_gradients_only_from_masked_positions():
    """The head's bias gradient is exactly the mean of (softmax - one-hot) over the masked
    positions: no visible or padding position contributes to the loss."""
    torch.manual_seed(1)
    model = BertMAE(TINY, DEC, V3, 64).eval()
    ids, segments, positions, mask = _rows(seed=3)
    out = model(ids, ids, mask, segments, positions)
    out["loss"].backward()
    probs = out["logits_masked"].detach().softmax(-1)
    want = (probs - F.one_hot(ids[mask], V3)).sum(0) / int(mask.sum())
    assert torch.allclose(model.head.bias.grad, want, atol=1e-6)
    assert model.decoder.embeddings.word_embeddings.weight.grad is None  # frozen, unused


def test_mae_save_pretrained_loads_with_automodel(tmp_path):
    from transformers import AutoModel

    torch.manual_seed(0)
    model = BertMAE(TINY, DEC, V3, 64).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "BertModel"
    ids, segments, _, _ = _rows()
    with torch.no_grad():
        assert torch.equal(
            loaded(input_ids=ids, attention_mask=segments).last_hidden_state,
            model.encoder(input_ids=ids, attention_mask=segments).last_hidden_state,
        )


# ----------------------------------------------------------------------------------------
# causal LM
# ----------------------------------------------------------------------------------------


def test_gpt2_config_from_size():
    c = gpt2_config({"layers": 3, "hidden": 48, "heads": 6, "dropout": 0.0, "attention_dropout": 0.2}, 69, 100)
    assert (c.n_layer, c.n_embd, c.n_head, c.n_inner) == (3, 48, 6, 192)
    assert (c.resid_pdrop, c.embd_pdrop, c.attn_pdrop) == (0.0, 0.0, 0.2)
    assert (c.vocab_size, c.n_positions, c.max_position_embeddings) == (69, 100, 100)
    assert (c.pad_token_id, c.bos_token_id, c.eos_token_id) == (seq.PAD_ID, seq.CLS_ID, seq.SEP_ID)
    with pytest.raises(ValueError, match="multiple"):
        gpt2_config({"layers": 1, "hidden": 10, "heads": 3}, 9, 9)


def test_causal_segment_attention():
    segments = torch.tensor([[1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 0, 0]])
    m = causal_segment_attention(segments)
    assert m.shape == (2, 1, 6, 6) and m.dtype == torch.bool
    for b in range(2):
        for q in range(6):
            for k in range(6):
                want = int(segments[b, q]) == int(segments[b, k]) and k <= q
                assert bool(m[b, 0, q, k]) == want
    assert m.any(-1).all()


def test_clm_forward_equals_the_lm_loss_of_transformers():
    """The module's loss is GPT2LMHeadModel's own (shifted) loss with every non-target label
    ignored, on padded rows with the usual 2-D attention mask; its logits are the LM's at
    the column before each target."""
    torch.manual_seed(0)
    model = GPTCLM(TINY, V3, 64).eval()
    ids, segments, positions, _ = _rows()
    target = ids >= seq.N_SPECIAL
    with torch.no_grad():
        out = model(ids, ids, target, segments, positions)
        full = model.lm(input_ids=ids, attention_mask=segments, labels=torch.where(target, ids, -100))
    assert torch.allclose(out["loss"], full.loss, atol=1e-6)
    assert torch.allclose(out["logits_masked"], full.logits[:, :-1][target[:, 1:]], atol=1e-5)
    assert torch.equal(out["labels_masked"], ids[target])


def test_clm_prediction_reads_only_the_tokens_before():
    """Changing the tokens from column c on changes no output before c (causal), and each
    row's predictions are those of the row alone (padding and other rows do not leak)."""
    torch.manual_seed(0)
    model = GPTCLM(TINY, V3, 64).eval()
    ids, segments, _, _ = _rows(lengths=(24, 24))
    other = ids.clone()
    other[:, 12:23] = torch.randint(5, V3, (2, 11))
    with torch.no_grad():
        a = model.encoder(input_ids=ids, attention_mask=causal_segment_attention(segments)).last_hidden_state
        b = model.encoder(input_ids=other, attention_mask=causal_segment_attention(segments)).last_hidden_state
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6) and not torch.allclose(a[:, 12:], b[:, 12:])


def test_clm_save_pretrained_loads_with_automodel(tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(0)
    model = GPTCLM(TINY, V3, 64).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "GPT2Model"
    lm = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids, segments, _, _ = _rows()
    with torch.no_grad():
        assert torch.equal(
            loaded(input_ids=ids, attention_mask=segments).last_hidden_state,
            model.encoder(input_ids=ids, attention_mask=segments).last_hidden_state,
        )
        assert torch.equal(lm(input_ids=ids).logits, model.lm(input_ids=ids).logits)


# ----------------------------------------------------------------------------------------
# packed rows
# ----------------------------------------------------------------------------------------


def ref_pack_rows(lengths, capacity):
    """First-fit decreasing, written plainly."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows = []
    for i in order:
        for row in rows:
            if sum(lengths[j] for j in row) + lengths[i] <= capacity:
                row.append(i)
                break
        else:
            rows.append([i])
    return rows


def test_pack_rows_is_first_fit_decreasing():
    rng = np.random.default_rng(0)
    for _ in range(200):
        capacity = int(rng.integers(5, 60))
        lengths = rng.integers(1, capacity + 1, int(rng.integers(1, 40)))
        rows = pack_rows(lengths, capacity)
        assert rows == ref_pack_rows(lengths.tolist(), capacity)
        assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
        assert all(lengths[r].sum() <= capacity for r in rows)
    assert pack_rows(np.array([3, 3, 3]), 3) == [[0], [1], [2]]
    with pytest.raises(ValueError, match="capacity"):
        pack_rows(np.array([4]), 3)


def _layout(windows, rows):
    """(ids, segments, positions, mask, labels) tensors of windows [(ids, mask), ...] laid
    out in ``rows`` (lists of window indices), plus where each window went."""
    width = max(sum(len(windows[w][0]) for w in r) for r in rows)
    shape = (len(rows), width)
    ids, segs, pos = torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.bool)
    where = {}
    for r, members in enumerate(rows):
        col = 0
        for s, w in enumerate(members, start=1):
            t, m = windows[w]
            n = len(t)
            ids[r, col : col + n], mask[r, col : col + n] = torch.as_tensor(t), torch.as_tensor(m)
            segs[r, col : col + n], pos[r, col : col + n] = s, torch.arange(n)
            where[w] = (r, col, n)
            col += n
    return ids, segs, pos, mask, where


@pytest.mark.parametrize("arch", ["mlm", "mae", "clm"])
def test_packed_rows_compute_what_unpacked_rows_compute(arch):
    """Block-diagonal attention (causal within each window for the causal model) + per-window
    position ids: a packed batch gives every window's masked (CLM: target) positions the same
    logits (and the batch the same loss) as one window per row."""
    rng = np.random.default_rng(2)
    windows = []
    for n in (30, 7, 12, 19, 5, 26, 9):
        t = np.concatenate([[seq.CLS_ID], rng.integers(5, V3, n - 2), [seq.SEP_ID]])
        m = (rng.random(n) < 0.4) & (t >= 5)
        m[1] = True
        windows.append((t, m))
    torch.manual_seed(0)
    model = {"mlm": lambda: BertMLM(TINY, V3, 64), "mae": lambda: BertMAE(TINY, DEC, V3, 64),
             "clm": lambda: GPTCLM(TINY, V3, 64)}[arch]().eval()  # fmt: skip
    if arch == "clm":  # next-token targets: every k-mer
        windows = [(t, t >= 5) for t, _ in windows]

    def logits_by_window(rows, packed):
        ids, segs, pos, mask, where = _layout(windows, rows)
        inputs = torch.where(mask, seq.MASK_ID, ids) if arch == "mlm" else ids
        with torch.no_grad():
            out = model(inputs, ids, mask, segs, pos, packed=packed)
        # logits_masked are in row-major order of the masked positions
        index = torch.full(mask.shape, -1, dtype=torch.long)
        index[mask] = torch.arange(int(mask.sum()))
        per_window = {w: out["logits_masked"][index[r, c : c + n][mask[r, c : c + n]]] for w, (r, c, n) in where.items()}
        return out["loss"], per_window

    rows = pack_rows(np.array([len(t) for t, _ in windows]), 32)
    assert len(rows) < len(windows) and any(len(r) > 1 for r in rows)
    loss_p, packed = logits_by_window(rows, packed=True)
    loss_u, unpacked = logits_by_window([[w] for w in range(len(windows))], packed=False)
    assert torch.allclose(loss_p, loss_u, atol=1e-5)
    for w in range(len(windows)):
        assert torch.allclose(packed[w], unpacked[w], atol=1e-5), w


# ----------------------------------------------------------------------------------------
# fast dropout (CPU training)
# ----------------------------------------------------------------------------------------


def test_dropout_scale_rate_values_and_determinism():
    from dnalm.models import dropout_scale

    torch.manual_seed(0)
    s = dropout_scale((1000, 1000), 0.1, torch.float32, "cpu")
    p = round(0.1 * 65536) / 65536
    values = torch.unique(s).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p))
    assert abs(float((s == 0).float().mean()) - p) < 0.002  # 1e6 draws: sd 0.0003
    assert abs(float(s.mean()) - 1.0) < 0.005
    torch.manual_seed(0)
    assert torch.equal(dropout_scale((1000, 1000), 0.1, torch.float32, "cpu"), s)
    assert torch.equal(dropout_scale((3, 5), 0.0, torch.float32, "cpu"), torch.ones(3, 5))
    assert dropout_scale((7,), 0.5, torch.float64, "cpu").dtype == torch.float64


def test_fast_dropout_attention_is_attention_with_a_dropout_mask():
    from dnalm.models import _attention_fast_dropout, dropout_scale

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g) for _ in range(3))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[1, :, :, 3:] = False
    module = torch.nn.Module().train()
    module.is_causal = False
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    out, _ = _attention_fast_dropout(module, q, k, v, mask, dropout=0.0, scaling=0.5)
    assert torch.allclose(out, ref, atol=1e-6)
    torch.manual_seed(3)
    out, _ = _attention_fast_dropout(module, q, k, v, mask, dropout=0.3, scaling=0.5)
    torch.manual_seed(3)
    probs = ((q @ k.transpose(-1, -2)) * 0.5).masked_fill(~mask, float("-inf")).softmax(-1)
    want = (probs * dropout_scale(probs.shape, 0.3, probs.dtype, "cpu")) @ v
    assert torch.allclose(out, want.transpose(1, 2), atol=1e-6)


def test_use_fast_dropout_changes_only_the_masks():
    from dnalm.models import FAST_DROPOUT_ATTENTION, FastDropout, use_fast_dropout

    torch.manual_seed(0)
    plain = BertMAE(TINY, DEC, V3, 64)
    fast = BertMAE(TINY, DEC, V3, 64)
    fast.load_state_dict(plain.state_dict())
    use_fast_dropout(fast)
    assert not any(type(m) is torch.nn.Dropout for m in fast.modules())
    assert sum(isinstance(m, FastDropout) for m in fast.modules()) == 2 * 3 + 1 + 3 + 1  # encoder, decoder
    assert fast.encoder.config._attn_implementation == fast.decoder.config._attn_implementation == FAST_DROPOUT_ATTENTION
    ids, segments, positions, mask = _rows()
    plain.eval(), fast.eval()
    with torch.no_grad():
        a, b = plain(ids, ids, mask, segments, positions), fast(ids, ids, mask, segments, positions)
    assert torch.allclose(a["logits_masked"], b["logits_masked"], atol=1e-5)
    fast.train()
    out = fast(ids, ids, mask, segments, positions)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and fast.encoder.embeddings.word_embeddings.weight.grad is not None
