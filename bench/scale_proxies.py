"""CPU stand-ins for the 7b-33b training path, measured on a real pretrained model (SmolLM2-135M-Instruct).

One real cell is trained by the project's own train function (platform/train/train.py) on 2 Ray Train workers
with DeepSpeed ZeRO-3 in bf16 (gloo), 2 epochs; each rank records its own RSS growth from /proc while it
loads the base model and while it saves the HF weights. Then the checkpoint folders are measured on disk,
and the packed and padded micro-batches of the same items are compared on the same model.

    PYTHONPATH=$PWD python bench/scale_proxies.py          # about 5-8 minutes on 2 busy cores

Prints exactly (bytes per parameter, from measurements; the extra detail goes to stderr):
    load_peak_bytes_per_param rank0=X rank1=Y            peak RSS growth while loading the base model
    zero3_save_spike_bytes_per_param rank0=X rank1=Y     peak RSS growth while saving the HF weights
    retained_checkpoint_bytes_per_param_past_epoch=X     epoch 1's folder on disk after epoch 2 was saved
    padding_factor=X                                     tokens the model computes / real tokens (packed)
    packed_vs_padded_max_loss_diff=X                     max |per-token loss| difference, fp32
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MICRO, WORKERS, ACCUM = 2, 2, 1  # the bench cell; padding_factor uses doit's 7b settings below
DOIT_MICRO, DOIT_WORKERS, DOIT_ACCUM = 8, 4, 2


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def items(tmp: Path, n: int):
    from growthpace.platform.data.generate import generate_dataset
    from growthpace.platform.data.records import read_split

    root = tmp / "doit"
    generate_dataset(root, seed=0, train_per_ability=max(4, n // 10), valid_per_ability=1, test_per_ability=1,
                     ood_per_subject=1, synthetic=1)
    return [r for rs in read_split(root, "1000").values() for r in rs][:n]


def train_one_cell(tmp: Path, base: Path, tokens: Path) -> tuple[dict, list[dict], Path]:
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from growthpace.platform.store.checkpoints import read_epoch
    from growthpace.platform.train.train import train_cell

    env = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
           "PYTHONPATH": str(ROOT), "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", "")}
    ray.init(num_cpus=WORKERS + 1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {k: v for k, v in env.items() if v}})
    probe = tmp / "memory"
    config = {"base_model": str(base), "tokens": str(tokens), "epochs": 2, "seed": 0, "lr": 1e-5, "end_lr": 1e-6,
              "betas": [0.9, 0.95], "weight_decay": 0.1, "per_device_batch": MICRO, "grad_accum": ACCUM,
              "precision": "bf16", "zero_stage": 3, "packing": True, "tracking_uri": "", "run_id": None,
              "memory_probe": str(probe)}
    trainer = TorchTrainer(
        train_cell, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=WORKERS, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(name="cell", storage_path=str(tmp / "train"),
                             checkpoint_config=CheckpointConfig(num_to_keep=None)),
    )
    result = trainer.fit()
    ray.shutdown()
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in range(WORKERS)]
    by_epoch = {read_epoch(ck.path): Path(ck.path) for ck, _ in result.best_checkpoints}
    return by_epoch, ranks, tmp / "train" / "cell"


def loss_difference(base: Path, examples) -> tuple[float, float]:
    """Max |per-token loss| difference of one micro-batch, packed vs padded, and the mean loss (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM

    from growthpace.platform.data.chat import IGNORE
    from growthpace.platform.train.packing import pack_batch, pad_batch

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="sdpa").eval()

    def token_losses(out, labels):
        logits, labels = out.logits[..., :-1, :].reshape(-1, out.logits.shape[-1]), labels[..., 1:].reshape(-1)
        keep = labels != IGNORE
        return torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="none")

    with torch.no_grad():
        padded, packed = pad_batch(examples, pad_id=0), pack_batch(examples)
        a = token_losses(model(**padded, use_cache=False), padded["labels"])
        b = token_losses(model(**packed, use_cache=False), packed["labels"])
    assert a.shape == b.shape
    return (a - b).abs().max().item(), a.mean().item()


def measured_padding(examples, packed: bool) -> float:
    """Tokens in the tensors the training collate builds over one doit-shaped epoch, per real token."""
    from growthpace.platform.core.batching import epoch_order, global_batch, rank_micro_batches
    from growthpace.platform.train.packing import collate

    import torch

    order = epoch_order(len(examples), global_batch(DOIT_MICRO, DOIT_WORKERS, DOIT_ACCUM), 0, 0)
    fed = real = 0
    for rank in range(DOIT_WORKERS):
        for micro in rank_micro_batches(order, DOIT_MICRO, DOIT_WORKERS, DOIT_ACCUM, rank):
            batch = [examples[i] for i in micro]
            fed += collate(batch, 0, packed, torch.device("cpu"))["input_ids"].numel()
            real += sum(len(ids) for ids, _ in batch)
    return fed / real


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    from growthpace.platform.data.chat import framing_for
    from growthpace.platform.data.dataset import base_tokenizer, tokens_bytes
    from growthpace.platform.train.models import ensure_base_model, param_count
    from growthpace.platform.store.storage import Layout
    from tests.real_model import real_model_dir

    start = time.time()
    with tempfile.TemporaryDirectory(prefix="scale-proxies-") as d:
        tmp = Path(d)
        base = Path(ensure_base_model(Layout(tmp / "store"), str(real_model_dir()), None, None, 0))
        params = param_count(str(base))
        enc = framing_for(base_tokenizer(base))
        records = items(tmp, 200)
        cell = enc.examples([r.messages for r in records[:8]], 128)
        (tmp / "tokens.npz").write_bytes(tokens_bytes(cell))
        log(f"base model {base.name}: {params:,} params (chat tokens added); cell of {len(cell)} items")

        by_epoch, ranks, run_dir = train_one_cell(tmp, base, tmp / "tokens.npz")
        past, newest = by_epoch[1], by_epoch[2]
        retained = folder_bytes(past)
        log(f"epoch 1 folder: {retained:,} B ({sorted(p.name for p in past.iterdir())}); epoch 2 (newest, "
            f"with resume state): {folder_bytes(newest):,} B; rank RSS growth (bytes): {ranks}")

        all_items = enc.examples([r.messages for r in records], 2048)
        diff, mean_loss = loss_difference(base, all_items[:8])
        padded = measured_padding(all_items, packed=False)
        packed = measured_padding(all_items, packed=True)
        log(f"padded path over the same epoch: {padded:.3f} tokens per real token; micro-batch loss {mean_loss:.4f}")

        per = lambda key, r: ranks[r][key] / params  # noqa: E731
        print(f"load_peak_bytes_per_param rank0={per('load', 0):.2f} rank1={per('load', 1):.2f}")
        print(f"zero3_save_spike_bytes_per_param rank0={per('save', 0):.2f} rank1={per('save', 1):.2f}")
        print(f"retained_checkpoint_bytes_per_param_past_epoch={retained / params:.2f}")
        print(f"padding_factor={packed:.3f}")
        print(f"packed_vs_padded_max_loss_diff={diff:.2e}")
    log(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
