"""Train every unfinished cell: Ray Tune schedules one trial per cell, each a Ray Train + DeepSpeed run.

A trial is a small driver (the pattern Ray 2.60 recommends over Tuner(TorchTrainer)): it builds the
cell's TorchTrainer, runs it, writes the cell's checkpoint list and reports once to Tune.
That list is the marker a rerun uses to skip the cell.
"""

from __future__ import annotations

import time
from typing import Any

from growthpace.jobs.errors import SweepError
from growthpace.platform.core.cells import Cell
from growthpace.platform.core.spec import TrainingSpec
from growthpace.platform.store.checkpoints import EPOCH, TIMING, TRAIN_LOSS, CellCheckpoints, CheckpointRef, write_checkpoints
from growthpace.platform.store.storage import Layout, StoragePath
from growthpace.platform.core.identity import stable_hash


def _cell_trial(param: dict[str, Any]) -> None:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray import tune

    from growthpace.jobs.placement import scaling_config
    from growthpace.platform.train.train import drop_resume_state_at, train_cell

    config = param["trial"]
    cell = Cell.from_dict(config["cell"])
    layout = Layout(config["storage"])
    trainer = TorchTrainer(
        train_cell,
        train_loop_config=config["train"],
        scaling_config=scaling_config(cell),
        torch_config=TorchConfig(backend="nccl" if cell.gpus_per_worker > 0 else "gloo"),
        run_config=RunConfig(
            name=cell.cell_id,  # same name again = resume this cell's own run
            storage_path=str(layout.train),
            checkpoint_config=CheckpointConfig(num_to_keep=None),
            failure_config=FailureConfig(max_failures=config.get("max_failures", 1)),
        ),
    )
    started = time.monotonic()
    result = trainer.fit()
    wall_s = time.monotonic() - started
    # Ray gives paths inside its filesystem ("bucket/prefix/..." on S3): stored as URIs there.
    scheme = f"{layout.root.scheme}://" if layout.remote else ""
    # The epoch's metrics (platform/train/train.py train_cell) carry the checkpoint list's names.
    checkpoints = sorted(
        (CheckpointRef(cell.cell_id, int(m[EPOCH]), scheme + ck.path, float(m[TRAIN_LOSS]))
         for ck, m in result.best_checkpoints),
        key=lambda c: c.epoch,
    )
    if [c.epoch for c in checkpoints] != list(range(1, cell.epochs + 1)):
        raise SweepError(f"cell {cell.cell_id}: expected epochs 1..{cell.epochs}, got {[c.epoch for c in checkpoints]}")
    # What the cell cost, for the report's GPU-hours: this fit's wall time (a resumed cell counts only
    # its last attempt) and the resources it held meanwhile.
    last = max((m for _, m in result.best_checkpoints), key=lambda m: int(m[EPOCH]))
    write_checkpoints(layout, CellCheckpoints(
        cell.cell_id, tuple(checkpoints), wall_s=wall_s, timing={k: float(last[k]) for k in TIMING if k in last},
        gpus=cell.workers * cell.gpus_per_worker, cpus=cell.driver_cpus + cell.workers * cell.cpus_per_worker,
    ))
    if not config["train"].get("keep_resume_state"):  # finished: only a rerun of the same epochs could use it
        for ck, _ in result.best_checkpoints:
            drop_resume_state_at(ck.filesystem, ck.path)
    # One report from this thread when the cell is done. Ray's TuneReportCallback forwards every epoch
    # through an inter-actor queue instead, and its last report can race the trial's return: seen here
    # as a trial stuck forever in Queue.put (ray/train/_internal/session.py) after training finished.
    tune.report({"epochs": cell.epochs, "train_loss": checkpoints[-1].train_loss})


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else text


def train_config(cell: Cell, base_model: StoragePath, layout: Layout, tracking_uri: str, run_id: str | None,
                 training: TrainingSpec | None = None) -> dict:
    """The train function's config: the cell's settings plus how this run handles checkpoints (settings
    that are not part of the cell's result, so not of its id)."""
    training = training or TrainingSpec()
    return {
        **cell.training,
        "keep_resume_state": training.keep_resume_state,
        "checkpoint_write": training.checkpoint_write,
        "resume_every_s": training.resume_every_s,
        "failure_every_h": training.failure_every_h,
        "storage_write_gib_s": training.storage_write_gib_s,
        "epochs": cell.epochs,
        "seed": cell.seed,
        "base_model": str(base_model),
        "tokens": str(layout.cell_tokens(cell.cell_id)),
        "tracking_uri": tracking_uri,
        "run_id": run_id,
    }


def sweep(
    cells: list[Cell],
    configs: dict[str, dict],
    layout: Layout,
    max_concurrent: int,
    driver_resources: dict[str, float] | None = None,
) -> list[Cell]:
    """Train the cells that have no checkpoint list yet, their trials started in the order given
    (jobs/placement.py longest_first); return those it trained."""
    from ray import tune

    from growthpace.jobs.progress import active
    from growthpace.jobs.tune_progress import CellProgress

    pending = [c for c in cells if not layout.cell_checkpoints(c.cell_id).exists()]
    view = active()
    if view is not None:
        view.labels.update({c.cell_id: c.label for c in cells})
        view.cells_skipped(len(cells) - len(pending))
    if not pending:
        return []
    trials = [{"cell": c.to_dict(), "train": configs[c.cell_id], "storage": str(layout.root),
               "driver": driver_bundle(c.driver_cpus, driver_resources)} for c in pending]
    trainable = tune.with_resources(_cell_trial, lambda p: p["trial"]["driver"])
    name = f"sweep-{stable_hash(sorted(c.cell_id for c in pending))}"
    results = fit_grid(trainable, trials, name, layout, max_concurrent, CellProgress())
    failed = [
        c.label for c in pending if not layout.cell_checkpoints(c.cell_id).exists()
    ]
    if failed:
        raise SweepError(f"{len(failed)} cell(s) did not finish: {', '.join(failed)}. {trial_errors(results)}")
    return pending


def driver_bundle(cpus: float, driver_resources: dict[str, float] | None) -> dict[str, float]:
    """What a trial's driver asks Ray for: its CPUs and the spec's ray.driver_resources. The driver is
    where Ray Train puts the trial's controller; a node lost under it leaves the trial ERRORED (Tune does
    not retry it: a retried trial waits on the dead run's placement group unless the dashboard is up,
    docs/cluster.md), so a cluster whose workers come and go keeps drivers on the head this way."""
    return {"CPU": cpus, **(driver_resources or {})}


def fit_grid(trainable, trials: list[dict], name: str, layout: Layout, max_concurrent: int, callback):
    """Ray Tune runs one trial per entry of ``trials`` (the param "trial"), at most ``max_concurrent``
    at once; a run of the same ``name`` killed earlier is resumed (its unfinished and errored trials).
    Returns Tune's results. Cells (above) and pre-trainings (jobs/pretrain.py) both run through here."""
    from ray import tune

    path = layout.tune / name
    if tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(trials)},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=False),
            # verbose=0: no trial tables; the study's own view (jobs/progress.py) shows each trial.
            run_config=tune.RunConfig(name=name, storage_path=str(layout.tune), verbose=0, callbacks=[callback]),
        )
    return tuner.fit()


def trial_errors(results) -> str:
    """The failed trials' errors, one line each: the exception's own line ends Ray's error text (the
    whole text was shown as each trial failed)."""
    return "; ".join(_last_line(str(r.error)) for r in results if r.error)[:2000]


if __name__ == "__main__":  # the module path jobs were submitted with before `python -m growthpace sweep`
    from growthpace.jobs.entry import as_command

    as_command("sweep")
