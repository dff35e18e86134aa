"""Tests of the few-shot tasks cut from the simulated genome and of the demo genome's files
(dnalm.simulate.tasks). Most use a small genome; the learnability test runs the defaults."""

import numpy as np
import pandas as pd
import pytest

from dnalm.fasta import read_fasta
from dnalm.simulate.defaults import DEFAULT_GENOME, GENOME_TASKS, TASK_CLASSES
from dnalm.simulate.tasks import build_tasks, write_genome_demo
from simulate_reference import (
    SMALL_GENOME,
    default_genome,
    interval_mask,
    kmer_profiles,
    small_genome,
    window,
)


@pytest.fixture(scope="module")
def small():
    return small_genome()


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("genome_demo")
    write_genome_demo(out, None, seed=42)
    return out, default_genome()


def test_build_tasks_refuses_other_geometry(small):
    sim, _ = small
    with pytest.raises(ValueError, match="prom_length"):
        build_tasks(sim, dict(SMALL_GENOME, prom_length=70), 3)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_genome_demo_is_deterministic(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        write_genome_demo(tmp_path / name, SMALL_GENOME, seed)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    expected = {"genome.fa", "motifs.tsv", "motif_instances.tsv", "repeats.tsv"} | {
        f"tasks/{t}/{f}.tsv" for t in GENOME_TASKS for f in ("train", "test", "regions")
    }
    assert set(a) == expected  # and no temporary files left behind
    assert a == b
    for name in ("genome.fa", "motif_instances.tsv", "tasks/prom/train.tsv"):
        assert a[name] != c[name]


def test_written_files_match_the_simulation(default_demo):
    out, sim = default_demo
    genome = dict(read_fasta(out / "genome.fa"))
    assert genome == sim.contigs
    assert len(genome) == 3 and sum(map(len, genome.values())) == sum(DEFAULT_GENOME["contig_lengths"])
    motifs = pd.read_csv(out / "motifs.tsv", sep="\t")
    assert list(motifs.columns) == ["motif_id", "consensus", "length", "n_instances", "role"]
    pd.testing.assert_frame_equal(motifs, sim.motifs)
    inst = pd.read_csv(out / "motif_instances.tsv", sep="\t")
    assert list(inst.columns) == ["motif_id", "contig", "start", "end", "strand", "sequence"]
    assert len(inst) == len(sim.instances)
    for task, n_classes in TASK_CLASSES.items():
        for split, n in (("train", 600), ("test", 200)):
            df = pd.read_csv(out / "tasks" / task / f"{split}.tsv", sep="\t")
            assert list(df.columns) == ["id", "sequence", "label"]
            assert df["label"].value_counts().to_dict() == {c: n for c in range(n_classes)}


def test_task_shapes(small):
    _, tasks = small
    assert set(tasks) == set(GENOME_TASKS)
    lengths = {"prom": 100, "splice": 40, "enh": 200}
    for task, (train, test) in tasks.items():
        for df, n in ((train, 30), (test, 10)):
            assert df["label"].value_counts().sort_index().to_dict() == {
                c: n for c in range(TASK_CLASSES[task])
            }
            assert (df["sequence"].str.len() == lengths[task]).all()
            assert df["sequence"].str.fullmatch("[ACGTN]+").all()
        ids = pd.concat([train["id"], test["id"]])
        assert ids.is_unique and ids.str.startswith(task).all()


def test_windows_are_genome_windows_and_never_overlap(small):
    sim, tasks = small
    for task, (train, test) in tasks.items():
        df = pd.concat([train, test])
        for r in df.itertuples():
            assert window(sim.contigs, r.contig, r.start, r.end, r.strand) == r.sequence
            assert sim.contigs[r.contig][r.start : r.end].replace("N", "").isupper()  # no repeat
        for contig, d in df.groupby("contig"):
            d = d.sort_values("start")
            assert (d["start"].to_numpy()[1:] >= d["end"].to_numpy()[:-1]).all()


def test_positives_hold_planted_sites_negatives_do_not(small):
    sim, tasks = small
    zones = interval_mask(sim.contigs, sim.sites.rename(columns={"zone_start": "start", "zone_end": "end"}))
    kind_zone = {
        kind: interval_mask(sim.contigs, d.rename(columns={"zone_start": "start", "zone_end": "end"}))
        for kind, d in sim.sites.groupby("kind")
    }
    inst = sim.instances.merge(sim.motifs[["motif_id", "role"]], on="motif_id")
    positive = {"prom": {1: "promoter"}, "splice": {1: "donor", 2: "acceptor"}, "enh": {1: "enhancer"}}
    for task, (train, test) in tasks.items():
        for r in pd.concat([train, test]).itertuples():
            kind = positive[task].get(r.label)
            if kind is None:  # negatives never touch a planted site (used or not)
                assert not zones[r.contig][r.start : r.end].any()
                continue
            assert kind_zone[kind][r.contig][r.start : r.end].all()
            inside = inst[(inst.contig == r.contig) & (inst.start >= r.start) & (inst.end <= r.end)]
            role = {"donor": "splice_donor", "acceptor": "splice_acceptor"}.get(kind, kind)
            n_min = DEFAULT_GENOME["enhancer_cluster_size"][0] if kind == "enhancer" else 1
            assert (inside["role"] == role).sum() >= n_min
    # the splice centre: donors GT at 20-21, acceptors AG at 18-19, decoys one of the two
    train, test = tasks["splice"]
    df = pd.concat([train, test])
    centre_gt = df["sequence"].str[20:22] == "GT"
    centre_ag = df["sequence"].str[18:20] == "AG"
    assert centre_gt[df.label == 1].all() and centre_ag[df.label == 2].all()
    assert (centre_gt | centre_ag)[df.label == 0].all()
    assert 0.3 < centre_gt[df.label == 0].mean() < 0.7


def test_tasks_are_learnable_but_not_trivial(default_demo):
    """Logistic regression on 4-mer profiles, 100 training examples per class."""
    from sklearn.linear_model import LogisticRegression

    out, _ = default_demo
    rng = np.random.default_rng(0)
    for task, n_classes in TASK_CLASSES.items():
        train = pd.read_csv(out / "tasks" / task / "train.tsv", sep="\t")
        test = pd.read_csv(out / "tasks" / task / "test.tsv", sep="\t")
        idx = np.concatenate(
            [rng.choice(np.flatnonzero(train.label == c), 100, replace=False) for c in range(n_classes)]
        )
        clf = LogisticRegression(max_iter=2000).fit(kmer_profiles(train.sequence[idx]), train.label[idx])
        acc = (clf.predict(kmer_profiles(test.sequence)) == test.label).mean()
        assert 1 / n_classes + 0.2 < acc < 0.98, (task, acc)  # measured: 0.92, 0.94, 0.82
