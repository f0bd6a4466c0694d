"""What a finished sweep's cells spent their wall time on: the fixed-cost ratio of issue 13.

    python bench/fixed_cost.py runs/local

Reads every cell's checkpoints.json (written by jobs/sweep.py) and prints, per cell and in total, the
trial's wall time against the time inside the train function's epochs (compute_s), and what came
before the epochs: the worker's imports (imports_s) and the model load + DeepSpeed init (setup_s).
ratio = wall / compute; the goal is at most 1.3x for the whole sweep. Cells trained before the timing
was recorded (no compute_s) are listed and left out of the totals.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from growthpace.platform.store.checkpoints import COMPUTE_S, IMPORTS_S, SETUP_S, read_checkpoints
from growthpace.platform.store.storage import Layout


def main(storage: str) -> int:
    layout = Layout(storage)
    rows = []
    for path in sorted(Path(storage, "cells").glob(f"*/{Layout.CELL_CHECKPOINTS}")):
        done = read_checkpoints(layout, path.parent.name)
        card = path.parent / "card.json"
        items = json.loads(card.read_text()).get("total") if card.exists() else None
        rows.append((path.parent.name, items, {"wall_s": done.wall_s or 0.0, **done.timing}))
    if not rows:
        print(f"{storage}: no cells/*/{Layout.CELL_CHECKPOINTS} (run the sweep first)", file=sys.stderr)
        return 2
    timed = [(c, n, d) for c, n, d in rows if COMPUTE_S in d]
    print(f"{'cell':12} {'items':>6} {'wall_s':>7} {'compute_s':>9} {'setup_s':>7} {'imports_s':>9} {'ratio':>6}")
    for cell, items, d in sorted(timed, key=lambda r: -r[2][COMPUTE_S]):
        print(f"{cell[:12]:12} {items if items is not None else '?':>6} {d['wall_s']:7.1f} {d[COMPUTE_S]:9.1f} "
              f"{d.get(SETUP_S, 0):7.1f} {d.get(IMPORTS_S, 0):9.1f} {d['wall_s'] / max(d[COMPUTE_S], 1e-9):6.2f}")
    for cell, _, _ in (r for r in rows if COMPUTE_S not in r[2]):
        print(f"{cell[:12]:12} (no timing recorded)")
    if timed:
        wall = sum(d["wall_s"] for _, _, d in timed)
        compute = sum(d[COMPUTE_S] for _, _, d in timed)
        setup = sum(d.get(SETUP_S, 0) for _, _, d in timed)
        imports = sum(d.get(IMPORTS_S, 0) for _, _, d in timed)
        print(f"cells={len(timed)} wall_s={wall:.1f} compute_s={compute:.1f} setup_s={setup:.1f} imports_s={imports:.1f} "
              f"other_s={wall - compute - setup - imports:.1f} fixed_cost_ratio={wall / max(compute, 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "runs/local"))
