"""The request planner: what each item asks of a model, cut to fit, and how answers become predictions."""

from __future__ import annotations

import pytest

from growthpace.evaluators.requests import Reply, by_limit, plan_requests
from growthpace.evaluators.scoring import max_new_tokens
from growthpace.platform.core.items import question_kind
from growthpace.platform.data.chat import ChatEncoder
from growthpace.platform.core.items import Record

SIX = Record("biology", "6", (("user", "哪个是细胞器？\nA. 水\nB. 核糖体\nC. 盐\nD. 糖\nE. 油\nF. 光"), ("assistant", "B")), 0)
FOUR = Record("biology", "4", (("user", "哪个是器官？\nA. 心脏\nB. 水\nC. 盐\nD. 糖"), ("assistant", "A")), 0)
MATH = Record("math", "m", (("user", "1+1=?" * 40), ("assistant", "答案是 2")), 0, None, "2")
RANK = Record("code", "r", (("user", "写一个函数"), ("assistant", "def f(): pass")), 1, ("def f(): pass", "no", "maybe"))


@pytest.fixture(scope="module")
def enc():
    from growthpace.platform.train.models import train_tokenizer

    return ChatEncoder(train_tokenizer([SIX, FOUR, MATH, RANK]))


def test_choice_items_read_their_own_option_letters(enc):
    plan = plan_requests(enc, [SIX, FOUR])
    by_item = {g.item: g for g in plan.generations}
    assert question_kind(SIX) == "choice" and by_item[0].letters == "ABCDEF" and by_item[1].letters == "ABCD"
    assert by_item[0].letter_ids == tuple(enc.text(ch)[0] for ch in "ABCDEF")
    assert by_item[0].max_tokens == max_new_tokens(SIX) and by_item[0].reply
    replies = [Reply(enc.text("B") + [enc.eot], tuple(float(-k) for k in range(len(g.letters)))) for g in plan.generations]
    preds = plan.predictions(replies, [])
    assert preds[0].text == "B" and preds[0].letter_logprobs == {L: float(-k) for k, L in enumerate("ABCDEF")}
    assert list(preds[1].letter_logprobs) == list("ABCD")


def test_limit_zero_reads_the_answer_position_alone(enc):
    plan = plan_requests(enc, [SIX], {"choice": 0})
    (g,) = plan.generations
    assert g.max_tokens == 1 and not g.reply  # one step for the log-probs; its token is dropped
    (pred,) = plan.predictions([Reply(enc.text("F"), tuple([0.0] * 6))], [])
    assert pred.text == "" and pred.letter_logprobs["F"] == 0.0


def test_prompts_are_cut_from_the_left_to_fit(enc):
    plan = plan_requests(enc, [MATH, RANK], {"math": 8}, max_length=24)
    (g,) = plan.generations
    full = enc.prompt(MATH.prompt)
    assert len(full) > 24 and g.max_tokens == 8 and g.prompt == full[-(24 - 8):]
    assert [c.continuation for c in plan.continuations] == [enc.continuation(c) for c in RANK.choices]
    for c in plan.continuations:
        assert len(c.sequence) <= max(24, len(c.continuation) + 1) and c.prompt == enc.prompt(RANK.prompt)[-len(c.prompt):]
    assert plan.predictions([Reply([], ())], [0.5, 0.25, 2.0])[1].candidate_nll == (0.5, 0.25, 2.0)


def test_generations_come_grouped_by_limit(enc):
    plan = plan_requests(enc, [MATH, SIX, FOUR, MATH], {"math": 16})
    limits = [g.max_tokens for g in plan.generations]
    assert limits == sorted(limits)
    groups = by_limit(plan.generations)
    assert [{plan.generations[n].max_tokens for n in grp} for grp in groups] == [{max_new_tokens(SIX)}, {16}]
    with pytest.raises(RuntimeError, match="4 generations"):
        plan.predictions([], [])


def test_a_generation_limit_above_max_length_never_empties_the_prompt(enc):
    """Issue 28: math's 512-token limit under max_length 256 kept prompt[-(256 - 512):], nothing (vLLM: 'The
    decoder prompt cannot be empty'). A reply is capped at half of max_length; the prompt keeps the rest."""
    from growthpace.platform.core.items import capped_limits, describe_capped, effective_limits

    long_math = Record("math", "long", (("user", "1+1=? " * 200), ("assistant", "2")), 0, None, "2")
    full = enc.prompt(long_math.prompt)
    assert len(full) > 256
    for limits, max_length, steps in (({}, 256, 128), ({"math": 60}, 64, 32), ({"math": 16}, 128, 16), ({}, 2048, 512)):
        (g,) = plan_requests(enc, [long_math], limits, max_length=max_length).generations
        assert g.max_tokens == steps and g.prompt == full[-(max_length - steps):] and len(g.prompt) >= min(len(full), max_length // 2)
    assert capped_limits({}, 256) == {"math": (512, 128)} and capped_limits({"math": 16}, 128) == {}
    assert "math 128 (not 512)" in describe_capped({}, 256) and describe_capped({}, 2048) is None
    # a result's key hashes the limits used: new under the cap, unchanged for a study it leaves alone
    assert effective_limits({"choice": 2}, 256) == {"choice": 2, "math": 128} and effective_limits({"math": 16}, 128) == {"math": 16}
