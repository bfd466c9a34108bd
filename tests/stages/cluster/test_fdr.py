"""The first cut raised by the archive's own pairs (``facepipe.stages.cluster.fdr``): an archive
of people photographed often links more of each person's photos than the law's cut allows,
merging no one; an archive of one photo per person -- copies of each photo included -- keeps the
law's cut; the raised cut does not depend on the order of the faces, stays under the law's upper
bound, is kept with the snapshot and named in the run's summary. (On real photos:
test_real_identities.py; the wild and portrait sets: bench/accuracy/link_fdr.py.)"""

import dataclasses

import numpy as np
import pyarrow.parquet as pq

from facepipe.stages.cluster.fdr import graph_pairs, raise_by_fdr
from facepipe.stages.cluster.metrics import evaluate_clusters
from facepipe.stages.cluster.stage import ClusterConfig, cluster_full, run_cluster
from facepipe.stages.cluster.threshold import BOUNDS, LinkThreshold, auto_threshold, stored
from facepipe.summary import cluster_lines
from testbed.cluster_faces import face_ids, write_faces


def _people(n: int, seed: int, directions: float = 10) -> np.ndarray:
    """n different people whose distances spread like dlib's (median ~0.8, lower spread ~0.11 at
    the default, ~0.08 with 20 ``directions``): a few directions carry most of the variance."""
    spread = np.exp(-np.arange(128) / directions)
    spread *= 0.8**2 / (2 * spread.sum())
    return (np.random.default_rng(seed).normal(size=(n, 128)) * np.sqrt(spread)).astype(np.float32)


def _photographed(people: int, per: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``per`` photos of each person, one person's photos 0.32-0.50 apart (5th-95th percentile)."""
    rng = np.random.default_rng(seed + 100)
    noise = rng.normal(size=(people * per, 128)) * rng.uniform(0.018, 0.034, (people * per, 1))
    return (np.repeat(_people(people, seed), per, 0) + noise).astype(np.float32), np.repeat(np.arange(people), per)


def _scores(labels: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    r = evaluate_clusters(labels.tolist(), truth.tolist())
    return r.bcubed_precision, r.bcubed_recall


def test_people_photographed_often_get_a_looser_cut_and_more_of_each_person_linked():
    x, truth = _photographed(40, 6)
    law_labels, law = cluster_full(x, ClusterConfig(fdr=0))
    labels, link = cluster_full(x, ClusterConfig())
    assert law.law is None and law.value == auto_threshold(x).value
    assert law.value < link.value <= BOUNDS[1] and link.law == law.value  # raised, and says from what
    (p0, r0), (p, r) = _scores(law_labels, truth), _scores(labels, truth)
    assert p0 == p == 1.0 and r > r0 + 0.1, (r0, r)


def test_one_photo_per_person_keeps_the_laws_cut_copies_of_each_photo_included():
    x = _people(400, 1, directions=20)  # the law's cut 0.44, above its lower bound
    assert cluster_full(x, ClusterConfig())[1] == cluster_full(x, ClusterConfig(fdr=0))[1]
    # three re-encodings of every photo (0.06 apart): many pairs under any cut, all of one person, but no
    # evidence of how crowded the archive is near the cut -- left out of both counts
    rng = np.random.default_rng(2)
    copies = np.concatenate([x, *(x + rng.normal(size=x.shape).astype(np.float32) * 0.004 for _ in range(3))])
    link = cluster_full(copies, ClusterConfig())[1]
    assert link.law is None and link.value == auto_threshold(copies).value


def test_the_raised_cut_does_not_depend_on_the_order_of_the_faces():
    x, _ = _photographed(40, 6, seed=0)
    labels, link = cluster_full(x, ClusterConfig())
    assert link.law is not None
    parts = lambda lab: {frozenset(np.flatnonzero(lab == v).tolist()) for v in set(lab.tolist())}  # noqa: E731
    for seed in range(4):
        perm = np.random.default_rng(seed).permutation(len(x))
        got, other = cluster_full(x[perm], ClusterConfig())
        back = np.empty_like(got)
        back[perm] = got
        assert other == link and parts(back) == parts(labels), seed


def test_a_cut_given_as_a_number_or_chosen_without_the_law_is_never_raised():
    x, _ = _photographed(40, 6)
    assert cluster_full(x, ClusterConfig(threshold=0.4))[1].value == 0.4
    few = cluster_full(x[:20], ClusterConfig())[1]  # under LAW_MIN_FACES: the upper bound, no law to count against
    assert few.value == auto_threshold(x[:20]).value == BOUNDS[1] and few.law is None
    link = auto_threshold(x)
    idx, dist = np.zeros((len(x), 1), np.int64), np.zeros((len(x), 1), np.float32)
    raised = raise_by_fdr(link, idx, dist, upper=link.value)  # already at the upper bound
    assert raised == link and raise_by_fdr(dataclasses.replace(link, law=0.3), idx, dist) == dataclasses.replace(
        link, law=0.3
    )  # raised once only


def test_the_graph_counts_each_pair_once():
    idx = np.array([[1, 2], [0, -1], [0, 1]])
    dist = np.array([[0.3, 0.5], [0.3, np.inf], [0.5, 0.45]], np.float32)
    assert graph_pairs(idx, dist, 0.6).tolist() == [np.float32(0.3), np.float32(0.45), np.float32(0.5)]
    assert graph_pairs(idx, dist, 0.46).tolist() == [np.float32(0.3), np.float32(0.45)]


def test_the_raised_cut_is_kept_with_the_snapshot_and_named_in_the_summary(tmp_path):
    x, _ = _photographed(50, 6)
    ids, out = face_ids(len(x)), tmp_path / "out"
    write_faces(out, "2026-11-01", ids[:200], x[:200])
    s1 = run_cluster(str(out), "2026-11-01", "n1", ClusterConfig())
    t = s1["threshold"]
    assert t["law"] is not None and t["value"] > t["law"]
    assert stored(pq.read_schema(sorted((out / "face_identity").rglob("*.parquet"))[0])) == LinkThreshold(**t)
    assert f"link threshold {t['value']:.3f} (chosen for 200 faces, raised from the law's {t['law']:.3f})" in "".join(
        cluster_lines(s1)
    )
    write_faces(out, "2026-11-02", ids[200:], x[200:])
    s2 = run_cluster(str(out), "2026-11-02", "n2", ClusterConfig())
    assert s2["mode"] == "incremental" and s2["threshold"] == t  # the night keeps the raised cut
