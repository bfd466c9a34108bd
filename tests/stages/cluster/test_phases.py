"""A cluster run reports where its time and memory went: each part's seconds and the peak memory
by its end, in the order they ran (bench/RESULTS.md reads a 10^7 night's parts from them)."""

import sys

import numpy as np

from facepipe.stages.cluster.graph import IndexConfig
from facepipe.stages.cluster.phases import Phases, peak_gib
from facepipe.stages.cluster.stage import ClusterConfig, run_cluster
from testbed.cluster_faces import face_ids, people, write_faces


def test_a_part_met_twice_adds_up_and_the_peak_is_this_process():
    ph = Phases()
    ph.done("a")
    ph.done("b")
    ph.done("a")
    assert list(ph.parts) == ["a", "b"] and all(p["s"] >= 0 for p in ph.parts.values())
    if sys.platform == "linux":  # VmHWM: the process's own peak, at least what it holds now
        assert peak_gib() >= ph.parts["a"]["peak_gib"] > 0


def test_both_nights_report_their_parts_within_their_wall_time(tmp_path):
    x, _ = people(60, 4, seed=5)
    fids, out = face_ids(len(x)), tmp_path / "out"
    cfg = ClusterConfig(index=IndexConfig(backend="ivf", nprobe=8))
    write_faces(out, "2026-11-01", fids[::3] + fids[1::3], np.concatenate([x[::3], x[1::3]]))
    full = run_cluster(str(out), "2026-11-01", "n1", cfg)
    write_faces(out, "2026-11-02", fids[2::3], x[2::3])
    night = run_cluster(str(out), "2026-11-02", "n2", cfg)
    assert list(full["phases"]) == [
        "faces read",
        "snapshot read",
        "index: cells read",
        "index: faces in cells",
        "index: lists read",
        "index opened",
        "clustered",
        "named",
        "tables",
        "published",
        "index kept",
    ]
    assert list(night["phases"])[6:-4] == [
        "ordered",
        "new faces searched",
        "region searched",
        "region graph",
        "propagated",
        "second pass",
        "same-image split",
    ]
    for s in (full, night):
        assert sum(p["s"] for p in s["phases"].values()) <= s["wall_s"] + 0.01
        peaks = [p["peak_gib"] for p in s["phases"].values()]
        assert peaks == sorted(peaks) and peaks[0] > 0  # a high-water mark only rises
