"""Tests of dnalm.align, the alignment baseline: identity against hand-computed alignments,
planted sources found, vsearch's exhaustive search against a parasail brute force, ties,
chunking, errors, and the simulated barcodes' genus accuracy against chance.

Tests that run vsearch skip without it (Debian package vsearch, tools/apt-packages.txt)."""

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dnalm import align, evaluate
from dnalm.fasta import write_fasta
from dnalm.io import InputError
from dnalm.simulate import simulate_barcodes

ROOT = Path(__file__).resolve().parents[1]
needs_vsearch = pytest.mark.skipif(
    shutil.which("vsearch") is None, reason="vsearch not installed (Debian package vsearch, tools/apt-packages.txt)"
)
VSEARCH = align.Settings(tool="vsearch", threads=2)
# vsearch's scores (raw scores of hand-made alignments: gap of 1 costs 20, of 2 costs 22)
MATCH, MISMATCH, GAP_OPEN, GAP_EXTEND = 2, -4, 20, 2


def _random(rng, n):
    return "".join(rng.choice(list("ACGT"), size=n))


def _mutate(rng, seq, sub=0.03, indels=2, trim=10, ns=2):
    """A copy with substitutions, short indels, trimmed ends and a few Ns."""
    s = list(seq)
    for i in np.flatnonzero(rng.random(len(s)) < sub):
        s[i] = "ACGT"[("ACGT".index(s[i]) + 1 + rng.integers(3)) % 4]
    for _ in range(indels):
        i = int(rng.integers(50, len(s) - 50))
        if rng.random() < 0.5:
            del s[i : i + 3]
        else:
            s[i:i] = list(_random(rng, 3))
    for i in rng.choice(len(s), size=ns, replace=False):
        s[i] = "N"
    return "".join(s)[int(rng.integers(0, trim + 1)) : len(s) - int(rng.integers(0, trim + 1))]


def _fasta(path, seqs):
    write_fasta(path, ((str(i), s) for i, s in enumerate(seqs)))
    return path


def _search(settings, queries, references, tmp_path):
    return align.search(dict(enumerate(queries)), _fasta(tmp_path / "refs.fa", references), settings)


def _matrix():
    parasail = pytest.importorskip("parasail")
    matrix = parasail.matrix_create("ACGTN", MATCH, MISMATCH)
    for i in range(5):  # N against anything scores 0, as in vsearch
        matrix.set_value(4, i, 0)
        matrix.set_value(i, 4, 0)
    return matrix


def brute_identity(query, reference, matrix):
    """``(matches, columns)`` of parasail's semi-global alignment (vsearch's scores, terminal
    gaps free): columns without terminal gaps; N matches anything. Agrees with vsearch between
    related sequences; between unrelated ones free end gaps allow a short perfect overlap."""
    import parasail

    tb = parasail.sg_trace_striped_16(query, reference, GAP_OPEN, GAP_EXTEND, matrix).get_traceback()
    q = np.frombuffer(tb.query.encode(), dtype=np.uint8)
    r = np.frombuffer(tb.ref.encode(), dtype=np.uint8)
    both = (q != ord("-")) & (r != ord("-"))
    lo, hi = int(np.argmax(both)), len(both) - int(np.argmax(both[::-1]))
    q, r, both = q[lo:hi], r[lo:hi], both[lo:hi]
    return int((both & ((q == r) | (q == ord("N")) | (r == ord("N")))).sum()), hi - lo


def brute_force(queries, references):
    """Best hit of each query over every reference with :func:`brute_identity` (exact
    fractions, ties to the lowest reference), as :data:`align.HIT_COLUMNS`."""
    matrix = _matrix()
    rows = []
    for qi, q in enumerate(queries):
        best = (-1, 0, 0)
        for ri, r in enumerate(references):
            m, c = brute_identity(q, r, matrix)
            if best[0] < 0 or m * best[2] > best[1] * c:
                best = (ri, m, c)
        rows.append((qi, best[0], best[1] / best[2], best[1], best[2]))
    return pd.DataFrame(rows, columns=align.HIT_COLUMNS).astype({"query": np.int64, "reference": np.int64})


# --------------------------------------------------------------------------- identity


def _hand_pair():
    """A reference and a query: 5 + 5 bases trimmed, one substitution, a 3-base deletion, one N.

    The alignment, terminal gaps left out, spans reference positions 5..54: 50 columns, of
    which 3 are the deletion's gap columns and 1 a mismatch; the N matches. Identity 46/50.
    """
    rng = np.random.default_rng(7)
    ref = _random(rng, 60)
    q = list(ref[5:55])  # reference positions 5..54
    q[10] = "ACGT"[("ACGT".index(q[10]) + 2) % 4]  # substitution at reference position 15
    q[40] = "N"  # reference position 45
    del q[25:28]  # reference positions 30..32
    return "".join(q), ref


def test_brute_identity_hand_computed():
    matrix, (query, ref) = _matrix(), _hand_pair()
    assert brute_identity(query, ref, matrix) == (46, 50)
    assert brute_identity("ACGTACGTAC", "ACGTACGTAC", matrix) == (10, 10)
    assert brute_identity("ACGTTCGTAC", "ACGTACGTAC", matrix) == (9, 10)
    assert brute_identity("CGTACG", "ACGTACGTAC", matrix) == (6, 6)  # terminal gaps do not count


@needs_vsearch
def test_vsearch_identity_hand_computed(tmp_path):
    query, ref = _hand_pair()
    hits = _search(VSEARCH, [query, "ACGTTCGTACGTAGCATGCAGTCAGTGACTGACTGACTGAC"],
                   [ref, "ACGTACGTACGTAGCATGCAGTCAGTGACTGACTGACTGAC"], tmp_path)
    assert hits["reference"].tolist() == [0, 1]
    assert hits[["matches", "columns"]].values.tolist() == [[46, 50], [40, 41]]
    assert hits["identity"].tolist() == [46 / 50, 40 / 41]


def test_normalize():
    assert align.normalize("acg-tRYn\u00e9") == "ACGTNNNN"
    assert align.distinct(["ACGT", "acgt", "AC-GT", "TTTT", "ACGT"])[0] == ["ACGT", "TTTT"]
    assert align.distinct(["ACGT", "acgt", "TTTT", "ACGT"])[1].tolist() == [0, 0, 1, 0]


# --------------------------------------------------------------------------- search


@needs_vsearch
def test_planted_sources_are_found(tmp_path):
    rng = np.random.default_rng(1)
    refs = [_random(rng, 658) for _ in range(40)]
    sources = rng.integers(0, len(refs), 25)
    queries = [_mutate(rng, refs[s]) for s in sources]
    hits = _search(VSEARCH, queries, refs, tmp_path)
    assert hits["query"].tolist() == list(range(25))
    assert hits["reference"].tolist() == sources.tolist()
    assert (hits["identity"] > 0.9).all()


@needs_vsearch
def test_a_reference_without_a_shared_word_is_still_aligned(tmp_path):
    """Exhaustive means every reference: also one that shares no 8-mer with the query
    (vsearch's k-mer filter drops those by default), here 86 % identical."""
    rng = np.random.default_rng(6)
    ref = _random(rng, 301)
    query = "".join(("ACGT"[("ACGT".index(b) + 1) % 4] if i % 7 == 6 else b) for i, b in enumerate(ref))
    hits = _search(VSEARCH, [query], [_random(rng, 301), ref], tmp_path)
    assert hits[["reference", "matches", "columns"]].values.tolist() == [[1, 258, 301]]


def _barcode_sets(n_queries=30, n_refs=300, seed=3):
    """Simulated barcodes (distinct): unseen-species queries, some with a planted indel, and
    references of the seen species."""
    table, _ = simulate_barcodes(seed=seed)
    rng = np.random.default_rng(seed)
    queries = table.loc[table["split"] == "test_unseen", "dna_barcode"].drop_duplicates().head(n_queries).tolist()
    for i in range(0, len(queries), 3):  # an insertion or a deletion in every third query
        q, at = queries[i], int(rng.integers(100, 500))
        queries[i] = q[:at] + (_random(rng, 2) if i % 2 else "") + q[at + (0 if i % 2 else 3) :]
    refs = table.loc[table["split"] == "train", "dna_barcode"].drop_duplicates().head(n_refs).tolist()
    return queries, refs


@needs_vsearch
def test_vsearch_exhaustive_equals_parasail_brute_force(tmp_path):
    queries, refs = _barcode_sets()
    fast = _search(VSEARCH, queries, refs, tmp_path)
    pd.testing.assert_frame_equal(fast, brute_force(queries, refs))
    assert fast["identity"].between(0.7, 1.0).all()


@needs_vsearch
def test_vsearch_heuristic_is_never_better_than_exhaustive(tmp_path):
    queries, refs = _barcode_sets(n_queries=30, n_refs=300)
    exact = _search(VSEARCH, queries, refs, tmp_path)
    quick = _search(align.Settings(maxaccepts=1, maxrejects=1, threads=2), queries, refs, tmp_path)
    assert (quick["identity"] <= exact["identity"]).all()
    assert not align.Settings(maxaccepts=1).exhaustive and VSEARCH.exhaustive


@needs_vsearch
def test_ties_go_to_the_lowest_reference(tmp_path):
    rng = np.random.default_rng(5)
    x = _random(rng, 300)

    def sub(seq, at):
        return seq[:at] + "ACGT"[("ACGT".index(seq[at]) + 1) % 4] + seq[at + 1 :]

    far = _random(rng, 300)
    # references 1 and 3 are both one substitution away from x (tie); 0 and 2 are further
    refs = [sub(sub(x, 5), 9), sub(x, 100), sub(sub(sub(x, 1), 2), 3), sub(x, 200), far]
    hits = _search(VSEARCH, [x, sub(x, 200), far], refs, tmp_path)
    assert hits["reference"].tolist() == [1, 3, 4]
    assert hits["identity"].tolist() == [299 / 300, 1.0, 1.0]
    refs[1], refs[3] = refs[3], refs[1]  # still a tie: still the lower index
    assert _search(VSEARCH, [x], refs, tmp_path)["reference"].tolist() == [1]
    assert brute_force([x], refs)["reference"].tolist() == [1]


def test_best_hits_ranks_exact_fractions():
    cand = pd.DataFrame({"query": [0, 0, 0, 1, 1, 2], "reference": [4, 2, 3, 1, 0, 9],
                         "matches": [2, 4, 1, 333, 1, 0], "columns": [3, 6, 3, 1000, 3, 0]})
    hits = align.best_hits(cand, np.array([0, 1, 2, 3]))
    assert hits.columns.tolist() == align.HIT_COLUMNS
    assert hits["reference"].tolist() == [2, 0, -1, -1]  # 2/3 == 4/6: lower reference; 1/3 > 333/1000
    assert hits["matches"].tolist() == [4, 1, 0, 0]
    assert np.isnan(hits["identity"].iloc[2]) and np.isnan(hits["identity"].iloc[3])


@needs_vsearch
def test_no_hit_below_min_identity_and_empty_queries(tmp_path):
    rng = np.random.default_rng(2)
    refs = [_random(rng, 200) for _ in range(5)]
    queries = [_mutate(rng, refs[2], sub=0.01, indels=0, ns=0), _random(rng, 200), ""]
    strict = align.Settings(min_identity=0.9, threads=1)
    hits = _search(strict, queries, refs, tmp_path)
    assert hits["reference"].tolist() == [2, -1, -1]
    assert hits["identity"].iloc[0] >= 0.9 and hits["identity"].iloc[1:].isna().all()
    assert hits["columns"].tolist()[1:] == [0, 0]


def test_settings_errors_name_the_config_key():
    with pytest.raises(ValueError, match=r"evaluation\.align\.tool.*'blast'"):
        align.Settings(tool="blast")
    with pytest.raises(ValueError, match=r"evaluation\.align\.min_identity"):
        align.Settings(min_identity=97)


def test_missing_vsearch_names_the_tool_and_the_config_key(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no vsearch here
    with pytest.raises(align.AlignerNotFound, match=r"evaluation\.align\.tool.*'vsearch'.*PATH.*apt-get install vsearch"):
        _search(VSEARCH, ["ACGTACGTAC"], ["ACGTACGTAC"], tmp_path)


# --------------------------------------------------------------------------- inputs, chunks, tables


def _table(tmp_path, **params):
    table, _ = simulate_barcodes(params or None, seed=0)
    path = tmp_path / "barcodes.tsv"
    table.to_csv(path, sep="\t", index=False)
    return path, table


SPLITS = {"closed_world": {"query": "test", "reference": "train"},
          "open_world": {"query": "test_unseen", "reference": "train"}}


def _write_inputs(tmp_path, barcodes):
    outputs = {p: {n: tmp_path / p / f"{n}.{'tsv' if n == 'members' else 'fa'}" for n in ("queries", "references", "members")}
               for p in SPLITS}
    align.write_inputs(barcodes, SPLITS, outputs)
    return outputs


def test_write_inputs_deduplicates_and_keeps_table_order(tmp_path):
    path, table = _table(tmp_path)
    out = _write_inputs(tmp_path, path)
    members = pd.read_csv(out["open_world"]["members"], sep="\t", keep_default_na=False)
    refs = align.read_indexed_fasta(out["open_world"]["references"])
    ref_rows = table[table["split"] == "train"]
    got = members[members["role"] == "reference"]
    assert got["processid"].tolist() == ref_rows["processid"].tolist()
    assert got["label"].tolist() == ref_rows["genus"].tolist()
    assert [refs[i] for i in got["seq"]] == ref_rows["dna_barcode"].tolist()  # each row's own sequence
    assert len(refs) == ref_rows["dna_barcode"].nunique() < len(ref_rows)  # identical barcodes once
    assert got.drop_duplicates("seq")["seq"].tolist() == list(range(len(refs)))  # first appearance order
    closed = pd.read_csv(out["closed_world"]["members"], sep="\t", keep_default_na=False)
    assert closed.loc[closed["role"] == "query", "label"].tolist() == table.loc[table["split"] == "test", "species"].tolist()


@needs_vsearch
def test_barcodes_mostly_n_are_not_aligned(tmp_path, caplog):
    """vsearch counts N as a match: an all-N reference would be everyone's nearest."""
    rng = np.random.default_rng(4)
    a, b = _random(rng, 200), _random(rng, 200)
    rows = [("q0", a[:150] + "N" * 50, "G1", "test_unseen"), ("q1", b, "G2", "test_unseen"), ("q2", "", "G2", "test_unseen"),
            ("r0", "N" * 200, "G3", "train"), ("r1", "N" * 100 + a[100:], "G3", "train"), ("r2", a, "G1", "train"),
            ("r3", b[:160] + "N" * 40, "G2", "train")]
    table = pd.DataFrame(rows, columns=["processid", "dna_barcode", "genus", "split"]).assign(species="s", order="o", family="f")
    table.to_csv(tmp_path / "barcodes.tsv", sep="\t", index=False)
    splits = {"open_world": SPLITS["open_world"]}
    files = {"open_world": {n: tmp_path / f"{n}.{'tsv' if n == 'members' else 'fa'}" for n in ("queries", "references", "members")}}
    with caplog.at_level(logging.WARNING, logger="dnalm.align"):
        align.write_inputs(tmp_path / "barcodes.tsv", splits, files, max_n_fraction=0.2)
    assert "2 distinct queries (no hit) and 2 distinct references (left out)" in caplog.text
    hits = align.search_chunk(files["open_world"]["queries"], files["open_world"]["references"], 0, 1, VSEARCH)
    assert hits["reference"].tolist() == [-1, 3, -1]  # q0 25 % N; q1 finds r3 (20 % N: kept); q2 empty
    members = pd.read_csv(files["open_world"]["members"], sep="\t", keep_default_na=False)
    metrics, _ = align.taxonomy_tables({"open_world": (members, hits)})
    assert metrics.query("metric == 'accuracy'")["value"].item() == pytest.approx(1 / 3)
    table[table["processid"] != "r2"].to_csv(tmp_path / "barcodes.tsv", sep="\t", index=False)  # r1, r3 > 10 % N
    with pytest.raises(InputError, match=r"barcodes\.tsv.*every reference barcode \(split 'train'\).*max_n_fraction"):
        align.write_inputs(tmp_path / "barcodes.tsv", splits, files, max_n_fraction=0.1)


def test_write_inputs_errors_name_file_and_split(tmp_path):
    path, table = _table(tmp_path)
    with pytest.raises(InputError, match=r"barcodes\.tsv.*split 'nope'"):
        align.write_inputs(path, {"open_world": {"query": "nope", "reference": "train"}}, {})
    table.drop(columns="genus").to_csv(path, sep="\t", index=False)
    with pytest.raises(InputError, match=r"barcodes\.tsv.*\['genus'\]"):
        align.write_inputs(path, SPLITS, {})


@needs_vsearch
def test_chunked_equals_unchunked(tmp_path):
    path, _ = _table(tmp_path, n_orders=1, families_per_order=2)
    fa = _write_inputs(tmp_path, path)["open_world"]
    whole = align.search_chunk(fa["queries"], fa["references"], 0, 1, align.Settings(threads=1))
    parts = [align.search_chunk(fa["queries"], fa["references"], i, 3, VSEARCH) for i in (2, 0, 1)]  # 2 threads
    assert sorted(len(p) for p in parts) == sorted(np.diff([len(whole) * i // 3 for i in range(4)]).tolist())
    pd.testing.assert_frame_equal(align.merge_hits(parts, len(whole)), whole)
    with pytest.raises(ValueError, match="miss queries"):
        align.merge_hits(parts[:2], len(whole))
    with pytest.raises(ValueError, match="in two chunks"):
        align.merge_hits([parts[0], parts[0]])


def test_chunk_range_covers_everything_once():
    for n in (0, 1, 7, 100):
        for chunks in (1, 3, 8):
            spans = [align.chunk_range(n, i, chunks) for i in range(chunks)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    with pytest.raises(ValueError, match="chunk 3 is not in 0..2"):
        align.chunk_range(10, 3, 3)


def test_predictions_take_the_first_reference_row_of_a_sequence():
    members = pd.DataFrame({
        "processid": ["q0", "q1", "q2", "r0", "r1", "r2"],
        "role": ["query"] * 3 + ["reference"] * 3,
        "label": ["A", "B", "B", "A", "B", "C"],
        "seq": [0, 1, 0, 0, 1, 0],  # r0 and r2: one sequence, two labels: r0 (lower index) wins
    })
    hits = pd.DataFrame({"query": [0, 1], "reference": [0, -1], "identity": [0.9, np.nan], "matches": [9, 0], "columns": [10, 0]})
    y_true, y_pred, y_ref, identity = align.predictions(members, hits)
    assert y_true.tolist() == ["A", "B", "B"]
    assert y_pred.tolist() == ["A", align.NO_HIT, "A"]
    assert y_ref.tolist() == ["A", "B", "C"]
    assert np.isnan(identity[1]) and identity[2] == 0.9


def test_taxonomy_table_counts_no_hits_wrong_and_logs_them(caplog):
    members = pd.DataFrame({"processid": list("abcdef"), "role": ["query"] * 3 + ["reference"] * 3,
                            "label": ["G1", "G2", "G3", "G1", "G2", "G3"], "seq": [0, 1, 2, 0, 1, 2]})
    hits = pd.DataFrame({"query": [0, 1, 2], "reference": [0, -1, 1], "identity": [1.0, np.nan, 0.8],
                         "matches": [5, 0, 4], "columns": [5, 0, 5]})
    with caplog.at_level(logging.WARNING, logger="dnalm.align"):
        metrics, per_class = align.taxonomy_tables({"open_world": (members, hits)})
    assert "1 of 3 queries have no hit" in caplog.text
    acc = metrics.query("metric == 'accuracy'")["value"].item()
    assert acc == pytest.approx(1 / 3)
    assert metrics.query("metric == 'chance_accuracy'")["value"].item() == pytest.approx(1 / 3)


@needs_vsearch
def test_simulated_genus_accuracy_well_above_chance(tmp_path):
    path, table = _table(tmp_path)
    protocols = {}
    for protocol, files in _write_inputs(tmp_path, path).items():
        members = pd.read_csv(files["members"], sep="\t", keep_default_na=False)
        protocols[protocol] = (members, align.search_chunk(files["queries"], files["references"], 0, 1, VSEARCH))
    metrics, per_class = align.taxonomy_tables(protocols)
    assert metrics.columns.tolist() == evaluate.COLUMNS
    value = metrics.set_index(["protocol", "level", "metric"])["value"]
    assert set(value.index) >= {
        ("closed_world", "species", "accuracy"), ("closed_world", "species", "macro_f1"),
        ("open_world", "genus", "accuracy"), ("open_world", "genus", "balanced_accuracy"),
        ("open_world", "genus", "macro_f1"), ("open_world", "genus", "chance_accuracy"),
    }
    queries, refs = table[table["split"] == "test_unseen"], table[table["split"] == "train"]
    chance = evaluate.chance_accuracy(refs["genus"], queries["genus"])
    assert value["open_world", "genus", "chance_accuracy"] == pytest.approx(chance)
    assert chance < 0.1
    assert value["open_world", "genus", "accuracy"] >= max(0.8, 8 * chance)
    assert value["closed_world", "species", "accuracy"] >= 0.9
    assert per_class.columns.tolist() == ["class", "support", "train_count", "accuracy", "protocol", "level"]
    assert per_class.groupby("protocol")["support"].sum().to_dict() == {"closed_world": (table["split"] == "test").sum(),
                                                                       "open_world": len(queries)}


# --------------------------------------------------------------------------- rules


@needs_vsearch
def test_align_rules_run_in_snakemake(tmp_path):
    """rules/align.smk on its own (the path helpers it takes from rules/common.smk stubbed,
    its alignment section copied from there): the chunks, the gather, and a table with the
    taxonomy rule's columns."""
    path, _ = _table(tmp_path, n_orders=1, families_per_order=2)
    common = (ROOT / "rules" / "common.smk").read_text()
    section = common[common.index("# ---------------------------------------------------------------- alignment baseline"):
                     common.index("def training_metrics():")]
    (tmp_path / "Snakefile").write_text(f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(ROOT / 'scripts')!r})
from dnalm.config import validate_config
configfile: "config.yaml"
validate_config(config, {str(ROOT / 'config' / 'schema.yaml')!r})
def R(path):
    return str(Path("results") / path)
def barcode_table():
    return {str(path)!r}
{section}
include: {str(ROOT / 'rules' / 'align.smk')!r}
rule all:
    input: R("eval/taxonomy/align.tsv")
""")
    (tmp_path / "config.yaml").write_text("evaluation:\n  align:\n    chunks: 3\n    threads: 1\n")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--quiet"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = tmp_path / "results"
    assert sorted(p.name for p in (res / "align" / "open_world" / "hits").iterdir()) == ["0.tsv", "1.tsv", "2.tsv"]
    metrics = pd.read_csv(res / "eval" / "taxonomy" / "align.tsv", sep="\t")
    assert metrics.columns.tolist() == ["model", "dataset", *evaluate.COLUMNS]
    assert set(metrics["model"]) == {"align"} and set(metrics["dataset"]) == {"barcodes"}
    per_class = pd.read_csv(res / "eval" / "bias" / "align.tsv", sep="\t")
    assert per_class.columns.tolist()[:2] == ["model", "dataset"]
    assert (res / "benchmarks" / "align_chunk" / "open_world" / "2.tsv").exists()
    assert "queries" in (res / "logs" / "align_chunk" / "open_world" / "0.log").read_text()
