"""The identities' propagation on the driver against Ray tasks, one batch of whole components each.

    .venv/bin/python -m bench.speed.propagation OUT [--tasks 2 4] [--threshold 0.52]

OUT: an output the cluster stage indexed (e.g. ``bench.speed.cluster_scale``'s ``nN/out``). Its
kept neighbour lists (``OUT/_index/lists``: each face's 20 nearest under the radius) give the
first night's graph -- the links under the snapshot's threshold -- without searching again. Prints
the graph (faces, links, components, the largest), then Chinese Whispers' propagation on it: on
the driver (``propagate_labels``), and with ``--tasks`` T on a local Ray cluster
(``by_component.propagate_by_component``: components cut into T batches, a task each), each
checked equal to the driver's labels, with wall times and the driver's peak memory.
``--chain F`` links the first F of the faces one to the next: one giant component beside the
others, which the tasks then propagate in synchronous rounds over T Ray actors
(:mod:`facepipe.stages.cluster.rounds`).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from bench import record


def graph(out: str, threshold: float | None):
    import pyarrow.parquet as pq

    from facepipe.stages.cluster.methods import symmetric_graph, threshold_edges
    from facepipe.stages.cluster.threshold import stored
    from facepipe.storage import list_store
    from facepipe.storage.output import Output

    output = Output(out)
    paths = output.part_files(list_store.LISTS)
    meta = json.loads(pq.read_schema(paths[0]).metadata[b"facepipe.lists"])
    slots = np.concatenate([pq.read_table(p, columns=["slot"]).column("slot").to_numpy() for p in paths])
    kept = list_store.load(output, np.arange(int(slots.max()) + 1), meta["k"], meta["radius"])
    if threshold is None:
        threshold = stored(pq.read_schema(output.part_files("face_identity")[0])).value
    n = len(kept.nbr)
    return n, threshold, symmetric_graph(n, *threshold_edges(kept.nbr, kept.dist, threshold))


def chained(n: int, g: tuple, m: int) -> tuple:
    """``g`` with faces 0..m-1 linked one to the next (one component of at least m faces)."""
    from facepipe.stages.cluster.methods import symmetric_graph

    src = np.repeat(np.arange(n), np.diff(g[0]))
    return symmetric_graph(n, np.r_[src, np.arange(m - 1)], np.r_[g[1], np.arange(1, m)])


def main() -> None:
    from facepipe.run.startup import ensure_ray
    from facepipe.stages.cluster.by_component import components_csr, propagate_by_component
    from facepipe.stages.cluster.methods import propagate_labels

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tasks", type=int, nargs="+", default=[2])
    ap.add_argument("--threshold", type=float, default=None, help="default: the snapshot's")
    ap.add_argument("--chain", type=float, default=0.0, help="the share of the faces chained into one component")
    ap.add_argument("--giant", type=int, default=None, help="rounds from this many faces (default: the stage's)")
    a = ap.parse_args()
    t = time.perf_counter()
    n, threshold, g = graph(a.out, a.threshold)
    if a.chain:
        g = chained(n, g, int(n * a.chain))
    root = components_csr(g[0], g[1])
    sizes = np.bincount(root, minlength=n)
    print(
        f"{n} faces, {len(g[1]) // 2} links under {threshold:.3f} (read in {time.perf_counter() - t:.1f}s); "
        f"{int((sizes[root] > 1).sum())} faces in {int((sizes > 1).sum())} components of 2+, largest {sizes.max()}"
    )
    t = time.perf_counter()
    want = propagate_labels(*g, np.arange(n))
    print(f"driver        {time.perf_counter() - t:6.1f}s  {len(np.unique(want))} labels")
    ray_s = ensure_ray()
    print(f"(Ray started in {ray_s:.1f}s)")
    for tasks in a.tasks:
        t = time.perf_counter()
        got = propagate_by_component(*g, np.arange(n), tasks=tasks, **({"giant": a.giant} if a.giant else {}))
        same = "the same labels" if np.array_equal(got, want) else "DIFFERENT LABELS"
        print(f"{tasks:2d} Ray tasks  {time.perf_counter() - t:6.1f}s  {same}")
    print(f"driver peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    record.run(main, "bench.speed.propagation")
