"""Optimizer steps with gradient accumulation, on a real DeepSpeed engine in this process (1 gloo rank):
every epoch ends on an accumulation boundary, the schedule ends at end_lr, and resuming from an epoch
checkpoint gives the same weights as never stopping."""

import os

import pytest
import torch

pytestmark = pytest.mark.integration  # DeepSpeed engines (tens of seconds on 2 cores)


@pytest.fixture(scope="module")
def process_group():
    import torch.distributed as dist

    from tests.servers import free_port

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def cell(small_data, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from growthpace.platform.data.chat import ChatEncoder
    from growthpace.platform.core.presets import PRESETS
    from growthpace.platform.train.models import llama_config, train_tokenizer
    from growthpace.platform.data.records import read_split

    recs = [r for rs in read_split(small_data, "1000").values() for r in rs]
    tok = train_tokenizer(recs)
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("base")
    AutoModelForCausalLM.from_config(llama_config(PRESETS["llama-nano"], len(tok))).save_pretrained(base)
    tok.save_pretrained(base)
    examples = ChatEncoder(tok).examples([r.messages for r in recs[:10]], 96)
    config = {"base_model": str(base), "epochs": 3, "seed": 1, "lr": 1e-3, "end_lr": 1e-4, "betas": [0.9, 0.95],
              "weight_decay": 0.1, "per_device_batch": 2, "grad_accum": 2, "precision": "fp32", "zero_stage": 2,
              "packing": True}
    return config, examples


def _weights(training):
    from growthpace.platform.train.train import consolidate_to_rank0

    if training.config["zero_stage"] == 3:
        return consolidate_to_rank0(training.engine.module, 0, 1)
    return {k: v.detach().clone() for k, v in training.engine.module.state_dict().items()}


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_resumed_run_equals_uninterrupted_with_accumulation(process_group, cell, tmp_path, zero_stage):
    from growthpace.platform.train.train import CellTraining

    config, examples = cell
    config = {**config, "zero_stage": zero_stage}
    cpu = torch.device("cpu")
    whole = CellTraining(config, examples, 0, 1, cpu)
    assert whole.steps_per_epoch == 3  # ceil(10 items / global batch 2 x 1 x 2)
    for epoch in range(3):
        whole.train_epoch(epoch)
    assert whole.engine.global_steps == 9
    assert whole.lr == pytest.approx(config["end_lr"], rel=1e-9)
    want = _weights(whole)

    first = CellTraining(config, examples, 0, 1, cpu)
    loss = first.train_epoch(0)
    first.save(tmp_path, 1, loss)
    assert (tmp_path / "model" / "model.safetensors").exists() and (tmp_path / "deepspeed").is_dir()
    resumed = CellTraining(config, examples, 0, 1, cpu)
    assert resumed.load_state(tmp_path) == 1 and resumed.engine.global_steps == 3
    for epoch in (1, 2):
        resumed.train_epoch(epoch)
    assert resumed.lr == pytest.approx(config["end_lr"], rel=1e-9)
    got = _weights(resumed)
    assert max((got[k] - want[k]).abs().max().item() for k in want) <= 1e-6
    assert any((got[k] != first_w).any() for k, first_w in _weights(first).items())  # training moved on


def _cpu_has_fp16() -> bool:
    from deepspeed.accelerator import get_accelerator

    return bool(get_accelerator().is_fp16_supported())  # oneDNN fp16 needs CPU support (AVX512-FP16/AMX)


@pytest.mark.skipif(not _cpu_has_fp16(), reason="DeepSpeed refuses fp16 on this CPU (no oneDNN fp16 support)")
def test_fp16_overflow_skips_are_counted_per_epoch(process_group, cell):
    """An overflowing fp16 batch is skipped by DeepSpeed yet counted in global_steps (the step assert
    passes): the epoch's skipped_steps says how many updates were lost."""
    from growthpace.platform.train.train import CellTraining

    config, examples = cell
    training = CellTraining({**config, "precision": "fp16", "zero_stage": 2}, examples, 0, 1, torch.device("cpu"))
    training.train_epoch(0)
    assert training.skipped_steps == 0
    poisoned = [True]

    def overflow(grad):  # the first micro-batch of the next epoch overflows, as a too-high loss scale would
        if poisoned[0]:
            poisoned[0] = False
            return torch.full_like(grad, float("inf"))
        return grad

    handle = training.engine.module.get_input_embeddings().weight.register_hook(overflow)
    training.train_epoch(1)
    handle.remove()
    assert training.engine.global_steps == 2 * training.steps_per_epoch
    assert training.skipped_steps == 1
    training.train_epoch(2)
    assert training.skipped_steps == 0
