"""`auto` picks the backend by what is installed and what pays off; the choice comes with its reason."""

import pytest

from growthpace.evaluators import engines, vllm_backend


def test_explicit_choices(monkeypatch):
    assert engines.resolve("transformers")[0] == "transformers"
    monkeypatch.setattr(vllm_backend, "available", lambda: "vllm is not installed")
    with pytest.raises(RuntimeError, match="install the cpu or gpu extra"):
        engines.resolve("vllm")
    assert engines.resolve("auto") == ("transformers", "auto: vllm is not installed")


def test_auto_with_vllm_installed(monkeypatch):
    monkeypatch.setattr(vllm_backend, "available", lambda: None)
    assert engines.resolve("auto", params=1_600_000, gpu=False)[0] == "transformers"
    assert engines.resolve("auto", params=30_000_000, gpu=False)[0] == "vllm"
    assert engines.resolve("auto", params=1_600_000, gpu=True)[0] == "vllm"
    assert engines.resolve("vllm", params=1)[0] == "vllm"
