"""The evaluate job: score every epoch checkpoint of every trained cell. `python -m growthpace evaluate SPEC`.

``Scoring.once`` finds, in one pass over the checkpoints (evaluators/results.py ``pending``), those
without a result under their current key, scores them, logs each checkpoint's scores to its cell's
MLflow run, and applies retention to the cells that are then complete. ``Scoring.follow`` repeats that
beside a running sweep (evaluation.streaming).

Scoring runs one of two pipelines:

- ``actor``: ``CheckpointScorer`` actors, each keeping one warm engine (evaluators/engines.py ``warm``):
  each next checkpoint of the same shape is swapped into it in place, another shape gets a fresh
  engine; it answers every eval item's requests. ``Scoring`` keeps each size's actors (``ScorerPool``)
  across passes while that size has unfinished cells, so streaming starts an engine per actor, not per
  pass; a one-off ``score_pending`` call runs them as a Ray Data actor pool over the checkpoints;
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
    UntunedBase,
    cell_scores,
    collect_scores,
    eval_set_hash,
    flatten_sets,
    pending,
    pending_bases,
    prediction_rows,
    rescore,
    stored_key,
    store,
)
from growthpace.jobs.progress import active, console, scoring_progress
from growthpace.platform.core.capacity import SCORING_ACTOR_CPUS
from growthpace.platform.core.cells import Cell
from growthpace.platform.store.checkpoints import read_checkpoints, remove_weights
from growthpace.platform.core.selection import best_valid_epoch
from growthpace.platform.store.storage import Layout, as_location, localize
from growthpace.platform.store.tables import ResultKey



class CheckpointScorer:
    """A Ray Data actor: checkpoints in, one prediction row per item out; its engine stays warm."""

    def __init__(self, sets: EvalSets, backend: str, batch_size: int, limits: dict[str, int], max_length: int = 1024,
                 gpus: float = 0.0, benchmarks=None, storage: str | None = None):
        self.sets = sets
        self.benchmarks = benchmarks  # spec.evaluation.benchmarks: lm-eval tasks, loaded here on first use
        self.tasks = None
        self.storage = storage
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
        n = len(batch["cell_id"])
        predict_flags, benches = batch.get("predict", [True] * n), batch.get("bench", [""] * n)  # bench_rows
        for i, (cell_id, epoch, model, key) in enumerate(zip(batch["cell_id"], batch["epoch"], batch["model"], batch["key"])):  # ToScore.row
            self.engine = warm(self.engine, self.backend, localize(model), self.batch_size, self.max_length,
                               say=console.print, gpus=self.gpus)
            if benches[i]:
                self._benchmarks(str(cell_id), int(epoch), benches[i])
            if not predict_flags[i]:  # its eval items have a current result: only benchmarks were due
                continue
            preds = predict(self.engine, flat, self.limits)
            for c, xs in prediction_rows(cell_id, epoch, key, self.backend, keys, flat, preds).items():
                out[c] += xs
        return out

    def score(self, row: dict) -> dict:
        """One checkpoint's row (``ToScore.row``) -> its prediction rows: the call ScorerPool's actors take."""
        return self({k: [v] for k, v in row.items()})

    def _benchmarks(self, cell_id: str, epoch: int, todo: str) -> None:
        """The stale lm-eval tasks of one checkpoint through the warm engine; each result stored at once."""
        import json

        from growthpace.evaluators import lm_eval_tasks
        from growthpace.evaluators.benchmark_results import write_result

        if self.tasks is None:
            self.tasks = lm_eval_tasks.load_tasks(self.benchmarks)
        keys = json.loads(todo)  # task -> key (evaluators/benchmark_results.py bench_key)
        for task, key in keys.items():  # the driver's task config must be the one loaded on this node
            if not key.endswith(f"-{self.tasks.hashes[task]}-{lm_eval_tasks.lm_eval_version()}"):
                raise RuntimeError(f"lm-eval task {task}: its config or documents on this node differ from the "
                                   f"driver's (key {key}); is its include_path or dataset the same everywhere?")
        tok = self.engine.enc.tok
        results, _ = lm_eval_tasks.run(self.tasks, lm_eval_tasks.backend_lm(self.engine, tok, self.engine.max_length),
                                       only=list(keys))
        layout = Layout(self.storage)
        for task, key in keys.items():
            write_result(layout, cell_id, epoch, key, results[task])


def bench_rows(rows: list[dict], todo: list[ToScore], bench: dict | None) -> list[dict]:
    """The Ray Data rows with what each checkpoint owes its benchmarks: ``predict`` (False: its eval
    items were scored before) and ``bench`` (JSON of stale task -> result key, "" for none)."""
    if not bench:
        return rows
    import json

    out = []
    for row, t in zip(rows, todo):
        due = bench.get((t.cell_id, t.epoch))
        out.append({**row, "predict": not (due and due.scored),
                    "bench": json.dumps({task: due.keys[task] for task in due.stale}) if due else ""})
    return out


class ScorerPool:
    """One model size's scoring actors (``CheckpointScorer``, each with its warm engine), kept across
    score passes. Streaming scores once per finished cell: a new pool per pass started an engine per
    actor per pass (about 116 engine starts for doit's 507 checkpoints, each 33b start reading 65 GB).
    ``Scoring.once`` closes the pool once its size has no unfinished cell; meanwhile its idle actors keep
    their bundles (a CPU and the engine's GPUs)."""

    def __init__(self):
        self.actors: list = []
        self.started = 0  # actors started over the pool's life: each starts its engine on its first checkpoint

    def score(self, rows: list[dict], n: int, scorer: dict, options: dict):
        """Each row's prediction rows as a DataFrame, as its actor finishes it; up to ``n`` actors
        (``scorer``: CheckpointScorer's arguments, the same on every pass; ``options``: its Ray resources)."""
        import ray

        while len(self.actors) < n:  # a crashed actor restarts once and its call is retried, as Ray Data does
            self.actors.append(ray.remote(CheckpointScorer).options(max_restarts=1, max_task_retries=1, **options)
                               .remote(**scorer))
            self.started += 1
        queue, free, running = list(rows), list(self.actors), {}
        while queue or running:
            while queue and free:
                actor = free.pop()
                running[actor.score.remote(queue.pop(0))] = actor
            [done], _ = ray.wait(list(running), num_returns=1)
            free.append(running.pop(done))
            yield pl.DataFrame(ray.get(done))

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


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
    bench: dict | None = None,
    benchmarks=None,
    on_bench=None,
    pool: ScorerPool | None = None,
) -> None:
    """Score and store ``found.todo``; ``on_scored(cell_id, epoch, scores)`` after each checkpoint.
    ``bench``: (cell id, epoch) -> benchmark_results.BenchTodo, the lm-eval tasks each checkpoint owes
    (``benchmarks``: spec.evaluation.benchmarks), scored by the same actor through the same warm engine,
    ``on_bench(cell_id, epoch)`` once stored.
    ``pipeline="processor"`` with the vllm backend scores through ray.data.llm (``score_with_processor``);
    ``remote_args``: the scoring actors' node group (jobs/placement.py scoring_remote_args);
    ``max_length``: the engine's prompt + reply tokens (the training max_length, so no dialogue loses turns);
    ``pool``: the size's actors kept from earlier passes (``ScorerPool``), else a Ray Data actor pool for this call."""
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
    rows = bench_rows([t.row() for t in todo], todo, bench)
    scorer = {"sets": sets, "backend": backend, "batch_size": batch_size, "limits": limits, "max_length": max_length,
              "gpus": num_gpus, "benchmarks": benchmarks, "storage": str(layout.root)}
    # the actor's bundle (platform/core/capacity.py scoring_bundle)
    resources = {"num_cpus": SCORING_ACTOR_CPUS, "num_gpus": num_gpus, **(remote_args or {})}
    if pool is not None:
        frames = pool.score(rows, min(concurrency, len(todo)), scorer, resources)
    else:
        ds = ray.data.from_items(rows, override_num_blocks=len(todo)).map_batches(
            CheckpointScorer, fn_constructor_kwargs=scorer, batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(concurrency, len(todo))), **resources)
        frames = (pl.from_pandas(b) for b in ds.iter_batches(batch_size=None, batch_format="pandas"))
    with scoring_progress(len(todo), f"scoring checkpoints ({backend})") as progress:
        for frame in frames:
            for (cell_id, epoch, key), part in frame.group_by(["cell_id", "epoch", "key"], maintain_order=True):
                scores = store(layout, cell_id, epoch, ResultKey.parse(key), part)
                if on_scored:
                    on_scored(cell_id, epoch, scores)
                progress.advance()
    for t in todo:  # every actor call has returned: each checkpoint's benchmark results are stored
        if bench and on_bench and (t.cell_id, t.epoch) in bench:
            on_bench(t.cell_id, t.epoch)


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
        engine = ProcessorBackend(Path(ck.model_path), batch_size=batch_size, max_length=max_length,
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


def untuned_bases(study) -> list[UntunedBase]:
    """The base each size's cells train from (pre-trained where the spec pre-trains), as scoring units:
    found, not written (a base not written yet is scored on a later pass)."""
    from growthpace.jobs.pretrain import base_jobs
    from growthpace.platform.train.models import model_key

    spec, layout = study.spec, study.layout
    raw = {m.name: layout.base_model(model_key(m.name, study.tokenizer_key, spec.seed, m.chat)) for m in spec.models}
    paths = {**raw, **{j.model: j.path for j in base_jobs(study, raw)}}
    seeds = {}
    for c in study.cells:  # the base stands beside its size's cells in the seed average
        seeds[c.model] = min(seeds.get(c.model, c.seed), c.seed)
    return [UntunedBase(m.name, m.size, seeds.get(m.name, spec.seed), str(paths[m.name])) for m in spec.models]


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
        from growthpace.platform.core.items import describe_capped, effective_limits

        self.spec, self.study = spec, study
        self.tracker, _, self.run_ids = tracker_for(study)
        self.sets = study.eval_sets  # read once, when the command prepared the study (jobs/study.py check_inputs)
        # one engine length for every cell: checkpoints of one shape then share a warm engine
        self.max_length = max((c.training["max_length"] for c in study.cells), default=1024)
        self.set_hash = eval_set_hash(self.sets, effective_limits(spec.evaluation.max_new_tokens, self.max_length))
        largest = max(model_params(study).values())
        gpu = any(scoring_placement(spec.evaluation, m.size).gpus > 0 for m in spec.models)
        self.backend, why = resolve(spec.evaluation.backend, params=largest, gpu=gpu)
        say = active().note_once if active() is not None else console.print
        say(f"evaluate: backend {self.backend} ({why})")
        self.pipeline, why = resolve_pipeline(spec.evaluation.vllm_pipeline, spec.evaluation.gpus_per_actor, self.backend,
                                             remote_storage=study.layout.remote)
        say(f"evaluate: pipeline {self.pipeline} ({why})")
        say(f"evaluate: {formulation.describe(spec.evaluation.formulation)}")
        capped = describe_capped(spec.evaluation.max_new_tokens, self.max_length)
        if capped:
            say(f"evaluate: {capped}")
        self.scored = self.skipped = self.bases_scored = 0
        self.finished: set[str] = set()
        self.pools: dict[str, ScorerPool] = {}  # size -> its actors, kept while the size has unfinished cells
        self.engine_starts = 0  # actors started by closed pools (each started one engine)
        self.bench = study.benchmarks  # the spec's lm-eval tasks, loaded and checked by prepare (or None)
        self.bench_scored = self.bench_served = 0
        self.bases = untuned_bases(study)

    def _benchmarks_due(self, found: Pending) -> dict | None:
        """(cell id, epoch) -> the lm-eval tasks it lacks a current result for; a checkpoint whose eval
        items are current joins ``found.todo`` for its benchmarks alone (the same actors, the same engine)."""
        if self.bench is None:
            return None
        from growthpace.evaluators.benchmark_results import pending as bench_pending
        from growthpace.evaluators.lm_eval_tasks import lm_eval_version

        layout = self.study.layout
        due = bench_pending([c for c in self.study.cells if c.cell_id not in self.finished], layout,
                            self.bench.hashes, lm_eval_version())
        queued = {(t.cell_id, t.epoch) for t in found.todo}
        for (cell_id, epoch), b in due.todo.items():
            if (cell_id, epoch) not in queued:
                b.scored = True
                found.todo.append(ToScore(cell_id, epoch, b.path, stored_key(layout, cell_id, epoch)))
        self.bench_served += due.served
        return due.todo

    def _log_bench(self, cell_id: str, epoch: int) -> None:
        from growthpace.evaluators.benchmark_results import read_result, tracked_metrics

        metrics = {}
        for task in self.bench.hashes:
            stored = read_result(self.study.layout, cell_id, epoch, task)
            if stored is not None:
                metrics.update(tracked_metrics(stored))
        self.tracker.log(self.run_ids[cell_id], metrics, step=epoch)
        self.bench_scored += 1

    def _log(self, cell_id: str, epoch: int, part: pl.DataFrame) -> None:
        if cell_id not in self.run_ids:
            return  # an untuned base: no cell run; the report logs its OOD scores (transfer/<size>/<subject>)
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
        bases = pending_bases(self.bases, layout, self.set_hash)
        self.bases_scored += len(bases.todo)
        self.scored += len(found.todo)
        self.skipped = found.scored_before if not found.todo else self.skipped
        if bases.todo and active() is not None:  # the console's count of models to score includes them
            active().set_totals(active().cells, active().checkpoints + len(bases.todo))
        found.todo += bases.todo  # scored with its size's checkpoints: the same shape, the same warm engine
        bench = self._benchmarks_due(found)  # adds the checkpoints that owe only lm-eval tasks to found.todo
        size = {c.cell_id: c.size for c in [*self.study.cells, *self.bases]}
        for s in dict.fromkeys(size[ck.cell_id] for ck in found.todo):
            # one size at a time: its own actors (warm engines of one shape), GPUs and node type
            where = scoring_placement(ev, s)
            part = Pending(todo=[ck for ck in found.todo if size[ck.cell_id] == s])
            score_pending(part, layout, self.sets, backend=self.backend, batch_size=ev.batch_size,
                          concurrency=where.concurrency, limits=ev.max_new_tokens, num_gpus=where.gpus,
                          on_scored=self._log, pipeline=self.pipeline, remote_args=where.remote_args,
                          max_length=self.max_length, bench=bench, benchmarks=ev.benchmarks, on_bench=self._log_bench,
                          pool=self.pools.setdefault(s, ScorerPool()))
        for cell in self.study.cells:
            if cell.cell_id in self.finished or cell.cell_id not in found.trained:
                continue
            best = best_valid_epoch(cell_scores(layout, cell.cell_id), ev.warmup_for(cell.epochs))
            apply_retention(cell, layout, ev.retention, best)
            self.tracker.finish(self.run_ids[cell.cell_id])
            self.finished.add(cell.cell_id)
        for s in [s for s in self.pools if all(c.cell_id in self.finished for c in self.study.cells if c.size == s)]:
            self.close(s)  # no work left for this size: its actors give their GPUs back
        return len(found.todo)

    def close(self, size: str | None = None) -> None:
        """Stop the scoring actors of ``size`` (None: of every size)."""
        for s in [size] if size is not None else list(self.pools):
            pool = self.pools.pop(s, None)
            if pool is not None:
                self.engine_starts += pool.started
                pool.close()

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
        finally:
            self.close()


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
        try:
            scoring.once()
        finally:
            scoring.close()
        console.print(
            f"evaluate: scored {scoring.scored} checkpoint(s), skipped {scoring.skipped} already scored, "
            f"{scoring.bases_scored} untuned base(s) scored, "
            f"{time.time() - t0:.0f}s"
        )
        if scoring.bench is not None:
            console.print(f"evaluate: lm-eval tasks {', '.join(scoring.bench.names)}: scored on {scoring.bench_scored} "
                          f"checkpoint(s), {scoring.bench_served} stored (checkpoint, task) result(s) served")
        return collect_scores([*study.cells, *scoring.bases], study.layout)


def run_rescore(spec) -> int:
    """Re-apply the current scorers to every stored prediction; print how many verdicts changed."""
    from growthpace.jobs.study import prepare
    from growthpace.platform.store.storage import Layout

    # a storage that never scored has nothing to rescore: refuse before prepare writes its first file
    layout = Layout.for_spec(spec)
    cells = layout.root / "cells"
    if not (cells.is_dir() and any(layout.cell_prediction_files(d.name) for d in cells.iterdir() if d.is_dir())):
        raise FileNotFoundError(f"{layout.root}: no stored predictions to rescore; run the study "
                                "(`growthpace run SPEC`, or `growthpace evaluate SPEC`) first")
    study = prepare(spec, write=True)
    units = [*study.cells, *untuned_bases(study)]
    done = rescore(units, study.layout, study.eval_sets, spec.evaluation.max_new_tokens)
    collect_scores(units, study.layout)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(done.changed.items())) or "none"
    console.print(f"rescore: re-applied the scorers to {done.files} stored prediction file(s); no model was run")
    console.print(f"rescore: {sum(done.changed.values())} of {done.verdicts} verdict(s) changed ({kinds})")
    if study.benchmarks is not None:
        from growthpace.evaluators.lm_eval_tasks import rescore as rescore_benchmarks

        files, changed, left = rescore_benchmarks(study.cells, study.layout, study.benchmarks)
        console.print(f"rescore: lm-eval's metrics re-run over {files} stored (checkpoint, task) result(s), no model; "
                      f"{changed} changed" + (f"; {left} stored under another task config (run evaluate)" if left else ""))
    return done.files


if __name__ == "__main__":  # the module path jobs were submitted with before `python -m growthpace evaluate`
    from growthpace.jobs.entry import as_command

    as_command("evaluate")
