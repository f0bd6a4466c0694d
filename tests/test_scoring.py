"""Tests of the scoring rules (growthpace.evaluators.scoring, math_answer, math_verify_worker): every rule
of STUDY_FACTS's "Scoring rules in detail", with hand-made records and replies, including the replies of
untrained and half-trained models; and the table of deliberate differences from the study's code."""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from pathlib import Path

import pytest

from growthpace.evaluators import math_answer, math_verify_worker, scoring
from growthpace.evaluators.math_answer import (
    HAVE_SYMPY,
    clean_answer,
    extract_math_answer,
    math_equivalent_rules,
    normalize_math,
)
from growthpace.evaluators.math_verify_worker import HAVE_MATH_VERIFY, MathVerifyWorker, math_verify_equivalent
from growthpace.platform.core.items import (ALL_OPTION_LETTERS, KINDS, n_options, option_letters, parse_letter_set, question_kind)
from growthpace.evaluators.scoring import (DIFFERENCES, Prediction, REGISTRY, SCORER_VERSION, Verdict, argmax_letter, math_equivalent, max_new_tokens, needs, parse_true_false, score)
from growthpace.platform.core.items import Record

ROOT = Path(__file__).resolve().parents[1]
needs_sympy = pytest.mark.skipif(not HAVE_SYMPY, reason="sympy not installed")
needs_math_verify = pytest.mark.skipif(not HAVE_MATH_VERIFY, reason="math-verify not installed")
# The equivalence tables hold for both: math_verify's verdict (with the rules as fallback) and the
# hand-written rules alone. Where the two differ, see test_math_verify_differs_from_the_rules.
both_equivalences = pytest.mark.parametrize("equiv", [math_equivalent, math_equivalent_rules], ids=["primary", "rules"])


def baseline(record):
    """An item's random-baseline expected score, as its verdict carries it."""
    return REGISTRY[question_kind(record)].expected(record)


# --- record builders --------------------------------------------------------------------------


def rec(type_: str, user: str, gold: str, *, fmt: int = 0, choices=None, answer=None, history=()) -> Record:
    messages = tuple(history) + (("user", user), ("assistant", gold))
    return Record(type_, "1", messages, fmt, tuple(choices) if choices else None, answer)


def mc(gold: str, n: int = 4, type_: str = "biology", marker: str = "{L}. ") -> Record:
    options = "\n".join(marker.format(L=L) + f"option {L}" for L in ALL_OPTION_LETTERS[:n])
    return rec(type_, f"Which one?\n{options}", gold)


def tf(gold: str) -> Record:
    return rec("history", "判断：秦朝统一了六国。", gold)


def cloze(gold: str) -> Record:
    return rec("chinese", "填空：____来了，花开了。", gold)


def ppl(choices=("right", "wrong1", "wrong2")) -> Record:
    return rec("code", "Write a function.", choices[0], fmt=1, choices=choices)


def math_rec(answer: str | None, gold: str = "Solution ... \\boxed{5}") -> Record:
    return rec("math", "Compute 2+3.", gold, answer=answer)


def ethics(gold: str) -> Record:
    return rec("ethics", "以下哪些行为是道德的？\nA. a\nB. b\nC. c\nD. d", gold)


def lp(best: str, letters: str = "ABCD") -> dict[str, float]:
    """Letter log-probs with ``best`` the most likely."""
    return {L: (-0.1 if L == best else -3.0 - i) for i, L in enumerate(letters)}


# --- question kinds: from type AND gold --------------------------------------------------------


@pytest.mark.parametrize(
    "record,kind",
    [
        (mc("B"), "choice"),
        (mc("B", type_="reasoning"), "choice"),
        (mc("C", type_="understanding"), "choice"),
        (mc("A", type_="history"), "choice"),
        (tf("正确"), "true_false"),
        (tf("×"), "true_false"),
        (mc("D", type_="chinese"), "choice"),
        (cloze("春天"), "cloze"),
        (cloze("对"), "cloze"),  # a chinese item with gold 对 is cloze, not true/false
        (cloze("E"), "cloze"),  # only A-D make a chinese item a choice item
        (cloze("AB"), "cloze"),
        (ppl(), "perplexity"),
        (math_rec("5"), "math"),
        (ethics("AC"), "multi_select"),
        (ethics("A"), "multi_select"),  # one gold letter: still multi-select (ethics is ethics)
        (rec("math", "q", "cand0", fmt=1, choices=("cand0", "c1", "c2")), "perplexity"),  # format 1 wins
    ],
)
def test_question_kind_from_type_and_gold(record, kind):
    assert question_kind(record) == kind


@pytest.mark.parametrize("gold", ["正确", "对", "T", "√", "V", "错误", "错", "F", "×", "X", " 正确 "])
def test_history_true_false_vocabulary(gold):
    assert question_kind(tf(gold)) == "true_false"


def test_history_gold_neither_letter_nor_verdict_word_is_a_data_error():
    with pytest.raises(ValueError, match=r"history/1: field 'messages'.*'yes'"):
        question_kind(tf("yes"))


def test_question_kind_ood_subject_is_choice():
    shots = (("user", "Q1\nA. a\nB. b\nC. c\nD. d"), ("assistant", "A")) * 5
    r = rec("physician", "Q6\nA. a\nB. b\nC. c\nD. d", "C", history=shots)
    assert question_kind(r) == "choice"
    assert score(r, Prediction(text="C")) == Verdict("C", True, 0.25)


# --- option counting and expected scores ------------------------------------------------------


@pytest.mark.parametrize("marker", ["{L}. ", "{L}.", "{L}．", "{L}、", "{L})", "({L}) ", "（{L}）", "  {L}. "])
@pytest.mark.parametrize("n", [3, 4, 8])
def test_n_options_counts_option_lines(marker, n):
    assert n_options(mc("A", n=n, marker=marker)) == n
    assert option_letters(mc("A", n=n, marker=marker)) == ALL_OPTION_LETTERS[:n]


def test_n_options_default_when_no_option_lines():
    assert n_options(rec("reasoning", "Which is right? A. x B. y C. z", "A")) == 4
    assert option_letters(rec("reasoning", "no options at all", "A")) == "ABCD"


def test_n_options_from_choices_of_a_generated_item():
    # the benchmark loaders list a format-0 item's option texts in `choices`
    r = rec("cmmlu", "Q (A)x (B)y (C)z (D)u (E)v", "E", choices=("x", "y", "z", "u", "v"))
    assert (n_options(r), option_letters(r), baseline(r)) == (5, "ABCDE", 0.2)


def test_n_options_uses_the_last_user_turn_only():
    history = (("user", "Q1\nA. a\nB. b\nC. c\nD. d"), ("assistant", "B"))
    r = rec("understanding", "Q2\nA. a\nB. b\nC. c", "A", history=history)
    assert n_options(r) == 3


def test_n_options_ignores_speaker_labels():
    dialogue = "A：你好。\nB：你好，去哪？\nC：我也去。\nD：好的。\n问题：谁先说话？\nA. 甲\nB. 乙\nC. 丙"
    assert n_options(rec("understanding", dialogue, "A")) == 3


def test_n_options_needs_a_contiguous_run_from_a():
    assert n_options(rec("reasoning", "Q\nB. b\nC. c\nD. d", "B")) == 4  # no "A." line
    assert n_options(rec("reasoning", "Q\nA. a\nB. b\nD. d", "B")) == 2  # C missing: A-B only


@pytest.mark.parametrize(
    "record,expected",
    [
        (mc("A", n=4), 1 / 4),
        (mc("A", n=3), 1 / 3),
        (mc("A", n=5), 1 / 5),
        (tf("对"), 1 / 2),
        (cloze("春天"), 0.0),
        (math_rec("5"), 0.0),
        (ppl(), 1 / 3),
        (ethics("A"), 1 / 4),
        (ethics("AC"), 1 / 6),
        (ethics("ABD"), 1 / 4),
        (ethics("ABCD"), 1.0),
    ],
)
def test_expected_score_per_kind(record, expected):
    assert baseline(record) == pytest.approx(expected)
    k = len(parse_letter_set(record.gold))
    if record.type == "ethics":
        assert expected == pytest.approx(1 / math.comb(4, k))


# --- multiple choice ----------------------------------------------------------------------------


def test_choice_single_character_is_the_answer():
    assert score(mc("B"), Prediction(text="B")) == Verdict("B", True, 0.25)
    assert score(mc("B"), Prediction(text=" B\n")) == Verdict("B", True, 0.25)


@pytest.mark.parametrize("reply", ["A", "E", "1", "是", "b", "D"])
def test_choice_other_single_character_is_wrong_whatever_the_logprobs(reply):
    # no log-prob fallback: E, 1, 是, a lower-case letter, or D on a 3-option item are simply wrong
    v = score(mc("B", n=3), Prediction(text=reply, letter_logprobs=lp("B")))
    assert (v.parsed, v.correct) == (reply, False)


def test_choice_single_character_wins_over_logprobs():
    v = score(mc("B"), Prediction(text="B", letter_logprobs=lp("A")))
    assert (v.parsed, v.correct) == ("B", True)


def test_choice_longer_reply_is_decided_by_first_position_logprobs():
    logprobs = {"A": -3.0, "B": -2.0, "C": -0.2, "D": -4.0}
    v = score(mc("C"), Prediction(text="The answer is A", letter_logprobs=logprobs))
    assert (v.parsed, v.correct) == ("C", True)
    v = score(mc("A"), Prediction(text="The answer is A", letter_logprobs=logprobs))
    assert (v.parsed, v.correct) == ("C", False)


def test_choice_argmax_among_the_items_options_only():
    logprobs = {"A": -3.0, "B": -1.0, "C": -2.0, "D": -0.1}
    v = score(mc("B", n=3), Prediction(text="D.", letter_logprobs=logprobs))
    assert (v.parsed, v.correct, v.expected) == ("B", True, pytest.approx(1 / 3))


def test_choice_up_to_eight_options():
    logprobs = lp("G", ALL_OPTION_LETTERS)
    assert score(mc("G", n=8), Prediction(text="选G吧", letter_logprobs=logprobs)) == Verdict("G", True, 1 / 8)
    assert score(mc("A", n=6), Prediction(text="xx", letter_logprobs=logprobs)).parsed == "A"  # G, H: no options


@pytest.mark.parametrize("reply", ["", "   ", "\n\n", "答案是C。", "I think B is right"])
def test_choice_empty_or_long_reply_without_logprobs_is_unparseable(reply):
    assert score(mc("C"), Prediction(text=reply)) == Verdict("", False, 0.25)


def test_choice_empty_reply_uses_logprobs():
    assert score(mc("D"), Prediction(text="", letter_logprobs=lp("D"))).correct is True


def test_argmax_letter_ties_nan_and_missing():
    assert argmax_letter({"A": -1.0, "B": -1.0, "C": -2.0}, "ABCD") == "A"  # a tie: the first letter
    assert argmax_letter({"B": -1.0, "A": -1.0}, "BA") == "B"
    assert argmax_letter({"A": float("nan"), "B": -3.0, "C": -2.0}, "ABC") == "C"
    assert argmax_letter({"E": -0.1}, "ABCD") == ""
    assert scoring._argmax_letter is argmax_letter  # the name benchmarks.py imports today


# --- true / false -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply,value",
    [
        ("正确", True), ("对", True), ("T", True), ("√", True), ("V", True),
        ("错误", False), ("错", False), ("F", False), ("×", False), ("X", False),
        ("这个说法是错误的", False),  # a verdict word anywhere counts
        ("我认为这是正确的。", True),
        ("根据史料记载，秦朝统一了六国，所以对", True),
        ("True.", True),  # its T
        ("The statement is right", True),  # the T of "The": anywhere means anywhere
        ("不对", True),  # holds 对 and no false word
        (" 错 ", False),
    ],
)
def test_true_false_word_anywhere(reply, value):
    assert parse_true_false(reply) is value


@pytest.mark.parametrize(
    "reply",
    [
        "正确，错误", "正确错误", "对\n错", "T or F", "对。不过也可能是错的", "正确" + "。" * 50 + "X",  # both
        "", "   ", "maybe", "yes", "no", "true", "false", "是的", "嗯嗯嗯",  # neither
    ],
)
def test_true_false_both_or_neither_is_unparseable(reply):
    assert parse_true_false(reply) is None
    assert score(tf("对"), Prediction(text=reply)) == Verdict("", False, 0.5)
    assert score(tf("错"), Prediction(text=reply)) == Verdict("", False, 0.5)


def test_true_false_gold_words_map_to_one_value():
    assert score(tf("对"), Prediction(text="正确")) == Verdict("true", True, 0.5)
    assert score(tf("×"), Prediction(text="X")) == Verdict("false", True, 0.5)
    assert score(tf("×"), Prediction(text="√")) == Verdict("true", False, 0.5)
    assert score(tf("V"), Prediction(text="这是错误的")) == Verdict("false", False, 0.5)


def test_true_false_letter_logprobs_play_no_part():
    v = score(tf("T"), Prediction(text="T", letter_logprobs={"A": 0.0}))
    assert (v.parsed, v.correct) == ("true", True)


# --- cloze ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    ["春天", "春天。", " 春天 \n", "春天\n这是因为春天来了花才开", "A. 春天", "“春天”", "1. 春天！理由如下", "春天，因为"],
)
def test_cloze_first_cjk_run(reply):
    assert score(cloze("春天"), Prediction(text=reply)) == Verdict("春天", True, 0.0)


@pytest.mark.parametrize("reply,parsed", [("春天的", "春天的"), ("春", "春"), ("答：春天", "答"), ("秋天，不是春天", "秋天"), ("春 天", "春")])
def test_cloze_mismatch(reply, parsed):
    assert score(cloze("春天"), Prediction(text=reply)) == Verdict(parsed, False, 0.0)


def test_cloze_without_cjk_takes_the_whole_reply():
    assert score(cloze("3"), Prediction(text=" 3 ")).correct is True
    assert score(cloze("春天"), Prediction(text="spring")) == Verdict("spring", False, 0.0)
    assert score(cloze("春天"), Prediction(text="")) == Verdict("", False, 0.0)


def test_cloze_gold_dui_is_matched_as_a_word():
    assert score(cloze("对"), Prediction(text="对。")) == Verdict("对", True, 0.0)
    assert score(cloze("对"), Prediction(text="正确")).correct is False  # not a true/false item


def test_cloze_gold_trailing_punctuation_is_not_part_of_it():
    assert score(cloze("春天。"), Prediction(text="春天")).correct is True


# --- perplexity ranking -----------------------------------------------------------------------


def test_perplexity_first_candidate_strictly_lowest_is_correct():
    assert score(ppl(), Prediction(candidate_nll=(1.0, 2.0, 3.0))) == Verdict("0", True, pytest.approx(1 / 3))
    v = score(ppl(), Prediction(candidate_nll=(2.0, 1.5, 3.0)))
    assert (v.parsed, v.correct) == ("1", False)


def test_perplexity_is_exp_of_mean_nll_so_order_is_kept():
    nll = (0.70, 0.71, 5.0)
    assert [math.exp(x) for x in nll] == sorted(math.exp(x) for x in nll)
    assert score(ppl(), Prediction(candidate_nll=nll)).correct is True


def test_perplexity_tie_is_wrong():
    assert score(ppl(), Prediction(candidate_nll=(1.0, 1.0, 3.0))).parsed == "0,1"
    assert score(ppl(), Prediction(candidate_nll=(1.0, 1.0, 3.0))).correct is False
    assert score(ppl(), Prediction(candidate_nll=(2.0, 1.0, 1.0))).parsed == "1,2"


def test_perplexity_nan_and_missing():
    assert score(ppl(), Prediction(candidate_nll=(float("nan"), 2.0, 3.0))).correct is False
    assert score(ppl(), Prediction(candidate_nll=(1.0, float("nan"), 3.0))).correct is True
    assert score(ppl(), Prediction(text="right")) == Verdict("", False, pytest.approx(1 / 3))


def test_perplexity_length_mismatch_raises():
    with pytest.raises(ValueError, match="2 candidate NLLs for 3 choices"):
        score(ppl(), Prediction(candidate_nll=(1.0, 2.0)))


# --- multi-select (ethics) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    ["AC", "CA", "A, C", "A和C", "C、A", "(A)(C)", "ACA", "分析如下：B不对\n\n答案：AC", "AC\n\n  \n", "Answer: AC"],
)
def test_multi_select_last_line_set_equals_gold(reply):
    assert score(ethics("AC"), Prediction(text=reply)) == Verdict("AC", True, pytest.approx(1 / 6))


@pytest.mark.parametrize(
    "reply,parsed",
    [
        ("A", "A"), ("ACD", "ACD"), ("", ""), ("none", ""), ("ac", ""),
        ("AC\n因为B是错的", "B"),  # only the last non-empty line counts
        ("ACE", "ACE"), ("A, C, F", "ACF"),  # a letter outside the options makes the set differ
    ],
)
def test_multi_select_other_sets_are_wrong(reply, parsed):
    v = score(ethics("AC"), Prediction(text=reply))
    assert (v.parsed, v.correct) == (parsed, False)


def test_multi_select_reads_every_capital_a_to_f_on_the_line():
    # the study's scan: the C of "Choose" counts; G-Z and lower case are not read
    assert score(ethics("A"), Prediction(text="Choose A")) == Verdict("AC", False, 0.25)
    assert score(ethics("AC"), Prediction(text="Choose A")).correct is True
    assert parse_letter_set("A, G, H, Z and b") == frozenset("A")


def test_multi_select_gold_read_like_a_reply():
    assert parse_letter_set("A, B\nAD") == frozenset("AD")
    assert score(ethics("BD"), Prediction(text="D B")).correct is True


# --- math: extraction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,extracted",
    [
        # the text after the last 答案 marker, then the other rules on it
        ("解：2+3=5，答案是 5", "5"),
        ("答案是：12元。", "12"),
        ("答案\n$\\frac{3}{4}$或$-\\frac{3}{4}$", "\\frac{3}{4}, -\\frac{3}{4}"),
        ("第一个答案是4，最终答案：7", "7"),
        ("答案：1,2,3", "1,2,3"),
        ("答案：\\boxed{6}\n解析：2*3=6", "6"),
        ("答案", None),
        # the last \boxed{...}, after its last "="
        ("so $x = \\boxed{\\frac{1}{\\sqrt{2}}}$.", "\\frac{1}{\\sqrt{2}}"),
        ("first \\boxed{3}, finally \\boxed{ 4 }", "4"),
        ("\\boxed{x = 2+3 = 5}", "5"),
        ("\\boxed{7} so x = 3\n\\boxed{\\frac{1}{2", "3"),  # the last box never closes: the next rules
        # a $...$ span: from the first to the last $ of its line, after its last "="
        ("we get $x=3$", "3"),
        ("$x=3$, then $y=4$", "4"),
        ("$3$ 或 $-3$", "3, -3"),
        ("first $1$\nthen $2$\nthe end", "2"),
        ("$$\\frac{1}{2}$$", "\\frac{1}{2}"),
        # the dataset's special cases
        ("3/4", "3/4"),
        ("x/y", "x/y"),
        ("1：2", "1:2"),
        ("比例是 1:2", None),  # not exactly a ratio, and neither side is a number of its own
        ("1,2,3", "1,2,3"),
        ("1，2，3", "1,2,3"),
        ("-1, 2.5", "-1, 2.5"),
        ("x=3sqrt(2)", "3sqrt(2)"),
        ("so the side is sqrt(5) cm", "sqrt(5)"),
        ("点的坐标是 (1, 2)，对吧", "(1, 2)"),
        ("x 的取值范围是 [0,1]", "[0,1]"),
        ("解集为(0,1]", "(0,1]"),
        # the text after the last "=", to the end of its line or sentence
        ("2 + 3 = 5\nthat is all", "5"),
        ("f(2)=5", "5"),
        ("x = 5. So we are done", "5"),
        ("x =\n5", "5"),
        ("so x = -0.5", "-0.5"),
        ("2+3=", None),
        ("总共 3+4=7 个，剩下 -5", "7"),
        # else the last number
        ("I counted 12 apples and 30 pears", "30"),
        ("温度下降到 -7 度", "-7"),
        ("共有5个苹果，吃了2个，剩下3个", "3"),
        ("10-3", "3"),  # a minus after a digit subtracts
        ("about 1,250.5 in total", "1,250.5"),
        ("half: 3/4 of it", "3/4"),
        ("it is .5 of the whole", "0.5"),
        ("答案是 3！", "3"),  # a closing ！ is punctuation, not a factorial
        ("I do not know.", None),
        # numbers that are part of something else are no answer
        ("答案：5万", None),
        ("答案：2^3", None),
        ("so 2 pi", None),
        ("\\frac{1}{2}", None),
        ("√2", None),
        ("3x", None),
    ],
)
def test_extract_math_answer(text, extracted):
    assert extract_math_answer(text) == extracted


@pytest.mark.parametrize(
    "raw,cleaned",
    [
        ("5 dollars", "5"), ("5 people.", "5"), ("12 square meters", "12"), ("5个", "5"), ("3.5元", "3.5"),
        ("「5」", "5"), ("“5”。", "5"), ("‘5’", "5"), ("3！", "3"), ("3!", "3"), ("\\text{5 apples}", "5"),
        ("3个或4个", "3, 4"), ("3或者4", "3, 4"), (".5", "0.5"), ("-.5", "-0.5"), ("$7$", "7"),
        ("5万", "5万"), ("2 pi", "2 pi"), ("5 x", "5 x"), ("1,000", "1,000"), ("(1,2)", "(1,2)"),
    ],
)
def test_clean_answer(raw, cleaned):
    assert clean_answer(raw) == cleaned


# --- math: equivalence ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred,ref",
    [
        ("5", "5"), ("5.0", "5"), ("\\frac{1}{2}", "0.5"), ("\\dfrac{1}{2}", "1/2"), ("\\tfrac12", "0.5"),
        ("-\\frac{3}{4}", "-0.75"), ("\\frac{-3}{4}", "-\\frac{3}{4}"), ("−5", "-5"), ("1,000", "1000"),
        ("50\\%", "0.5"), ("50%", "50"), ("0.5", "50%"), ("5元", "5"), ("12 cm", "12"), ("5\\text{ apples}", "5"),
        ("90^\\circ", "90"), ("90°", "90"), ("x=3", "3"), ("$x = 3$.", "3"), ("\\left( 1, 2 \\right)", "(1,2)"),
        ("3, 4", "4,3"), ("3或4", "4, 3"), ("x=2, y=3", "y=3,x=2"), ("\\{1,2\\}", "\\{2,1\\}"), ("[1,2)", "[1, 2)"),
        ("\\text{east}", "east"),
    ],
)
@both_equivalences
def test_math_equivalent(pred, ref, equiv):
    assert equiv(pred, ref) is True


@pytest.mark.parametrize(
    "pred,ref",
    [
        ("4", "5"), ("-5", "5"), ("0.33", "\\frac{1}{3}"), ("1000050", "1000000"), ("0.5%", "0.05"),
        ("(2,1)", "(1,2)"), ("(1,2]", "[1,2)"), ("3", "3,4"), ("x=3,y=2", "x=2,y=3"), ("", "5"), (None, "5"),
        ("5", None), ("west", "east"), ("1.5", "5.1"), ("1,000", "1"),
    ],
)
@both_equivalences
def test_math_not_equivalent(pred, ref, equiv):
    assert equiv(pred, ref) is False


def test_normalize_math_examples():
    assert normalize_math(" $\\left(\\dfrac{1}{2}\\right)$. ") == "(\\frac{1}{2})"
    assert normalize_math("3 or 4") == "3,4"
    assert normalize_math("\\!5\\,") == "5"


@needs_sympy
@pytest.mark.parametrize(
    "pred,ref",
    [
        ("2\\sqrt{3}", "\\sqrt{12}"), ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"), ("(x+1)^2", "x^2+2x+1"),
        ("2\\pi", "\\pi \\cdot 2"), ("\\sqrt[3]{8}", "2"), ("\\frac{x}{2}", "0.5x"),
    ],
)
@both_equivalences
def test_math_equivalent_symbolic(pred, ref, equiv):
    assert equiv(pred, ref) is True


@needs_sympy
@pytest.mark.parametrize(
    "pred,ref",
    [
        ("x^2+1", "x^2-1"), ("\\sqrt{3}", "\\sqrt{2}"), ("3.14", "\\pi"), ("__import__('os').getcwd()", "1"),
        ("x.func", "x"), ("pi.n(5)", "3.1416"),
    ],
)
@both_equivalences
def test_math_not_equivalent_symbolic(pred, ref, equiv):
    assert equiv(pred, ref) is False


# Replies whose reading must never give the value on the right: each was, or could be, a wrong value
# accepted (a factorial read into an exclamation, a coefficient or magnitude dropped, a term taken
# out of a larger expression, one root of a list).
@pytest.mark.parametrize(
    "reply,wrong",
    [
        ("答案是 3！", "6"), ("答案是 3!", "6"), ("\\boxed{4!}", "24"), ("so 2 pi", "2"), ("答案：5万", "5"),
        ("x=3sqrt(2)", "sqrt(2)"), ("f(2)=5", "2"), ("答案：2^3", "3"), ("\\frac{1}{2}", "2"), ("答案：3或4", "3"),
        ("答案：1,2,3", "3"), ("10-3", "-3"), ("The answer is 3/4", "4"), ("答案是 .5", "5"), ("about 1,000", "1"),
        ("the result is 1.5", "5.1"), ("√2", "2"), ("比例是 1:2", "2"),
    ],
)
def test_math_never_accepts_a_wrong_value(reply, wrong):
    assert score(math_rec(wrong), Prediction(text=reply)).correct is False


@pytest.mark.parametrize(
    "reply,reference",
    [
        ("答案是 3！", "3"), ("答案：“5”", "5"), ("There are 5 people.", "5"), ("答案：5个", "5"), ("it is .5", "0.5"),
        ("答案：1，2，3", "3,2,1"), ("答案\n$\\frac{3}{4}$或$-\\frac{3}{4}$", "\\frac{3}{4}, -\\frac{3}{4}"),
        ("x = 5.0", "5"), ("total: 1,000 dollars", "1000"), ("\\boxed{5!}", "5"), ("\\boxed{\\text{5 dollars}}", "5"), ("答案是 3/4", "0.75"),
    ],
)
def test_math_accepts_the_right_value_however_written(reply, reference):
    assert score(math_rec(reference), Prediction(text=reply)).correct is True


@needs_sympy
def test_math_symbolic_rejects_explosive_powers_quickly():
    start = time.perf_counter()
    assert math_equivalent("9^(99*99*99*99)", "1") is False
    assert math_equivalent("2^2^2^2^2^2", "1") is False
    assert time.perf_counter() - start < 5.0


def test_math_without_sympy_still_scores_numbers(monkeypatch):
    monkeypatch.setattr(math_answer, "HAVE_SYMPY", False)
    monkeypatch.setattr(math_verify_worker, "HAVE_MATH_VERIFY", False)  # math_verify needs sympy
    assert math_equivalent("\\frac{1}{2}", "0.5") is True
    assert math_equivalent("2\\sqrt{3}", "\\sqrt{12}") is False  # needs sympy
    assert math_equivalent("2\\sqrt{3}", "2 \\sqrt{3}") is True  # string equality still works


def test_math_score_end_to_end():
    r = math_rec("\\frac{1}{2}")
    text = "We halve 1. So the result is $\\frac{1}{2}$, i.e. \\boxed{0.5}"
    assert score(r, Prediction(text=text)) == Verdict("0.5", True, 0.0)
    assert score(r, Prediction(text="The answer is 2.")) == Verdict("2", False, 0.0)
    assert score(r, Prediction(text="so x = -0.5")) == Verdict("-0.5", False, 0.0)
    assert score(r, Prediction(text="I do not know.")) == Verdict("", False, 0.0)


def test_math_reference_falls_back_to_the_gold_solution():
    r = math_rec(None, gold="2+3 = 5, so \\boxed{5}")
    assert score(r, Prediction(text="The answer is 5")).correct is True
    assert score(r, Prediction(text="The answer is 6")).correct is False


def test_math_reference_is_cleaned_like_a_reply():
    assert score(math_rec("5个"), Prediction(text="答案：5")).correct is True


# --- math: math_verify as the primary verdict --------------------------------------------------

# (model reply, reference, verdict of the hand rules, verdict of math_verify): every row is a real
# difference, found by running both on the same extracted answer.
MATH_VERIFY_DIFFERENCES = [
    # math_verify knows more mathematics
    ("The answer is $\\pm 3$", "3,-3", False, True),  # ± expands to both roots
    ("We need $x \\in [1,2)$", "[1,2)", False, True),  # membership in the interval
    ("\\boxed{\\log_2 8}", "3", False, True),  # evaluates the logarithm
    ("\\boxed{2\\frac{1}{2}}", "\\frac{5}{2}", False, True),  # a mixed number
    ("\\boxed{\\sin^2 x + \\cos^2 x}", "1", False, True),  # a trigonometric identity
    ("\\boxed{(-\\infty, 0)}", "x<0", False, True),  # an interval against an inequality
    # math_verify is stricter on rounding: floats must agree to 6 decimals (the rules: rel. 1e-4)
    ("\\boxed{0.33333}", "\\frac{1}{3}", True, False),
    ("So the total is \\boxed{6.0001}", "6", True, False),
    # ... reads notation differently
    ("\\boxed{1e3}", "1000", True, False),  # "e" is Euler's number, not an exponent marker
    # ... and is more lenient on brackets: a bare list matches (1,2), which it may read as an interval
    ("\\boxed{1,2}", "(1,2)", False, True),
]


@needs_math_verify
@pytest.mark.parametrize("reply,reference,rules,verify", MATH_VERIFY_DIFFERENCES)
def test_math_verify_differs_from_the_rules(reply, reference, rules, verify):
    extracted = extract_math_answer(reply)
    assert math_equivalent_rules(extracted, reference) is rules
    assert math_verify_equivalent(extracted, reference) is verify
    assert score(math_rec(reference), Prediction(text=reply)).correct is verify  # math_verify decides


@pytest.mark.parametrize("reply,reference,rules,verify", MATH_VERIFY_DIFFERENCES)
def test_without_math_verify_the_rules_decide(reply, reference, rules, verify, monkeypatch):
    monkeypatch.setattr(math_verify_worker, "HAVE_MATH_VERIFY", False)
    assert math_verify_equivalent(extract_math_answer(reply), reference) is None
    assert score(math_rec(reference), Prediction(text=reply)).correct is rules


@needs_math_verify
def test_math_verify_has_no_verdict_on_unsafe_or_unparseable_input():
    # power towers and huge powers never reach sympy (a signal cannot stop one C-level power)
    assert math_verify_equivalent("9^(99*99*99*99)", "1") is None
    assert math_verify_equivalent("2^{2^{2^{2^{2}}}}", "1") is None
    assert math_verify_equivalent("2**100000", "1") is None
    assert math_verify_equivalent("__import__('os').getcwd()", "1") is None  # parsed only as a raw string
    assert math_verify_equivalent("", "5") is None
    assert math_verify_equivalent("3或-3", "-3, 3") is True
    assert math_verify_equivalent("1 000", "1000") is True


@needs_math_verify
def test_math_verify_off_the_main_thread_uses_a_killable_worker():
    """Ray Data runs actor UDFs in a thread pool, where signal.alarm cannot time anything out."""
    pairs = [("2\\sqrt{3}", "\\sqrt{12}"), ("\\pm 3", "3,-3"), ("0.33333", "\\frac{1}{3}"), ("x", "y")]
    in_main = [math_verify_equivalent(p, r) for p, r in pairs]
    out: list = []
    t = threading.Thread(target=lambda: out.extend(math_verify_equivalent(p, r) for p, r in pairs))
    t.start()
    t.join(60)
    assert out == in_main == [True, True, False, False]
    assert math_verify_worker._worker is not None and math_verify_worker._worker.proc is not None


def test_math_verify_worker_overrun_is_killed_and_gives_no_verdict():
    hang = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"]
    worker = MathVerifyWorker(timeout_s=0.5, command=hang)
    start = time.perf_counter()
    assert worker("1", "1") is None
    assert time.perf_counter() - start < 10
    assert worker.proc is None  # killed; the next call starts a fresh one
    broken = MathVerifyWorker(timeout_s=0.5, command=[sys.executable, "-c", "pass"])
    assert broken("1", "1") is None and broken.failures == 1


def test_math_verify_worker_command_leaves_the_environment_alone():
    command = math_verify_worker._serve_command()
    assert command[0] == sys.executable and "growthpace.evaluators.math_verify_worker" in command[-1]


# --- the module boundaries ----------------------------------------------------------------------


@pytest.mark.parametrize("module", [scoring, math_answer])
def test_pure_modules_start_no_process_and_touch_no_environment(module):
    source = Path(module.__file__).read_text(encoding="utf-8")
    for forbidden in ("subprocess", "PYTHONPATH", "os.environ", "import os", "multiprocessing"):
        assert forbidden not in source, f"{module.__name__} mentions {forbidden}"


def test_only_the_worker_starts_processes_and_it_scores_nothing():
    source = Path(math_verify_worker.__file__).read_text(encoding="utf-8")
    assert "subprocess.Popen" in source and "PYTHONPATH" not in source
    assert "import scoring" not in source and "from growthpace.evaluators.scoring" not in source


# --- replies of untrained and half-trained models: nothing slow, nothing crashes ---------------

LOOPING = [
    "",
    " \n\t ",
    "A" * 10_000,
    "A B C D " * 1_250,
    "答案答案答案" * 1_700,
    "对错" * 5_000,
    "=" * 10_000,
    "$" * 10_000,
    "(" * 10_000,
    "(1," * 3_400,
    "\\boxed{" * 1_500,
    "{" * 10_000 + "}",
    "sqrt(" * 2_000,
    "1,2,3," * 1_700,
    "1" * 10_000,
    "5 dollars " * 1_000,
    "the the the " * 850,
    "春天春天，" * 2_000,
    "Let me think. " * 700 + "The answer is",
    "我我我我我" * 2_000 + "\n" + "ABCDEF" * 100,
    ".5" * 5_000,
    "x^" * 5_000,
    "!" * 10_000,
    "\n" * 10_000,
    "a" * 9_999 + "!",
]
RAMBLING = [
    "嗯，这个问题我觉得可能是B或者C，也可能是12，不对，应该是7个吧？F也行。",
    "The the answer answer is is 3 3 3 = = 4 4 (1,2 [ ] $ x",
    "<unk><unk> A. 春天 B. 秋天 \\boxed{ 答案",
    "1. 首先 2. 其次 3. 最后，所以答案是：",
    "Question: what? Answer: A) B) C) D) E) F) G) H)",
]
ALL_KINDS = [mc("B"), mc("E", n=8), tf("对"), cloze("春天"), ppl(), math_rec("7"), ethics("BD"),
             mc("A", type_="understanding", n=3)]


@pytest.mark.parametrize("reply", LOOPING + RAMBLING, ids=lambda s: f"{len(s)}:{s[:12]!r}")
def test_degenerate_replies_score_quickly_to_a_verdict(reply):
    for r in ALL_KINDS:
        p = Prediction(text=reply, letter_logprobs=lp("A", ALL_OPTION_LETTERS), candidate_nll=(1.0, 2.0, 3.0))
        start = time.perf_counter()
        v = score(r, p)
        took = time.perf_counter() - start
        assert isinstance(v, Verdict) and isinstance(v.correct, bool) and isinstance(v.parsed, str)
        assert took < 3.0, f"{question_kind(r)} took {took:.1f}s on a {len(reply)}-char reply"  # no blow-up


def test_degenerate_replies_are_not_counted_correct_by_accident():
    assert score(math_rec("7"), Prediction(text="!" * 10_000)).correct is False
    assert score(math_rec("7"), Prediction(text="=" * 10_000)).correct is False
    assert score(tf("对"), Prediction(text="对错" * 5_000)).correct is False
    assert score(ethics("BD"), Prediction(text="ABCDEF" * 100)).correct is False
    assert score(cloze("春天"), Prediction(text="春天春天，" * 2_000)).correct is False


# --- the deliberate differences from the study's code: one table, one list -----------------------

DOCS = ROOT / "docs" / "scoring.md"


def _docs_rows() -> list[tuple[str, ...]]:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Deliberate differences from the study's code", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [tuple(c.strip() for c in row.strip().strip("|").split(" | ")) for row in rows]


def _doc_cell(s: str) -> str:
    return s.replace("|", "\\|")


def test_docs_table_lists_exactly_the_differences():
    expected = [(f"`{d.key}`", d.kind, _doc_cell(d.study), _doc_cell(d.here)) for d in DIFFERENCES]
    assert _docs_rows() == expected
    assert len({d.key for d in DIFFERENCES}) == len(DIFFERENCES)
    assert {d.kind for d in DIFFERENCES} <= set(KINDS) | {"every"}


# One case per difference: (record, prediction, the study's verdict). The study's verdict follows from
# its code as the table describes it; the test asserts that this scorer's verdict is the other one.
UNDERSTANDING_3 = mc("A", n=3, type_="understanding")
DIFFERENCE_CASES = {
    "choice-item-options": (mc("B", n=3), Prediction(text="xx", letter_logprobs={"A": -3, "B": -1, "C": -2, "D": -0.1}), False),
    "cloze-punctuation": (cloze("春天"), Prediction(text="春天。"), False),
    "perplexity-tie": (ppl(), Prediction(candidate_nll=(1.0, 1.0, 3.0)), True),
    "math-equivalence": (math_rec("5"), Prediction(text="\\boxed{5.0}"), False),
    "math-last-number": (math_rec("0.5"), Prediction(text="答案是 .5"), False),
    "math-equals-line": (math_rec("5"), Prediction(text="2+3=5\n所以有五个"), False),
    "math-marker-tail": (math_rec("1,2,3"), Prediction(text="答案：1,2,3"), False),
    "math-tuple": (math_rec("5"), Prediction(text="f(2)=5"), False),
    "math-sqrt": (math_rec("sqrt(2)"), Prediction(text="x=3sqrt(2)"), True),
    "math-cleanup": (math_rec("5"), Prediction(text="\\boxed{“5”}"), False),
}


def test_every_difference_has_a_case():
    checked_elsewhere = {"choice-first-position", "choice-baseline", "generation-limit"}
    assert set(DIFFERENCE_CASES) | checked_elsewhere == {d.key for d in DIFFERENCES}


@pytest.mark.parametrize("key", sorted(DIFFERENCE_CASES))
def test_difference_really_differs(key):
    record, prediction, study = DIFFERENCE_CASES[key]
    assert score(record, prediction).correct is (not study)


def test_difference_generation_limit():
    study_limit = 1024
    for r in ALL_KINDS:
        if needs(r) == "generate":
            assert 0 < max_new_tokens(r) < study_limit
    assert f"choice {max_new_tokens(mc('A'))}," in next(d.here for d in DIFFERENCES if d.key == "generation-limit")
    assert f"math {max_new_tokens(math_rec('5'))};" in next(d.here for d in DIFFERENCES if d.key == "generation-limit")


def test_difference_choice_baseline():
    assert baseline(UNDERSTANDING_3) == 1 / 3 != 0.33
    assert baseline(mc("A", n=5, type_="history")) == 1 / 5 != 0.25


def test_difference_choice_first_position_is_the_backends_contract():
    # the scorer takes letter_logprobs as given; the backends read them at the first answer position,
    # and their tests check it against a forward pass
    assert "FIRST answer position" in Path(scoring.__file__).read_text(encoding="utf-8")
    for test_file, name in [
        ("tests/test_models_backend.py", "def test_backend_generate_first_step_logprobs"),
        ("tests/test_llm_processor.py", "def test_reduce_output_reads_first_step"),
    ]:
        assert name in (ROOT / test_file).read_text(encoding="utf-8"), f"{test_file} lost {name}"


# --- registry and version ---------------------------------------------------------------------


def test_registry_covers_every_kind():
    assert set(REGISTRY) == set(KINDS) and len(KINDS) == 6


def test_needs_and_max_new_tokens_per_kind():
    records = {"choice": mc("A"), "true_false": tf("对"), "cloze": cloze("春天"), "perplexity": ppl(),
               "math": math_rec("5"), "multi_select": ethics("AB")}
    assert {k: needs(r) for k, r in records.items()} == {
        "choice": "generate", "true_false": "generate", "cloze": "generate", "perplexity": "rank",
        "math": "generate", "multi_select": "generate",
    }
    assert {k: max_new_tokens(r) for k, r in records.items()} == {
        "choice": 4, "true_false": 8, "cloze": 8, "perplexity": 0, "math": 512, "multi_select": 8,
    }


def test_verdict_expected_equals_expected_score():
    for r, p in [
        (mc("A", n=3), Prediction(text="A")),
        (tf("错"), Prediction(text="错")),
        (ethics("ABD"), Prediction(text="ABD")),
        (ppl(), Prediction(candidate_nll=(0.5, 1.0, 2.0))),
    ]:
        v = score(r, p)
        assert v.correct is True and v.expected == baseline(r)


def test_scorer_version():
    assert SCORER_VERSION.split("+")[0] == "3"
    assert ("+math-verify-" in SCORER_VERSION) is HAVE_MATH_VERIFY
    assert SCORER_VERSION.endswith("+sympy") is HAVE_SYMPY
    assert re.fullmatch(r"\d+(\+math-verify-[\w.]+)?(\+sympy)?", SCORER_VERSION)


def test_prediction_and_verdict_are_frozen():
    with pytest.raises(AttributeError):
        Prediction(text="A").text = "B"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Verdict("A", True, 0.25).correct = False  # type: ignore[misc]
