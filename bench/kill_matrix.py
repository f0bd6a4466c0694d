"""Kill the study's driver (SIGKILL) at each stage of `growthpace run`, rerun, compare with an
uninterrupted run. The CI keeps one case (tests/test_integration.py, mid-sweep); this is the matrix.

    .venv/bin/python bench/kill_matrix.py [--workdir DIR] [--points data,training,between,scoring,report]

Every run attaches to one local Ray cluster this script starts (RAY_ADDRESS), so killing a driver
leaves no orphaned cluster behind. Prints one line per kill point: redone work and whether the final
scores.parquet and the report's selected scores equal the reference.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import yaml

REPO = Path(__file__).resolve().parents[1]

# Each kill point: a file that appears when the driver has reached that stage.
POINTS = {
    "data": lambda s: any((s / "cells").glob("*/card.json")),
    "training": lambda s: any((s / "train").glob("*/checkpoint_2*")),
    "between": lambda s: any((s / "cells").glob("*/checkpoints.json")),
    "scoring": lambda s: any((s / "cells").glob("*/scores/*.json")),
    "report": lambda s: any(s.glob(".report.*")) or (s / "report").exists(),
}


def spec_file(work: Path, name: str, data: Path) -> Path:
    raw = {
        "name": "killmatrix",
        "storage": str(work / name / "store"),
        "models": [{"name": "llama-nano", "size": "nano", "resources": {"cpus_per_worker": 0.5, "driver_cpus": 0.25}}],
        "data": {"root": str(data), "train_split": "1000", "sources": ["curated", "synthetic"], "volumes": [10, 40]},
        "training": {"epochs": 2, "lr": 3e-3, "end_lr": 3e-4, "per_device_batch": 8, "max_length": 128,
                     "max_concurrent_trials": 1,
                     "resume_every_s": 0},  # a resume state after every epoch but the last: a mid-training kill resumes
        "evaluation": {"concurrency": 1, "max_new_tokens": {"math": 16}, "warmup_epochs": 0, "backend": "transformers"},
    }
    (work / name).mkdir(parents=True, exist_ok=True)
    path = work / name / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(spec: Path, env: dict, kill_when=None) -> tuple[int, float]:
    cmd = [sys.executable, "-m", "growthpace.jobs.run", str(spec)]
    store = Path(yaml.safe_load(spec.read_text())["storage"])
    log = open(spec.parent / ("killed.log" if kill_when else "run.log"), "ab")
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=spec.parent)
    while kill_when is not None and proc.poll() is None:
        if store.exists() and kill_when(store):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return proc.wait(), time.time() - t0


def mtimes(store: Path, pattern: str) -> dict[str, int]:
    return {str(p.relative_to(store)): p.stat().st_mtime_ns for p in store.glob(pattern)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=REPO / "runs" / "kill-matrix")
    ap.add_argument("--points", default=",".join(POINTS))
    args = ap.parse_args()
    import ray

    from growthpace.platform.data.generate import generate_dataset

    work = args.workdir.resolve()
    data = work / "data"
    if not data.exists():
        generate_dataset(data, seed=0, train_per_ability=60, valid_per_ability=4, test_per_ability=8,
                         ood_per_subject=4, synthetic=200)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    try:
        ref_spec = spec_file(work, "reference", data)
        rc, secs = run(ref_spec, env)
        assert rc == 0, f"reference run failed: see {ref_spec.parent / 'run.log'}"
        ref_store = ref_spec.parent / "store"
        reference = pl.read_parquet(ref_store / "scores.parquet")
        ref_selected = pl.read_csv(ref_store / "report" / "selected.csv")
        print(f"reference: {secs:.0f}s, {reference.height} score rows")
        cols = ["cell_id", "epoch", "split", "ability", "score", "expected", "items"]
        for point in args.points.split(","):
            spec = spec_file(work, f"kill-{point}", data)
            store = spec.parent / "store"
            rc, _ = run(spec, env, POINTS[point])
            trained = mtimes(store, "cells/*/checkpoints.json")
            scored = mtimes(store, "cells/*/scores/*.json")
            rc2, secs = run(spec, env)
            redone_train = sum(1 for k, v in trained.items() if mtimes(store, k).get(k) != v)
            redone_score = sum(1 for k, v in scored.items() if mtimes(store, k).get(k) != v)
            scores = pl.read_parquet(store / "scores.parquet")
            same = scores.select(cols).sort(cols[:4]).equals(reference.select(cols).sort(cols[:4]))
            same_report = pl.read_csv(store / "report" / "selected.csv").sort(pl.all()).equals(ref_selected.sort(pl.all()))
            print(
                f"kill at {point:9s} (rc {rc}): rerun rc {rc2} in {secs:.0f}s; finished before kill: "
                f"{len(trained)} cells, {len(scored)} checkpoints scored; redone: {redone_train} cells, "
                f"{redone_score} checkpoints; scores equal: {same}; report equal: {same_report}"
            )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
