"""Where trials and scoring actors run on a cluster, and in which order trials start.

- A trial's workers share one node when it fits one (STRICT_PACK: all-reduce over NVLink, not the
  network); a size can be pinned to a node type by accelerator type or a custom resource, so the
  smaller sizes never take the nodes the largest one needs.
- Scoring actors can have their own node group (evaluation.resources), and per model size their own
  GPUs (tensor parallel), node type and number of actors (evaluation.resources.by_size).
- The longest trials start first: with max_concurrent_trials slots, a long trial started last would
  leave the cluster waiting on it alone at the end.
Only Ray Train's and Ray Data's public arguments are built here; nothing starts Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from growthpace.platform.core.batching import global_batch, optimizer_steps
from growthpace.platform.core.capacity import TrialBundles, scoring_bundle, trial_bundles
from growthpace.platform.core.cells import Cell


def scaling_config(cell: Cell):
    """The Ray Train ScalingConfig of a cell's trial."""
    return worker_scaling(cell.workers, cell.cpus_per_worker, cell.gpus_per_worker, cell.custom_resources,
                          cell.placement, cell.accelerator_type)


def worker_scaling(workers: int, cpus: float, gpus: float, custom: dict[str, float], placement: str,
                   accelerator_type: str | None):
    """A ScalingConfig from a model's resources (models[].resources): a cell's trial, a pre-training's."""
    return ray_scaling(trial_bundles(workers, cpus, gpus, custom, placement, accelerator_type))


def ray_scaling(trial: TrialBundles):
    """Ray Train's ScalingConfig of a trial's workers (platform/core/capacity.py trial_bundles)."""
    from ray.train import ScalingConfig

    return ScalingConfig(
        num_workers=trial.workers,
        use_gpu=trial.gpu,
        resources_per_worker=dict(trial.worker),
        placement_strategy=trial.placement.upper(),
        accelerator_type=trial.accelerator_type,
    )


@dataclass(frozen=True)
class ScoringPlacement:
    """One model size's scoring actors: GPUs each (its engine's tensor parallel), how many, and the
    extra Ray arguments that put them on their node group."""

    gpus: float
    concurrency: int
    remote_args: dict[str, Any]


def scoring_placement(evaluation, size: str | None = None) -> ScoringPlacement:
    """The scoring actors of ``size`` (EvaluationSpec.scoring_for: by_size over the evaluation-wide settings)."""
    own = evaluation.scoring_for(size)
    actor = scoring_bundle(own)
    args: dict[str, Any] = {}
    if actor.custom:
        args["resources"] = dict(actor.custom)
    if actor.accelerator_type:
        args["accelerator_type"] = actor.accelerator_type
    return ScoringPlacement(gpus=actor.gpus, concurrency=own.concurrency, remote_args=args)


def scoring_remote_args(evaluation, size: str | None = None) -> dict[str, Any]:
    """Extra Ray arguments of each scoring actor (map_batches): its node group, when the spec names one."""
    return scoring_placement(evaluation, size).remote_args


def estimated_cost(cell: Cell, params: int) -> float:
    """Wall time of a trial, up to a constant: params x items trained (every epoch filled to whole global
    batches) / the trial's devices."""
    t = cell.training
    batch = global_batch(t["per_device_batch"], cell.workers, t["grad_accum"])
    trained_items = optimizer_steps(cell.allocation.total, cell.epochs, batch) * batch
    devices = cell.workers * cell.gpus_per_worker or cell.workers * cell.cpus_per_worker
    return params * trained_items / devices


def longest_first(cells: list[Cell], params: dict[str, int]) -> list[Cell]:
    """Cells in the order their trials should start; ties keep the spec's order."""
    return sorted(cells, key=lambda c: -estimated_cost(c, params[c.model]))
