"""The evaluate job: score every epoch checkpoint of every trained cell. `python -m growthpace evaluate SPEC`.

``Scoring.once`` finds, in one pass over the checkpoints (evaluators/results.py ``pending``), those
without a result under their current key, scores them, logs each checkpoint's scores to its cell's
MLflow run, and applies retention to the cells that are then complete. ``Scoring.follow`` repeats that
beside a running sweep (evaluation.streaming).

Scoring runs one of two pipelines:

- ``actor``: a Ray Data dataset whose rows are checkpoints; a ``CheckpointScorer`` actor keeps one
  warm engine (evaluators/backends.py ``warm``): each next checkpoint of the same shape is swapped
  into it in place, another shape gets a fresh engine; it answers every eval item's requests;
- ``processor`` (vLLM on GPU nodes): up to ``evaluation.concurrency`` checkpoints at once, each through
  its own ray.data.llm engine (evaluators/llm_processor.py).

Both build the same prediction rows and store them the same way (evaluators/results.py).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import polars as pl

from growthpace.platform.core import formulation
from growthpace.evaluators.results import (
    ROW_COLUMNS,
    EvalSets,
    Pending,
    ToScore,
    cell_scores,
    collect_scores,
    eval_set_hash,
    flatten_sets,
    pending,
    prediction_rows,
    rescore,
    stored_key,
    store,
)
from growthpace.jobs.progress import active, console, scoring_progress
from growthpace.platform.core.capacity import SCORING_ACTOR_CPUS
from growthpace.platform.core.cells import Cell
from growthpace.platform.store.checkpoints import model_dir, read_checkpoints, remove_weights
from growthpace.platform.core.selection import best_valid_epoch
from growthpace.platform.store.storage import Layout, as_location, localize
from growthpace.platform.store.tables import ResultKey



class CheckpointScorer:
    """A Ray Data actor: checkpoints in, one prediction row per item out; its engine stays warm."""

    def __init__(self, sets: EvalSets, backend: str, batch_size: int, limits: dict[str, int], max_length: int = 1024,
                 gpus: float = 0.0):
        self.sets = sets
        self.gpus = gpus
        self.backend = backend
        self.batch_size = batch_size
        self.limits = limits
        self.max_length = max_length
        self.engine = None

    def __call__(self, batch: dict) -> dict:
        import torch

        from growthpace.evaluators.engines import warm
        from growthpace.evaluators.backends import predict

        torch.set_num_threads(1)
        keys, flat = flatten_sets(self.sets)
        out: dict[str, list] = {c: [] for c in ROW_COLUMNS}
        for cell_id, epoch, path, key in zip(batch["cell_id"], batch["epoch"], batch["path"], batch["key"]):  # ToScore.row
            self.engine = warm(self.engine, self.backend, localize(model_dir(path)), self.batch_size, self.max_length,
                               say=console.print, gpus=self.gpus)
            preds = predict(self.engine, flat, self.limits)
            for c, xs in prediction_rows(cell_id, epoch, key, self.backend, keys, flat, preds).items():
                out[c] += xs
        return out


def evaluate(cells: list[Cell], layout: Layout, sets: EvalSets, *, limits: dict[str, int] | None = None, **how) -> tuple[int, int]:
    """Score every checkpoint without a current result; returns (scored, skipped). ``how``: as score_pending."""
    found = pending(cells, layout, eval_set_hash(sets, limits or {}))
    score_pending(found, layout, sets, limits=limits, **how)
    return len(found.todo), found.scored_before


def score_pending(
    found: Pending,
    layout: Layout,
    sets: EvalSets,
    *,
    backend: str,
    batch_size: int,
    concurrency: int,
    limits: dict[str, int] | None = None,
    num_gpus: float = 0.0,
    on_scored=None,
    pipeline: str = "actor",
    remote_args: dict | None = None,
    max_length: int = 1024,
) -> None:
    """Score and store ``found.todo``; ``on_scored(cell_id, epoch, scores)`` after each checkpoint.
    ``pipeline="processor"`` with the vllm backend scores through ray.data.llm (``score_with_processor``);
    ``remote_args``: the scoring actors' node group (jobs/placement.py scoring_remote_args);
    ``max_length``: the engine's prompt + reply tokens (the training max_length, so no dialogue loses turns)."""
    import ray.data

    todo, limits = found.todo, limits or {}
    if not todo:
        return
    if backend == "vllm" and pipeline == "processor":
        score_with_processor(todo, layout, sets, batch_size=batch_size, limits=limits, num_gpus=num_gpus,
                             on_scored=on_scored, concurrency=concurrency, remote_args=remote_args,
                             max_length=max_length)
        return
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items([t.row() for t in todo], override_num_blocks=len(todo)).map_batches(
        CheckpointScorer,
        fn_constructor_kwargs={"sets": sets, "backend": backend, "batch_size": batch_size, "limits": limits,
                               "max_length": max_length, "gpus": num_gpus},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(concurrency, len(todo))),
        num_cpus=SCORING_ACTOR_CPUS,  # the actor's bundle (platform/core/capacity.py scoring_bundle)
        num_gpus=num_gpus,
        **(remote_args or {}),
    )
    with scoring_progress(len(todo), f"scoring checkpoints ({backend})") as progress:
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            frame = pl.from_pandas(batch)
            for (cell_id, epoch, key), part in frame.group_by(["cell_id", "epoch", "key"], maintain_order=True):
                scores = store(layout, cell_id, epoch, ResultKey.parse(key), part)
                if on_scored:
                    on_scored(cell_id, epoch, scores)
                progress.advance()


def score_with_processor(
    todo: list[ToScore],
    layout: Layout,
    sets: EvalSets,
    *,
    batch_size: int,
    limits: dict[str, int] | None = None,
    num_gpus: float = 0.0,
    max_length: int = 1024,
    on_scored=None,
    concurrency: int = 1,
    remote_args: dict | None = None,
) -> None:
    """The `processor` pipeline: each checkpoint of ``todo`` through its own ray.data.llm vLLM engine
    (gone before that checkpoint's result is stored), up to ``concurrency`` at once (one engine each,
    e.g. one per GPU); results are stored from this thread."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from growthpace.evaluators.llm_processor import ProcessorBackend
    from growthpace.evaluators.backends import predict

    keys, flat = flatten_sets(sets)
    def one(ck: ToScore):
        engine = ProcessorBackend(Path(model_dir(ck.path)), batch_size=batch_size, max_length=max_length,
                                  gpus=num_gpus, remote_args=remote_args)
        return predict(engine, flat, limits)

    with (scoring_progress(len(todo), "scoring checkpoints (vllm, ray.data.llm processor)") as progress,
          ThreadPoolExecutor(max(1, concurrency)) as pool):
        futures = {pool.submit(one, ck): ck for ck in todo}
        for done in as_completed(futures):
            ck = futures[done]
            part = pl.DataFrame(prediction_rows(ck.cell_id, ck.epoch, ck.key, "vllm", keys, flat, done.result()))
            scores = store(layout, ck.cell_id, ck.epoch, ck.key, part)
            if on_scored:
                on_scored(ck.cell_id, ck.epoch, scores)
            progress.advance()


def apply_retention(cell: Cell, layout: Layout, policy: str, best_epoch: int | None) -> list[str]:
    """Delete checkpoint weights after scoring: keep `all`, the `best` validation epoch
    (platform/core/selection.py), or `none`."""
    if policy == "all":
        return []
    removed = []
    for ck in read_checkpoints(layout, cell.cell_id).checkpoints:
        if policy == "best" and ck.epoch == best_epoch:
            continue
        if stored_key(layout, cell.cell_id, ck.epoch) is None:
            continue  # never delete what has not been scored
        if not as_location(ck.path).resolve().is_relative_to(layout.root.resolve()):
            console.print(f"[yellow]warning:[/] {ck.path}: outside storage {layout.root}; not deleted")
            continue  # a checkpoint list never makes the study delete outside its storage
        removed += remove_weights(ck.path)
    return removed


# Streaming: seconds between passes over the unfinished cells' checkpoints when a pass found nothing
# (doubling from the first to the second while nothing new is trained; the sweep's end ends the wait).
FOLLOW_WAIT_S = (2.0, 30.0)


class Scoring:
    """Scores what is trained: once (`evaluate`), or in a loop beside a running sweep (streaming)."""

    def __init__(self, spec, study):
        from growthpace.evaluators.engines import resolve, resolve_pipeline
        from growthpace.jobs.placement import scoring_placement
        from growthpace.jobs.study import tracker_for
        from growthpace.jobs.study import model_params

        self.spec, self.study = spec, study
        self.tracker, _, self.run_ids = tracker_for(study)
        self.sets = study.eval_sets  # read once, when the command prepared the study (jobs/study.py check_inputs)
        self.set_hash = eval_set_hash(self.sets, spec.evaluation.max_new_tokens)
        largest = max(model_params(study).values())
        gpu = any(scoring_placement(spec.evaluation, m.size).gpus > 0 for m in spec.models)
        self.backend, why = resolve(spec.evaluation.backend, params=largest, gpu=gpu)
        say = active().note_once if active() is not None else console.print
        say(f"evaluate: backend {self.backend} ({why})")
        self.pipeline, why = resolve_pipeline(spec.evaluation.vllm_pipeline, spec.evaluation.gpus_per_actor, self.backend,
                                             remote_storage=study.layout.remote)
        say(f"evaluate: pipeline {self.pipeline} ({why})")
        say(f"evaluate: {formulation.describe(spec.evaluation.formulation)}")
        # one engine length for every cell: checkpoints of one shape then share a warm engine
        self.max_length = max((c.training["max_length"] for c in study.cells), default=1024)
        self.scored = self.skipped = 0
        self.finished: set[str] = set()

    def _log(self, cell_id: str, epoch: int, part: pl.DataFrame) -> None:
        metrics = {f"{s}/{a}": v for s, a, v in part.select("split", "ability", "score").iter_rows()}
        self.tracker.log(self.run_ids[cell_id], metrics, step=epoch)

    def once(self) -> int:
        """Score what lacks a result; then every trained cell is complete: retention, its run finished."""
        from growthpace.jobs.placement import scoring_placement

        ev, layout = self.spec.evaluation, self.study.layout
        # a finished cell (every epoch scored, retention applied) is not re-checked on the next pass
        found = pending([c for c in self.study.cells if c.cell_id not in self.finished], layout, self.set_hash)
        if active() is not None:
            active().scored_before(found.scored_before)
        size = {c.cell_id: c.size for c in self.study.cells}
        for s in dict.fromkeys(size[ck.cell_id] for ck in found.todo):
            # one size at a time: its own actors (warm engines of one shape), GPUs and node type
            where = scoring_placement(ev, s)
            part = Pending(todo=[ck for ck in found.todo if size[ck.cell_id] == s])
            score_pending(part, layout, self.sets, backend=self.backend, batch_size=ev.batch_size,
                          concurrency=where.concurrency, limits=ev.max_new_tokens, num_gpus=where.gpus,
                          on_scored=self._log, pipeline=self.pipeline, remote_args=where.remote_args,
                          max_length=self.max_length)
        self.scored += len(found.todo)
        self.skipped = found.scored_before if not found.todo else self.skipped
        for cell in self.study.cells:
            if cell.cell_id in self.finished or cell.cell_id not in found.trained:
                continue
            best = best_valid_epoch(cell_scores(layout, cell.cell_id), ev.warmup_for(cell.epochs))
            apply_retention(cell, layout, ev.retention, best)
            self.tracker.finish(self.run_ids[cell.cell_id])
            self.finished.add(cell.cell_id)
        return len(found.todo)

    def follow(self, sweep_done: threading.Event, errors: list[BaseException]) -> None:
        """Score each cell as soon as it has finished training, until the sweep is over."""
        wait = FOLLOW_WAIT_S[0]
        try:
            while True:
                last = sweep_done.is_set()
                if self.once():
                    wait = FOLLOW_WAIT_S[0]
                elif not last:  # nothing new: look less often, up to once per FOLLOW_WAIT_S[1]
                    sweep_done.wait(wait)
                    wait = min(2 * wait, FOLLOW_WAIT_S[1])
                if last:
                    return
        except BaseException as e:  # re-raised in the main thread
            errors.append(e)


def run_evaluate(spec, study=None) -> pl.DataFrame:
    """Score every checkpoint not scored yet; write scores.parquet."""
    from growthpace.jobs.cluster import connect
    from growthpace.jobs.study import prepare

    from growthpace.jobs.progress import view_for

    with view_for(spec) as view:
        study = study or prepare(spec, write=True, ray=("scoring",))
        view.capture()
        view.set_totals(len(study.cells), sum(c.epochs for c in study.cells))
        connect(spec)
        t0 = time.time()
        view.enter_stage("score")
        scoring = Scoring(spec, study)
        scoring.once()
        console.print(
            f"evaluate: scored {scoring.scored} checkpoint(s), skipped {scoring.skipped} already scored, "
            f"{time.time() - t0:.0f}s"
        )
        return collect_scores(study.cells, study.layout)


def run_rescore(spec) -> int:
    """Re-apply the current scorers to every stored prediction; print how many verdicts changed."""
    from growthpace.jobs.study import prepare

    study = prepare(spec, write=True)
    done = rescore(study.cells, study.layout, study.eval_sets, spec.evaluation.max_new_tokens)
    collect_scores(study.cells, study.layout)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(done.changed.items())) or "none"
    console.print(f"rescore: re-applied the scorers to {done.files} stored prediction file(s); no model was run")
    console.print(f"rescore: {sum(done.changed.values())} of {done.verdicts} verdict(s) changed ({kinds})")
    return done.files


if __name__ == "__main__":  # the module path jobs were submitted with before `python -m growthpace evaluate`
    from growthpace.jobs.entry import as_command

    as_command("evaluate")
