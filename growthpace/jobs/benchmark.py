"""The benchmark job: CMMLU / AGIEval on one model folder, through the evaluation pipeline.

`python -m growthpace benchmark MODEL --cmmlu DIR --agieval DIR`. The benchmark files become eval sets
(evaluators/benchmarks.py), their requests are planned and answered as a study's are
(evaluators/requests.py, any Backend), each item is scored by its question kind, and the prediction
rows are those the result store keeps (evaluators/results.py). One row per (benchmark, shots) comes
back; with a spec and a cell it is logged into the cell's MLflow run as ``bench/<name>/<k>shot``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import polars as pl

from growthpace.evaluators.backends import Backend
from growthpace.evaluators.benchmarks import LIMITS, Setting, eval_sets, load_settings, metric_name
from growthpace.evaluators.backends import predict
from growthpace.evaluators.results import flatten_sets, prediction_rows
from growthpace.platform.core.items import DataError


def score_settings(backend: Backend, settings: list[Setting]) -> list[dict[str, Any]]:
    """One row per (benchmark, shots): accuracy and random baseline in percent, items, subjects.

    All items go to the backend in one plan, so it batches across benchmarks and shot counts.
    """
    keys, flat = flatten_sets(eval_sets(settings))
    rows = pl.DataFrame(prediction_rows("", 0, "", backend.name, keys, flat, predict(backend, flat, LIMITS)))
    out = []
    for name, k, sets in settings:
        part = rows.filter(pl.col("split") == f"{name}/{k}shot")
        out.append({
            "benchmark": name,
            "shots": k,
            "accuracy": 100.0 * part["correct"].cast(pl.Float64).mean(),
            "expected": 100.0 * part["expected"].mean(),
            "items": part.height,
            "subjects": len(sets),
        })
    return out


def log_to_cell(spec, cell_id: str, epoch: int, rows: list[dict[str, Any]]) -> tuple[str, bool]:
    """Log ``bench/<name>/<shots>shot`` accuracies into the cell's MLflow child run at step = epoch.

    The run id is read from <storage>/cells/<cell_id>/mlflow.json. Returns (run id, logged): MLflow
    is best effort (``CellRun`` warns once when the server fails), so False means "not logged".
    """
    from growthpace.platform.store import tracking
    from growthpace.platform.store.storage import Layout, read_json

    path = Layout.for_spec(spec).cell_run(cell_id)
    if not path.is_file():
        raise DataError(f"{path}: no MLflow run recorded for cell {cell_id!r} (field 'cell': is the id right?)")
    run_id = read_json(path)["run_id"]
    run = tracking.CellRun(spec.tracking_uri, run_id)
    run.log({metric_name(r["benchmark"], r["shots"]): r["accuracy"] for r in rows}, step=epoch)
    return run_id, not getattr(run, "offline", False)


def run_benchmark(model: Path, sources: dict[str, Path], shots: Sequence[int], *, backend: str = "transformers",
                  batch_size: int = 32) -> tuple[str, list[dict[str, Any]]]:
    """(backend used, one row per setting); every file is read and checked before the model loads."""
    from growthpace.evaluators.engines import load, resolve
    from growthpace.platform.store.checkpoints import check_checkpoint

    check_checkpoint(model, scored=False, model=model)  # evaluate's pre-flight: weights, config, tokenizer
    settings = load_settings(sources, shots)
    name = resolve(backend)[0] if backend == "auto" else backend
    engine = load(name, model, batch_size)
    try:
        return name, score_settings(engine, settings)
    finally:
        engine.close()
