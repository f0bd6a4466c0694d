"""Engine starts of streaming scoring: a new actor pool per pass (before) vs each size's actors kept (after).

    flock /tmp/heavy.lock .venv/bin/python bench/scoring_actors.py [--cells 4] [--epochs 2] [--concurrency 2]

Streaming (evaluation.streaming) calls a scoring pass each time a cell finishes training, so one pass
scores one cell's epochs. This replays that on a real local Ray cluster (2 CPUs) with the project's
``score_pending`` and transformers engines: ``--cells`` passes of ``--epochs`` checkpoints of one size,

- before: each pass with its own Ray Data actor pool (what ``score_pending`` does without a pool);
- after: every pass through one ``ScorerPool`` (what ``Scoring`` now keeps per size);

and counts the scoring actors each started, from Ray's actor table (``ray.util.state.list_actors``):
each actor starts one engine, on its first checkpoint (the next ones of the same shape are swapped in).
Prints one line per mode: engine starts, seconds, and the same stored scores. The doit figure follows
from the rule: before, about one start per actor per pass (116 for its 507 checkpoints); after, the
actors of each size once (per size, its ``concurrency``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=4, help="passes: one finished cell each")
    ap.add_argument("--epochs", type=int, default=2, help="checkpoints per cell")
    ap.add_argument("--concurrency", type=int, default=2, help="scoring actors of the size (evaluation.concurrency)")
    ap.add_argument("--items", type=int, default=20)
    a = ap.parse_args()

    import polars as pl
    import ray
    from ray.util.state import list_actors

    from bench.engine_reuse import one_cell_checkpoints
    from growthpace.evaluators.results import Pending, ToScore
    from growthpace.jobs.evaluate import ScorerPool, score_pending
    from growthpace.platform.store.storage import Layout
    from growthpace.platform.store.tables import ResultKey

    with tempfile.TemporaryDirectory(prefix="scoring-actors-") as tmp:
        root = Path(tmp)
        dirs, records = one_cell_checkpoints(root / "cell", "llama-micro", a.epochs, a.items)
        sets = {("test", "all"): records}
        cluster = ray.init(address="local", num_cpus=2, include_dashboard=True,  # the state API (list_actors) needs it
                 log_to_driver=False,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
        figures = {}
        for mode in ("before", "after"):
            layout = Layout(root / f"store-{mode}")
            known = {x.actor_id for x in list_actors(address=cluster.address_info["address"], limit=10_000)}
            pool = ScorerPool() if mode == "after" else None
            t0 = time.perf_counter()
            for cell in range(a.cells):  # one pass per finished cell, as Scoring.follow makes them
                todo = [ToScore(f"cell{cell}", e + 1, str(d), ResultKey(f"ck{cell}x{e}", "sets", "1"), model=str(d))
                        for e, d in enumerate(dirs)]
                score_pending(Pending(todo=todo), layout, sets, backend="transformers", batch_size=16,
                              concurrency=a.concurrency, max_length=256, pool=pool)
            elapsed = time.perf_counter() - t0
            if pool is not None:
                pool.close()
            started = [x for x in list_actors(address=cluster.address_info["address"], limit=10_000) if x.actor_id not in known
                       and ("MapWorker" in x.class_name or "CheckpointScorer" in x.class_name)]
            scores = pl.concat([pl.read_parquet(f) for f in sorted((layout.root / "cells").rglob("scores/*.parquet"))])
            figures[mode] = (len(started), elapsed, scores.sort("cell_id", "epoch")["score"].to_list())
        ray.shutdown()
    same = figures["before"][2] == figures["after"][2]
    for mode, (starts, elapsed, _) in figures.items():
        print(f"{mode}: passes={a.cells} checkpoints={a.cells * a.epochs} concurrency={a.concurrency} "
              f"engine_starts={starts} seconds={elapsed:.1f} same_scores={same}")


if __name__ == "__main__":
    main()
