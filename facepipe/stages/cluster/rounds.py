"""A giant connected component propagated in synchronous rounds over Ray actors.

:mod:`facepipe.stages.cluster.by_component` propagates whole components, a batch of them per
task; a component holding more of the graph than a batch should (a chain of look-alikes through
the archive) would be one task's alone. Here its movable nodes are cut into P parts of about as
many edges, each a :class:`RoundPart` actor holding its nodes' rows of the graph and a copy of
every label of the component. Chinese Whispers goes group by group (64 a pass, each group at once
from the labels the groups before it left): a round is one group -- every part updates its own
nodes of that group from its copy, the driver gathers what changed and hands it to every part
with the next round. So each group is computed from the same labels as in the whole graph, and
the labels are the whole graph's, bit for bit; it stops after a pass that changes nothing in the
component, as :func:`~facepipe.stages.cluster.methods.propagate_passes` does.

A part whose process dies (an out-of-memory kill, a lost node) is restarted by Ray from its
constructor's labels; the driver, which keeps the component's labels as the rounds leave them,
hands it those and runs its round again (:data:`RETRIES` times at most).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from facepipe.errors import ClusterStalled
from facepipe.stages.cluster.methods import update_group

#: times a part whose process died is restarted and its round run again before the night fails
RETRIES = 3
#: how long one round may take (a part that cannot be placed would be waited for forever)
CALL_S = 600.0


class RoundPart:
    """One part of a giant component: ``rows`` (indptr, indices, weights) the graph's rows of its
    ``nodes`` (ascending, numbered in the component, as are the indices), the component's
    ``labels``, ``groups`` (passes, len(nodes)) each node's group in each pass."""

    def __init__(self, rows: tuple, nodes: np.ndarray, labels: np.ndarray, groups: np.ndarray, chunks: int) -> None:
        self.indptr, self.indices, self.weights = rows
        self.deg = np.diff(self.indptr)
        self.nodes, self.groups, self.chunks = nodes, groups, chunks
        self.span = int(labels.max()) + 1 if len(labels) else 1  # labels only take values they had
        self.label = np.asarray(labels, np.int64).copy()
        self._pass: tuple[int, np.ndarray, np.ndarray] | None = None

    def reset(self, labels: np.ndarray) -> None:
        """Start again from ``labels`` (the driver's, after a restart lost this part's copy)."""
        self.label = np.asarray(labels, np.int64).copy()

    def step(self, t: int, g: int, nodes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Take the last round's changes (``nodes`` -> ``labels``), update this part's nodes of
        group ``g`` of pass ``t``; return those whose label changed and their new labels."""
        self.label[nodes] = labels
        if self._pass is None or self._pass[0] != t:
            order = np.argsort(self.groups[t], kind="stable")
            self._pass = (t, order, np.r_[0, np.cumsum(np.bincount(self.groups[t], minlength=self.chunks))])
        _, order, bounds = self._pass
        rows = order[bounds[g] : bounds[g + 1]]
        who = self.nodes[rows]
        if not len(rows):
            return who, self.label[who]
        before = self.label[who]
        update_group(self.indptr, self.indices, self.weights, self.deg, self.span, self.label, rows, self.nodes)
        moved = self.label[who] != before
        return who[moved], self.label[who[moved]]

    def pid(self) -> int:
        return os.getpid()


def part_rows(graph: tuple, nodes: np.ndarray) -> tuple:
    """The rows of ``nodes`` of ``graph`` (indptr, indices, weights), their indices unchanged."""
    indptr, indices, weights = graph
    d = np.diff(indptr)[nodes]
    sub = np.zeros(len(nodes) + 1, np.int64)
    np.cumsum(d, out=sub[1:])
    pos = np.repeat(indptr[nodes] - sub[:-1], d) + np.arange(int(sub[-1]))
    return sub, indices[pos], None if weights is None else weights[pos]


def propagate_rounds(
    graph: tuple,
    labels: np.ndarray,
    movable: np.ndarray,
    groups: np.ndarray,
    chunks: int,
    parts: int,
    start: Callable[[list[tuple]], Parts] | None = None,
) -> np.ndarray:
    """The component's labels after propagation (see the module text): ``graph`` its (indptr,
    indices, weights) in its own numbering, ``labels`` its start, ``movable`` its movable nodes
    (ascending), ``groups`` (passes, len(movable)) their group in each pass; ``parts`` parts made
    by ``start`` (default: Ray actors, :class:`RayParts`)."""
    label = np.asarray(labels, np.int64).copy()
    deg = np.diff(graph[0])[movable]
    cum = np.cumsum(deg + 1)
    cut = np.searchsorted(cum, cum[-1] * np.arange(1, parts) / parts, side="right") if len(cum) else []
    bounds = [0, *sorted(set(int(c) for c in cut) - {0, len(movable)}), len(movable)]
    args = [
        (part_rows(graph, movable[a:b]), movable[a:b], label, groups[:, a:b], chunks)
        for a, b in zip(bounds, bounds[1:])
    ]
    workers = (start or RayParts)(args)
    try:
        nodes, new = np.zeros(0, np.int64), np.zeros(0, np.int64)
        for t in range(len(groups)):
            changed = 0
            for g in range(chunks):
                out = workers.step(t, g, nodes, new, label)
                nodes, new = np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])
                label[nodes] = new
                changed += len(nodes)
            if not changed:
                break
    finally:
        workers.close()
    return label


class Parts:
    """The parts in this process (tests; and the interface :class:`RayParts` keeps)."""

    def __init__(self, args: list[tuple]) -> None:
        self.parts = [RoundPart(*a) for a in args]

    def step(self, t: int, g: int, nodes: np.ndarray, new: np.ndarray, label: np.ndarray) -> list[tuple]:
        """Every part's :meth:`RoundPart.step`; ``label``: the driver's labels, the round's start."""
        return [p.step(t, g, nodes, new) for p in self.parts]

    def close(self) -> None:
        pass


class RayParts(Parts):
    """The parts as Ray actors (a CPU each, spread over the nodes, restarted if their process dies)."""

    def __init__(self, args: list[tuple]) -> None:
        import ray

        from facepipe.run.startup import ensure_ray

        ensure_ray()
        cls = ray.remote(num_cpus=1, max_restarts=RETRIES, scheduling_strategy="SPREAD")(RoundPart)
        # each part's rows put once and held here for the parts' lifetime: a restarted part is
        # built from them again (the arguments Ray promoted itself were once freed before a
        # restart: ReferenceCountingAssertionError in a clean-clone CI run)
        self.held = [[ray.put(x) for x in a] for a in args]
        self.actors = [cls.remote(*refs) for refs in self.held]

    def step(self, t: int, g: int, nodes: np.ndarray, new: np.ndarray, label: np.ndarray) -> list[tuple]:
        import ray

        calls = [a.step.remote(t, g, nodes, new) for a in self.actors]
        out = []
        for actor, call in zip(self.actors, calls):
            for tries in range(RETRIES + 1):
                try:
                    out.append(ray.get(call, timeout=CALL_S))
                    break
                except ray.exceptions.GetTimeoutError:
                    raise ClusterStalled(f"a round of the giant component did not finish in {CALL_S:.0f} s") from None
                except ray.exceptions.RayActorError:
                    if tries == RETRIES:
                        raise
                    actor.reset.remote(label)  # restarted from its constructor's labels: the round's start instead
                    call = actor.step.remote(t, g, nodes, new)
        return out

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.held = []
