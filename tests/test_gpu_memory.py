"""What one GPU holds (platform/core/gpu_memory.py) and plan's warnings from it (jobs/study.py size_checks)."""

from pathlib import Path

import pytest
import yaml

from growthpace.platform.core.gpu_memory import (GPU_MEMORY_GIB, TRAINING_HEADROOM, kv_cache_gib, llama_shape,
                                                 training_peak_gib)

REPO = Path(__file__).resolve().parents[1]
P33 = 32767933952  # doit's chinese-llama-plus-33b


def test_a_declared_parameter_count_is_read_as_llamas_shape():
    s = llama_shape(6885486592)  # chinese-llama-plus-7b: LLaMA-7b with a 49,953-token vocabulary
    assert (s.hidden, s.layers, s.intermediate, s.vocab) == (4096, 32, 11008, 49953)
    assert (llama_shape(P33).hidden, llama_shape(P33).layers, llama_shape(P33).vocab) == (6656, 60, 49953)


def test_training_peak_follows_zero_micro_batch_and_checkpointing():
    s = llama_shape(P33)
    peak = lambda **k: training_peak_gib(P33, s, **{"zero_stage": 3, "world": 8, "micro_batch": 4,
                                                    "max_length": 2048, "precision": "fp16",
                                                    "gradient_checkpointing": True, **k})
    # issue 24: 33b at micro-batch 4 is about 80 GiB, over an 80 GB card's headroom; micro 2 x accumulation 4 fits
    assert peak() > TRAINING_HEADROOM * GPU_MEMORY_GIB["A100"]
    assert peak(micro_batch=2) < TRAINING_HEADROOM * GPU_MEMORY_GIB["A100"]
    assert peak() < GPU_MEMORY_GIB["H200"] * TRAINING_HEADROOM
    assert peak(zero_stage=2) > peak() + 50  # ZeRO-2 keeps the whole 16-bit model (61 GiB) on every GPU
    assert peak(gradient_checkpointing=False) > peak() + 50
    # model states alone: 16 bytes/param over 8 ranks
    assert peak(micro_batch=1, max_length=8) == pytest.approx(16 * P33 / 8 / 2**30 + 1.5e9 * 2 / 2**30 + 3.0, abs=0.1)


def test_kv_cache_left_beside_the_weights():
    # issue 24: a 33b engine on one 80 GB card keeps about 9 GiB; on an H200 far more; two cards halve the weights
    assert 8 < kv_cache_gib(P33, GPU_MEMORY_GIB["A100"], 1) < 10
    assert kv_cache_gib(P33, GPU_MEMORY_GIB["H200"], 1) > 60
    assert kv_cache_gib(P33, GPU_MEMORY_GIB["A100"], 2) > 35


def _doit(tmp_path, edit=None):
    from growthpace.jobs.study import prepare, size_checks
    from growthpace.platform.data.specfile import load_spec

    raw = yaml.safe_load((REPO / "experiments" / "doit.yaml").read_text())
    if edit:
        edit(raw)
    p = tmp_path / "doit.yaml"
    p.write_text(yaml.safe_dump(raw))
    spec = load_spec(p)
    if spec.data_root.exists():
        pytest.skip(f"{spec.data_root} exists here: plan reads the real files")
    return {z["size"]: z for z in size_checks(prepare(spec, write=False))}


def test_doit_fits_its_pinned_cards(tmp_path):
    sizes = _doit(tmp_path)
    assert [w for z in sizes.values() for w in z["warnings"]] == []
    assert {k: (z["train_card"], z["scoring_card"]) for k, z in sizes.items()} == {
        "7b": ("A100", "A100"), "13b": ("A100", "A100"), "33b": ("H200", "H200")}
    assert all(z["train_peak_gib"] < TRAINING_HEADROOM * z["train_card_gib"] for z in sizes.values())


def test_plan_warns_when_33b_lands_on_80_gb_cards(tmp_path):
    def to_a100(raw):
        raw["models"][2]["resources"]["accelerator_type"] = "A100"
        raw["evaluation"]["resources"]["by_size"]["33b"] = {"accelerator_type": "A100"}
        raw["evaluation"]["resources"]["by_size"].pop("7b")

    sizes = _doit(tmp_path, to_a100)
    train, kv = sizes["33b"]["warnings"]
    assert train.startswith("models[2] (33b): estimated peak training memory") and "A100's 79.2 GiB" in train
    assert "per_device_batch" in train
    assert kv.startswith("evaluation.resources.by_size.33b:") and "min_kv_cache_gib 16" in kv
    assert "pinned to no card" in sizes["7b"]["warnings"][0]

    def micro_2(raw):
        to_a100(raw)
        raw["models"][2]["training"].update(per_device_batch=2, grad_accum=4)
        raw["evaluation"]["resources"]["by_size"]["33b"]["gpus"] = 2

    assert _doit(tmp_path, micro_2)["33b"]["warnings"] == []
