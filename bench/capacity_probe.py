"""What a preset base can learn at a given size and pre-training, without Ray: issue 13's goal-1 probe.

    PYTHONPATH=$PWD python bench/capacity_probe.py [--spec experiments/local.yaml] [--preset llama-micro]
        [--shape layers=4 hidden=96 ...] [--pretrain-steps 800] [--volume 2560] [--epochs 2]

One process, one torch thread, plain PyTorch: the spec's dataset (generated if absent) and tokenizer
(trained on its train pool, as `run` trains it), the preset (its shape overridden by --shape) pre-trained
from scratch on the dataset's world corpus (--pretrain-steps x --batch x --block tokens, lr --pretrain-lr
decaying linearly to a tenth), then tuned on --volume curated items spread evenly over the abilities, the
spec's choice target, --epochs, batch 16, lr --lr decaying to a tenth, and scored on the test split and
the OOD subjects in the spec's primary formulation with the study's scorer. It skips what a cell adds
around this (DeepSpeed, packing, the best-epoch pick), so its figures say what the model can learn,
not what `make run` reports. Prints one line for the base and one for the tuned model: per ability
score/baseline, how many abilities lie above their baseline with the 95% bootstrap interval excluding it
(the report's rule), and OOD with its interval.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from growthpace.platform.core.formulation import formulate, with_choice_target  # noqa: E402
from growthpace.evaluators.backends import predict  # noqa: E402
from growthpace.evaluators.scoring import score  # noqa: E402
from growthpace.evaluators.transformers_backend import TransformersBackend  # noqa: E402
from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS  # noqa: E402
from growthpace.platform.core.allocation import Allocation  # noqa: E402
from growthpace.platform.data.chat import ChatEncoder  # noqa: E402
from growthpace.platform.data.dataset import ensure_generated, load_dataset  # noqa: E402
from growthpace.platform.analysis.growth import bootstrap_items, interval  # noqa: E402
from growthpace.platform.core.presets import PRESETS
from growthpace.platform.train.models import llama_config, train_tokenizer  # noqa: E402
from growthpace.platform.data.records import read_ood, read_split, read_world  # noqa: E402
from growthpace.platform.data.specfile import load_spec  # noqa: E402


def linear(step: int, total: int, start: float) -> float:
    return start + (start / 10 - start) * step / max(1, total - 1)


def pretrain(model, enc: ChatEncoder, docs: list[str], steps: int, batch: int, block: int, lr: float) -> float:
    stream = [t for ids in enc.texts(docs) for t in (*ids, enc.eot)]
    blocks = [stream[i:i + block] for i in range(0, len(stream) - block, block)]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    rng, order, loss = random.Random(0), [], float("nan")
    model.train()
    for step in range(steps):
        if len(order) < batch:
            fresh = list(range(len(blocks)))
            rng.shuffle(fresh)
            order += fresh
        pick, order = order[:batch], order[batch:]
        for g in opt.param_groups:
            g["lr"] = linear(step, steps, lr)
        ids = torch.tensor([blocks[i] for i in pick])
        out = model(input_ids=ids, labels=ids, use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        loss = out.loss.item()
    print(f"pre-trained {steps} x {batch} x {block} tokens ({len(stream)} corpus tokens), last loss {loss:.2f}",
          flush=True)
    return loss


def tune(model, examples, epochs: int, lr: float, pad: int) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    rng, batches = random.Random(1), []
    for _ in range(epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        batches += [order[i:i + 16] for i in range(0, len(order), 16)]
    model.train()
    for step, b in enumerate(batches):
        for g in opt.param_groups:
            g["lr"] = linear(step, len(batches), lr)
        n = max(len(examples[i][0]) for i in b)
        ids = torch.tensor([examples[i][0] + [pad] * (n - len(examples[i][0])) for i in b])
        labels = torch.tensor([examples[i][1] + [-100] * (n - len(examples[i][1])) for i in b])
        model(input_ids=ids, labels=labels, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad()


def evaluate(model, tok, evalsets, formulation: str, max_new_tokens: dict) -> dict:
    """(ability or subject) -> (per-item correct array, mean expected %)."""
    model.eval()
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        tok.save_pretrained(d)
        backend = TransformersBackend(d, 64, 512)
        out = {}
        for key, records in evalsets.items():
            items = [formulate(r, formulation) for r in records]
            verdicts = [score(r, p) for r, p in zip(items, predict(backend, items, max_new_tokens))]
            out[key] = (np.array([v.correct for v in verdicts], dtype=float),
                        100 * float(np.mean([v.expected for v in verdicts])))
    return out


def show(tag: str, res: dict) -> None:
    rng, above, parts = np.random.default_rng(0), 0, []
    for a in ABILITIES:
        correct, base = res[a]
        lo, _ = interval(bootstrap_items(correct[None], None, 2000, rng)[0])
        above += lo > base
        parts.append(f"{a}={100 * correct.mean():.0f}/{base:.0f}")
    ood = np.concatenate([res[s][0] for s in OOD_SUBJECTS])
    ood_base = float(np.mean([res[s][1] for s in OOD_SUBJECTS]))
    lo, hi = interval(bootstrap_items(ood[None], None, 2000, rng)[0])
    print(f"{tag}: above_baseline={above}/{len(ABILITIES)} ood={100 * ood.mean():.1f} [{lo:.1f}, {hi:.1f}] "
          f"baseline {ood_base:.1f} | " + " ".join(parts), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default=str(ROOT / "experiments" / "local.yaml"))
    ap.add_argument("--preset", default="llama-micro", choices=sorted(PRESETS))
    ap.add_argument("--shape", nargs="*", default=[], help="preset fields to override, e.g. layers=4 hidden=96")
    ap.add_argument("--pretrain-steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--pretrain-lr", type=float, default=3e-3)
    ap.add_argument("--volume", type=int, default=2560)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()

    torch.set_num_threads(1)
    spec = load_spec(args.spec)
    ensure_generated(spec)
    dataset = load_dataset(spec)
    tok = train_tokenizer(dataset.train_records())
    enc = ChatEncoder(tok)
    preset = dataclasses.replace(PRESETS[args.preset], **{k: int(v) for k, v in (kv.split("=") for kv in args.shape)})
    torch.manual_seed(spec.seed)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(llama_config(preset, len(tok)))
    print(f"{args.preset} {preset}: {sum(p.numel() for p in model.parameters())} parameters", flush=True)
    root, primary = spec.data_root, spec.evaluation.formulation[0]
    evalsets = {**read_split(root, "test"), **read_ood(root, OOD_SUBJECTS)}
    max_new = dict(spec.evaluation.max_new_tokens)

    start = time.perf_counter()
    pretrain(model, enc, read_world(root), args.pretrain_steps, args.batch, args.block, args.pretrain_lr)
    print(f"pre-training took {time.perf_counter() - start:.0f} s", flush=True)
    show("base", evaluate(model, tok, evalsets, primary, max_new))

    records = dataset.pool.select(Allocation({a: args.volume // len(ABILITIES) for a in ABILITIES}), spec.seed)
    records = [with_choice_target(r, spec.training.choice_target) for r in records]
    start = time.perf_counter()
    tune(model, enc.examples([r.messages for r in records], spec.training.max_length), args.epochs, args.lr, enc.pad)
    print(f"tuning on {len(records)} items x {args.epochs} epochs took {time.perf_counter() - start:.0f} s", flush=True)
    show(f"tuned {args.volume}", evaluate(model, tok, evalsets, primary, max_new))


if __name__ == "__main__":
    main()
