"""DNA alphabet, 2-bit encoding and k-mer tokenization (docs/design.md#sequences).

Vocabulary layout, shared by every model: the five special tokens, then all 4**k k-mers
in lexicographic (ACGT) order, so that the token id of a k-mer is ``N_SPECIAL`` plus its
2-bit code read as a base-4 number. The fast numpy path here and the saved Hugging Face
tokenizer (``save_tokenizer``) agree token for token; tests check it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ALPHABET = "ACGT"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(5)
N_SPECIAL = len(SPECIAL_TOKENS)
INVALID = 4  # code of any base that is not A, C, G or T
TOKENIZATIONS = ("overlapping", "non-overlapping")

_LUT = np.full(256, INVALID, dtype=np.uint8)
for _i, _b in enumerate(ALPHABET):
    _LUT[ord(_b)] = _i
    _LUT[ord(_b.lower())] = _i
_COMPLEMENT = str.maketrans("ACGTacgtNn", "TGCAtgcaNn")


def vocab_size(k: int) -> int:
    return N_SPECIAL + 4**k


def clean(seq: str) -> str:
    """Upper-case and remove alignment gaps ('-')."""
    return seq.replace("-", "").upper()


def encode(seq: str | bytes) -> np.ndarray:
    """Bases -> uint8 codes: A=0, C=1, G=2, T=3 (either case), anything else 4. Gaps removed."""
    if isinstance(seq, str):
        seq = seq.replace("-", "").encode("ascii", errors="replace")
    else:
        seq = seq.replace(b"-", b"")
    return _LUT[np.frombuffer(seq, dtype=np.uint8)]


def decode(codes: np.ndarray) -> str:
    """uint8 codes -> bases ('N' for code 4)."""
    return np.frombuffer(b"ACGTN", dtype=np.uint8)[np.asarray(codes)].tobytes().decode()


def reverse_complement(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def kmer_to_id(kmer: str) -> int:
    """Lexicographic index of a k-mer of ACGT (0 .. 4**k - 1)."""
    code = 0
    for b in kmer.upper():
        code = code * 4 + ALPHABET.index(b)
    return code


def id_to_kmer(code: int, k: int) -> str:
    out = []
    for _ in range(k):
        out.append(ALPHABET[code % 4])
        code //= 4
    return "".join(reversed(out))


def all_kmers(k: int) -> list[str]:
    """All 4**k k-mers in lexicographic order (index == ``kmer_to_id``)."""
    import itertools

    return ["".join(p) for p in itertools.product(ALPHABET, repeat=k)]


def kmer_codes(codes: np.ndarray, k: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """k-mer codes of the windows starting at 0, stride, 2*stride, ...

    Returns ``(ids, valid)``: ``ids`` int64 base-4 values (meaningless where invalid),
    ``valid`` True where the window holds only ACGT. Windows that would run past the
    end are dropped (a non-overlapping remainder shorter than k gives no token).
    """
    codes = np.asarray(codes, dtype=np.uint8)
    n = codes.shape[0] - k + 1
    if n <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    bad = codes > 3
    c = np.where(bad, 0, codes).astype(np.int64)
    ids = np.zeros(n, dtype=np.int64)
    for j in range(k):
        ids = ids * 4 + c[j : j + n]
    # a window is invalid if it contains a bad base: sliding count of bad bases
    cs = np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])
    valid = (cs[k : k + n] - cs[:n]) == 0
    if stride != 1:
        ids, valid = ids[::stride], valid[::stride]
    return ids, valid


def tokenize_codes(codes: np.ndarray, k: int, tokenization: str, add_special: bool = True) -> np.ndarray:
    """Token ids of an encoded sequence: [CLS] k-mers [SEP]; k-mers with non-ACGT -> [UNK]."""
    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"unknown tokenization {tokenization!r}; expected one of {TOKENIZATIONS}")
    stride = 1 if tokenization == "overlapping" else k
    ids, valid = kmer_codes(codes, k, stride)
    tok = np.where(valid, ids + N_SPECIAL, UNK_ID).astype(np.int64)
    if add_special:
        tok = np.concatenate([[CLS_ID], tok, [SEP_ID]]).astype(np.int64)
    return tok


def tokenize_windows(bases: np.ndarray, starts, lengths, k: int, tokenization: str) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of many windows of a base-code array at once (the training batches' path).

    Window j is ``bases[starts[j] : starts[j] + lengths[j]]``; its tokens are exactly
    ``tokenize_codes(window, k, tokenization)`` ([CLS] k-mers [SEP]). Returns the windows'
    tokens concatenated and the n + 1 offsets of each window's tokens in that array.
    ``bases`` may be a memory map: only the windows are read.
    """
    if tokenization not in TOKENIZATIONS:
        raise ValueError(f"unknown tokenization {tokenization!r}; expected one of {TOKENIZATIONS}")
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    stride = 1 if tokenization == "overlapping" else k
    # the windows' bases back to back, then k-mer codes of every start (ignoring boundaries)
    base_off = np.concatenate([[0], np.cumsum(lengths)])
    total = int(base_off[-1])
    codes = np.asarray(bases[np.repeat(starts - base_off[:-1], lengths) + np.arange(total)], dtype=np.uint8)
    ids, valid = kmer_codes(codes, k, 1)
    # k-mer j of window w starts at base base_off[w] + j * stride, j < n_kmers[w]
    n_kmers = np.where(lengths >= k, (lengths - k) // stride + 1, 0)
    tok_off = np.concatenate([[0], np.cumsum(n_kmers + 2)])
    n_tok = int(tok_off[-1])
    window = np.repeat(np.arange(lengths.shape[0]), n_kmers)
    j = np.arange(window.shape[0]) - np.repeat(np.cumsum(n_kmers) - n_kmers, n_kmers)
    at = base_off[:-1][window] + j * stride
    out = np.empty(n_tok, dtype=np.int64)
    out[tok_off[:-1]] = CLS_ID
    out[tok_off[1:] - 1] = SEP_ID
    out[tok_off[:-1][window] + 1 + j] = np.where(valid[at], ids[at] + N_SPECIAL, UNK_ID)
    return out, tok_off


def tokenize(seq: str, k: int, tokenization: str, add_special: bool = True) -> np.ndarray:
    """Token ids of a DNA string (the fast path; agrees with the saved HF tokenizer)."""
    return tokenize_codes(encode(seq), k, tokenization, add_special)


def kmer_text(seq: str, k: int, tokenization: str) -> str:
    """Space-separated k-mers, the text form the saved HF tokenizer reads (as DNABERT)."""
    seq = clean(seq)
    stride = 1 if tokenization == "overlapping" else k
    return " ".join(seq[i : i + k] for i in range(0, len(seq) - k + 1, stride))


def kmer_text_to_sequence(text: str) -> str:
    """Rebuild bases from space-separated overlapping k-mers (GeneMask task files)."""
    kmers = text.split()
    if not kmers:
        return ""
    return kmers[0] + "".join(km[-1] for km in kmers[1:])


def pad_batch(token_lists: list[np.ndarray], pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id arrays into ``(input_ids, attention_mask)`` int64 matrices."""
    width = max((len(t) for t in token_lists), default=0)
    if pad_to is not None:
        width = max(width, pad_to)
    ids = np.full((len(token_lists), width), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(token_lists), width), dtype=np.int64)
    for i, t in enumerate(token_lists):
        ids[i, : len(t)] = t
        mask[i, : len(t)] = 1
    return ids, mask


def save_tokenizer(directory: str | os.PathLike, k: int, model_max_length: int = 512) -> None:
    """Save a ``BertTokenizerFast`` over the k-mer vocabulary into ``directory``.

    ``AutoTokenizer.from_pretrained(directory)`` loads it with no custom code; its input is
    the space-separated k-mer text of :func:`kmer_text`.
    """
    from transformers import BertTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_map = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + all_kmers(k))}
    tok = BertTokenizerFast(
        vocab=vocab_map,
        do_lower_case=False,
        tokenize_chinese_chars=False,
        strip_accents=False,
        model_max_length=model_max_length,
    )
    tok.save_pretrained(str(directory))
    # DNABERT-style vocab.txt as well, for tools that read the vocabulary directly
    (directory / "vocab.txt").write_text("\n".join(vocab_map) + "\n")
