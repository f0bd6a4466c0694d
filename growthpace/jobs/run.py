"""The whole study: sweep -> evaluate -> report. `python -m growthpace.jobs.run SPEC` (what `ray job submit` runs)."""

from __future__ import annotations

import threading
import time

import polars as pl
from rich.console import Console

from growthpace.jobs.cluster import connect
from growthpace.jobs.evaluate import (
    apply_retention,
    best_valid_epoch,
    collect_scores,
    eval_set_hash,
    evaluate,
    plan_scoring,
    rescore,
)
from growthpace.jobs.report import log_analysis, write_report
from growthpace.jobs.placement import longest_first, scoring_remote_args
from growthpace.jobs.study import Study, materialise, model_params, prepare
from growthpace.jobs.sweep import sweep, train_config
from growthpace.platform.data import load_eval_sets
from growthpace.platform.spec import Spec
from growthpace.platform.tracking import StudyTracker, preflight

console = Console(stderr=True)


def _tracker(study: Study) -> tuple[StudyTracker, str, dict[str, str]]:
    spec = study.spec
    tracker = StudyTracker(spec.tracking_uri, spec.tracking.experiment, study.layout)
    parent = tracker.parent(
        spec.name,
        {
            "study": spec.name,
            "models": ",".join(f"{m.size}={m.name}" for m in spec.models),
            "sources": ",".join(spec.data.sources),
            "volumes": ",".join(map(str, spec.data.volumes)),
            "mixes": ",".join(m.name for m in spec.data.mixes),
            "seeds": ",".join(map(str, spec.data.seeds)),
            "cells": len(study.cells),
        },
    )
    return tracker, parent, {c.cell_id: tracker.child(parent, c) for c in study.cells}


def run_sweep(spec: Spec, beside=None) -> Study:
    """Train every unfinished cell; ``beside(study)`` runs in a thread meanwhile (streaming scoring)."""
    preflight(spec.tracking_uri)
    study = prepare(spec, write=True, ray=("training", "scoring") if beside else ("training",))
    bases = materialise(study)
    _, _, run_ids = _tracker(study)
    connect(spec)
    layout = study.layout
    configs = {
        c.cell_id: train_config(c, bases[c.model], layout, spec.tracking_uri, run_ids[c.cell_id], spec.training) for c in study.cells
    }
    done, errors = threading.Event(), []
    thread = None
    if beside is not None:
        thread = threading.Thread(target=beside, args=(study, done, errors), name="scoring", daemon=True)
        thread.start()
    t0 = time.time()
    try:
        order = longest_first(study.cells, model_params(study))
        trained = sweep(order, configs, layout, spec.training.max_concurrent_trials)
    finally:
        done.set()
        if thread is not None:
            thread.join()
    if errors:
        raise errors[0]
    console.print(
        f"sweep: trained {len(trained)} cell(s), skipped {len(study.cells) - len(trained)} finished, "
        f"{time.time() - t0:.0f}s"
    )
    return study


class Scoring:
    """Scores what is trained: once (`evaluate`), or in a loop beside a running sweep (streaming)."""

    def __init__(self, spec: Spec, study: Study):
        from growthpace.evaluators.backends import resolve, resolve_pipeline

        self.spec, self.study = spec, study
        self.tracker, _, self.run_ids = _tracker(study)
        self.sets = load_eval_sets(spec)
        from growthpace.platform.models import describe

        largest = max(describe(m.name, study.tokenizer)[0] for m in spec.models)
        self.backend, why = resolve(spec.evaluation.backend, params=largest, gpu=spec.evaluation.gpus_per_actor > 0)
        console.print(f"evaluate: backend {self.backend} ({why})")
        self.pipeline, why = resolve_pipeline(spec.evaluation.vllm_pipeline, spec.evaluation.gpus_per_actor, self.backend,
                                             remote_storage=study.layout.remote)
        console.print(f"evaluate: pipeline {self.pipeline} ({why})")
        self.scored = self.skipped = 0
        self.finished: set[str] = set()

    def _log(self, cell_id: str, epoch: int, part: pl.DataFrame) -> None:
        metrics = {f"{s}/{a}": v for s, a, v in part.select("split", "ability", "score").iter_rows()}
        self.tracker.log(self.run_ids[cell_id], metrics, step=epoch)

    def once(self) -> int:
        ev, layout = self.spec.evaluation, self.study.layout
        scored, skipped = evaluate(
            self.study.cells, layout, self.sets,
            backend=self.backend, batch_size=ev.batch_size, concurrency=ev.concurrency,
            limits=ev.max_new_tokens, num_gpus=ev.gpus_per_actor, on_scored=self._log, pipeline=self.pipeline,
            remote_args=scoring_remote_args(ev),
        )
        self.scored += scored
        self.skipped = skipped if not scored else self.skipped
        for cell in self.study.cells:
            if cell.cell_id in self.finished or not layout.cell_checkpoints(cell.cell_id).exists():
                continue
            todo, _ = plan_scoring([cell], layout, eval_set_hash(self.sets, ev.max_new_tokens))
            if todo:
                continue
            best = best_valid_epoch(layout, cell, ev.warmup_for(cell.epochs))
            apply_retention(cell, layout, ev.retention, best)
            self.tracker.finish(self.run_ids[cell.cell_id])
            self.finished.add(cell.cell_id)
        return scored

    def follow(self, sweep_done: threading.Event, errors: list[BaseException]) -> None:
        """Score each cell as soon as it has finished training, until the sweep is over."""
        try:
            while True:
                last = sweep_done.is_set()
                if not self.once() and not last:
                    sweep_done.wait(2.0)
                if last:
                    return
        except BaseException as e:  # re-raised in the main thread
            errors.append(e)


def run_evaluate(spec: Spec, study: Study | None = None) -> pl.DataFrame:
    study = study or prepare(spec, write=True, ray=("scoring",))
    connect(spec)
    t0 = time.time()
    scoring = Scoring(spec, study)
    scoring.once()
    console.print(
        f"evaluate: scored {scoring.scored} checkpoint(s), skipped {scoring.skipped} already scored, "
        f"{time.time() - t0:.0f}s"
    )
    return collect_scores(study.cells, study.layout)


def run_rescore(spec: Spec) -> int:
    study = prepare(spec, write=True)
    n = rescore(study.cells, study.layout, load_eval_sets(spec), spec.evaluation.max_new_tokens)
    collect_scores(study.cells, study.layout)
    console.print(f"rescore: re-applied the scorers to {n} stored prediction file(s); no model was run")
    return n


def run_report(spec: Spec) -> str:
    from growthpace.platform.storage import Layout, localize, read_json, read_parquet

    layout = Layout(spec.storage_path)
    if not layout.scores.exists():
        raise FileNotFoundError(f"{layout.scores}: no scores yet; run `growthpace evaluate` first")
    parent = read_json(layout.tracking)["parent_run_id"] if layout.tracking.exists() else None  # read before writing
    index = write_report(read_parquet(layout.scores), layout.report, spec.name, spec.evaluation.warmup_for, spec=spec)
    if parent is not None:
        tracker = StudyTracker(spec.tracking_uri, spec.tracking.experiment, layout)
        tracker.log_artifacts(parent, localize(layout.report))
        log_analysis(tracker, parent, layout.report)  # pace metrics and curve/<size>/<ability> at step = volume
    console.print(f"report: {index}")
    return str(index)


def run_sync(spec: Spec, study: Study | None = None) -> int:
    """Log to MLflow every metric the study's storage holds and MLflow lacks (idempotent)."""
    from growthpace.platform.storage import localize, read_json, read_parquet

    preflight(spec.tracking_uri)
    study = study or prepare(spec, write=True)
    layout = study.layout
    tracker, parent, run_ids = _tracker(study)
    added = 0
    for cell in study.cells:
        marker = layout.cell_checkpoints(cell.cell_id)
        if not marker.exists():
            continue
        series: dict[str, dict[int, float]] = {
            "train/loss": {ck["epoch"]: ck["train_loss"] for ck in read_json(marker)["checkpoints"]}
        }
        for f in sorted((layout.cell(cell.cell_id) / "scores").glob("epoch_*.parquet")):
            for epoch, split, ability, score in read_parquet(f).select("epoch", "split", "ability", "score").iter_rows():
                series.setdefault(f"{split}/{ability}", {})[int(epoch)] = float(score)
        added += tracker.log_series(run_ids[cell.cell_id], series)
    if (layout.report / "index.html").exists():
        tracker.log_artifacts(parent, localize(layout.report))
    if tracker.offline:
        raise RuntimeError(f"sync: MLflow at {spec.tracking_uri} failed mid-way; run `growthpace sync` again")
    console.print(f"sync: logged {added} missing metric point(s) to {spec.tracking_uri}")
    return added


def run_study(spec: Spec) -> str:
    t0 = time.time()
    beside = None
    if spec.evaluation.streaming:
        beside = lambda study, done, errors: Scoring(spec, study).follow(done, errors)  # noqa: E731
    study = run_sweep(spec, beside)
    run_evaluate(spec, study)
    index = run_report(spec)
    tracker = StudyTracker(spec.tracking_uri, spec.tracking.experiment, study.layout)
    tracker.finish(tracker.parent(spec.name, {}))
    if StudyTracker.failures:  # MLflow was away at some point: catch it up now if it is back
        try:
            run_sync(spec, study)
        except Exception as e:  # noqa: BLE001 - the study itself succeeded
            console.print(f"[yellow]warning:[/] MLflow still unavailable ({e}); run `growthpace sync` later")
    console.print(f"study {spec.name}: done in {time.time() - t0:.0f}s")
    return index


if __name__ == "__main__":
    from growthpace.cli import main_for

    main_for("run")
