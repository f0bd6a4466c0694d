"""lm-eval tasks through growthpace's Backend (evaluators/lm_eval_tasks.py): the same metrics as lm-eval's
own `hf` model on the real SmolLM2 checkpoint, every request answered in its place, stored responses
replayed without a model, and bad benchmark input named by its spec field before anything runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("lm_eval")

from growthpace.evaluators import lm_eval_tasks as L  # noqa: E402
from growthpace.evaluators.requests import Reply  # noqa: E402

TASKS = Path(__file__).resolve().parent.parent / "experiments" / "lm_eval_tasks"  # the shipped local tasks
BOTH = ["growthpace_facts", "growthpace_sums"]


def bench(tasks=BOTH, num_fewshot=2, limit=6, include_path=(str(TASKS),)):
    return SimpleNamespace(tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, include_path=list(include_path))


@pytest.fixture(scope="module")
def loaded():
    return L.load_tasks(bench())


@pytest.fixture(scope="module")
def tokenizer(real_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(real_model)


class Echo:
    """A backend whose every answer is a function of its own request alone: a response found beside
    another request's arguments means the adapter dropped or reordered something. A one-token read
    (``generate`` watching ids) gives each watched id the log-prob ``ll`` gives it as a continuation, and
    writes the largest watched id: so of one prompt's one-token choices, the largest is the greedy one."""

    max_length = 512

    def __init__(self, drop: bool = False):
        self.drop = drop
        self.calls: list[tuple[str, int]] = []

    @staticmethod
    def ll(prompt, cont):
        # the continuation's own ids count too: two choices of one prompt swapped would show
        return (-float(sum(prompt) % 997 + 1000 * len(cont) + sum(cont) % 89 / 100), len(prompt) % 2 == 0)

    @staticmethod
    def tokens(prompt):
        return [t for t in prompt[-3:]]

    def loglikelihood(self, requests):
        self.calls.append(("loglikelihood", len(requests)))
        out = [self.ll(c.prompt, c.continuation) for c in requests]
        return out[:-1] if self.drop else out

    def generate(self, requests):
        self.calls.append(("generate", len(requests)))
        out = [Reply([max(g.letter_ids)] if g.letter_ids else self.tokens(g.prompt),
                     tuple(self.ll(g.prompt, [t])[0] for t in g.letter_ids)) for g in requests]
        return out[:-1] if self.drop else out


def echoed(tok, args, choices):
    """What Echo answers to a loglikelihood request of ``args`` whose document's choices are ``choices``
    (every request of that document: the same prompt)."""
    c = tok.cut(*tok.pair(*args))
    if len(c.continuation) > 1:
        return Echo.ll(c.prompt, c.continuation)
    ones = [tok.pair(*a)[1] for a in choices]
    return Echo.ll(c.prompt, c.continuation)[0], c.continuation[0] == max(x[0] for x in ones if len(x) == 1)


def test_every_response_belongs_to_its_own_request(loaded, tokenizer):
    lm = L.backend_lm(Echo(), tokenizer, Echo.max_length)
    results, _ = L.run(loaded, lm)
    tok = L._Tokens(tokenizer, Echo.max_length)
    checked = 0
    for name in BOTH:
        assert results[name].samples, name
        for s in results[name].samples:
            for args, resps in zip(s["arguments"], s["resps"], strict=True):
                if name == "growthpace_facts":
                    assert tuple(resps[0]) == echoed(tok, args, s["arguments"])
                else:
                    prompt = tok.encode(args[0])[-(Echo.max_length - 12):]
                    text = tokenizer.decode(Echo.tokens(prompt), skip_special_tokens=True)
                    assert resps[0] == text.split("\n")[0].split("Question:")[0]
                checked += 1
    assert checked == 6 * 4 + 6  # 6 docs x 4 choices, 6 generations


def test_one_token_choices_of_a_document_take_one_pass(tokenizer):
    """As HFLM's logits cache: every one-token choice of a document from one request of its prompt; the
    one choice of more tokens ("twenty-four") as a loglikelihood request of its own."""
    facts = L.load_tasks(bench(tasks=["growthpace_facts"], limit=None))
    echo = Echo()
    results, _ = L.run(facts, L.backend_lm(echo, tokenizer, Echo.max_length))
    assert echo.calls == [("generate", 16), ("loglikelihood", 1)]  # 16 docs x 4 choices, one of two tokens
    tok = L._Tokens(tokenizer, Echo.max_length)
    samples = results["growthpace_facts"].samples
    got = [tuple(r[0]) for s in samples for r in s["resps"]]
    assert got == [echoed(tok, a, s["arguments"]) for s in samples for a in s["arguments"]]
    assert 0 < sum(greedy for _, greedy in got) < len(got)


def test_more_one_token_choices_than_a_request_watches_are_split():
    """A prompt with more one-token choices than MAX_WATCHED takes several requests of that prompt; the
    answers come back in request order, whatever the mix of prompts and lengths."""
    from growthpace.evaluators.requests import MAX_WATCHED, Continuation

    many = [Continuation(0, [5, 6, 7], [100 + k]) for k in range(MAX_WATCHED + 2)]
    other = [Continuation(0, [5, 6], [300]), Continuation(0, [5, 6], [301, 302]), Continuation(0, [5, 6], [300])]
    requests = [r for pair in zip(many, other + many[: len(many) - len(other)]) for r in pair]
    echo = Echo()
    got = L.loglikelihoods(echo, requests)
    assert echo.calls == [("generate", 3), ("loglikelihood", 1)]
    for r, (lp, greedy) in zip(requests, got, strict=True):
        assert lp == Echo.ll(r.prompt, r.continuation)[0]
        if len(r.continuation) > 1:
            assert greedy == Echo.ll(r.prompt, r.continuation)[1]
        elif tuple(r.prompt) == (5, 6):
            assert greedy
        else:
            chunk_top = 100 + MAX_WATCHED - 1 if r.continuation[0] < 100 + MAX_WATCHED else 100 + MAX_WATCHED + 1  # its chunk's largest id
            assert greedy == (r.continuation[0] == chunk_top)


def test_a_dropped_response_is_an_error_not_a_shifted_score(loaded, tokenizer):
    lm = L.backend_lm(Echo(drop=True), tokenizer, Echo.max_length)
    with pytest.raises(ValueError):
        L.run(loaded, lm, only=["growthpace_facts"])


@pytest.mark.integration
def test_metrics_equal_lm_eval_hf_on_the_real_checkpoint(real_model, loaded):
    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    from growthpace.evaluators.transformers_backend import TransformersBackend

    torch.set_num_threads(2)
    backend = TransformersBackend(real_model, batch_size=8, max_length=2048)  # fp32 on CPU
    ours, _ = L.run(loaded, L.backend_lm(backend, backend.tokenizer, backend.max_length))
    backend.close()
    ref = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(real_model), "dtype": "float32", "device": "cpu"},
        tasks=BOTH, num_fewshot=2, limit=6, batch_size=8, log_samples=True, bootstrap_iters=L.BOOTSTRAP_ITERS,
        task_manager=TaskManager(include_path=str(TASKS), include_defaults=False))
    for name in BOTH:
        theirs = {k: float(v) for k, v in ref["results"][name].items() if "," in k}
        assert ours[name].metrics == pytest.approx(theirs, abs=0), name  # identical accuracy / exact match
        for a, b in zip(ours[name].samples, json.loads(json.dumps(ref["samples"][name], default=float)), strict=True):
            assert a["arguments"] == b["arguments"]
            for ra, rb in zip(a["resps"], b["resps"], strict=True):
                if name == "growthpace_facts":
                    assert ra[0][0] == pytest.approx(rb[0][0], abs=1e-4) and ra[0][1] == rb[0][1]
                else:
                    assert ra == rb
    assert ours["growthpace_facts"].metrics["acc,none"] > 0.5  # the real model knows these facts


def test_stored_responses_are_replayed_without_a_model(loaded, tokenizer):
    first, _ = L.run(loaded, L.backend_lm(Echo(), tokenizer, Echo.max_length))
    replay = L.Replay({k: r.samples for k, r in first.items()})
    again, _ = L.run(loaded, L.backend_lm(None, tokenizer, Echo.max_length, replay))  # no backend: rescore
    assert {k: r.metrics for k, r in again.items()} == {k: r.metrics for k, r in first.items()}
    # another few-shot count builds other prompts: a new key, and nothing of the old store answers it
    other = L.load_tasks(bench(num_fewshot=1))
    assert other.hashes["growthpace_facts"] != loaded.hashes["growthpace_facts"]
    with pytest.raises(KeyError, match="no stored response"):
        L.run(other, L.backend_lm(None, tokenizer, Echo.max_length, replay), only=["growthpace_facts"])


def test_the_task_hash_is_the_same_in_a_fresh_load(loaded):
    assert L.load_tasks(bench()).hashes == loaded.hashes


@pytest.mark.parametrize("case, field, words", [
    ("unknown", "evaluation.benchmarks.tasks[0]", ["'hellaswg'", "closest: hellaswag"]),
    ("syntax", "evaluation.benchmarks.include_path", ["broken.yaml:3"]),
    ("no_data", "evaluation.benchmarks.tasks[0]", ["not on disk", "OfflineModeIsEnabled"]),  # asked nothing: no retries
    ("fewshot", "evaluation.benchmarks.num_fewshot", ["9 examples", "growthpace_facts", "gives 4"]),
])
def test_bad_benchmark_input_names_its_field(tmp_path, case, field, words):
    folder = tmp_path / "tasks"
    shutil.copytree(TASKS, folder)
    b = bench(tasks=["growthpace_facts"], include_path=[str(folder)])
    if case == "unknown":  # built-in names, as no_data: the two share one index of lm-eval's YAMLs
        b.tasks, b.include_path = ["hellaswg"], []
    elif case == "syntax":
        (folder / "broken.yaml").write_text("task: broken\ndataset_path: json\noutput_type: a: b\n")
    elif case == "no_data":
        b.tasks = ["arc_easy"]  # a built-in task whose dataset is not in this machine's cache
        b.include_path = []
    else:
        b.num_fewshot = 9
    with pytest.raises(L.BenchmarkInputError) as e:
        L.load_tasks(b)
    msg = str(e.value)
    assert msg.startswith(f"field '{field}': ") and all(w in msg for w in words), msg
    assert "\n" not in msg
