"""`chat: template` through the study's path on a real pretrained model: SmolLM2-135M-Instruct
(tests/real_model.py) keeps its tokenizer and its embeddings (no token added, the base's weights are the
source's), one cell trains with DeepSpeed in the model's own chat template, and its checkpoint is scored
by vLLM (the Ray Data scoring job) and by transformers with the same verdict on every item."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from growthpace.platform.data.specfile import load_spec
from growthpace.platform.store.storage import Layout, read_json

pytestmark = [pytest.mark.integration, pytest.mark.real_model]

LIMITS = {kind: 12 for kind in ("choice", "true_false", "cloze", "math", "multi_select")}
VOCAB = 49152  # SmolLM2's, which the template framing keeps


def _spec(tmp_path: Path, small_data: Path, real_model: Path):
    raw = {
        "name": "template135m",
        "storage": str(tmp_path / "store"),
        "models": [{"name": str(real_model), "size": "135m", "chat": "template",
                    "resources": {"workers": 1, "cpus_per_worker": 1, "driver_cpus": 0.25}}],
        "data": {"root": str(small_data), "train_split": "1000", "sources": ["curated"], "volumes": [10]},
        "training": {"epochs": 1, "lr": 1e-4, "end_lr": 1e-5, "per_device_batch": 2, "grad_accum": 1,
                     "max_length": 128, "precision": "bf16", "zero_stage": 2, "max_concurrent_trials": 1},
        "evaluation": {"splits": ["valid"], "ood": False, "backend": "vllm", "vllm_pipeline": "actor",
                       "concurrency": 1, "batch_size": 16, "max_new_tokens": LIMITS, "warmup_epochs": 0},
    }
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return load_spec(p)


def test_template_cell_trains_without_new_tokens_and_both_backends_agree(ray_cluster, small_data, real_model, tmp_path):
    import torch
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from growthpace.evaluators.backends import predict
    from growthpace.evaluators.scoring import score
    from growthpace.evaluators.transformers_backend import TransformersBackend
    from growthpace.jobs.run import run_evaluate, run_sweep
    from growthpace.platform.data.chat import TemplateFraming, framing_for
    from growthpace.platform.data.dataset import load_eval_sets, read_cell_tokens

    spec = _spec(tmp_path, small_data, real_model)
    study = run_sweep(spec)
    layout = Layout.for_spec(spec)
    (cell,) = study.cells
    assert cell.training["chat"] == "template"

    # The base is the source as it is: no token added, embeddings not grown, the shards the same bytes.
    (base,) = list((layout.root / "base").iterdir())
    assert base.name.endswith("-template")
    assert json.loads((base / "config.json").read_text())["vocab_size"] == VOCAB
    assert filecmp.cmp(base / "model.safetensors", real_model / "model.safetensors", shallow=False)
    tok = AutoTokenizer.from_pretrained(base)
    assert len(tok) == VOCAB and tok.chat_template == AutoTokenizer.from_pretrained(real_model).chat_template
    enc = framing_for(tok)
    assert isinstance(enc, TemplateFraming)

    # Training read the template's ids: its turn markers, no study token, loss only on the answers.
    start = tok.convert_tokens_to_ids("<|im_start|>")
    for ids, labels in read_cell_tokens(layout.cell_tokens(cell.cell_id)):
        assert ids.count(start) >= 3 and max(ids) < VOCAB
        assert any(y != -100 for y in labels) and labels[: ids.index(start) + 1] == [-100] * (ids.index(start) + 1)

    (ck,) = read_json(layout.cell_checkpoints(cell.cell_id))["checkpoints"]
    model_dir = Path(ck["path"]) / "model"
    with safe_open(str(real_model / "model.safetensors"), framework="pt") as f:
        before = f.get_tensor("model.embed_tokens.weight")
    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        trained = f.get_tensor("model.embed_tokens.weight")
    assert trained.shape == before.shape == (VOCAB, before.shape[1])
    assert not torch.equal(trained.float(), before.float()), "training changed the weights"
    assert isinstance(framing_for(AutoTokenizer.from_pretrained(model_dir)), TemplateFraming)

    scores = run_evaluate(spec, study)
    assert set(scores["epoch"]) == {1}
    keyed = [((split, ability, r.idx), r) for (split, ability), recs in load_eval_sets(spec).items() for r in recs]
    stored = pl.read_parquet(layout.cell_predictions(cell.cell_id, 1))
    assert set(stored["backend"]) == {"vllm"} and stored.height == len(keyed)
    vllm_verdicts = {(s, a, i): bool(c) for s, a, i, c in stored.select("split", "ability", "idx", "correct").iter_rows()}
    backend = TransformersBackend(model_dir, batch_size=16, max_length=1024)
    assert isinstance(backend.enc, TemplateFraming)
    preds = predict(backend, [r for _, r in keyed], LIMITS)
    backend.close()
    hf_verdicts = {k: bool(score(r, p).correct) for (k, r), p in zip(keyed, preds)}
    assert set(vllm_verdicts) == set(hf_verdicts)
    differ = [k for k in hf_verdicts if vllm_verdicts[k] != hf_verdicts[k]]
    assert not differ, f"vLLM and transformers disagree on {differ}"
