"""Tokenization: the fast numpy path against brute force and against the saved HF tokenizer."""

import itertools
import subprocess
import sys

import numpy as np
import pytest

from dnalm import seq


def brute_tokens(s, k, stride):
    s = s.replace("-", "").upper()
    vocab = {"".join(p): i + seq.N_SPECIAL for i, p in enumerate(itertools.product("ACGT", repeat=k))}
    out = [seq.CLS_ID]
    for i in range(0, len(s) - k + 1, stride):
        out.append(vocab.get(s[i : i + k], seq.UNK_ID))
    return out + [seq.SEP_ID]


def random_dna(rng, n, alphabet="ACGTacgtNRY-"):
    p = np.array([5, 5, 5, 5, 1, 1, 1, 1, 0.5, 0.2, 0.2, 0.2])
    return "".join(rng.choice(list(alphabet), size=n, p=p / p.sum()))


@pytest.mark.parametrize("tokenization,stride_of_k", [("overlapping", False), ("non-overlapping", True)])
def test_tokenize_matches_brute_force(tokenization, stride_of_k):
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 7))
        s = random_dna(rng, int(rng.integers(0, 40)))
        expected = brute_tokens(s, k, k if stride_of_k else 1)
        assert seq.tokenize(s, k, tokenization).tolist() == expected, (s, k)


def test_kmer_ids_lexicographic():
    assert seq.kmer_to_id("AAA") == 0
    assert seq.kmer_to_id("AAC") == 1
    assert seq.kmer_to_id("TTT") == 63
    assert seq.all_kmers(2)[seq.kmer_to_id("GT")] == "GT"
    for code in range(256):
        assert seq.kmer_to_id(seq.id_to_kmer(code, 4)) == code
    assert seq.vocab_size(6) == 4101


def test_encode_decode_and_revcomp():
    assert seq.encode("ACgt-N").tolist() == [0, 1, 2, 3, 4]
    assert seq.decode(seq.encode("ACGTN")) == "ACGTN"
    assert seq.reverse_complement("AACGTn") == "nACGTT"
    assert seq.kmer_text_to_sequence(seq.kmer_text("ACGTACGGT", 6, "overlapping")) == "ACGTACGGT"
    assert seq.kmer_text("ACGTACGGT", 3, "non-overlapping") == "ACG TAC GGT"


def test_pad_batch():
    ids, mask = seq.pad_batch([np.array([2, 7, 3]), np.array([2, 3])])
    assert ids.tolist() == [[2, 7, 3], [2, 3, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_saved_tokenizer_agrees_in_fresh_process(tmp_path):
    """AutoTokenizer loads the saved tokenizer with no custom code and agrees token for token."""
    seq.save_tokenizer(tmp_path, 4)
    rng = np.random.default_rng(1)
    seqs = [random_dna(rng, int(rng.integers(4, 60)), alphabet="ACGTacgtNRY-") for _ in range(30)]
    code = f"""
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(tmp_path)!r})
texts = json.loads(sys.stdin.read())
print(json.dumps([tok(t)["input_ids"] for t in texts]))
"""
    import json

    for tokenization in seq.TOKENIZATIONS:
        texts = [seq.kmer_text(s, 4, tokenization) for s in seqs]
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True, check=True)
        hf = json.loads(out.stdout)
        for s, ids in zip(seqs, hf):
            assert ids == seq.tokenize(s, 4, tokenization).tolist(), s
    assert (tmp_path / "vocab.txt").read_text().split("\n")[:6] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "AAAA"]


@pytest.mark.parametrize("tokenization", seq.TOKENIZATIONS)
@pytest.mark.parametrize("k", [1, 3, 6])
def test_tokenize_windows_equals_per_window_tokenization(tokenization, k):
    rng = np.random.default_rng(k)
    bases = rng.integers(0, 5, 5000).astype(np.uint8)  # code 4 = N
    bases[rng.random(5000) < 0.9] %= 4  # mostly ACGT
    lengths = rng.integers(0, 40, 300)
    starts = rng.integers(0, 5000 - 40, 300)
    flat, offsets = seq.tokenize_windows(bases, starts, lengths, k, tokenization)
    assert offsets[0] == 0 and offsets[-1] == len(flat) and len(offsets) == 301
    for j in range(300):
        want = seq.tokenize_codes(bases[starts[j] : starts[j] + lengths[j]], k, tokenization)
        assert flat[offsets[j] : offsets[j + 1]].tolist() == want.tolist(), j
    empty, off = seq.tokenize_windows(bases, [], [], k, tokenization)
    assert empty.size == 0 and off.tolist() == [0]
