"""How long a grid of trials takes on a cluster's node types, and what it bills: the arithmetic of
`growthpace simulate` (jobs/simulate.py runs the trials through real Ray Tune; this is what it is measured
against). Pure: trial lengths and node shapes in, hours out.

- ``makespan_lower_bound``: no schedule can be shorter: the longest trial, and for every group of node
  types the work that can run only there over the GPUs it has (scheduling, order and start-up aside).
- ``lpt_schedule``: longest processing time first, each trial on the first node with room (strict_pack:
  all its workers on one node), at most ``max_concurrent`` at once: the classic greedy schedule, within
  4/3 of the optimum on identical machines.
- ``gpu_hours_billed``: a launched node bills from its launch to its last trial's end plus the autoscaler's
  idle timeout, whether its GPUs are busy or not; an idle gap longer than the timeout ends the node.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from growthpace.platform.core.capacity import EPS, NodeType

GPU = "GPU"


@dataclass(frozen=True)
class SimTrial:
    """One cell's trial: its wall hours (plan's ``hours``) and what it holds meanwhile."""

    name: str
    hours: float
    workers: int
    worker: dict[str, float]  # one worker's bundle (platform/core/capacity.py TrialBundles.placed_worker)
    placement: str = "strict_pack"

    @property
    def total(self) -> dict[str, float]:
        return {k: v * self.workers for k, v in self.worker.items()}

    @property
    def gpus(self) -> float:
        return self.total.get(GPU, 0.0)


@dataclass
class Node:
    """One node of a type: what is free now."""

    type: str
    free: dict[str, float]
    gpus: float
    busy: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each trial on it


def _fits(need: dict[str, float], free: dict[str, float]) -> bool:
    return all(v <= free.get(k, 0.0) + EPS for k, v in need.items() if v > 0)


def nodes_of(types: list[NodeType]) -> list[Node]:
    """Every node the types may have (max_count each; an unlimited type counts as one per trial later)."""
    return [Node(t.name, dict(t.resources), t.resources.get(GPU, 0.0))
            for t in types for _ in range(max(t.max_count, 0))]


def _place(trial: SimTrial, nodes: list[Node]) -> list[tuple[Node, dict[str, float]]] | None:
    """Where the trial's workers go: one node for strict_pack (or when it fits one), else worker by worker."""
    for n in nodes:
        if _fits(trial.total, n.free):
            return [(n, trial.total)]
    if trial.placement == "strict_pack":
        return None
    free = {id(n): dict(n.free) for n in nodes}
    out: dict[int, tuple[Node, dict[str, float]]] = {}
    for _ in range(trial.workers):
        n = next((n for n in nodes if _fits(trial.worker, free[id(n)])), None)
        if n is None:
            return None
        for k, v in trial.worker.items():
            free[id(n)][k] = free[id(n)].get(k, 0.0) - v
        node, held = out.get(id(n), (n, {}))
        out[id(n)] = (node, {k: held.get(k, 0.0) + v for k, v in trial.worker.items()})
    return list(out.values())


@dataclass(frozen=True)
class Schedule:
    makespan_h: float
    starts: dict[str, float]  # trial -> start hour
    order: tuple[str, ...]  # trials in the order they started
    nodes: tuple[Node, ...]


def lpt_schedule(trials: list[SimTrial], types: list[NodeType], max_concurrent: int) -> Schedule:
    """Longest first, each started as soon as a node has room and fewer than ``max_concurrent`` run."""
    nodes = nodes_of(types)
    queue = sorted(trials, key=lambda t: -t.hours)  # sorted() is stable: ties keep the given order
    for t in queue:
        if _place(t, nodes) is None:
            raise ValueError(f"trial {t.name} fits no node of {[x.name for x in types]}")
    running: list[tuple[float, int, list[tuple[Node, dict[str, float]]]]] = []
    now, starts, order, seq = 0.0, {}, [], 0
    while queue:
        started = True
        while started and len(running) < max_concurrent:
            started = False
            for t in queue:
                where = _place(t, nodes)
                if where is None:
                    continue  # a smaller trial behind it may still fit (Tune starts whatever fits)
                for n, held in where:
                    for k, v in held.items():
                        n.free[k] -= v
                    n.busy.append((now, now + t.hours))
                starts[t.name] = now
                order.append(t.name)
                heapq.heappush(running, (now + t.hours, seq, where))
                seq += 1
                queue.remove(t)
                started = True
                break
        if not running:
            raise ValueError("no trial can start")  # unreachable after the check above
        now, _, where = heapq.heappop(running)
        for n, held in where:
            for k, v in held.items():
                n.free[k] += v
    return Schedule(max((starts[t.name] + t.hours for t in trials), default=0.0), starts, tuple(order), tuple(nodes))


def makespan_lower_bound(trials: list[SimTrial], types: list[NodeType]) -> float:
    """max(the longest trial, for each set S of node types: the GPU-hours of the trials that fit only on S
    / the GPUs of S). No schedule on these nodes beats it."""
    if not trials:
        return 0.0
    fits = {t.name: frozenset(x.name for x in types if x.max_count != 0 and _fits(t.worker, x.resources)) for t in trials}
    gpus = {x.name: x.resources.get(GPU, 0.0) * max(x.max_count, 0) for x in types}
    bound = max(t.hours for t in trials)
    for group in set(fits.values()):
        work = sum(t.gpus * t.hours for t in trials if fits[t.name] <= group)
        have = sum(gpus[n] for n in group)
        if have > 0:
            bound = max(bound, work / have)
    return bound


def gpu_hours_billed(busy: list[tuple[float, float]], gpus: float, idle_timeout_h: float) -> float:
    """A node's billed GPU-hours: launched at its first trial, kept until idle for ``idle_timeout_h``."""
    if not busy or gpus <= 0:
        return 0.0
    spans: list[list[float]] = []
    for start, end in sorted(busy):
        if spans and start <= spans[-1][1] + idle_timeout_h:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    return gpus * sum(end + idle_timeout_h - start for start, end in spans)
