"""Tests of the simulated genome (dnalm.simulate.genome, .background): parameters, planted
motifs, repeats, gaps and composition. Most use a small genome; the calibration tests
(composition, NPMI recovery of the planted motifs) run the default parameters once."""

import numpy as np
import pytest

from dnalm.seq import encode
from dnalm.simulate.background import _dinucleotide_model
from dnalm.simulate.defaults import DEFAULT_GENOME
from dnalm.simulate.genome import _motif_kmers, genome_params, simulate_genome
from simulate_reference import (
    brute_npmi,
    default_genome,
    interval_mask,
    npmi_table,
    small_genome,
    window,
)


@pytest.fixture(scope="module")
def small():
    return small_genome()


@pytest.fixture(scope="module")
def default_sim():
    return default_genome()


@pytest.mark.parametrize(
    "params",
    [
        {"gc": 1.5},
        {"contig_lengths": []},
        {"gap_length": [300, 100]},
        {"train_per_class": 0},
        {"intron_length": [10, 100]},
    ],
)
def test_bad_genome_values_raise(params):
    with pytest.raises(ValueError):
        genome_params(params)


def test_genome_too_small_for_the_tasks_raises():
    with pytest.raises(ValueError, match="too small|not enough|increase"):
        simulate_genome({"contig_lengths": [20_000], "train_per_class": 400}, 1)


def test_motif_table(small):
    sim, _ = small
    m = sim.motifs
    assert m["motif_id"].is_unique
    assert set(m["role"]) == {"promoter", "enhancer", "splice_donor", "splice_acceptor", "generic"}
    assert m["consensus"].str.fullmatch("[ACGT]{8,12}").all()
    assert (m["length"] == m["consensus"].str.len()).all()
    counts = sim.instances["motif_id"].value_counts()
    assert (m.set_index("motif_id")["n_instances"] == counts.reindex(m["motif_id"])).all()
    assert (m["n_instances"] > 0).all()


def test_instances_are_in_the_genome(small):
    sim, _ = small
    cons = sim.motifs.set_index("motif_id")["consensus"]
    mismatches = total = 0
    for r in sim.instances.itertuples():
        assert r.end - r.start == len(cons[r.motif_id])
        assert window(sim.contigs, r.contig, r.start, r.end, r.strand) == r.sequence
        mismatches += sum(a != b for a, b in zip(r.sequence, cons[r.motif_id]))
        total += len(r.sequence)
    rate = DEFAULT_GENOME["motif_mutation_rate"]
    assert 0.5 * rate < mismatches / total < 1.5 * rate  # mutated, at about the set rate
    # canonical splice dinucleotides never mutate
    seqs = sim.instances.set_index("motif_id")["sequence"]
    assert (seqs["splice_donor"].str[3:5] == "GT").all()
    assert (seqs["splice_acceptor"].str[8:10] == "AG").all()
    # instances never overlap one another, nor a repeat or a gap
    for contig, df in sim.instances.groupby("contig"):
        starts, ends = df["start"].to_numpy(), df["end"].to_numpy()
        assert (starts[1:] >= ends[:-1]).all()
    for contig, seq in sim.contigs.items():
        for r in sim.instances[sim.instances.contig == contig].itertuples():
            assert seq[r.start : r.end].isupper()


def test_promoter_architecture(small):
    """Promoter elements sit where they should relative to the TSS (gene orientation)."""
    sim, _ = small
    by_pos = {(r.contig, r.start, r.strand): r.motif_id for r in sim.instances.itertuples()}
    L = DEFAULT_GENOME["prom_length"]
    found = {"prom_tata": 0, "prom_inr": 0}
    proms = sim.sites[sim.sites.kind == "promoter"]
    for s in proms.itertuples():
        for motif, g0, glen in (("prom_inr", -3, 10), ("prom_tata", -35, 14)):
            for off in range(g0, g0 + glen - 10 + 1):
                start = s.anchor + off if s.strand == "+" else s.anchor - off - 9
                if by_pos.get((s.contig, start, s.strand)) == motif:
                    found[motif] += 1
        # the zone holds every jittered window
        assert s.zone_end - s.zone_start == L + 2 * DEFAULT_GENOME["prom_jitter"]
    assert found["prom_inr"] > 0.6 * len(proms) and found["prom_tata"] > 0.6 * len(proms)


def test_soft_masking_and_gaps(small):
    sim, _ = small
    contigs = sim.contigs
    rep = interval_mask(contigs, sim.repeats)
    gaps = interval_mask(contigs, sim.gaps)
    assert set(sim.repeats["repeat_class"]) == {"interspersed", "microsatellite", "satellite"}
    assert sim.repeats["family"].str.startswith("REP").sum() > 0
    n_isolated = 0
    for c, seq in contigs.items():
        arr = np.frombuffer(seq.encode(), dtype=np.uint8)
        lower = (arr >= ord("a")) & (arr <= ord("z"))
        assert (lower == rep[c]).all()  # soft-masked exactly where the repeats are
        is_n = arr == ord("N")
        assert is_n[gaps[c]].all()
        n_isolated += int((is_n & ~gaps[c]).sum())
        assert set(seq) <= set("ACGTacgtN")
    assert n_isolated == round(DEFAULT_GENOME["ambiguous_per_mbp"] * 0.1)
    first, last = list(contigs)[0], list(contigs)[-1]
    assert contigs[first][0] == "N" and contigs[last][-1] == "N"  # gaps at the assembly's ends
    assert len(sim.gaps) == DEFAULT_GENOME["n_gaps"]


def test_repeats_look_like_repeats(small):
    sim, _ = small

    def kmers(s, k=8):
        return {s[i : i + k] for i in range(len(s) - k + 1)}

    copies = {}
    for r in sim.repeats.itertuples():
        seq = window(sim.contigs, r.contig, r.start, r.end, r.strand)
        if r.repeat_class == "microsatellite":
            unit = len(r.family) - 3  # "(unit)n"
            same = np.mean([a == b for a, b in zip(seq, seq[unit:])])
            assert same > 0.8, (r.family, seq)
        elif r.repeat_class == "satellite":
            # a tandem array: some shift (the unit) makes the sequence agree with itself
            best = max(np.mean([a == b for a, b in zip(seq, seq[u:])]) for u in range(20, 181))
            assert best > 0.8
        else:
            copies.setdefault(r.family, []).append(kmers(seq))
    fams = sorted(copies)
    assert len(fams) == DEFAULT_GENOME["repeat_families"]

    def containment(a, b):
        return len(a & b) / max(1, min(len(a), len(b)))

    rng = np.random.default_rng(0)
    same, other = [], []
    for _ in range(300):
        f, g = rng.choice(len(fams), 2, replace=False)
        a, b = rng.choice(len(copies[fams[f]]), 2, replace=False)
        same.append(containment(copies[fams[f]][a], copies[fams[f]][b]))
        other.append(containment(copies[fams[f]][a], copies[fams[g]][0]))
    # copies diverge by 4-25% each and may be 5'-truncated: modest but clear sharing
    assert np.mean(same) > 5 * np.mean(other) and np.mean(other) < 0.03  # measured 0.09 vs 0.01


def test_background_composition(default_sim):
    sim = default_sim
    seq = "".join(sim.contigs.values()).upper()
    n = {b: seq.count(b) for b in "ACGTN"}
    acgt = sum(n[b] for b in "ACGT")
    gc = (n["C"] + n["G"]) / acgt
    assert 0.39 < gc < 0.43
    codes = encode(seq)
    pairs = (codes[:-1] < 4) & (codes[1:] < 4)
    cg = np.sum(pairs & (codes[:-1] == 1) & (codes[1:] == 2)) / pairs.sum()
    assert cg / ((n["C"] / acgt) * (n["G"] / acgt)) < 0.5  # CpG depletion
    soft = sum(c.islower() for c in "".join(sim.contigs.values())) / len(seq)
    assert 0.08 < soft < 0.3


@pytest.mark.parametrize("gc, cpg, tpa", [(0.41, 0.22, 0.75), (0.6, 0.5, 1.0), (0.35, 1.0, 0.5)])
def test_dinucleotide_model_hits_its_targets(gc, cpg, tpa):
    P = _dinucleotide_model(gc, cpg, tpa)
    assert np.allclose(P.sum(axis=1), 1)
    pi = np.linalg.matrix_power(P, 200)[0]
    f = pi[:, None] * P
    assert pi[1] + pi[2] == pytest.approx(gc)
    assert f[1, 2] / (pi[1] * pi[2]) == pytest.approx(cpg)
    assert f[3, 0] / (pi[3] * pi[0]) == pytest.approx(tpa)
    # strand symmetry: f(ab) == f(comp(b) comp(a))
    assert np.allclose(f, f[::-1, ::-1].T)


def test_npmi_helper_matches_brute_force():
    rng = np.random.default_rng(1)
    seq = "".join(rng.choice(list("ACGT"), 3000)) + "GATTACA" * 40
    table = npmi_table({"x": seq}, k=4, min_count=5).set_index("kmer")["npmi"]
    for w in list(table.index[:5]) + list(table.index[-3:]):
        assert table[w] == pytest.approx(brute_npmi(seq, w))


def test_planted_motifs_top_the_npmi_ranking(default_sim):
    """Every motif has a 6-mer (either strand) in the top 50 by NPMI; the top 20 are motifs."""
    sim = default_sim
    table = npmi_table(sim.contigs, k=6, min_count=10)
    motif_kmers = {r.motif_id: _motif_kmers(r.consensus) for r in sim.motifs.itertuples()}
    top50 = set(table["kmer"][:50])
    missing = [m for m, ks in motif_kmers.items() if not ks & top50]
    assert missing == []
    planted = set().union(*motif_kmers.values())
    precision = np.mean([k in planted for k in table["kmer"][:20]])
    assert precision >= 0.75  # measured 0.95-1.0 over 12 seeds
