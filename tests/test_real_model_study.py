"""A real pretrained model through the study's path: SmolLM2-135M-Instruct (tests/real_model.py) gets the
chat tokens and grown embeddings as the study's base models do, one cell trains with ZeRO-3 on 2 gloo
workers, and its checkpoints are scored by vLLM (the Ray Data scoring job) and by transformers with the
same verdict on every item."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from growthpace.platform.core.abilities import CHAT_TOKENS
from growthpace.platform.data.specfile import load_spec
from growthpace.platform.store.storage import Layout, read_json

pytestmark = [pytest.mark.integration, pytest.mark.real_model]

LIMITS = {kind: 12 for kind in ("choice", "true_false", "cloze", "math", "multi_select")}


def _spec(tmp_path: Path, small_data: Path, real_model: Path):
    raw = {
        "name": "real135m",
        "storage": str(tmp_path / "store"),
        "models": [{"name": str(real_model), "size": "135m",
                    "resources": {"workers": 2, "cpus_per_worker": 0.75, "driver_cpus": 0.25}}],
        "data": {"root": str(small_data), "train_split": "1000", "sources": ["curated"], "volumes": [10]},
        "training": {"epochs": 2, "lr": 1e-4, "end_lr": 1e-5, "per_device_batch": 2, "grad_accum": 1,
                     "max_length": 64, "precision": "bf16", "zero_stage": 3, "max_concurrent_trials": 1},
        "evaluation": {"splits": ["valid"], "ood": False, "backend": "vllm", "vllm_pipeline": "actor",
                       "concurrency": 1, "batch_size": 16, "max_new_tokens": LIMITS, "warmup_epochs": 0},
    }
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return load_spec(p)


def test_real_model_trains_with_zero3_and_both_backends_agree(ray_cluster, small_data, real_model, tmp_path):
    import torch
    from safetensors import safe_open

    from growthpace.evaluators.backends import predict
    from growthpace.evaluators.scoring import score
    from growthpace.evaluators.transformers_backend import TransformersBackend
    from growthpace.jobs.run import run_evaluate, run_sweep
    from growthpace.platform.data.dataset import load_eval_sets

    spec = _spec(tmp_path, small_data, real_model)
    study = run_sweep(spec)
    layout = Layout.for_spec(spec)
    (cell,) = study.cells
    assert cell.training["zero_stage"] == 3 and cell.workers == 2

    # The base model: the study's recipe for a real checkpoint (chat tokens added, embeddings grown).
    (base,) = list((layout.root / "base").iterdir())
    config = json.loads((base / "config.json").read_text())
    assert config["vocab_size"] == 49152 + len(CHAT_TOKENS)
    with safe_open(str(base / "model.safetensors"), framework="pt") as f:
        emb = f.get_tensor("model.embed_tokens.weight")
    assert emb.shape[0] == 49152 + len(CHAT_TOKENS)
    assert torch.equal(emb[-1], emb[-2])  # the new rows start at the mean of the pretrained ones

    cks = read_json(layout.cell_checkpoints(cell.cell_id))["checkpoints"]
    assert [c["epoch"] for c in cks] == [1, 2]
    with safe_open(str(Path(cks[-1]["path"]) / "model" / "model.safetensors"), framework="pt") as f:
        trained = f.get_tensor("model.embed_tokens.weight")
    assert trained.shape == emb.shape and not torch.equal(trained.float(), emb.float()), "training changed the weights"

    scores = run_evaluate(spec, study)
    assert set(scores["epoch"]) == {1, 2}
    keyed = [((split, ability, r.idx), r) for (split, ability), recs in load_eval_sets(spec).items() for r in recs]
    items = [r for _, r in keyed]
    for ck in cks:
        stored = pl.read_parquet(layout.cell_predictions(cell.cell_id, ck["epoch"]))
        assert set(stored["backend"]) == {"vllm"} and stored.height == len(items)
        vllm_verdicts = {(s, a, i): bool(c) for s, a, i, c in stored.select("split", "ability", "idx", "correct").iter_rows()}
        backend = TransformersBackend(Path(ck["path"]) / "model", batch_size=16, max_length=1024)
        preds = predict(backend, items, LIMITS)
        backend.close()
        hf_verdicts = {k: bool(score(r, p).correct) for (k, r), p in zip(keyed, preds)}
        assert set(vllm_verdicts) == set(hf_verdicts)
        differ = [k for k in hf_verdicts if vllm_verdicts[k] != hf_verdicts[k]]
        assert not differ, f"epoch {ck['epoch']}: vLLM and transformers disagree on {differ}"
