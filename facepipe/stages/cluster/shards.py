"""The inverted file's cells spread over Ray actors, for archives that outgrow one node's cores.

The cluster stage's neighbour search (:class:`facepipe.stages.cluster.ivf.IVFIndex`) compares,
cell by cell, every query that probes a cell with all of its faces: O(N sqrt(N)) work that one
node does alone. Here the cells are cut into S contiguous ranges holding as many faces each, and
each range is an :class:`IndexShard` actor holding its faces' embeddings. A search sends each
chunk of queries (their vectors and probes) to the shards owning one of their cells; each shard
scans its cells exactly as one node would -- the same faces, the same blocks of queries, the
same arithmetic -- and the driver merges the answers (faces under the radius, or each probe's
best k) as one node does. So the neighbours, and the identities, are one node's.

Each shard is loaded from a file in the output (``OUT/_staging/RUN/_shards/shard-NNNNN.parquet``:
its faces' rows, cells and embeddings, the embeddings encrypted like the faces table's), written
by the driver before the actors start and deleted when the night ends: an actor whose process
dies (a killed worker, an out-of-memory kill) is restarted by Ray, reloads its shard from that
file, and the call it was answering runs again (``max_restarts`` / ``max_task_retries`` -1).

When: ``IndexConfig.shards`` -- 0 (the default) shards a night that searches at least
``IndexConfig.shard_min`` faces (a first night, ``--full``, a retrained index; not an incremental
night, which searches tonight's faces and reads the rest from the kept lists) over the nodes of a
multi-node Ray cluster, one shard a node; 1 keeps the search on the driver; S > 1 asks for S
shards every night (Ray is started if it is not).
"""

from __future__ import annotations

import logging
import os
import resource
import time

import numpy as np
import pyarrow as pa
import torch

from facepipe.errors import ClusterStalled
from facepipe.stages.cluster.graph import IndexConfig, NeighbourIndex
from facepipe.stages.cluster.ivf import CellLayout, IVFIndex, nearest_of_cells, nearest_within
from facepipe.storage.output import Output

log = logging.getLogger(__name__)

#: the staging folder of a night's shard files (under ``OUT/_staging/RUN/``)
STAGED = "_shards"
#: how long the shards may take to start (placed and loaded) before the night says the cluster stalled
START_S = 600.0
#: how long the shards may take to answer one chunk of queries (seconds of work; a shard that cannot
#: be restarted -- its node lost, no CPU free elsewhere -- would otherwise be waited for forever)
CALL_S = 3600.0


def cpu_nodes() -> list[float]:
    """The CPUs of each live node of the Ray cluster that has any."""
    import ray

    return [n["Resources"]["CPU"] for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]


def shard_count(n: int, cfg: IndexConfig) -> int:
    """How many shards a night that searches ``n`` faces gets (see the module text); 1: none,
    the driver searches."""
    if cfg.shards == 1 or (cfg.shards == 0 and n < cfg.shard_min):
        return 1
    import ray

    if cfg.shards == 0 and not (ray.is_initialized() or os.environ.get("RAY_ADDRESS")):
        return 1  # no cluster to spread over: the run did not start Ray
    from facepipe.run.startup import ensure_ray

    ensure_ray()
    nodes = cpu_nodes()
    if cfg.shards == 0:
        return len(nodes) if len(nodes) > 1 else 1
    if cfg.shards > sum(nodes):
        raise ClusterStalled(f"{cfg.shards} index shards need a CPU each; the Ray cluster has {sum(nodes):g}")
    return cfg.shards


def cell_ranges(counts: np.ndarray, s: int) -> list[tuple[int, int]]:
    """``s`` contiguous ranges of cells [lo, hi) holding about as many faces each (``counts``:
    faces per cell), none empty of cells."""
    nlist = len(counts)
    s = max(1, min(s, nlist))
    cum = np.cumsum(counts)
    bounds = [0]
    for i, cut in enumerate(np.searchsorted(cum, cum[-1] * np.arange(1, s) / s, side="right"), 1):
        bounds.append(int(min(max(cut, bounds[-1] + 1), nlist - s + i)))  # >= 1 cell here, room for the rest
    bounds.append(nlist)
    return list(zip(bounds[:-1], bounds[1:]))


def stage_shards(output: Output, run_id: str, index: IVFIndex, ranges: list[tuple[int, int]]) -> list[str]:
    """Write each range's faces (rows, cells, embeddings; cell by cell) for its actor; the paths."""
    output.clear_staging(run_id, (STAGED,))
    cells, paths = index.cells, []
    for i, (lo, hi) in enumerate(ranges):
        rows = cells.order[cells.starts[lo] : cells.ends[hi - 1]]
        x = index.x[rows].cpu().numpy()
        t = pa.table(
            {
                "row": pa.array(rows.cpu().numpy(), pa.int64()),
                "cell": pa.array(index.probes[rows, 0].cpu().numpy(), pa.int32()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1]),
            }
        )
        paths.append(output.staging_path(run_id, STAGED, f"shard-{i:05d}.parquet"))
        output.write_table(t, paths[-1])
    return paths


class IndexShard:
    """One range of cells (a Ray actor: :func:`_actor_class`): its faces, loaded from the shard's
    file in the output, scanned against the queries sent to it (:class:`CellLayout`)."""

    def __init__(self, output: Output, path: str, nlist: int, block: int, threads: int) -> None:
        torch.set_num_threads(threads)
        t = output.read_table(path)
        x = t.column("embedding").combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1).copy()  # writable
        names = torch.from_numpy(t.column("row").to_numpy().copy())
        cells = torch.from_numpy(t.column("cell").to_numpy().copy())
        self.layout = CellLayout(torch.from_numpy(x), cells, nlist, block, names)
        self.faces = t.num_rows

    def info(self) -> dict:
        """Its faces, process, node and peak memory (GiB) so far."""
        import ray

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        return {
            "faces": self.faces,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "peak_gib": peak,
        }

    def within(self, q: np.ndarray, probes: np.ndarray, r2: float, k: int):
        q, probes = torch.tensor(q), torch.tensor(probes)  # Ray hands them over read-only
        return self.layout.within(q, probes, r2, k)

    def best(self, q: np.ndarray, probes: np.ndarray, k: int, lo: int, hi: int):
        """The (query, probe) slots of this shard's cells and their best k + 1 (names, squared distances)."""
        best_i, best_d = self.layout.best(torch.tensor(q), torch.tensor(probes), k)
        flat = probes.reshape(-1)
        mine = np.flatnonzero((flat >= lo) & (flat < hi))
        return mine, best_i.numpy()[mine], best_d.numpy()[mine]


def _actor_class(cpus: int):
    import ray

    return ray.remote(num_cpus=cpus, max_restarts=-1, max_task_retries=-1, scheduling_strategy="SPREAD")(IndexShard)


class ShardedIVF(NeighbourIndex):
    """An :class:`IVFIndex` whose scans run on its shards (see the module text). The driver keeps
    the cells, every face's probes and the query vectors; the shards, the faces' embeddings."""

    backend = "ivf"

    def __init__(self, index: IVFIndex, output: Output, run_id: str, s: int) -> None:
        import ray

        counts = np.asarray([b - a for a, b in zip(index.cells.starts, index.cells.ends)])
        self.index, self.output, self.run_id = index, output, run_id
        self.ranges = cell_ranges(counts, s)
        self.paths = stage_shards(output, run_id, index, self.ranges)
        nodes = cpu_nodes()
        cpus = max(1, min(int(sum(nodes) // len(self.ranges)), int(min(nodes))))  # a shard's cores, on any node
        cls = _actor_class(cpus)
        self.actors = [cls.remote(output, p, index.nlist, index.block, cpus) for p in self.paths]
        t0 = time.perf_counter()
        try:
            self.started = ray.get([a.info.remote() for a in self.actors], timeout=START_S)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise ClusterStalled(
                f"the {len(self.actors)} index shards did not start in {START_S:.0f} s (no node had their CPUs free)"
            ) from None
        except BaseException:  # a shard that could not load its file: the others and the files go too
            self.close()
            raise
        log.info("index shards: %d over %d nodes, started in %.1f s", len(self.actors),
                 len({i["node"] for i in self.started}), time.perf_counter() - t0)  # fmt: skip

    @property
    def shards(self) -> int:
        return len(self.actors)

    def peaks(self) -> list[float]:
        """Each shard's peak memory so far (GiB; its own process, not the driver's)."""
        import ray

        return [round(i["peak_gib"], 2) for i in ray.get([a.info.remote() for a in self.actors])]

    @property
    def radius(self) -> float | None:
        return self.index.radius

    def search(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(rows, k, scan=self.scan)

    def search_order(self, rows: np.ndarray) -> np.ndarray:
        return self.index.search_order(rows)

    def scan(self, q: torch.Tensor, probes: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`IVFIndex.scan`, each shard scanning its cells for the queries that probe one."""
        import ray

        qn, pn = q.cpu().numpy(), probes.cpu().numpy()
        sent, calls = [], []
        for (lo, hi), actor in zip(self.ranges, self.actors):
            sel = np.flatnonzero(((pn >= lo) & (pn < hi)).any(1))
            if not len(sel):
                continue
            sent.append(sel)
            if self.radius is None:
                calls.append(actor.best.remote(qn[sel], pn[sel], k, lo, hi))
            else:
                calls.append(actor.within.remote(qn[sel], pn[sel], self.radius**2, k))
        try:
            answers = ray.get(calls, timeout=CALL_S)
        except ray.exceptions.GetTimeoutError:
            raise ClusterStalled(
                f"the index shards did not answer in {CALL_S:.0f} s (a shard lost, not restarted)"
            ) from None
        if self.radius is not None:
            qi = np.concatenate([np.zeros(0, np.int64), *(sel[a[0]] for sel, a in zip(sent, answers))])
            f = np.concatenate([np.zeros(0, np.int64), *(a[1] for a in answers)])
            d = np.concatenate([np.zeros(0, np.float32), *(a[2] for a in answers)])
            return nearest_within(qi, f, d, len(q), k)
        p = pn.shape[1]
        best_i = torch.full((len(q) * p, k + 1), -1, dtype=torch.int64)
        best_d = torch.full((len(q) * p, k + 1), float("inf"))
        for sel, (slots, bi, bd) in zip(sent, answers):
            at = torch.from_numpy(sel[slots // p] * p + slots % p)
            best_i[at], best_d[at] = torch.tensor(bi), torch.tensor(bd)  # ray.get gives read-only arrays
        return nearest_of_cells(best_i, best_d, len(q), k)

    def close(self) -> None:
        """End the shards and delete their files."""
        import ray

        for a in self.actors if hasattr(self, "actors") else ():
            ray.kill(a, no_restart=True)
        self.output.clear_staging(self.run_id, (STAGED,))


def sharded(index: NeighbourIndex, output: Output, run_id: str, cfg: IndexConfig, searched: int) -> NeighbourIndex:
    """``index`` searched over shards when :func:`shard_count` says so for a night that searches
    about ``searched`` of its faces, else itself."""
    s = shard_count(searched, cfg) if isinstance(index, IVFIndex) else 1
    return ShardedIVF(index, output, run_id, s) if s > 1 else index
