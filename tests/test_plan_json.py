"""`growthpace plan SPEC --json` on a spec whose data is on disk: tokens counted from the items,
optimizer steps by platform/core/batching.py, storage by platform/core/footprint.py, totals the sums."""

from __future__ import annotations

import json

import pytest
import yaml


def test_plan_json_on_real_data(tmp_path, small_data):
    from typer.testing import CliRunner

    from growthpace.cli import app
    from growthpace.platform.core.batching import optimizer_steps
    from growthpace.platform.core.footprint import checkpoint_footprint

    spec = {"name": "p", "storage": str(tmp_path / "store"),
            "models": [{"name": "llama-nano", "size": "s", "resources": {"workers": 2, "gpus_per_worker": 1,
                                                                         "throughput_tokens_per_gpu_s": 100}}],
            "data": {"root": str(small_data), "train_split": "1000", "volumes": [10, 30]},
            "training": {"epochs": 3, "per_device_batch": 4, "grad_accum": 2, "precision": "bf16", "zero_stage": 3},
            "evaluation": {"retention": "best"}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["plan", str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert not doc["declared"] and doc["retention"] == "best"
    assert not (tmp_path / "store").exists(), "plan writes nothing"
    for c in doc["cells"]:
        assert c["global_batch"] == 4 * 2 * 2
        assert c["optimizer_steps"] == optimizer_steps(c["items"], 3, 16)
        # every epoch is filled up to whole global batches, so it trains at least its own tokens
        assert c["train_tokens"] >= c["tokens"] * 3
        assert c["gpu_hours"] == pytest.approx(c["train_tokens"] / 100 / 3600)
        f = checkpoint_footprint(c["params"], 3, "bf16", 3, "best", resume_writes=len(c["resume_state_epochs"]))
        assert (c["peak_checkpoint_bytes"], c["retained_checkpoint_bytes"]) == (f.peak, f.retained)
        # the trial's 2 GPUs wait for every byte written, at training.storage_write_gib_s (default 1 GiB/s)
        assert 3 not in c["resume_state_epochs"] and c["checkpoint_write_bytes"] == f.written
        assert c["checkpoint_write_s"] == pytest.approx(f.written / 2**30)
        assert c["checkpoint_write_gpu_hours"] == pytest.approx(c["checkpoint_write_s"] * 2 / 3600)
        assert c["hours"] == pytest.approx((c["gpu_hours"] + c["checkpoint_write_gpu_hours"]) / 2)
    by = {c["volume"]: c for c in doc["cells"]}
    assert by[10]["optimizer_steps"] == 3 and by[30]["optimizer_steps"] == 6  # 10 -> 1 batch, 30 -> 2
    for key in ("items", "optimizer_steps", "train_tokens", "peak_checkpoint_bytes", "retained_checkpoint_bytes",
                "checkpoint_write_bytes"):
        assert doc["totals"][key] == sum(c[key] for c in doc["cells"])

    human = CliRunner().invoke(app, ["plan", str(path)])
    assert human.exit_code == 0, human.output
    assert "steps" in human.output and "ckpt kept" in human.output
    assert f"{doc['totals']['optimizer_steps']} optimizer steps" in human.output
    assert "checkpoint storage:" in human.output
