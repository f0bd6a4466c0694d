"""Checkpoint writes of a spec as `plan` estimates them, side by side: the spec as it is against the old
rule (a DeepSpeed resume state after every epoch, the last included: resume_every_s 0 + keep_resume_state).

    .venv/bin/python bench/checkpoint_writes.py [SPEC] [--gib-s 1.0]

Prints, per rule: optimizer steps, training GPU-hours, bytes written, hours of I/O, the GPU-hours idle
while the trials' GPUs wait for the writes (and their share of training), resume states written, the sum
of the cells' storage peaks and what is kept after scoring. Estimates from the spec (issue 24), not a
measured run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def figures(raw: dict) -> dict:
    from growthpace.jobs.study import plan_rows, plan_totals, prepare
    from growthpace.platform.data.specfile import load_spec

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "spec.yaml"
        path.write_text(yaml.safe_dump(raw))
        rows = plan_rows(prepare(load_spec(path), write=False))
    t = plan_totals(rows)
    t["resume_states"] = sum(len(r["resume_state_epochs"]) for r in rows)
    return t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", default=str(REPO / "experiments" / "doit.yaml"))
    ap.add_argument("--gib-s", type=float, default=1.0, help="training.storage_write_gib_s")
    args = ap.parse_args()
    raw = yaml.safe_load(Path(args.spec).read_text())
    raw.setdefault("training", {})["storage_write_gib_s"] = args.gib_s
    old = {**raw, "training": {**raw["training"], "resume_every_s": 0, "keep_resume_state": True}}
    print(f"{Path(args.spec).name} at {args.gib_s:g} GiB/s")
    for name, spec in (("every epoch (old)", old), ("as specified (new)", raw)):
        t = figures(spec)
        share = t["checkpoint_write_gpu_hours"] / t["gpu_hours"] if t["gpu_hours"] else float("nan")
        print(f"{name:>20}: steps={t['optimizer_steps']} train_gpu_h={t['gpu_hours']:.1f} "
              f"written_tb={t['checkpoint_write_bytes'] / 1e12:.2f} io_h={t['checkpoint_write_s'] / 3600:.2f} "
              f"idle_gpu_h={t['checkpoint_write_gpu_hours']:.1f} ({share:.1%} of training) "
              f"resume_states={t['resume_states']} peak_sum_tb={t['peak_checkpoint_bytes'] / 1e12:.2f}"
              # the old sweep deleted the last state once a cell finished: keep_resume_state's kept figure is not it
              + (f" kept_tb={t['retained_checkpoint_bytes'] / 1e12:.2f}" if spec is raw else ""))


if __name__ == "__main__":
    main()
