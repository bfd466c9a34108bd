"""The cluster stage's neighbour index, kept in the output from night to night: the inverted
file's cells (:mod:`facepipe.storage.ivf_store`) and each face's neighbour list
(:mod:`facepipe.stages.cluster.listed`, stored by :mod:`facepipe.storage.list_store`).

An incremental night opens both: tonight's faces are assigned to the kept cells and searched;
the identities they touch are looked at through their faces' kept lists instead of searched
again. After the snapshot it publishes what changed, in one publish. A full run (the first
night, ``--full``) searches every face afresh and writes the lists whole. Small archives (the
exact backend) keep nothing: searching them is cheap.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from facepipe.stages.cluster.graph import IndexConfig, NeighbourIndex, build_index, chosen_backend
from facepipe.stages.cluster.ivf import ivf_cells
from facepipe.stages.cluster.listed import ListedIndex, Lists
from facepipe.stages.cluster.phases import Phases
from facepipe.stages.cluster.shards import sharded
from facepipe.storage import ivf_store, list_store
from facepipe.storage.output import Output

if TYPE_CHECKING:
    from facepipe.stages.cluster.stage import ClusterConfig


#: an opened index: the index (None: too few faces), its summary, what publishes it after the snapshot
Opened = tuple[NeighbourIndex | None, dict, Callable[[str], dict]]


def _nothing(run_id: str) -> dict:
    return {}


def _cells(
    output: Output, fs, cfg: IndexConfig, ph: Phases
) -> tuple[ivf_store.StoredCells | None, NeighbourIndex, ivf_store.Trained]:
    """(the kept cells, or None: trained now; the ivf index over them; the training the archive calls for)."""
    n = len(fs.x)
    want = ivf_store.Trained(
        fs.embedder, ivf_cells(n, cfg), cfg.nprobe, cfg.seed, cfg.niter, cfg.train_per_cell, n, 0, ivf_store.FORMAT
    )
    kept = ivf_store.load(output, fs.id_array(), want)
    ph.done("index: cells read")
    index = build_index(fs.x, cfg, stored=None if kept is None else (kept.centroids, kept.probes))
    if kept is not None and ivf_store.drifted(kept.trained, index.probes[:, 0].cpu().numpy()):
        kept, index = None, build_index(fs.x, cfg)
    ph.done("index: faces in cells")
    return kept, index, want


def neighbour_index(
    output: Output, run_id: str, fs, config: ClusterConfig, radius: float, incremental: bool, ph: Phases
) -> Opened:
    """The faces' neighbour index, its summary, and what publishes it after the snapshot (the
    caller closes the index after that). The ivf backend starts from the cells kept in the
    output, adds tonight's faces to them, and finds the neighbours under ``radius`` only (no cut
    links beyond), on shards when the archive calls for them (:mod:`facepipe.stages.cluster.shards`);
    an ``incremental`` night answers from the faces' kept lists (``k`` deep; tonight's faces
    searched ``reach`` deep). ``ph``: its parts timed."""
    cfg, k, reach = config.index, config.k, config.reach
    t, n = -time.perf_counter(), len(fs.x)
    if n < 2:
        return None, {"backend": "none", "build_s": 0.0}, _nothing
    if chosen_backend(n, cfg) != "ivf":
        index = build_index(fs.x, cfg)
        return index, {"backend": index.backend, "build_s": round(t + time.perf_counter(), 3)}, _nothing
    kept, index, want = _cells(output, fs, cfg, ph)
    index.radius = radius
    stored = list_store.load(output, kept.slots, k, radius) if kept is not None and incremental else None
    ph.done("index: lists read")
    lists = Lists.empty(n, k) if stored is None else Lists(stored.nbr, stored.dist, stored.valid, np.zeros(n, bool))
    scanner = sharded(index, output, run_id, cfg, int((~lists.valid).sum()))  # faces with no list are searched
    listed = ListedIndex(scanner, lists, kept.missing if stored is not None else [], reach)
    info = {
        "backend": index.backend,
        "shards": scanner.shards,
        "build_s": round(t + time.perf_counter(), 3),
        "kept": kept is not None,
        "assigned": index.assigned,
        "lists_kept": int(lists.valid.sum()),
    }
    if kept is None:
        want = dataclasses.replace(want, imbalance=ivf_store.imbalance(index.probes[:, 0].cpu().numpy(), index.nlist))
    centroids, probes = index.cent.cpu().numpy(), index.probes.cpu().numpy()
    generation = (stored.generation if stored is not None else 0) + 1

    def publish(run_id: str) -> dict:
        def lists_to(slots: np.ndarray, whole: bool) -> list[str]:
            rows = np.flatnonzero(lists.valid & (whole | lists.changed))
            return list_store.stage(output, run_id, rows, lists.nbr[rows], lists.dist[rows], slots, radius, generation)

        listed.settle()
        trained = kept.trained if kept is not None else want
        done = ivf_store.save(
            output, run_id, fs.id_array(), centroids, probes, kept, trained, lists_to, whole=stored is None
        )
        peaks = {"shard_peak_gib": scanner.peaks()} if scanner.shards > 1 else {}
        return {**done, "searched": listed.searched, "lists_changed": int(lists.changed.sum()), **peaks}

    return listed, info, publish
