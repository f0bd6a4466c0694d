"""scores.parquet -> report/: load -> select -> analyse -> plots -> index.html -> MLflow.

This module is the orchestration and the I/O: it loads what the analysis needs from storage (scores,
per-item verdicts, mix cards, costs), runs the one selection rule (platform/core/selection.py), the pure
analysis (platform/analysis/summary.py, on platform/analysis/growth.py and platform/analysis/decisions.py), draws the PNGs
(platform/report/plots.py), renders index.html (platform/report/page.py with templates/report.html), writes the
summary dict as summary.json (every number on the page is in it) and logs its numbers on MLflow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from growthpace.jobs.progress import console
from growthpace.platform.data.dataset import load_pool
from growthpace.platform.analysis import growth
from growthpace.platform.report import page
from growthpace.platform.report import plots
from growthpace.platform.analysis.summary import analyse, formulations
from growthpace.platform.train.models import param_count
from growthpace.platform.core.cells import BASE_SOURCE
from growthpace.platform.core.selection import select
from growthpace.platform.store.checkpoints import read_checkpoints
from growthpace.platform.store.storage import Layout, StoragePath, is_remote, read_json, read_parquet, upload_tree, write_bytes


# --------------------------------------------------------------------------------------------------
# Loading what the analysis needs from storage


VERDICT_COLUMNS = ["split", "ability", "idx", "correct"]  # what the report reads of a prediction table


def load_verdicts(storage: StoragePath, selected: pl.DataFrame) -> pl.DataFrame | None:
    """Per-item verdicts of the selected checkpoints, from cells/<id>/predictions/epoch_NNN.parquet.

    Only (cell, split, ability) at their selected epoch are kept. None when no cell has stored
    predictions: the bootstrap then falls back to the binomial draw (growth.bootstrap_binomial).
    """
    frames = []
    wanted = selected.select("cell_id", "selected_epoch", "split", "ability")
    for (cell_id, epoch), part in wanted.group_by(["cell_id", "selected_epoch"]):
        path = Layout(storage).cell_predictions(cell_id, int(epoch))  # a safe cell id, or PathError
        if not path.exists():
            continue
        preds = read_parquet(path, columns=VERDICT_COLUMNS)
        frames.append(
            preds.with_columns(pl.col("idx").cast(pl.String), pl.col("correct").cast(pl.Boolean))
            .join(part.select("split", "ability"), on=["split", "ability"])
            .with_columns(cell_id=pl.lit(cell_id))
        )
    return pl.concat(frames) if frames else None


def base_selected(base_scores: pl.DataFrame | None) -> pl.DataFrame | None:
    """base_scores.parquet's rows shaped as ``select``'s output: an untuned base has one result (epoch 0,
    evaluators/results.py UntunedBase) and no selection; only its test and OOD rows are read."""
    if base_scores is None or not base_scores.height:
        return None
    return (base_scores.filter((pl.col("source") == BASE_SOURCE) & pl.col("split").is_in(["test", "ood"]))
            .rename({"epoch": "selected_epoch"}))


def size_params(spec) -> dict[str, float]:
    """Size label -> parameter count: declared in the spec, else read from the label ('0.2M', '7b'),
    else counted from the preset's or HF config (models.param_count) without building weights."""
    out: dict[str, float] = {}
    for m in spec.models:
        n = getattr(m, "params", None) or growth.params_from_label(m.size)
        if n is None:
            try:
                n = param_count(m.name)
            except Exception:  # unknown size: the size sensitivity is left out, nothing else
                n = None
        out[m.size] = float(n) if n else math.nan
    return out


def check_report_inputs(layout: Layout, scores: pl.DataFrame) -> None:
    """Every stored file the report reads besides scores.parquet, read (tables: footer and schema) before
    it writes anything: each scored cell's checkpoints.json (cell_costs), card.json (mix_counts) and
    prediction tables (load_verdicts). A damaged one is one error naming it (platform/store/storage.py)."""
    from growthpace.platform.store.storage import check_table

    for cell_id in scores["cell_id"].unique().to_list():
        if layout.cell_checkpoints(cell_id).exists():
            read_checkpoints(layout, cell_id)
        if layout.cell_card(cell_id).exists():
            read_json(layout.cell_card(cell_id))
        for f in layout.cell_prediction_files(cell_id):
            check_table(f, VERDICT_COLUMNS)


def cell_costs(storage: StoragePath, scores: pl.DataFrame, spec=None) -> dict[str, dict]:
    """cell_id -> {gpu_hours, core_hours, basis}: measured (the sweep's wall time of the cell's training
    x its GPUs / CPUs, in checkpoints.json) where recorded, else `plan`'s estimate where the spec
    declares a throughput for the model; cells with neither are left out (their cost shows n/a)."""
    out: dict[str, dict] = {}
    layout = Layout(storage)
    for cell_id in scores["cell_id"].unique().to_list():
        done = read_checkpoints(layout, cell_id) if layout.cell_checkpoints(cell_id).exists() else None
        if done is not None and done.wall_s is not None:
            hours = done.wall_s / 3600
            out[cell_id] = {"gpu_hours": hours * (done.gpus or 0.0),
                            "core_hours": hours * (done.cpus or 0.0), "basis": "measured"}
    missing = set(scores["cell_id"].unique().to_list()) - set(out)
    if spec is not None and missing and any(m.resources.throughput_tokens_per_gpu_s for m in spec.models):
        from growthpace.jobs.entry import input_errors
        from growthpace.jobs.study import plan_rows, prepare

        try:
            rows = plan_rows(prepare(spec, write=False))
        except input_errors() as e:  # the plan needs the inputs as they were; without them costs show n/a
            console.print(f"report: planned costs unavailable ({str(e).splitlines()[0]}); those cells' cost shows n/a")
            rows = []
        for r in rows:
            if r["cell_id"] in missing and r["gpu_hours"] is not None:
                out[r["cell_id"]] = {"gpu_hours": r["gpu_hours"], "core_hours": None, "basis": "plan"}
    return out


def mix_counts(storage: StoragePath, scores: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Named mix -> items per ability, from the mix cells' cards (what the cells really trained on)."""
    out: dict[str, dict[str, int]] = {}
    if "mix" not in scores.columns:
        return out
    for cell_id, mix in scores.filter(pl.col("mix").fill_null("") != "").select("cell_id", "mix").unique().iter_rows():
        card = storage / "cells" / cell_id / "card.json"
        if mix not in out and card.exists():
            out[mix] = {a: int(n) for a, n in read_json(card)["counts"].items()}
    return out


def available_items(spec) -> dict[str, int] | None:
    """Train items per ability in the spec's dataset (the recommender cannot ask for more)."""
    try:
        if spec.declared:
            from growthpace.platform.data.dataset import load_declared_pool

            return load_declared_pool(spec)[0].available
        return load_pool(spec.data_root, spec.data.train_split, with_synthetic=False).available
    except Exception:
        return None


def declaration(spec) -> dict:
    """What the analysis takes from the spec's declaration (DoIT's without a spec)."""
    if spec is None:
        return {}
    return {"abilities": spec.ability_names, "primary": spec.data.primary_source, "source_pairs": spec.source_pairs,
            "ood_sets": spec.ood_subjects if spec.evaluation.ood else ()}


# --------------------------------------------------------------------------------------------------
# Entry points


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def benchmark_rows(storage: StoragePath, selected: pl.DataFrame) -> list[dict]:
    """Each selected (cell, epoch)'s stored lm-eval metrics (evaluators/benchmark_results.py) as rows of
    analysis/benchmarks.py: metric "<task>/<metric>[_<filter>]" (MLflow's name less "bench/"), value, stderr."""
    from growthpace.evaluators.benchmark_results import HIGHER, METRICS, TASK, metric_name, stderr

    layout, rows = Layout(storage), []
    cells_dir = layout.root / "cells"
    if selected.is_empty() or not cells_dir.exists() or not any((d / "benchmarks").exists() for d in cells_dir.iterdir()):
        return rows  # a study without evaluation.benchmarks
    cells = selected.select("cell_id", "selected_epoch", "size", "source", "volume", "seed").unique()
    for cell in cells.iter_rows(named=True):
        folder = layout.cell_benchmark(cell["cell_id"], int(cell["selected_epoch"]), "x").parent
        if not folder.exists():
            continue
        for f in sorted(folder.glob("*.json")):
            stored = read_json(f)
            for key, value in stored[METRICS].items():
                name = metric_name(stored[TASK], key)
                if name is None or not isinstance(value, (int, float)):
                    continue
                rows.append({**cell, "metric": name.split("/", 1)[1], "value": float(value), "stderr": stderr(stored, key),
                             "higher_is_better": (stored.get(HIGHER) or {}).get(key.split(",")[0])})
    return rows


def write_report(scores: pl.DataFrame, folder: StoragePath, study: str, warmup_for, spec=None,
                 storage: StoragePath | None = None, base_scores: pl.DataFrame | None = None) -> StoragePath:
    """Write index.html, its PNGs and summary.json into a fresh folder, then swap it in.

    With the spec: its analysis settings, parameter counts and dataset; the cells' stored predictions
    and cards are looked up under ``storage`` (default: the report folder's parent, the storage root).
    In an object store the report is built locally and uploaded, index.html last.
    """
    import shutil
    import tempfile

    from growthpace.platform.core.spec import AnalysisSpec

    if is_remote(folder):
        with tempfile.TemporaryDirectory() as d:
            write_report(scores, Path(d) / "report", study, warmup_for, spec=spec, storage=folder.parent,
                         base_scores=base_scores)
            upload_tree(Path(d) / "report", folder, last=("index.html",))
        return folder / "index.html"
    settings = spec.analysis if spec is not None else AnalysisSpec()
    storage = storage if storage is not None else folder.parent
    params = size_params(spec) if spec is not None else {}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".report."))
    try:
        base = base_selected(base_scores)
        selected = select(scores, warmup_for)
        write_bytes(tmp / "selected.csv", selected.write_csv().encode())
        summary, measured, fits, rec = analyse(
            selected, settings, params=params,
            verdicts=load_verdicts(storage, selected if base is None else pl.concat([selected, base], how="diagonal_relaxed")),
            mixes=mix_counts(storage, scores), available=available_items(spec) if spec is not None else None,
            cell_costs=cell_costs(storage, scores, spec), base=base, **declaration(spec),
        )
        summary = {"study": study, "cells": scores["cell_id"].n_unique(),
                   "checkpoints": scores.select("cell_id", "epoch").unique().height, **summary,
                   "formulation": formulations(scores, selected,
                                               list(spec.evaluation.formulation) if spec is not None else None,
                                               **({"abilities": spec.ability_names} if spec is not None else {}))}
        bench = benchmark_rows(storage, selected)
        if bench:
            from growthpace.platform.analysis.benchmarks import benchmark_summary

            summary["benchmarks"] = benchmark_summary(bench, settings, params)
        plots.draw(summary, measured, fits, rec, tmp)
        if rec is not None:
            write_bytes(tmp / f"{rec.name}.yaml", page.mix_yaml(rec, study).encode())
        summary["headline"]["sentences"] = page.headline_sentences(summary["headline"])
        summary = _json_safe(summary)
        write_bytes(tmp / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())
        write_bytes(tmp / "index.html", page.render(summary, study, selected).encode())
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder / "index.html"


def _metric_key(*parts: str) -> str:
    # MLflow metric names: alphanumerics, _ - . / and space only.
    return "/".join("".join(ch if ch.isalnum() or ch in "_-. " else "_" for ch in str(p)) for p in parts)


def mlflow_series(summary: dict) -> dict[str, dict[int, float]]:
    """What the study's parent run carries: curve/<size>/<ability> at step = volume (measured curated
    test score, so MLflow's compare view draws growth curves across studies) and the pace, size
    hold-out and decision-accuracy numbers at step 0."""
    series: dict[str, dict[int, float]] = {}
    primary = (summary.get("declaration") or {}).get("primary", "curated")
    for r in summary["measured"]:
        if r["source"] == primary and r["mix"] == "" and r["split"] == "test":
            series.setdefault(_metric_key("curve", r["size"], r["ability"]), {})[int(r["volume"])] = r["score"]
    for c in summary["curves"]:
        for name in ("ceiling", "gain_per_doubling", "range_gain_per_doubling", "saturation_volume"):
            if c[name]["value"] is not None:
                series[_metric_key("pace", c["size"], c["ability"], name)] = {0: c[name]["value"]}
        if c["r2"] is not None:
            series[_metric_key("pace", c["size"], c["ability"], "r2")] = {0: c["r2"]}
    for a in summary["abilities"]:
        for name in ("gain_per_doubling", "range_gain_per_doubling", "size_gain_per_doubling", "saturation_volume",
                     "ceiling"):
            if a[name]["value"] is not None:
                series[_metric_key("pace", a["ability"], name)] = {0: a[name]["value"]}
    for r in summary["extrapolation"]["rows"]:
        if r["error"] is not None:
            series[_metric_key("extrapolation", r["size"], r["ability"], "error")] = {0: r["error"]}
    if summary["extrapolation"]["mean_abs_error"] is not None:
        series["extrapolation/mean_abs_error"] = {0: summary["extrapolation"]["mean_abs_error"]}
    for r in (summary.get("size_holdout") or {}).get("rows", []):
        for name in ("mae", "baseline_mae"):
            if r[name] is not None:
                series[_metric_key("holdout", r["ability"], name)] = {0: r[name]}
    for r in (summary.get("decision_accuracy") or {}).get("rows", []):
        if r["agree"] is not None:
            series[_metric_key("decision_accuracy", r["ability"])] = {0: r["agree"]}
    for row in (summary.get("ood_change") or {}).get("rows", []):
        # transfer/<size>/<subject>: the OOD score at step = curated volume, the untuned base at step 0
        for subject in [*row["per_subject"], {"subject": "mean", "base": (row["base"] or {}).get("value"),
                                               "scores": {str(v["volume"]): v["ood"]["value"] for v in row["volumes"]}}]:
            points = {int(v): x for v, x in subject["scores"].items() if x is not None}
            if subject["base"] is not None:
                points[0] = subject["base"]
            series[_metric_key("transfer", row["size"], subject["subject"])] = points
        for name in ("change", "over_base"):
            if row[name] is not None and row[name]["value"] is not None:
                series[_metric_key("transfer", row["size"], "mean", name)] = {0: row[name]["value"]}
    rec = summary.get("recommendation")
    if rec and rec["gain_over_even"]["value"] is not None:
        series["recommend/predicted_gain_over_even"] = {0: rec["gain_over_even"]["value"]}
    return series


def log_analysis(tracker, run_id: str, folder: Path) -> int:
    """Log the report's numbers on the parent run (points already there are not logged twice)."""
    path = folder / "summary.json"
    if not path.exists():
        return 0
    return tracker.log_series(run_id, mlflow_series(json.loads(path.read_text(encoding="utf-8"))))


def recommend_for_spec(spec, budget: int, size: str | None = None, name: str | None = None):
    """`growthpace recommend`: (recommendation, YAML text) from the spec's finished study."""
    from growthpace.platform.core.allocation import AllocationError
    from growthpace.platform.core.paths import safe_name
    from growthpace.platform.core.spec import SpecError

    if name is not None:
        safe_name(name, "--name")  # it names <storage>/recommendations/<name>.yaml
    layout = Layout.for_spec(spec)
    if not layout.scores.exists():
        raise FileNotFoundError(f"{layout.scores}: no scores yet; run the study first")
    sizes = [m.size for m in spec.models]
    if size is not None and size not in sizes:
        raise SpecError(f"option '--size': {size!r} is not one of the models' sizes {sizes}")
    available = available_items(spec)
    why = growth.budget_problem(budget, available) if available is not None else None
    if why:
        raise AllocationError(f"option '--budget': {why}")
    scores = read_parquet(layout.scores)
    selected = select(scores, spec.evaluation.warmup_for)
    _, _, _, rec = analyse(selected, spec.analysis, params=size_params(spec),
                           verdicts=load_verdicts(layout.root, selected), available=available,
                           budget=budget, size=size, name=name, size_from="option '--size'", **declaration(spec))
    if rec is None:
        raise FileNotFoundError(f"{layout.scores}: no curve could be fitted (3+ curated volumes needed)")
    return rec, page.mix_yaml(rec, spec.name)


if __name__ == "__main__":  # the module path jobs were submitted with before `python -m growthpace report`
    from growthpace.jobs.entry import as_command

    as_command("report")
