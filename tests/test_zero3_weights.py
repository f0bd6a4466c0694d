"""ZeRO-3 on 2 gloo ranks: the base weights loaded partitioned (transformers' ZeRO-3 loading) and gathered
back to rank 0 partition by partition (consolidate_to_rank0) are the file's tensors exactly, tied weights
included, with tensor sizes that do not divide by the world size (padded partitions)."""

import json
import os
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration  # two DeepSpeed processes


def _rank(rank: int, world: int, port: int, base: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    import deepspeed
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    from growthpace.platform.train.train import consolidate_to_rank0, deepspeed_config

    deepspeed.init_distributed()
    cfg = {"per_device_batch": 1, "grad_accum": 1, "zero_stage": 3, "precision": "bf16"}
    keep = HfDeepSpeedConfig(deepspeed_config(cfg, world))  # noqa: F841 (alive while the model is built)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    padded = any(p.ds_tensor.numel() * world != p.ds_numel for p in model.parameters())
    state = consolidate_to_rank0(model, rank, world)
    if rank == 0:
        from safetensors.torch import load_file

        want = load_file(str(Path(base) / "model.safetensors"))
        result = {"keys": sorted(state), "padded": padded,
                  "equal": {k: bool(torch.equal(state[k], want[k])) for k in want},
                  "tied": state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()}
        Path(out).write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


def test_partitioned_load_and_rank0_consolidation_round_trip(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tests.servers import free_port

    torch.manual_seed(0)
    # odd sizes (65 x 203 embedding, 65 norms): partitions padded at the end
    config = LlamaConfig(vocab_size=203, hidden_size=65, intermediate_size=97, num_hidden_layers=2, head_dim=16,
                         num_attention_heads=5, num_key_value_heads=5, tie_word_embeddings=True)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(tmp_path / "base")
    out = tmp_path / "result.json"
    torch.multiprocessing.spawn(_rank, args=(2, free_port(), str(tmp_path / "base"), str(out)), nprocs=2)
    result = json.loads(out.read_text())
    assert result["equal"] and all(result["equal"].values()), result["equal"]
    assert "lm_head.weight" in result["keys"] and result["tied"]
    assert result["padded"]
