"""The archive-adaptive link threshold (``--cluster-threshold auto``): chosen from the archive's
own distances, the same whatever the order of the faces, tighter for an archive of more faces,
kept with the snapshot so incremental nights never move it, chosen again by a full run."""

import argparse

import numpy as np
import pyarrow.parquet as pq
import pytest

from facepipe.stages.cluster.stage import ClusterConfig, cluster_embeddings, run_cluster
from facepipe.stages.cluster.threshold import (
    BOUNDS,
    CLIP,
    LAW_MIN_FACES,
    LEGACY,
    auto_threshold,
    bulk_law,
    stored,
    threshold_setting,
)
from testbed.cluster_faces import face_ids as _faces
from testbed.cluster_faces import people
from testbed.cluster_faces import write_faces as _write_faces


def _dlib_like(n: int, seed: int = 0) -> np.ndarray:
    """Faces of n different people whose distances sit like dlib's between different people
    (median ~0.8, spread ~0.08)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 128)) * 0.8 / np.sqrt(2 * 128) * rng.uniform(0.85, 1.15, (n, 1))).astype(np.float32)


def test_the_cut_does_not_depend_on_the_order_of_the_faces():
    x = _dlib_like(3000)
    x = np.concatenate([x, x[:500]])  # the same face twice (an image copied) ties in any order
    cuts = {auto_threshold(x[np.random.default_rng(s).permutation(len(x))]).value for s in range(5)}
    assert len(cuts) == 1


def test_a_larger_archive_gets_a_tighter_cut_within_the_bounds():
    x = _dlib_like(20000)
    small, large = auto_threshold(x[:300]), auto_threshold(x)
    assert BOUNDS[0] <= large.value < small.value <= BOUNDS[1]
    assert large.faces == 20000 and 0.7 < large.mu < 0.9 and large.sigma > 0


def test_the_law_is_fitted_on_the_different_person_pairs_of_an_archive_of_few_people():
    """Night one of a small archive: many random pairs can be of one person (the real photos of
    the job's tests: 10 faces, obama five times, 22% of the pairs). Left in, they pulled the cut
    to the lower bound (0.35 for those 10 faces) and night two grouped the faces differently from
    one run over both nights. Here a quarter of the distances are same-person pairs (0.35 +-
    0.06); the law found is the other pairs' (0.80 +- 0.085, drawn), not the mixture's."""
    rng = np.random.default_rng(0)
    different = rng.normal(0.80, 0.085, 30_000)
    same = rng.normal(0.35, 0.06, 10_000)
    mu, sigma = bulk_law(np.concatenate([different, same]))
    assert abs(mu - 0.80) < 0.006 and abs(sigma - 0.085) < 0.005
    assert bulk_law(np.concatenate([different, same]), clip=np.inf)[1] > 0.2  # left in
    assert bulk_law(different) == pytest.approx((0.80, 0.085), abs=0.003)


def test_an_archive_of_few_distinct_faces_gets_the_upper_bound():
    """Under LAW_MIN_FACES distinct faces the bulk cannot be measured (the job tests' real photos:
    halves of 9-15 faces, obama five times and one photo four times, fell to the lower bound in 13%
    of draws, and night two then split obama from one run over both nights). Copies of one face
    count once: 40 faces that are 10 faces four times are 10 faces."""
    x = _dlib_like(LAW_MIN_FACES)
    assert auto_threshold(x[:-1]).value == BOUNDS[1] and auto_threshold(x).mu is not None
    copies = np.repeat(x[:10], 4, axis=0)
    assert auto_threshold(copies) == auto_threshold(copies[::-1])
    assert auto_threshold(copies).value == BOUNDS[1] and auto_threshold(copies).faces == 40


def test_a_lower_side_no_normal_law_fits_gives_a_finite_spread():
    """Few pairs piled up just above the line (as flat as a uniform law or flatter) have no
    cut-off normal law; the correction ran to sigma 5.8 (cut at the lower bound). Now sigma is the
    line's distance from the median."""
    upper = np.full(20, 0.81)  # the spread above: 0.01, the line 0.03 under the median
    lower = np.full(20, 0.80 - 0.027)
    mu, sigma = bulk_law(np.r_[lower, upper, 0.8])
    assert mu == pytest.approx(0.8) and sigma == pytest.approx(CLIP * 0.01)


def test_the_spread_of_the_tail_is_measured_on_the_lower_side():
    """dlib's distances between different people lean left (the portraits: 0.086 below the
    median, 0.082 above): the cut extrapolates the lower tail, so its spread is measured there."""
    for below, above in ((0.086, 0.082), (0.10, 0.08)):
        z = np.random.default_rng(1).normal(size=40_000)
        mu, sigma = bulk_law(0.8 + np.where(z < 0, below, above) * z)
        assert abs(mu - 0.8) < 0.003 and abs(sigma - below) < 0.003, (below, sigma)


def test_the_setting_parses_auto_or_a_positive_distance():
    assert threshold_setting("auto") == "auto" and threshold_setting("0.4") == 0.4
    for bad in ("-1", "nope"):
        with pytest.raises(argparse.ArgumentTypeError):
            threshold_setting(bad)


def test_an_auto_cut_is_kept_with_the_snapshot_and_incremental_nights_reuse_it(tmp_path):
    x, _ = people(40, 4, seed=5)
    fids = _faces(len(x))
    out = tmp_path / "out"
    auto = ClusterConfig(threshold="auto")
    _write_faces(out, "2026-11-01", fids[:40], x[:40])
    s1 = run_cluster(str(out), "2026-11-01", "n1", auto)
    first = s1["threshold"]
    assert s1["mode"] == "full" and first["how"] == "auto" and first["faces"] == 40
    files = sorted((out / "face_identity").rglob("*.parquet"))
    assert stored(pq.read_schema(files[0])).value == first["value"]  # kept in the snapshot
    assert stored(pq.read_schema(files[0])).linkage == first["linkage"] >= first["value"]  # the second pass's too
    from facepipe.summary import cluster_lines

    assert f"merged under {first['linkage']:.3f}" in "".join(cluster_lines(s1))  # and the run says it
    _write_faces(out, "2026-11-02", fids[40:], x[40:])
    s2 = run_cluster(str(out), "2026-11-02", "n2", auto)
    assert s2["mode"] == "incremental" and s2["threshold"] == first  # not chosen again for 160 faces
    s3 = run_cluster(str(out), "2026-11-02", "n3", ClusterConfig(threshold="auto", full=True))
    assert s3["threshold"]["faces"] == len(fids) and s3["threshold"]["value"] == auto_threshold(x).value


def test_a_snapshot_clustered_at_a_fixed_cut_keeps_it_on_an_auto_night(tmp_path):
    x, _ = people(20, 4, seed=6)
    fids = _faces(len(x))
    out = tmp_path / "out"
    _write_faces(out, "2026-11-01", fids[::2], x[::2])
    run_cluster(str(out), "2026-11-01", "n1", ClusterConfig(threshold=LEGACY))  # a number, as before auto
    _write_faces(out, "2026-11-02", fids[1::2], x[1::2])
    s2 = run_cluster(str(out), "2026-11-02", "n2", ClusterConfig(threshold="auto"))
    assert s2["threshold"]["how"] == "legacy" and s2["threshold"]["value"] == LEGACY


def test_auto_in_a_direct_clustering_is_chosen_from_the_faces_given():
    x, y = people(30, 3, seed=7)
    lab = cluster_embeddings(x, ClusterConfig(threshold="auto"))
    fixed = cluster_embeddings(x, ClusterConfig(threshold=auto_threshold(x).value))
    assert (lab == fixed).all()
