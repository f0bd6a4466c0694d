"""One parameter count for plan and report (models.param_count)."""

import yaml

from growthpace.jobs.report import size_params
from growthpace.platform.core.presets import PRESETS, VOCAB_SIZE
from growthpace.platform.train.models import count_params, llama_config, param_count
from growthpace.platform.data.specfile import load_spec


def test_report_counts_a_preset_as_plan_does(tmp_path):
    raw = {"name": "t", "storage": str(tmp_path / "s"),
           "models": [{"name": "llama-nano", "size": "nano"}, {"name": "llama-micro", "size": "0.6M"},
                      {"name": "llama-mini", "size": "mini", "params": 123}],
           "data": {"root": str(tmp_path / "d"), "sources": ["curated"], "volumes": [10]}, "training": {"epochs": 1}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    params = size_params(load_spec(tmp_path / "spec.yaml"))
    nano = count_params(llama_config(PRESETS["llama-nano"], VOCAB_SIZE))
    # no tokenizer yet: the BPE's trained size, chat tokens included (it trains them as special tokens)
    assert params == {"nano": float(nano), "0.6M": 6e5, "mini": 123.0}
    assert param_count("llama-nano") == nano
    smaller = type("Tok", (), {"__len__": lambda self: VOCAB_SIZE - 100})()
    assert param_count("llama-nano", smaller) == count_params(llama_config(PRESETS["llama-nano"], VOCAB_SIZE - 100)) < nano
