"""The benchmark result store: one file per (checkpoint, lm-eval task), under the checkpoint's cell::

    benchmarks/epoch_NNN/<task>.json   {"key", "task", "metrics", "higher_is_better", "n_shot", "samples"}

The key is (checkpoint content hash, task config hash, lm-eval version) (evaluators/lm_eval_tasks.py
``task_hash``): a stored result under the current key is served, never recomputed; a changed task YAML,
few-shot count, limit or lm-eval release is scored again. The samples are lm-eval's ``log_samples``
(every request's arguments and raw responses), what ``rescore`` re-runs lm-eval's filters and metrics
over. This module does not import lm-eval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from growthpace.platform.core.cells import Cell
from growthpace.platform.store.checkpoints import check_checkpoint, checkpoint_hash, read_checkpoints
from growthpace.platform.store.storage import Layout, StoredFileError, read_json, rebuild_hint, write_json

KEY, TASK, METRICS, HIGHER, N_SHOT, SAMPLES = "key", "task", "metrics", "higher_is_better", "n_shot", "samples"
PREFIX = "bench"  # MLflow: bench/<task>/<metric>


def bench_key(ck_hash: str, task_hash: str, version: str) -> str:
    return f"{ck_hash}-{task_hash}-{version}"


def _check(d) -> None:
    if not isinstance(d, dict) or not all(k in d for k in (KEY, TASK, METRICS, SAMPLES)):
        raise ValueError(f"expected an object with {KEY}, {TASK}, {METRICS} and {SAMPLES}")
    if not isinstance(d[METRICS], dict) or not isinstance(d[SAMPLES], list):
        raise ValueError(f"{METRICS} must be an object and {SAMPLES} a list")


def read_result(layout: Layout, cell_id: str, epoch: int, task: str) -> dict | None:
    """One stored (checkpoint, task) result; None before it is scored."""
    path = layout.cell_benchmark(cell_id, epoch, task)
    return read_json(path, check=_check) if path.exists() else None


def write_result(layout: Layout, cell_id: str, epoch: int, key: str, result) -> None:
    """``result``: an lm_eval_tasks.TaskResult. One file, written whole (write-then-rename)."""
    write_json(layout.cell_benchmark(cell_id, epoch, result.task),
               {KEY: key, TASK: result.task, METRICS: result.metrics, HIGHER: result.higher_is_better,
                N_SHOT: result.n_shot, SAMPLES: result.samples})


@dataclass
class BenchTodo:
    """A checkpoint with at least one task lacking a current result: which tasks, under which keys."""

    cell_id: str
    epoch: int
    path: str
    keys: dict[str, str]  # task -> the key its result is stored under now
    stale: list[str]  # tasks to score
    scored: bool = False  # its eval items have a current result: the benchmarks alone are due


@dataclass
class BenchPending:
    todo: dict[tuple[str, int], BenchTodo] = field(default_factory=dict)
    served: int = 0  # (checkpoint, task) results current on disk
    gone: int = 0  # checkpoints whose weights retention removed: their stored results (if any) are final


def pending(cells: list[Cell], layout: Layout, hashes: dict[str, str], version: str) -> BenchPending:
    """Every trained cell's checkpoints: which tasks lack a result under their current key."""
    out = BenchPending()
    for cell in cells:
        if not layout.cell_checkpoints(cell.cell_id).exists():
            continue
        for ck in read_checkpoints(layout, cell.cell_id).checkpoints:
            ck_hash = checkpoint_hash(ck.path) if check_checkpoint(ck.path, scored=True) else None
            if ck_hash is None:
                out.gone += 1
                continue
            keys = {t: bench_key(ck_hash, h, version) for t, h in hashes.items()}
            stale = []
            for task, key in keys.items():
                have = read_result(layout, ck.cell_id, ck.epoch, task)
                if have is not None and have[KEY] == key:
                    out.served += 1
                else:
                    stale.append(task)
            if stale:
                out.todo[(ck.cell_id, ck.epoch)] = BenchTodo(ck.cell_id, ck.epoch, str(ck.path), keys, stale)
    return out


def metric_name(task: str, metric: str) -> str | None:
    """The MLflow name of one of lm-eval's metric keys ("acc,none" -> bench/<task>/acc; the filter
    appended when it is not "none"); None for a stderr."""
    name, _, filt = metric.partition(",")
    if name.endswith("_stderr"):
        return None
    return f"{PREFIX}/{task}/{name}" + (f"_{filt}" if filt and filt != "none" else "")


def tracked_metrics(stored: dict) -> dict[str, float]:
    """A stored result's metrics as MLflow logs them (numbers only)."""
    out = {}
    for k, v in stored[METRICS].items():
        name = metric_name(stored[TASK], k)
        if name is not None and isinstance(v, (int, float)):
            out[name] = float(v)
    return out


def stderr(stored: dict, metric: str) -> float | None:
    """lm-eval's standard error of ``metric`` ("acc,none"), None where it gives none."""
    name, _, filt = metric.partition(",")
    v = stored[METRICS].get(f"{name}_stderr,{filt}")
    return float(v) if isinstance(v, (int, float)) else None


def stored_samples_error(path, why: str) -> StoredFileError:
    return StoredFileError(f"{path}: {why}; {rebuild_hint(path)}")
