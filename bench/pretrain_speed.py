"""Pre-training of the bases through Ray (jobs/pretrain.py): wall time, steps/s, and where the time goes.

A benchmark script, not a test:

    .venv/bin/python bench/pretrain_speed.py [--models llama-micro llama-mini] [--steps 400] [--batch 16]
        [--block 128] [--lines 4000]

Generates the embedded dataset into a temporary folder, with a world corpus (world/world.txt) of about
``--lines`` documents, and pre-trains every model at once
through the study's own path (prepare, materialise, a local Ray cluster, one Tune trial per model, each a
Ray Train + DeepSpeed run), all trials concurrent (each worker 0.75 CPU and its trial 0.25, so two fit
on two cores). Prints one line per model on stdout:
``model=M steps=S wall_s=W in_worker_s=I ray_s=W-I imports_s=P setup_s=A train_s=T steps_per_s=S/T
first_loss last_loss`` where wall_s is the trial's TorchTrainer.fit, in_worker_s the time inside the train
function (setup_s: tokens, model and DeepSpeed engine; train_s: the optimizer steps), ray_s what Ray Train
adds around it (worker start, imports, checkpoint upload), imports_s the worker process's age when the
function started (interpreter and library imports); and one ``total_wall_s=`` line for the whole pre-training stage.
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


def say(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["llama-micro", "llama-mini"])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--lines", type=int, default=4000)
    args = ap.parse_args()

    import yaml

    from growthpace.jobs.cluster import connect
    from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS
    from growthpace.jobs.pretrain import pretrain_bases
    from growthpace.jobs.study import materialise, model_tokenizers, prepare
    from growthpace.platform.data.generate import generate_dataset
    from growthpace.platform.data.records import read_world, world_path
    from growthpace.platform.data.specfile import load_spec
    from growthpace.platform.store.storage import read_json

    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as tmp:
        tmp = Path(tmp)
        root = tmp / "data"
        per_family = -(-args.lines // (len(ABILITIES) + len(OOD_SUBJECTS)))
        generate_dataset(root, seed=0, train_per_ability=100, valid_per_ability=4, test_per_ability=4,
                         ood_per_subject=3, synthetic=10, world_per_family=per_family)
        say(f"corpus: {len(read_world(root))} lines of {world_path(root)}")
        pre = {"steps": args.steps, "batch": args.batch, "block": args.block}  # the default corpus: the world's
        raw = {
            "name": "bench-pretrain", "storage": str(tmp / "store"),
            "models": [{"name": m, "size": m, "pretrain": pre,
                        "resources": {"cpus_per_worker": 0.75, "driver_cpus": 0.25}} for m in args.models],
            "data": {"root": str(root), "train_split": "full", "sources": ["curated"], "volumes": [10]},
            "training": {"epochs": 1, "max_concurrent_trials": len(args.models)},
        }
        (tmp / "spec.yaml").write_text(yaml.safe_dump(raw))
        spec = load_spec(tmp / "spec.yaml")
        study = prepare(spec, write=True)
        bases = materialise(study)
        connect(spec)
        started = time.monotonic()
        pretrained, jobs = pretrain_bases(study, bases, model_tokenizers(study, bases))
        total = time.monotonic() - started
        for j in jobs:
            i = read_json(Path(j.path) / "pretrain.json")
            print(f"model={j.model} steps={i['steps']} tokens={i['tokens']} wall_s={i['wall_s']:.1f} "
                  f"in_worker_s={i['in_worker_s']:.1f} ray_s={i['wall_s'] - i['in_worker_s']:.1f} imports_s={i['imports_s']:.1f} "
                  f"setup_s={i['setup_s']:.1f} train_s={i['train_s']:.1f} steps_per_s={i['steps'] / i['train_s']:.2f} "
                  f"first_loss={i['first_loss']:.3f} last_loss={i['last_loss']:.3f}", flush=True)
        print(f"total_wall_s={total:.1f} (tokenize + Tune + every trial, {len(jobs)} concurrent)", flush=True)


if __name__ == "__main__":
    main()
