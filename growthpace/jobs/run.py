"""The whole study: sweep -> evaluate -> report. `python -m growthpace run SPEC` (what `ray job submit` runs)."""

from __future__ import annotations

import threading
import time

from growthpace.jobs.cluster import connect, disconnect
from growthpace.jobs.evaluate import Scoring, run_evaluate, run_rescore  # noqa: F401 - the study's steps
from growthpace.jobs.report import check_report_inputs, log_analysis, write_report
from growthpace.jobs.placement import longest_first
from growthpace.jobs.progress import active, console, view_for
from growthpace.jobs.pretrain import pretrain_bases
from growthpace.jobs.study import Study, materialise, model_params, model_tokenizers, prepare, tracker_for
from growthpace.jobs.sweep import sweep, train_config
from growthpace.platform.core.spec import Spec
from growthpace.platform.store.tracking import StudyTracker, preflight


def run_sweep(spec: Spec, beside=None) -> Study:
    """Train every unfinished cell; ``beside(study)`` runs in a thread meanwhile (streaming scoring)."""
    with view_for(spec) as view:
        return _sweep(spec, beside, view)


def _sweep(spec: Spec, beside, view) -> Study:
    preflight(spec.tracking_uri)
    study = prepare(spec, write=True, ray=("training", "scoring") if beside else ("training",))
    view.capture()
    view.set_totals(len(study.cells), sum(c.epochs for c in study.cells))
    bases = materialise(study)
    _, _, run_ids = tracker_for(study)
    connect(spec)
    bases, _ = pretrain_bases(study, bases, model_tokenizers(study, bases))  # cells train from these
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
    view.enter_stage("train + score" if beside is not None else "train")
    try:
        order = longest_first(study.cells, model_params(study))
        trained = sweep(order, configs, layout, spec.training.max_concurrent_trials, spec.ray.driver_resources)
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


def run_report(spec: Spec) -> str:
    from growthpace.platform.store.storage import Layout, localize, read_json, read_parquet

    layout = Layout.for_spec(spec)
    if active() is not None:
        active().enter_stage("report")
    if not layout.scores.exists():
        raise FileNotFoundError(f"{layout.scores}: no scores yet; run `growthpace evaluate` first")
    parent = read_json(layout.tracking)["parent_run_id"] if layout.tracking.exists() else None  # read before writing
    scores = read_parquet(layout.scores)
    check_report_inputs(layout, scores)
    base = read_parquet(layout.base_scores) if layout.base_scores.exists() else None  # the untuned bases: volume 0
    if base is not None:
        check_report_inputs(layout, base)
    index = write_report(scores, layout.report, spec.name, spec.evaluation.warmup_for, spec=spec, base_scores=base)
    if parent is not None:
        tracker = StudyTracker(spec.tracking_uri, spec.tracking.experiment, layout)
        tracker.log_artifacts(parent, localize(layout.report))
        log_analysis(tracker, parent, layout.report)  # pace metrics and curve/<size>/<ability> at step = volume
    console.print(f"report: {index}")
    return str(index)


def run_sync(spec: Spec, study: Study | None = None) -> int:
    """Log to MLflow every metric the study's storage holds and MLflow lacks (idempotent)."""
    from growthpace.platform.store.checkpoints import read_checkpoints
    from growthpace.platform.store.storage import localize, read_parquet

    preflight(spec.tracking_uri)
    study = study or prepare(spec, write=True)
    layout = study.layout
    tracker, parent, run_ids = tracker_for(study)
    added = 0
    for cell in study.cells:
        if not layout.cell_checkpoints(cell.cell_id).exists():
            continue
        series: dict[str, dict[int, float]] = {
            "train/loss": {ck.epoch: ck.train_loss for ck in read_checkpoints(layout, cell.cell_id).checkpoints
                           if ck.train_loss is not None}
        }
        for f in layout.cell_score_files(cell.cell_id):
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
    with view_for(spec):
        try:
            return _study(spec)
        finally:
            disconnect()


def _study(spec: Spec) -> str:
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
    active().finish()
    console.print(f"study {spec.name}: done in {time.time() - t0:.0f}s")
    _closing_summary(spec, study, index)
    return index


def _closing_summary(spec: Spec, study: Study, index: str) -> None:
    """The few lines a researcher reads last: where the report is, its headline findings, how to open MLflow."""
    from growthpace.platform.report.page import console_lines
    from growthpace.platform.store.storage import read_json

    summary = study.layout.report / "summary.json"
    if summary.exists():
        for line in console_lines(read_json(summary), index, spec.tracking_uri):
            console.print(line, highlight=False, markup=False, soft_wrap=True)  # the terminal wraps, not rich


if __name__ == "__main__":  # the module path jobs were submitted with before `python -m growthpace run`
    from growthpace.jobs.entry import as_command

    as_command("run")
