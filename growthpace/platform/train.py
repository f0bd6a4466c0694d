"""The training function: one cell's instruction tuning, config in, metrics and checkpoints out.

A plain function in the style of Ray's DeepSpeed example. Ray Train runs it on every worker; it
reports once per epoch with a checkpoint, and resumes from ``ray.train.get_checkpoint()``.
Each checkpoint holds the HF model + tokenizer (``model/``, what scoring loads) and the DeepSpeed
engine state (``deepspeed/``, what resuming loads).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from growthpace.platform.chat import IGNORE, ChatEncoder
from growthpace.platform.checkpoints import write_digests
from growthpace.platform.records import TRAIN_TYPES, read_records
from growthpace.platform.storage import localize


def deepspeed_config(cfg: dict[str, Any], world: int) -> dict[str, Any]:
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg["per_device_batch"],
        "gradient_accumulation_steps": cfg["grad_accum"],
        "train_batch_size": cfg["per_device_batch"] * cfg["grad_accum"] * world,
        "zero_optimization": {"stage": cfg["zero_stage"]},
        "gradient_clipping": 1.0,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg["precision"] == "bf16":
        ds["bf16"] = {"enabled": True}
    elif cfg["precision"] == "fp16":
        ds["fp16"] = {"enabled": True, "initial_scale_power": 12}
    return ds


def _batches(examples: list, batch: int, rank: int, world: int, seed: int, epoch: int):
    """This rank's micro-batches for an epoch: a seeded shuffle, padded so every rank steps alike."""
    order = list(range(len(examples)))
    random.Random(seed * 100003 + epoch).shuffle(order)
    per_step = batch * world
    steps = max(1, -(-len(order) // per_step))
    order = (order * (steps * per_step // max(1, len(order)) + 1))[: steps * per_step]
    mine = order[rank::world]
    return [[examples[i] for i in mine[s * batch : (s + 1) * batch]] for s in range(steps)]


def _collate(batch, pad_id: int, device) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def _lr_lambda(total_steps: int, lr: float, end_lr: float):
    def f(step: int) -> float:
        frac = min(step, total_steps) / max(1, total_steps)
        return 1.0 - frac * (1.0 - end_lr / lr)

    return f


def _save_hf(engine, tokenizer, out: Path, zero_stage: int, rank: int) -> None:
    import deepspeed

    module = engine.module
    if zero_stage == 3:  # parameters are partitioned: gather them before rank 0 writes
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            if rank == 0:
                module.save_pretrained(out, safe_serialization=True)
    elif rank == 0:
        module.save_pretrained(out, safe_serialization=True)
    if rank == 0:
        tokenizer.save_pretrained(out)


def train_cell(config: dict[str, Any]) -> None:
    """Ray Train loop for one cell. ``config``: base_model, data, epochs, training settings, tracking."""
    import deepspeed
    import ray.train
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from growthpace.platform.tracking import CellRun

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(os.environ.get("GROWTHPACE_TORCH_THREADS", "1"))))
    seed = config["seed"]
    torch.manual_seed(seed)
    device = torch.device("cuda", ctx.get_local_rank()) if torch.cuda.is_available() else torch.device("cpu")

    base = localize(config["base_model"])  # storage in an object store: a node-local copy
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    if config.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    enc = ChatEncoder(tokenizer)
    records = read_records(localize(config["data"]), eval_split=False, types=TRAIN_TYPES)  # synthetic items: type "synthetic"
    examples = [enc.example(r.messages, config["max_length"]) for r in records]

    micro_steps = len(_batches(examples, config["per_device_batch"], rank, world, seed, 0))
    opt_steps = config["epochs"] * max(1, micro_steps // config["grad_accum"])
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config["lr"], betas=tuple(config["betas"]), weight_decay=config["weight_decay"]
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(opt_steps, config["lr"], config["end_lr"]))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(config, world)
    )

    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            engine.load_checkpoint(str(Path(d) / "deepspeed"), tag="state")
            start_epoch = json.loads((Path(d) / "epoch.json").read_text())["epoch"]

    run = CellRun(config["tracking_uri"], config["run_id"]) if rank == 0 and config.get("run_id") else None
    for epoch in range(start_epoch, config["epochs"]):
        engine.train()
        total, count = torch.zeros(2), 0
        for batch in _batches(examples, config["per_device_batch"], rank, world, seed, epoch):
            out = engine(**_collate(batch, enc.pad, device))
            engine.backward(out.loss)
            engine.step()
            total += torch.tensor([out.loss.item(), 1.0])
            count += 1
        if world > 1:  # on the device: an NCCL process group (GPU trials) reduces CUDA tensors only
            total = total.to(device)
            torch.distributed.all_reduce(total)
            total = total.cpu()
        loss = (total[0] / total[1]).item()
        metrics = {"epoch": epoch + 1, "train_loss": loss, "lr": scheduler.get_last_lr()[0]}
        if run:
            run.log({"train/loss": loss, "train/lr": metrics["lr"]}, step=epoch + 1)
        with tempfile.TemporaryDirectory() as tmp:
            engine.save_checkpoint(str(Path(tmp) / "deepspeed"), tag="state")
            _save_hf(engine, tokenizer, Path(tmp) / "model", config["zero_stage"], rank)
            if rank == 0:
                (Path(tmp) / "epoch.json").write_text(json.dumps({"epoch": epoch + 1, "train_loss": loss}))
                write_digests(tmp)  # the driver reads the hash instead of the weights
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
