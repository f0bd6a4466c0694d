"""Scoring that asks for GPUs refuses to start without vLLM (it would score on an idle GPU through a
CPU fallback for days): exit 2, one error naming the field, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# The real CLI with vLLM made unimportable (as on a node whose image lacks the gpu extra).
NO_VLLM = """
import runpy, sys
sys.modules["vllm"] = None
sys.argv = ["growthpace", *sys.argv[1:]]
runpy.run_module("growthpace.cli", run_name="__main__", alter_sys=True)
"""


def _spec(folder: Path, data: Path, **evaluation) -> Path:
    (folder / "data").symlink_to(data, target_is_directory=True)
    spec = {"name": "gpu", "storage": "store", "models": [{"name": "llama-nano", "size": "s"}],
            "data": {"root": "data", "train_split": "1000", "volumes": [10]},
            "evaluation": {"splits": ["valid"], "ood": False, **evaluation}}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-c", NO_VLLM, *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=300)


def test_gpu_scoring_without_vllm_stops_before_anything_is_written(tmp_path, small_data):
    _spec(tmp_path, small_data, gpus_per_actor=1)
    out = _cli(tmp_path, "run", "spec.yaml")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "evaluation.gpus_per_actor" in out.stderr and "vllm is not installed" in out.stderr
    assert not (tmp_path / "store").exists()


def test_preflight_passes_on_cpu_scoring_or_an_explicit_transformers_backend(tmp_path, small_data, monkeypatch):
    from growthpace.jobs.study import check_scoring_backend
    from growthpace.platform.core.spec import SpecError
    from growthpace.platform.data.specfile import load_spec

    monkeypatch.setitem(sys.modules, "vllm", None)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    check_scoring_backend(load_spec(_spec(tmp_path / "a", small_data, gpus_per_actor=0)))
    check_scoring_backend(load_spec(_spec(tmp_path / "b", small_data, gpus_per_actor=1, backend="transformers")))
    with pytest.raises(SpecError, match=r"0\.5 GPU\(s\) per actor but vllm is not installed"):
        check_scoring_backend(load_spec(_spec(tmp_path / "c", small_data, gpus_per_actor=0.5, backend="vllm")))
