"""The training function: one cell's instruction tuning, config in, metrics and checkpoints out.

A plain function in the style of Ray's DeepSpeed example. Ray Train runs it on every worker; it
reports once per epoch with a checkpoint, and resumes from ``ray.train.get_checkpoint()``.
Each checkpoint holds the HF model + tokenizer (``model/``, what scoring loads, in the training dtype)
and, where it pays, the DeepSpeed engine state (``deepspeed/``, what resuming loads): never after the
last epoch, and after another only once ``training.resume_every_s`` of training has passed since the last
one (platform/core/footprint.py resume_state_due). An older resume state is dropped once a newer one is
committed, and the last one once the cell is finished (jobs/sweep.py) unless ``training.keep_resume_state``.
A restarted run resumes from the newest committed state and trains again, without saving, the epochs
already committed after it; with no state yet it starts from scratch.

Memory: the base model is loaded in the training dtype; under ZeRO-3 it is built partitioned
(transformers' DeepSpeed integration, ``HfDeepSpeedConfig`` alive during ``from_pretrained``), and the
HF weights are gathered to rank 0 tensor by tensor for saving, so no other rank ever holds a whole tensor.
bench/scale_proxies.py measures both per rank.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from growthpace.platform.core.batching import epoch_order, global_batch, rank_micro_batches, steps_per_epoch
from growthpace.platform.core.footprint import RESUME_BYTES_PER_PARAM, resume_interval_s, resume_state_due
from growthpace.platform.store.checkpoints import (COMPUTE_S, EPOCH, IMPORTS_S, SETUP_S, TRAIN_LOSS, read_epoch, write_digests,
                                                   write_epoch)
from growthpace.platform.train.packing import attention_implementation, collate
from growthpace.platform.store.storage import Layout

RESUME_STATE = Layout.CHECKPOINT_STATE  # the checkpoint's sub-folder that only resuming reads
RESUMED_FROM = "resumed_from_epoch"  # metric of a restarted attempt's epochs: the state it loaded (0: from scratch)
SKIPPED_STEPS = "skipped_steps"  # an epoch's metric: optimizer steps fp16 overflow skipped
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def deepspeed_config(cfg: dict[str, Any], world: int) -> dict[str, Any]:
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg["per_device_batch"],
        "gradient_accumulation_steps": cfg["grad_accum"],
        "train_batch_size": global_batch(cfg["per_device_batch"], world, cfg["grad_accum"]),
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


def lr_lambda(total_steps: int, lr: float, end_lr: float):
    """Linear decay from lr to end_lr over exactly ``total_steps`` optimizer steps."""

    def f(step: int) -> float:
        frac = min(step, total_steps) / max(1, total_steps)
        return 1.0 - frac * (1.0 - end_lr / lr)

    return f


def rss_bytes() -> tuple[int, int]:
    """(current, peak) resident set size of this process, from /proc (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


@contextmanager
def rss_growth(into: dict, key: str):
    """Record into[key] = peak RSS during the block minus RSS before it (the peak is reset first);
    nothing where /proc cannot tell (not Linux, or a sandbox that forbids resetting the peak)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before, _ = rss_bytes()
    except (OSError, KeyError):
        yield
        return
    yield
    into[key] = rss_bytes()[1] - before


def return_freed_memory() -> None:
    """Let glibc hand freed blocks of 64 KiB and more back to the OS at once (mallopt M_MMAP_THRESHOLD).

    By default glibc raises that threshold after each large free, so ZeRO-3's build-then-partition of
    every layer leaves the freed full tensors in the heap: measured on 2 gloo ranks with SmolLM2-135M, a
    non-zero rank's load peak was 2.33-2.69 bytes/param (varying run to run) and 2.17-2.29 with the
    threshold fixed, its RSS after loading 2.07-2.42 vs 1.33. A no-op where glibc is absent."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD; fixing it also stops its dynamic growth
    except (OSError, AttributeError):
        pass


class CellTraining:
    """One rank's share of a cell's training: model, DeepSpeed engine, data schedule, epochs, saving.

    Needs an initialised torch.distributed process group (Ray Train makes one; a test can make a
    one-process gloo group). ``examples`` are the cell's tokenized items (platform/data/dataset.py)."""

    def __init__(self, config: dict[str, Any], examples, rank: int, world: int, device: torch.device,
                 memory: dict | None = None):
        import deepspeed
        from transformers import AutoConfig, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        self.config, self.examples, self.rank, self.world, self.device = config, examples, rank, world, device
        self.memory = memory if memory is not None else {}
        self.global_batch = global_batch(config["per_device_batch"], world, config["grad_accum"])
        self.steps_per_epoch = steps_per_epoch(len(examples), self.global_batch)
        total_steps = config["epochs"] * self.steps_per_epoch
        self.tokenizer = AutoTokenizer.from_pretrained(config["base_model"])
        self.pad = self.tokenizer.pad_token_id
        self.packed = config.get("packing", True)
        if config["zero_stage"] == 3:
            # only there: the fixed threshold makes every later step map and fault its activations afresh
            # (measured on one CPU thread, llama-nano 16 x 128 tokens a step: 92 ms with glibc's dynamic
            # threshold, 120 ms with it fixed at 64 KiB)
            return_freed_memory()
        ds_config = deepspeed_config(config, world)
        deepspeed.init_distributed()  # adopts the existing process group (the ZeRO-3 config needs the world size)
        model_config = AutoConfig.from_pretrained(config["base_model"])
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(model_config)]  # imported before the load is measured
        dtype, attn = _DTYPES[config["precision"]], attention_implementation(device, self.packed)
        with rss_growth(self.memory, "load"):
            self._zero3 = None
            if config["zero_stage"] == 3:
                from transformers.integrations import HfDeepSpeedConfig

                # transformers holds it by weak reference: it must live while the model is built
                self._zero3 = HfDeepSpeedConfig(ds_config)
            model = model_class.from_pretrained(config["base_model"], config=model_config, dtype=dtype,
                                                attn_implementation=attn)
        if config.get("gradient_checkpointing"):
            model.gradient_checkpointing_enable()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config["lr"], betas=tuple(config["betas"]), weight_decay=config["weight_decay"]
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(total_steps, config["lr"], config["end_lr"]))
        # ZeRO-3 leaves each rank a partition: ds_numel is the whole tensor's size
        self.params = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
        )

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def load_state(self, checkpoint_dir: Path) -> int:
        """Resume from a checkpoint folder; returns the epochs it had done."""
        done = read_epoch(checkpoint_dir)
        if done >= self.config["epochs"]:
            return done  # nothing left to train: a finished cell's resume state may be gone
        state = checkpoint_dir / RESUME_STATE
        if not state.is_dir():
            raise FileNotFoundError(f"{checkpoint_dir}: no {RESUME_STATE}/ resume state to continue epoch {done + 1}")
        self.engine.load_checkpoint(str(state), tag="state")
        return done

    def train_epoch(self, epoch: int, micro_losses: list[float] | None = None) -> float:
        """One epoch (0-based) on this rank; returns the mean micro-batch loss over every rank.
        ``micro_losses``, when given, gets this rank's loss of each micro-batch in order."""
        c = self.config
        self.engine.train()
        skipped_before = self.engine.skipped_steps
        order = epoch_order(len(self.examples), self.global_batch, c["seed"], epoch)
        total = torch.zeros(2)
        for micro in rank_micro_batches(order, c["per_device_batch"], self.world, c["grad_accum"], self.rank):
            batch = collate([self.examples[i] for i in micro], self.pad, self.packed, self.device)
            out = self.engine(**batch, use_cache=False)
            self.engine.backward(out.loss)
            self.engine.step()
            loss = out.loss.item()
            total += torch.tensor([loss, 1.0])
            if micro_losses is not None:
                micro_losses.append(loss)
        want = (epoch + 1) * self.steps_per_epoch
        assert self.engine.global_steps == want, (
            f"epoch {epoch + 1} ended at optimizer step {self.engine.global_steps}, not {want}: "
            "not on an accumulation boundary")
        # fp16 loss scaling skips the optimizer and lr step of an overflowing batch, yet global_steps counts
        # it: the assert above cannot see it, so the count is kept (and reported) per epoch
        self.skipped_steps = self.engine.skipped_steps - skipped_before
        if self.world > 1:  # on the device: an NCCL process group (GPU trials) reduces CUDA tensors only
            total = total.to(self.device)
            torch.distributed.all_reduce(total)
            total = total.cpu()
        return (total[0] / total[1]).item()

    def save(self, out: Path, epoch: int, loss: float, resume_state: bool = True) -> None:
        """Every rank writes its share of ``out``: resume state (when asked), HF weights + tokenizer,
        epoch.json last."""
        if resume_state:
            self.engine.save_checkpoint(str(out / RESUME_STATE), tag="state")
        with rss_growth(self.memory, "save"):
            self.save_weights(out / Layout.CHECKPOINT_MODEL)
        if self.rank == 0:
            write_digests(out)  # the driver reads the content hash instead of re-reading the weights
            write_epoch(out, epoch, loss)

    def save_weights(self, out: Path) -> None:
        state = consolidate_to_rank0(self.engine.module, self.rank, self.world) if self.config["zero_stage"] == 3 else None
        if self.rank == 0:
            self.engine.module.save_pretrained(out, state_dict=state)
            self.tokenizer.save_pretrained(out)


def consolidate_to_rank0(module: torch.nn.Module, rank: int, world: int) -> dict | None:
    """A ZeRO-3 model's full 16-bit state dict on rank 0's CPU, tensor by tensor; None on other ranks.

    Each rank sends only the partition it holds (``ds_tensor``: rank r has elements [r*p, (r+1)*p) of
    the flattened tensor, padded to world x p) to rank 0 with a gather, so no other rank ever holds a
    whole tensor. DeepSpeed's own 16-bit consolidation (stage3_gather_16bit_weights_on_model_save)
    all-gathers every layer onto every rank instead; measured on 2 gloo ranks with SmolLM2-135M it grew
    rank 1 by 0.84 bytes/param (twice its largest tensor, the tied embedding)."""
    state: dict | None = {} if rank == 0 else None
    seen: dict[int, str] = {}
    for name, value in module.state_dict(keep_vars=True).items():
        if id(value) in seen:  # tied weights: one tensor under two names
            if state is not None:
                state[name] = state[seen[id(value)]]
            continue
        seen[id(value)] = name
        if not hasattr(value, "ds_tensor"):  # buffers are not partitioned
            if state is not None:
                state[name] = value.detach().to("cpu", copy=True)
            continue
        part = value.ds_tensor.detach()
        flat = torch.empty(part.numel() * world, dtype=part.dtype, device=part.device) if rank == 0 else None
        torch.distributed.gather(part, list(flat.chunk(world)) if rank == 0 else None, dst=0)
        if state is not None:
            state[name] = flat[: value.ds_numel].view(value.ds_shape).to("cpu", copy=True)  # compact: no padding
    return state


def _write_and_report(training: CellTraining, metrics: dict, epoch: int, loss: float, resume_state: bool) -> None:
    """Write the epoch's checkpoint without a second copy in the training's path (training.checkpoint_write):
    in place, straight into the run's folder on the shared filesystem (Ray registers it there: NO_UPLOAD),
    or async, to a local folder that Ray uploads in the background (ASYNC) and then deletes."""
    import pyarrow.fs
    import ray.train
    from ray.train import CheckpointUploadMode

    storage = ray.train.get_context().get_storage()
    on_filesystem = isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem)
    mode = training.config.get("checkpoint_write", "auto")
    if mode == "in_place" and not on_filesystem:
        raise ValueError(f"training.checkpoint_write: 'in_place' needs a filesystem, not {storage.storage_filesystem}")
    if mode == "in_place" or (mode == "auto" and on_filesystem):
        names = [storage.make_default_checkpoint_dir_name() if training.rank == 0 else None]
        if training.world > 1:
            torch.distributed.broadcast_object_list(names, src=0)
        out = Path(storage.experiment_fs_path) / names[0]
        out.mkdir(parents=True, exist_ok=True)
        training.save(out, epoch, loss, resume_state)
        checkpoint = ray.train.Checkpoint(str(out), filesystem=storage.storage_filesystem)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=names[0],
                         checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD)
    else:
        out = Path(tempfile.mkdtemp(prefix="growthpace-ckpt-"))
        training.save(out, epoch, loss, resume_state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(out)),
                         checkpoint_upload_mode=CheckpointUploadMode.ASYNC)


def _committed() -> list:
    """This run's committed checkpoints, a restarted attempt's earlier ones included, oldest epoch first."""
    import ray.train
    from ray.train import CheckpointConsistencyMode

    reported = ray.train.get_all_reported_checkpoints(consistency_mode=CheckpointConsistencyMode.COMMITTED)
    return sorted(reported, key=lambda r: r.metrics[EPOCH])


def has_resume_state(filesystem, checkpoint_path: str) -> bool:
    import pyarrow.fs

    return filesystem.get_file_info(f"{checkpoint_path.rstrip('/')}/{RESUME_STATE}").type != pyarrow.fs.FileType.NotFound


def resume_point(committed: list[tuple[int, bool]], epochs: int) -> tuple[int | None, int]:
    """From the committed checkpoints' (epoch, has a resume state), oldest first: (the index of the one to
    load, None = start from scratch; the newest epoch committed, which need not be saved again). A
    finished cell loads its last checkpoint, whose state may be gone."""
    newest = committed[-1][0] if committed else 0
    if newest >= epochs:
        return len(committed) - 1, newest
    with_state = [i for i, (_, state) in enumerate(committed) if state]
    return (with_state[-1] if with_state else None), newest


def _drop_superseded_resume_state() -> None:
    """Remove the resume state of every committed checkpoint but the newest one that has it (rank 0 only)."""
    committed = _committed()
    holders = [r for r in committed if has_resume_state(r.checkpoint.filesystem, r.checkpoint.path)]
    for r in holders[:-1]:
        drop_resume_state_at(r.checkpoint.filesystem, r.checkpoint.path)


def drop_resume_state_at(filesystem, checkpoint_path: str) -> bool:
    """Delete a checkpoint's resume state (its weights stay); False when it had none."""
    import pyarrow.fs

    path = f"{checkpoint_path.rstrip('/')}/{RESUME_STATE}"
    if filesystem.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return False
    filesystem.delete_dir(path)
    return True


def _imports_s(entered: float) -> float:
    """Seconds this worker process lived before its train function was ``entered`` (time.monotonic()):
    Python's start and the library imports (Linux /proc; 0 where unknown)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, age - (time.monotonic() - entered))


def _worker(config: dict[str, Any]) -> tuple[int, int, torch.device, dict[str, Any]]:
    """This Ray Train worker's rank, world size and device, torch seeded and threaded, and the config
    with its base model as a node-local folder (from an object store: a copy)."""
    import ray.train

    from growthpace.platform.store.storage import localize

    ctx = ray.train.get_context()
    torch.set_num_threads(max(1, int(os.environ.get("GROWTHPACE_TORCH_THREADS", "1"))))
    torch.manual_seed(config["seed"])
    device = torch.device("cuda", ctx.get_local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    config = {**config, "base_model": str(localize(config["base_model"]))}
    return ctx.get_world_rank(), ctx.get_world_size(), device, config


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def pretrain_base(config: dict[str, Any]) -> None:
    """Ray Train loop of one base model's pre-training (platform/train/pretrain.py): one epoch of exactly
    ``steps`` optimizer steps over the corpus's sequences, then the HF weights + tokenizer as the run's
    one checkpoint (rank 0's; every rank takes part in gathering ZeRO-3 weights), which the trial
    moves into base/<key>. Reports steps, tokens seen, first/last loss (the mean over the first and
    last tenth of rank 0's micro-batches) and the seconds spent in this function."""
    import ray.train

    from growthpace.platform.data.dataset import read_cell_tokens

    entered = time.monotonic()
    rank, world, device, config = _worker(config)
    training = CellTraining(config, read_cell_tokens(config["tokens"]), rank, world, device)
    assert training.steps_per_epoch == config["steps"], (
        f"{len(training.examples)} sequences at a global batch of {training.global_batch} are "
        f"{training.steps_per_epoch} steps, not {config['steps']}")
    ready = time.monotonic()
    losses: list[float] = []
    training.train_epoch(0, losses)
    assert training.engine.global_steps == config["steps"]
    trained = time.monotonic()
    tenth = max(1, len(losses) // 10)
    with tempfile.TemporaryDirectory(prefix="growthpace-pretrain-") as d:
        training.save_weights(Path(d))
        metrics = {
            "steps": training.engine.global_steps,
            "tokens": training.engine.global_steps * training.global_batch * config["block"],
            "first_loss": _mean(losses[:tenth]), "last_loss": _mean(losses[-tenth:]),
            "setup_s": ready - entered, "train_s": trained - ready, "in_worker_s": time.monotonic() - entered,
            "imports_s": _imports_s(entered),
        }
        checkpoint = ray.train.Checkpoint.from_directory(d) if rank == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint)  # the default upload: a copy made before it returns


def train_cell(config: dict[str, Any]) -> None:
    """Ray Train loop for one cell. ``config``: base_model, tokens, epochs, training settings, tracking."""
    import ray.train

    from growthpace.platform.data.dataset import read_cell_tokens
    from growthpace.platform.store.tracking import CellRun

    entered = time.monotonic()
    rank, world, device, config = _worker(config)
    memory: dict[str, int] = {}
    training = CellTraining(config, read_cell_tokens(config["tokens"]), rank, world, device, memory)

    start_epoch, committed_epoch, restart = 0, 0, {}
    if ray.train.get_checkpoint():  # a restart: the newest committed resume state, else from scratch
        committed = _committed()
        index, committed_epoch = resume_point(
            [(int(r.metrics[EPOCH]), has_resume_state(r.checkpoint.filesystem, r.checkpoint.path)) for r in committed],
            config["epochs"])
        if index is not None:
            with committed[index].checkpoint.as_directory() as d:
                start_epoch = training.load_state(Path(d))
        restart = {RESUMED_FROM: start_epoch}

    run = CellRun(config["tracking_uri"], config["run_id"]) if rank == 0 and config.get("run_id") else None
    # What the cell's wall time is made of (the sweep writes it to checkpoints.json): compute_s is the
    # epochs themselves (training, and the checkpoints written before the last), setup_s this function before them (model
    # load, DeepSpeed init), imports_s the worker process before this function (Python and library imports).
    timing = {SETUP_S: time.monotonic() - entered, IMPORTS_S: _imports_s(entered)}
    compute_started = time.monotonic()
    since_state, state_pending = 0.0, False  # training seconds since the last resume state; one to clean up after
    every_s = resume_interval_s(training.params * RESUME_BYTES_PER_PARAM[config["zero_stage"]],
                                config.get("storage_write_gib_s", 1.0), config.get("failure_every_h", 24.0),
                                config.get("resume_every_s", 0.0))
    for epoch in range(start_epoch, config["epochs"]):
        epoch_started = time.monotonic()
        loss = training.train_epoch(epoch)
        since_state += time.monotonic() - epoch_started
        if epoch + 1 <= committed_epoch:
            continue  # trained again from an older state: this epoch's checkpoint is committed already
        if training.skipped_steps and rank == 0:
            warnings.warn(f"epoch {epoch + 1}: {training.skipped_steps} of {training.steps_per_epoch} optimizer "
                          "steps skipped (fp16 overflow: the loss scale was lowered and the batch's update lost)")
        metrics = {EPOCH: epoch + 1, TRAIN_LOSS: loss, "lr": training.lr, SKIPPED_STEPS: training.skipped_steps, **timing,
                   COMPUTE_S: time.monotonic() - compute_started, **restart}
        if run:
            run.log({"train/loss": loss, "train/lr": metrics["lr"], "train/skipped_steps": training.skipped_steps},
                    step=epoch + 1)
        if rank == 0 and state_pending:  # the previous state's upload had a whole epoch to finish
            _drop_superseded_resume_state()
            state_pending = False
        # every rank decides alike: rank 0's clock, so no rank skips a collective save the others make
        clock = torch.tensor([since_state], dtype=torch.float64)
        if world > 1:
            clock = clock.to(device)
            torch.distributed.broadcast(clock, src=0)
        state = resume_state_due(epoch + 1, config["epochs"], clock.item(), every_s,
                                 bool(config.get("keep_resume_state")))
        _write_and_report(training, metrics, epoch + 1, loss, state)
        if state:
            since_state, state_pending = 0.0, True
    if rank == 0 and state_pending:
        _drop_superseded_resume_state()
    if config.get("memory_probe"):  # bench/scale_proxies.py: this rank's measured RSS growth
        Path(config["memory_probe"]).mkdir(parents=True, exist_ok=True)
        (Path(config["memory_probe"]) / f"rank{rank}.json").write_text(json.dumps(memory))
