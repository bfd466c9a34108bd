"""The second pass of clustering (facepipe.stages.cluster.linkage): identities merged when their
faces are close as groups -- exactly measured, never on the evidence of one pair or of copies of
one photo, never across the faces of one image, the same whatever the order of the faces -- and
its cut from the archive's law (threshold.linkage_cut)."""

import dataclasses

import numpy as np

from facepipe.stages.cluster.linkage import looks, merge_by_linkage, rms_linkage
from facepipe.stages.cluster.stage import ClusterConfig, cluster_full
from facepipe.stages.cluster.threshold import LinkThreshold, linkage_cut

D = 128


def _around(centre: np.ndarray, n: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """n faces around ``centre``, each about ``spread`` from it (photos of one person)."""
    e = rng.normal(size=(n, D))
    return (centre + spread * e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def _all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.nonzero(~np.eye(n, dtype=bool))
    return a, b


def test_rms_linkage_is_the_rms_of_every_face_pair():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, D))
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    n = np.bincount(labels).astype(float)
    s = np.stack([x[labels == c].sum(0) for c in range(3)])
    q = np.array([(x[labels == c] ** 2).sum() for c in range(3)])
    got = rms_linkage(n, s, q, np.array([0, 0, 1]), np.array([1, 2, 2]))
    for (a, b), g in zip([(0, 1), (0, 2), (1, 2)], got):
        d = np.linalg.norm(x[labels == a][:, None] - x[labels == b][None], axis=-1)
        assert np.isclose(g, np.sqrt((d**2).mean()))


def test_copies_of_one_photo_are_one_look():
    rng = np.random.default_rng(1)
    photo = rng.normal(size=D)
    copies = _around(photo, 10, 0.1, rng)  # resized, re-encoded: ~0.14 apart
    photos = _around(photo, 10, 0.35, rng)  # different photos of the person: ~0.5 apart
    xf = np.concatenate([copies, photos])
    assert looks(xf, np.array([0, 10]), radius=0.23, cap=3).tolist() == [1, 3]


def test_a_person_split_in_two_is_merged_and_look_alikes_are_not():
    """Two groups of photos of one person whose closest pair lies above the first cut (0.45)
    join at the second pass's cut (0.55); a pair of single faces, and a face near ten copies of
    one photo, at the same distances stay apart: one close pair is not evidence of a person."""
    rng = np.random.default_rng(2)
    centre = rng.normal(size=D)
    person = _around(centre, 8, 0.36, rng)  # one person, 8 photos: pairs ~0.51 apart
    lone_a, lone_b = _around(rng.normal(size=D), 1, 0, rng), None
    lone_b = lone_a + 0.5 * (lambda e: e / np.linalg.norm(e))(rng.normal(size=D)).astype(np.float32)
    photo = rng.normal(size=D)
    copies = _around(photo, 10, 0.08, rng)
    other = (photo + 0.5 * (lambda e: e / np.linalg.norm(e))(rng.normal(size=D))).astype(np.float32)[None]
    x = np.concatenate([person, lone_a, lone_b, copies, other])
    labels = np.r_[[0] * 5, [1] * 3, 2, 3, [4] * 10, 5]
    a, b = _all_pairs(len(x))
    near = np.linalg.norm(x[a] - x[b], axis=1) < 0.55
    assert np.linalg.norm(person[:5, None] - person[None, 5:], axis=-1).min() > 0.45  # the first pass split it
    out = merge_by_linkage(x, labels, a[near], b[near], 0.55, distinct=0.225)
    assert out[:8].tolist() == [0] * 8  # merged, the smaller label kept
    assert len({out[8], out[9]}) == 2 and len({out[10], out[20]}) == 2  # look-alikes stay apart
    # two faces of one image are two people: the merge is refused
    images = np.array([f"p{i}" for i in range(len(x))], object)
    images[0] = images[6] = "group.jpg"
    assert len(set(merge_by_linkage(x, labels, a[near], b[near], 0.55, images, distinct=0.225)[:8])) == 2


def test_the_second_pass_does_not_depend_on_the_order_of_the_faces():
    rng = np.random.default_rng(3)
    people = [_around(rng.normal(size=D) * 0.6, int(rng.integers(1, 9)), 0.32, rng) for _ in range(40)]
    x = np.concatenate(people)
    link = LinkThreshold(0.45, "auto", len(x), mu=1.1, sigma=0.1)  # the law: a looser second cut
    cfg = ClusterConfig(fdr=0)  # the first cut stays 0.45 (this made-up law would let the archive's pairs raise it)
    base, got = cluster_full(x, cfg, link=link)
    assert got.linkage > 0.45 and got.value == 0.45
    assert len(set(base.tolist())) < len(set(cluster_full(x, ClusterConfig(fdr=0, second_pass=False), link=link)[0]))
    parts = lambda lab: {frozenset(np.flatnonzero(lab == v).tolist()) for v in set(lab.tolist())}  # noqa: E731
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(len(x))
        lab = np.empty(len(x), np.int64)
        lab[perm] = cluster_full(x[perm], cfg, link=link)[0]
        assert parts(lab) == parts(base), seed


def test_the_second_cut_loosens_with_fewer_tests_and_keeps_its_bounds():
    """Few identities with several faces (a few people photographed often) are few tests under
    the same budget: a looser cut than many; never under the first cut nor above the bound; a cut
    given as a number (no law) keeps the first cut."""
    link = LinkThreshold(0.45, "auto", 1000, mu=0.85, sigma=0.1)
    few = np.r_[np.repeat(np.arange(5), 20), np.arange(5, 905)]  # 5 people with 20 faces, 900 alone
    many = np.repeat(np.arange(250), 4)  # 250 people with 4 faces
    assert 0.45 <= linkage_cut(link, many, 3) < linkage_cut(link, few, 3) <= 0.55
    assert linkage_cut(link, few, 3, upper=0.5) == 0.5
    assert linkage_cut(dataclasses.replace(link, mu=None, sigma=None), few, 3) == 0.45
    assert linkage_cut(link, np.arange(1000), 3) == 0.45  # no identity has 3 faces: nothing to test


def test_an_incremental_night_merges_new_photos_of_a_known_person():
    """Tonight's three photos of a person known from five, no pair of them within the first cut
    of the known ones, join that identity by the second pass (its cut kept with the snapshot),
    as a full clustering of the same faces puts them."""
    from facepipe.stages.cluster.stage import cluster_incremental

    rng = np.random.default_rng(2)
    centre, e = rng.normal(size=D), rng.normal(size=D)
    later = centre + 0.35 * e / np.linalg.norm(e)  # the same person, years later
    person = np.concatenate([_around(centre, 5, 0.28, rng), _around(later, 3, 0.28, rng)])
    others = np.concatenate([_around(rng.normal(size=D), 4, 0.3, rng) for _ in range(3)])
    x = np.concatenate([person, others])
    assert np.linalg.norm(person[:5, None] - person[None, 5:], axis=-1).min() > 0.45
    code = np.r_[[0] * 5, [-1] * 3, np.repeat([1, 2, 3], 4)]
    cfg = ClusterConfig(threshold=0.45)
    alone = cluster_incremental(x, code, 4, cfg, linkage=0.45).labels
    assert len(set(alone[:8].tolist())) > 1  # the first pass alone leaves them apart
    night = cluster_incremental(x, code, 4, cfg, linkage=0.55).labels
    assert night[:8].tolist() == [0] * 8 and night[8:].tolist() == code[8:].tolist()
    link = LinkThreshold(0.45, "auto", len(x), mu=1.1, sigma=0.1)
    full, got = cluster_full(x, cfg, link=link)
    assert got.linkage == 0.55 and len(set(full[:8].tolist())) == 1
