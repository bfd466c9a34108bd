"""Label propagation one connected component at a time, on Ray tasks.

:func:`~facepipe.stages.cluster.methods.propagate_labels` (Chinese Whispers) updates the nodes in
passes: each pass a seeded permutation of the movable nodes cut into groups, each group at once
from the labels the groups before it left. A node's new label depends only on its neighbours',
which are all in its connected component. So, given each node's group in each pass -- its place
in that pass's permutation, drawn on the driver as the whole graph would draw it
(:func:`pass_groups`) -- a component propagated alone goes through the same labels as in the
whole graph. It stops at the first pass that changes nothing in it, where the whole graph goes
on while other components change: a state no pass changes is one no later pass changes either,
whatever its order. So the labels are the whole graph's, bit for bit (tested), while the
components are propagated apart: in batches of whole components holding about as many edges
each (:func:`component_batches`), one Ray task a batch (:func:`propagate_by_component`).

The driver still holds the graph (it built it), finds the components and cuts the batches; what
the tasks spread over the cluster's cores is the propagation's passes. A component larger than a
batch (a chain of look-alikes through a whole archive) of :data:`GIANT_MIN` nodes or more is
propagated in synchronous rounds over as many Ray actors (:mod:`facepipe.stages.cluster.rounds`).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from facepipe.errors import ClusterStalled
from facepipe.stages.cluster.arrays import CHUNK
from facepipe.stages.cluster.methods import hook, movable_nodes, pass_orders, propagate_labels, propagate_passes
from facepipe.stages.cluster.rounds import part_rows, propagate_rounds

if TYPE_CHECKING:
    from facepipe.stages.cluster.stage import ClusterConfig

log = logging.getLogger(__name__)

#: how long the tasks may take to propagate (a task that cannot be placed would be waited for forever)
CALL_S = 3600.0
#: nodes from which a component holding more than a batch's share of the graph is propagated in
#: synchronous rounds over every task (each round a Ray call: worth it only for a large one)
GIANT_MIN = 2_000_000
#: times a task whose worker died (OOM-killed, its node lost) is run again before the night fails
RETRIES = 3


def pass_groups(m: int, iterations: int, seed: int, chunks: int) -> np.ndarray:
    """(iterations, m) uint8: the group of each of ``m`` movable nodes (in ascending order) in
    each pass, from :func:`pass_orders` as :func:`propagate_labels` cuts them."""
    if chunks > 256:
        raise ValueError(f"{chunks} groups a pass do not fit uint8")
    size = max(1, -(-m // chunks))
    groups = np.empty((iterations, m), np.uint8)
    rank = (np.arange(m) // size).astype(np.uint8)
    for t, order in enumerate(pass_orders(m, iterations, seed)):
        groups[t, order] = rank
    return groups


def components_csr(indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Each node's component, named by its smallest node: union-find (:func:`hook`) over the
    graph's edges :data:`CHUNK` rows at a time, swept until a sweep hooks nothing -- never every
    edge as int64 pairs at once."""
    n = len(indptr) - 1
    parent = np.arange(n)
    deg = np.diff(indptr)
    hooked = True
    while hooked:
        hooked = False
        for s in range(0, n, CHUNK):
            e = min(s + CHUNK, n)
            parent, any_ = hook(parent, np.repeat(np.arange(s, e), deg[s:e]), indices[indptr[s] : indptr[e]])
            hooked |= any_
    return parent


def component_batches(
    indptr: np.ndarray, indices: np.ndarray, movable: np.ndarray, b: int, least: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(batches, giants): up to ``b`` sets of nodes (ascending), each a union of whole components
    with a movable node, holding about as many edges each (components ordered by their smallest
    node); and the components of ``least`` nodes or more (0: none) holding more than a batch's
    share, each apart (ascending), for rounds (:mod:`facepipe.stages.cluster.rounds`)."""
    root = components_csr(indptr, indices)
    has = np.zeros(len(root), bool)
    has[root[movable]] = True
    weight = np.bincount(root, weights=np.diff(indptr) + 1, minlength=len(root)) * has
    size = np.bincount(root, minlength=len(root))
    big = np.flatnonzero((size >= least) & (weight > weight.sum() / b) & has) if least else np.zeros(0, np.int64)
    giants = [np.flatnonzero(root == r) for r in big.tolist()]
    has[big], weight[big] = False, 0
    cum = np.cumsum(weight)
    cut = np.searchsorted(cum, cum[-1] * np.arange(1, b) / b, side="right") if len(cum) else np.zeros(0, int)
    batch = np.searchsorted(cut, root, side="right")  # a node's batch: its root's range
    batch[~has[root]] = -1
    order = np.argsort(batch, kind="stable")
    bounds = np.searchsorted(batch[order], np.arange(b + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(b) if bounds[i + 1] > bounds[i]], giants


def subgraph(indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray | None, nodes: np.ndarray) -> tuple:
    """The graph on ``nodes`` (ascending, closed under edges: whole components) in their own
    numbering: (indptr, indices, weights)."""
    sub, cols, w = part_rows((indptr, indices, weights), nodes)
    at = np.zeros(len(indptr) - 1, indices.dtype)  # each node's number here, by a mark per node:
    at[nodes] = np.arange(len(nodes))  # a binary search of every edge took 3.8 s a call at 3x10^6
    return sub, at[cols], w


def propagate_batch(
    graph: tuple, labels: np.ndarray, movable: np.ndarray, groups: np.ndarray, chunks: int
) -> np.ndarray:
    """:func:`propagate_labels` on one batch's graph: ``movable`` its movable nodes (ascending),
    ``groups`` (passes, len(movable)) their group in each pass."""

    def passes():
        for g in groups:
            order = movable[np.argsort(g, kind="stable")]
            bounds = np.r_[0, np.cumsum(np.bincount(g, minlength=chunks))]
            yield (order[bounds[i] : bounds[i + 1]] for i in range(chunks) if bounds[i + 1] > bounds[i])

    return propagate_passes(*graph, labels, passes())


def propagate_by_component(
    indptr: np.ndarray,
    indices: np.ndarray,
    weights: np.ndarray | None,
    labels: np.ndarray,
    frozen: np.ndarray | None = None,
    iterations: int = 20,
    seed: int = 0,
    chunks: int = 64,
    tasks: int = 1,
    mapper: Callable[[Callable, Iterable[tuple]], list] | None = None,
    giant: int = GIANT_MIN,
    parts: Callable | None = None,
) -> np.ndarray:
    """:func:`propagate_labels`, the components in ``tasks`` batches, each a call of
    :func:`propagate_batch` made by ``mapper(fn, [args, ...])`` (default: Ray tasks,
    :func:`on_ray`); ``tasks`` 1: on the driver, the whole graph at once. A component of
    ``giant`` nodes or more holding more than a batch's share goes in synchronous rounds over
    ``tasks`` parts made by ``parts`` (:func:`facepipe.stages.cluster.rounds.propagate_rounds`;
    default: Ray actors). The same labels either way."""
    if tasks <= 1:
        return propagate_labels(indptr, indices, weights, labels, frozen, iterations, seed, chunks)
    t0 = time.perf_counter()
    label = np.asarray(labels, np.int64).copy()
    movable = movable_nodes(indptr, frozen)
    groups = pass_groups(len(movable), iterations, seed, chunks)
    batches, giants = component_batches(indptr, indices, movable, tasks, giant)
    sizes, took = [len(c) for c in giants], time.perf_counter() - t0
    log.info(
        "propagation: %d batches of components, giant components %s in rounds; cut in %.1f s", len(batches), sizes, took
    )

    def work():  # one batch's arguments at a time: each leaves the driver once handed over
        for nodes in batches:
            at, mine = _movable_among(movable, nodes)
            graph = subgraph(indptr, indices, weights, nodes)
            yield graph, label[nodes], np.flatnonzero(mine), groups[:, at[mine]], chunks

    for nodes, got in zip(batches, (mapper or on_ray)(propagate_batch, work()) if batches else []):
        label[nodes] = got
    for nodes in giants:
        at, mine = _movable_among(movable, nodes)
        graph = subgraph(indptr, indices, weights, nodes)
        label[nodes] = propagate_rounds(
            graph, label[nodes], np.flatnonzero(mine), groups[:, at[mine]], chunks, tasks, parts
        )
    return label


def _movable_among(movable: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each of ``nodes``' place among ``movable``, whether it is one); both ascending."""
    at = np.searchsorted(movable, nodes)
    return at, (at < len(movable)) & (movable[np.minimum(at, len(movable) - 1)] == nodes)


def task_count(nodes: int, tasks: int, least: int) -> int:
    """How many tasks a graph of ``nodes`` propagates in (``tasks``, ``least``: the config's
    ``propagation_tasks`` / ``propagation_min``; see its text); 1: on the driver."""
    if tasks == 1 or (tasks == 0 and nodes < least):
        return 1
    import ray

    if tasks == 0 and not (ray.is_initialized() or os.environ.get("RAY_ADDRESS")):
        return 1  # no cluster: the run did not start Ray
    from facepipe.run.startup import ensure_ray
    from facepipe.stages.cluster.shards import cpu_nodes

    ensure_ray()
    if tasks:
        return tasks
    cpus = cpu_nodes()  # one node: the driver (tasks cost more than they save on its own cores, RESULTS)
    return int(sum(cpus)) if len(cpus) > 1 else 1


def propagator(nodes: int, cfg: ClusterConfig) -> Callable[..., np.ndarray]:
    """The propagation a graph of ``nodes`` gets under ``cfg``: :func:`propagate_by_component`
    with :func:`task_count` tasks."""
    return functools.partial(
        propagate_by_component, tasks=task_count(nodes, cfg.propagation_tasks, cfg.propagation_min)
    )


def on_ray(fn: Callable, work: Iterable[tuple]) -> list:
    """``fn(*args)`` for each of ``work`` as Ray tasks of a CPU each (retried if their worker dies)."""
    import ray

    from facepipe.run.startup import ensure_ray

    ensure_ray()
    run = ray.remote(num_cpus=1, max_retries=RETRIES)(fn)
    calls = [run.remote(*args) for args in work]
    try:
        return ray.get(calls, timeout=CALL_S)
    except ray.exceptions.GetTimeoutError:
        for c in calls:
            ray.cancel(c, force=True)
        raise ClusterStalled(f"the propagation's tasks did not finish in {CALL_S:.0f} s") from None
