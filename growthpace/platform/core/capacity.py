"""Can the cluster place what the spec asks for? Compared before anything is written.

A trial that asks for a resource no node has (a GPU on a CPU-only cluster, more CPUs per worker than
any node, a custom resource no node type offers) waits forever in Ray with the trial RUNNING, after
storage and MLflow were written. Here each bundle the study will ask Ray for is compared with the nodes
the cluster has and, when it autoscales, the node types it may add (jobs/cluster.py capacity reads both).
Pure: the numbers come in, the problems go out, each naming the spec field and the model size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EPS = 1e-9


class CapacityError(ValueError):
    """The cluster cannot place a trial or a scoring actor the spec asks for: names the field and the size."""


@dataclass(frozen=True)
class NodeType:
    """A node type the autoscaler may add: its resources and how many at most (-1: no limit)."""

    name: str
    resources: dict[str, float]
    max_count: int


def cluster_node_types(config: dict) -> list[NodeType]:
    """The worker node types of a Ray cluster-launcher config (cluster.yaml, or the copy `ray up` leaves on
    the head): what its autoscaler may add. Ray reports no node types to the GCS on an open-source
    cluster (the cluster config it could report is never written), so the file is the source."""
    head = config.get("head_node_type")
    return [NodeType(name, {k: float(v) for k, v in (t.get("resources") or {}).items()},
                     int(t.get("max_workers", config.get("max_workers", -1))))
            for name, t in (config.get("available_node_types") or {}).items() if name != head]


def _fits(bundle: dict[str, float], node: dict[str, float]) -> bool:
    return all(need <= node.get(k, 0.0) + EPS for k, need in bundle.items() if need > 0)


def _fmt(x: float) -> str:
    return "unlimited" if math.isinf(x) else (f"{x:g}")


def _shown(key: str) -> bool:
    """Resources a spec can ask for (CPU, GPU, custom), not Ray's bookkeeping ones."""
    return key not in ("memory", "object_store_memory") and not key.startswith(("node:", "accelerator_type:", "bundle_group"))


ACCELERATOR = "accelerator_type:"
PINNED = 0.001  # what Ray Train asks of `accelerator_type:<name>` per worker when a trial is pinned to it


def _field(i: int, key: str) -> str:
    if key.startswith(ACCELERATOR):
        return f"models[{i}].resources.accelerator_type"
    return {"CPU": f"models[{i}].resources.cpus_per_worker", "GPU": f"models[{i}].resources.gpus_per_worker"}.get(
        key, f"models[{i}].resources.custom.{key}")


def _pin(accelerator_type: str | None) -> dict[str, float]:
    return {f"{ACCELERATOR}{accelerator_type}": PINNED} if accelerator_type else {}


# ---------------------------------------------------------------- the bundles the study asks Ray for
#
# Written once: jobs/placement.py turns them into Ray Train's ScalingConfig and the scoring actors'
# Ray arguments, evaluators/llm_processor.py into the processor engine's placement group, and
# placement_problems below compares them with the cluster.

SCORING_ACTOR_CPUS = 1.0  # each scoring actor (one engine); its GPUs are the engine's tensor parallel


@dataclass(frozen=True)
class TrialBundles:
    """One training trial: its driver (Tune's trial, ``driver_cpus`` CPUs) and ``workers`` Ray Train workers
    of ``worker`` each, placed by ``placement`` and, when ``accelerator_type`` names one, pinned to it."""

    workers: int
    worker: dict[str, float]  # resources_per_worker: CPU, GPU only when it has any, custom resources
    driver_cpus: float
    placement: str
    accelerator_type: str | None = None

    @property
    def gpu(self) -> bool:
        return self.worker.get("GPU", 0.0) > 0

    @property
    def driver(self) -> dict[str, float]:
        return {"CPU": self.driver_cpus}

    @property
    def placed_worker(self) -> dict[str, float]:
        """One worker's bundle as Ray places it: ``worker`` and the accelerator pin Ray Train adds for it."""
        return {**self.worker, **_pin(self.accelerator_type)}


def trial_bundles(workers: int, cpus_per_worker: float, gpus_per_worker: float, custom: dict[str, float],
                  placement: str, accelerator_type: str | None, driver_cpus: float = 0.0) -> TrialBundles:
    """A trial's bundles from a model's resources (models[].resources; a cell and a pre-training carry the same)."""
    worker = {
        "CPU": cpus_per_worker,
        **({"GPU": gpus_per_worker} if gpus_per_worker > 0 else {}),
        **custom,  # a resource only one node type declares (cluster.yaml), e.g. large_gpu
    }
    return TrialBundles(workers=workers, worker=worker, driver_cpus=driver_cpus, placement=placement,
                        accelerator_type=accelerator_type)


def model_trial(resources) -> TrialBundles:
    """The bundles of each trial of a model (its spec ``resources``)."""
    r = resources
    return trial_bundles(r.workers, r.cpus_per_worker, r.gpus_per_worker, dict(r.custom), r.placement,
                         r.accelerator_type, r.driver_cpus)


@dataclass(frozen=True)
class ActorBundle:
    """One scoring actor (a warm engine): a CPU, its GPUs, custom resources and, when named, its node type."""

    gpus: float
    custom: dict[str, float]
    accelerator_type: str | None = None
    cpus: float = SCORING_ACTOR_CPUS

    @property
    def resources(self) -> dict[str, float]:
        """Its placement-group bundle: no GPU entry without GPUs (else a CPU engine waits for one forever)."""
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus > 0 else {}), **self.custom}

    @property
    def placed(self) -> dict[str, float]:
        """The bundle as Ray places it: with the accelerator pin its accelerator_type adds."""
        return {**self.resources, **_pin(self.accelerator_type)}


def scoring_bundle(where) -> ActorBundle:
    """A scoring actor of one model size (``where``: EvaluationSpec.scoring_for(size))."""
    return ActorBundle(gpus=float(where.gpus), custom=dict(where.custom or {}), accelerator_type=where.accelerator_type)


def cluster_totals(present: list[dict[str, float]], node_types: list[NodeType] | None) -> dict[str, float]:
    """The most of each resource the cluster can ever hold: what it has, or what its node types scale to."""
    totals: dict[str, float] = {}
    for node in present:
        for k, v in node.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    scaled: dict[str, float] = {}
    for t in node_types or []:
        if t.max_count == 0:
            continue
        for k, v in t.resources.items():
            scaled[k] = scaled.get(k, 0.0) + (math.inf if t.max_count < 0 else t.max_count * float(v))
    return {k: max(totals.get(k, 0.0), scaled.get(k, 0.0)) for k in {*totals, *scaled}}


def placement_problems(spec, present: list[dict[str, float]], node_types: list[NodeType] | None, *,
                       training: bool = True, scoring: bool = True) -> list[tuple[str, str]]:
    """(spec field, why) for every bundle the study would ask for and the cluster cannot place."""
    shapes = [*present, *(t.resources for t in node_types or [] if t.max_count != 0)]
    totals = cluster_totals(present, node_types)
    scales = bool(node_types) and any(t.max_count != 0 for t in node_types)
    gone = ("and no node type of its autoscaler offers more" if scales
            else "and it has no autoscaler to add nodes")
    has = ", ".join(f"{_fmt(v)} {k}" for k, v in sorted(totals.items()) if _shown(k)) or "no resources"

    def too_big(bundle: dict[str, float]) -> str | None:
        if any(_fits(bundle, s) for s in shapes):
            return None
        for k, need in bundle.items():  # the resource no single node has enough of
            if need > 0 and max((s.get(k, 0.0) for s in shapes), default=0.0) + EPS < need:
                return k
        return next(k for k, need in bundle.items() if need > 0)  # each fits alone, never together

    out: list[tuple[str, str]] = []
    for i, m in enumerate(spec.models if training else []):
        r = m.resources
        trial = model_trial(r)
        worker = trial.placed_worker
        who = f"model size {m.size!r} ({m.name})"
        k = too_big(worker)
        if k is not None and k.startswith(ACCELERATOR):
            out.append((_field(i, k), f"{who} is pinned to accelerator type {r.accelerator_type!r} (with its other "
                                      f"resources per worker); no node of the cluster reports it {gone} (cluster: {has})"))
            continue
        if k is not None:
            largest = max((s.get(k, 0.0) for s in shapes), default=0.0)
            out.append((_field(i, k), f"{who} asks for {_fmt(worker[k])} {k} per training worker; the largest node "
                                      f"of the cluster has {_fmt(largest)} {k} {gone} (cluster: {has})"))
            continue
        if too_big(trial.driver):
            out.append((f"models[{i}].resources.driver_cpus",
                        f"{who} asks for {_fmt(r.driver_cpus)} CPU for its trial's driver; no node has that many {gone}"))
            continue
        placed_driver = {**trial.driver, **spec.ray.driver_resources}  # jobs/sweep.py driver_bundle
        if spec.ray.driver_resources and too_big(placed_driver):
            shown = ", ".join(f"{_fmt(v)} {k}" for k, v in placed_driver.items())
            out.append(("ray.driver_resources", f"{who}: its trial's driver asks for {shown}; no node holds that "
                                                f"{gone} (declare them on the head node) (cluster: {has})"))
            continue
        found = len(out)
        for k, per in worker.items():
            need = r.workers * per + (r.driver_cpus if k == "CPU" else 0.0)
            if per > 0 and need > totals.get(k, 0.0) + EPS:
                fld = f"models[{i}].resources.workers" if r.workers > 1 else _field(i, k)
                out.append((fld, f"{who} asks for {_fmt(need)} {k} per trial ({r.workers} workers x {_fmt(per)}"
                                 + (f" + {_fmt(r.driver_cpus)} for the driver" if k == "CPU" else "")
                                 + f"); the cluster can hold {_fmt(totals.get(k, 0.0))} {k} {gone} (cluster: {has})"))
                break
        # strict_pack (jobs/placement.py) puts all of a trial's workers on one node: one node must hold them
        whole = {k: r.workers * per for k, per in worker.items()}
        if len(out) == found and r.placement == "strict_pack" and not any(_fits(whole, s) for s in shapes):
            shown = ", ".join(f"{_fmt(v)} {k}" for k, v in whole.items() if v > 0 and _shown(k))
            out.append((f"models[{i}].resources.placement",
                        f"{who}: placement strict_pack keeps a trial's {r.workers} workers on one node, and no node "
                        f"holds {shown} {gone}; set placement: pack (or fewer workers) (cluster: {has})"))
    ev = spec.evaluation
    for size in dict.fromkeys(m.size for m in spec.models):
        own = ev.resources.by_size.get(size)
        where = ev.scoring_for(size)

        def field(name: str, wide: str) -> str:  # the setting this size's value came from
            return f"evaluation.resources.by_size.{size}.{name}" if own is not None and getattr(own, name) is not None else wide

        who = f"each scoring actor of size {size}" if own is not None else "each scoring actor"
        gpus = where.gpus
        actor = scoring_bundle(where).placed
        k = too_big(actor) if scoring and (gpus > 0 or where.custom or where.accelerator_type) else None
        if k == "GPU" or (k == "CPU" and gpus > 0):
            largest = max((s.get("GPU", 0.0) for s in shapes), default=0.0)
            problem = (field("gpus", "evaluation.gpus_per_actor"), f"{who} asks for {_fmt(gpus)} GPU (and 1 CPU); the "
                                                                   f"largest node has {_fmt(largest)} GPU {gone} (cluster: {has})")
        elif k is not None:
            fld = (field("accelerator_type", "evaluation.resources.accelerator_type") if k.startswith(ACCELERATOR)
                   else field("custom", "evaluation.resources.custom") + f".{k}")
            problem = (fld, f"{who} asks for {', '.join(f'{_fmt(v)} {n}' for n, v in actor.items() if v > 0)}; "
                            f"no node of the cluster offers that {gone} (cluster: {has})")
        else:
            continue
        if problem not in out:  # sizes without their own settings share one message
            out.append(problem)
    return out
