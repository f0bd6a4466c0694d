"""Scoring of one evaluation item: the question kinds, pure logic (no model, no process, no torch).

In the style of lm-evaluation-harness, an item's *kind* decides everything about it: what the model
must produce (``needs``: generated text, or candidate log-likelihoods), how many tokens it may
generate, how the reply is parsed, when it is correct, and the item's random-baseline expected score.
``REGISTRY`` maps each kind to a ``KindSpec`` holding those rules; ``score`` dispatches through it.
The rules are the study's, as the DoIT study facts (shared/STUDY_FACTS.md, "Scoring rules in detail") state them;
every deliberate difference from the study's own code is one entry of ``DIFFERENCES`` (the table in
docs/scoring.md is checked against it by tests/test_scoring.py).

Kinds (``question_kind``: from the item's ``type`` and its gold answer, never the gold alone)::

    choice        multiple choice, up to 8 options A-H (biology, reasoning, understanding, OOD
                  subjects; history and chinese items whose gold is a letter)
    true_false    history items whose gold is a true/false word
    cloze         chinese items whose gold is not a letter (so gold 对 is cloze): exact match
    perplexity    question_format 1: rank the candidates (code, creative_writing, role_play)
    math          chain-of-thought math: final answer (evaluators/math_answer.py) checked for
                  equivalence (math_verify through evaluators/math_verify_worker.py, else the rules)
    multi_select  ethics: the set of letters on the reply's last line must equal the gold set
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from growthpace.evaluators import math_answer, math_verify_worker
from growthpace.evaluators.math_answer import clean_answer, extract_math_answer, math_equivalent_rules
from growthpace.evaluators.math_verify_worker import math_verify_equivalent
from growthpace.platform.core.items import (FALSE_WORDS, GENERATION_LIMITS, GOLD_LETTERS, KINDS, TRUE_WORDS, Record, gold_truth, n_options,
                                            option_letters, parse_letter_set, question_kind)

# Bump the leading number whenever a rule changes: results are cached by this string, and
# `growthpace rescore` re-applies the scorers to every stored prediction whose version differs.
SCORER_VERSION = (
    "3"
    + (f"+math-verify-{math_verify_worker.MATH_VERIFY_VERSION}" if math_verify_worker.HAVE_MATH_VERIFY else "")
    + ("+sympy" if math_answer.HAVE_SYMPY else "")
)



@dataclass(frozen=True)
class Prediction:
    """What the model produced for one item."""

    text: str = ""  # greedy reply (stopped at <eot>), chat tokens already stripped
    letter_logprobs: dict[str, float] | None = None  # log-prob of each option letter, FIRST answer position
    candidate_nll: tuple[float, ...] | None = None  # mean token NLL of each candidate (+ its <eot>)


@dataclass(frozen=True)
class Verdict:
    parsed: str  # the answer as parsed ("" when nothing could be parsed)
    correct: bool
    expected: float  # the item's random-baseline expected score


# ---------------------------------------------------------------------------------------------
# Deliberate differences from the study's own evaluation code: written once, here
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    key: str
    kind: str  # a question kind, or "every"
    study: str  # what the study's code does
    here: str  # what this scorer does, and why


DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "generation-limit", "every",
        "generates every reply up to 1,024 tokens (greedy, to the end-of-turn token)",
        "generates up to the kind's `max_new_tokens` (choice 4, true/false, cloze, multi-select 8, math 512; "
        "`evaluation.max_new_tokens` may lower it, and it is at most half of `training.max_length` so the prompt "
        "keeps the other half): a rule that reads the whole reply sees only that much",
    ),
    Difference(
        "choice-first-position", "choice",
        "reads the option letters' logits at the LAST generated step",
        "reads them at the FIRST answer position, where the answer letter is written (STUDY_FACTS: the intended one)",
    ),
    Difference(
        "choice-item-options", "choice",
        "takes the argmax over A-D for every item, so a 3-option item can get D",
        "takes it over the item's own options (up to 8, A-H)",
    ),
    Difference(
        "choice-baseline", "choice",
        "expects 0.25 for a choice item, 0.33 for a dialogue item without a D option",
        "expects exactly 1/n for the item's n options",
    ),
    Difference(
        "cloze-punctuation", "cloze",
        "keeps the punctuation right after the first CJK run (its regex ends in `[^\\w\\s]*`), so `春天。` is not `春天`",
        "trims it, as STUDY_FACTS states the rule",
    ),
    Difference(
        "perplexity-tie", "perplexity",
        "counts a tie for the lowest perplexity as correct",
        "counts it wrong: the first candidate must be strictly lowest",
    ),
    Difference(
        "math-equivalence", "math",
        "compares normalised strings (5.0 is not 5; 1.5 equals 5.1 by their digit sets)",
        "decides true equivalence by math_verify, the hand rules where it has no verdict (5.0 = 5, 1,000 = 1000); never a wrong value",
    ),
    Difference(
        "math-last-number", "math",
        "reads the last digit run: `.5` is 5, `3/4` is 4, `10-3` is -3, `1,000` is 000, `2^3` is 3, `5个` is no number",
        "reads one number: `.5` is 0.5, a/b, thousands groups and a % belong to it, a minus after a digit subtracts, a CJK unit may follow; none inside `2^3`, `√2`, `2 pi`, `{2}`, `1:2`, `5万`",
    ),
    Difference(
        "math-equals-line", "math",
        "keeps everything after the last `=` (its line-break test looks for a literal backslash-n)",
        "ends the value at its line or sentence (a newline, 。, ；, ， or a period before a space)",
    ),
    Difference(
        "math-marker-tail", "math",
        "keeps what joins 答案 to the answer, so `答案：1,2,3` is not exactly a list (and gives 3)",
        "drops the joining 是/为/：/: and spaces first",
    ),
    Difference(
        "math-tuple", "math",
        "takes the last bracket of any content, so `f(2)=5` gives `(2)`; misses half-open `(0,1]`",
        "takes the last tuple or interval (a comma inside; open or closed ends)",
    ),
    Difference(
        "math-sqrt", "math",
        "takes the bare last sqrt(...), so `x=3sqrt(2)` gives sqrt(2)",
        "takes the whole term around it (3sqrt(2))",
    ),
    Difference(
        "math-cleanup", "math",
        "compares the extracted string as is: `\\boxed{5!}`, `“5”`, `5 dollars` do not equal 5",
        "drops closing punctuation (! and ！ too: not a factorial), wrapping quotes and unit words after a number",
    ),
)


# ---------------------------------------------------------------------------------------------
# Question kind and option letters
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# choice
# ---------------------------------------------------------------------------------------------


def argmax_letter(logprobs: dict[str, float], letters: str) -> str:
    """The letter of ``letters`` with the highest log-prob (ties: the first in ``letters``; NaN and
    missing letters are skipped); "" when none has one."""
    best, best_lp = "", -math.inf
    for letter in letters:
        lp = logprobs.get(letter)
        if lp is None or math.isnan(lp):
            continue
        if best == "" or lp > best_lp:
            best, best_lp = letter, lp
    return best


_argmax_letter = argmax_letter  # the name benchmarks.py imported first


def parse_choice(record: Record, prediction: Prediction) -> str:
    """A one-character reply (after stripping) is the answer as it stands, whatever the character;
    any other reply is the option letter with the highest log-prob at the first answer position."""
    reply = prediction.text.strip()
    if len(reply) == 1:
        return reply
    return argmax_letter(prediction.letter_logprobs or {}, option_letters(record))


def _score_choice(record: Record, prediction: Prediction) -> tuple[str, bool]:
    parsed = parse_choice(record, prediction)
    return parsed, parsed != "" and parsed == record.gold.strip()


def _expected_choice(record: Record) -> float:
    return 1.0 / n_options(record)


# ---------------------------------------------------------------------------------------------
# true_false
# ---------------------------------------------------------------------------------------------


def parse_true_false(text: str) -> bool | None:
    """True when the reply holds a true word anywhere (正确/对/T/√/V) and no false word
    (错误/错/F/×/X), False for the reverse; None (unparseable) when it holds both or neither."""
    has_true = any(w in text for w in TRUE_WORDS)
    has_false = any(w in text for w in FALSE_WORDS)
    return None if has_true == has_false else has_true


def _tf_str(value: bool | None) -> str:
    return "" if value is None else ("true" if value else "false")


def _score_true_false(record: Record, prediction: Prediction) -> tuple[str, bool]:
    parsed = parse_true_false(prediction.text)
    return _tf_str(parsed), parsed is not None and parsed == gold_truth(record.gold)


# ---------------------------------------------------------------------------------------------
# cloze
# ---------------------------------------------------------------------------------------------

_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
_TRAILING_PUNCTUATION = re.compile(r"[^\w\s]+$")


def parse_cloze(text: str) -> str:
    """The first run of CJK characters in the reply (what follows it, punctuation included, is not
    the answer); a reply without one is taken whole, stripped."""
    m = _CJK_RUN.search(text)
    return m.group(0) if m else text.strip()


def _score_cloze(record: Record, prediction: Prediction) -> tuple[str, bool]:
    parsed = parse_cloze(prediction.text)
    gold = _TRAILING_PUNCTUATION.sub("", record.gold.strip())
    return parsed, parsed != "" and parsed == gold


# ---------------------------------------------------------------------------------------------
# perplexity
# ---------------------------------------------------------------------------------------------


def _score_perplexity(record: Record, prediction: Prediction) -> tuple[str, bool]:
    """Perplexity is exp(mean NLL), so the order of the mean NLLs is the order of perplexities.
    ``parsed`` lists the candidates with the lowest one ("0,1" for a tie)."""
    nll = prediction.candidate_nll
    if nll is None or len(nll) == 0:
        return "", False
    if record.choices is not None and len(nll) != len(record.choices):
        raise ValueError(f"{record.key}: {len(nll)} candidate NLLs for {len(record.choices)} choices")
    values = [math.inf if math.isnan(v) else v for v in nll]
    low = min(values)
    winners = [i for i, v in enumerate(values) if v == low]
    return ",".join(str(i) for i in winners), winners == [0] and not math.isinf(low)


def _expected_perplexity(record: Record) -> float:
    return 1.0 / (len(record.choices) if record.choices else 3)


# ---------------------------------------------------------------------------------------------
# multi_select
# ---------------------------------------------------------------------------------------------

def _score_multi_select(record: Record, prediction: Prediction) -> tuple[str, bool]:
    parsed = parse_letter_set(prediction.text)
    gold = parse_letter_set(record.gold)
    return "".join(sorted(parsed)), bool(gold) and parsed == gold


def _expected_multi_select(record: Record) -> float:
    k = len(parse_letter_set(record.gold))
    return 1.0 / math.comb(len(GOLD_LETTERS), k) if 1 <= k <= len(GOLD_LETTERS) else 0.0


# ---------------------------------------------------------------------------------------------
# math
# ---------------------------------------------------------------------------------------------


def math_equivalent(prediction: str | None, reference: str | None) -> bool:
    """Is the extracted answer equivalent to the reference? math_verify decides; where it has no
    verdict (not installed, an error, a timeout, an unsafe or unparseable side) the rules do."""
    if prediction is None or reference is None:
        return False
    verdict = math_verify_equivalent(prediction, reference)
    return math_equivalent_rules(prediction, reference) if verdict is None else verdict


def math_reference(record: Record) -> str | None:
    """``record.answer`` (cleaned like a reply's answer); when absent, the gold solution's answer."""
    return clean_answer(record.answer) if record.answer is not None else extract_math_answer(record.gold)


def _score_math(record: Record, prediction: Prediction) -> tuple[str, bool]:
    extracted = extract_math_answer(prediction.text)
    return extracted or "", math_equivalent(extracted, math_reference(record))


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindSpec:
    scorer: Callable[[Record, Prediction], tuple[str, bool]]  # -> (parsed, correct)
    expected: Callable[[Record], float]
    needs: str  # the output type: "generate" (text, + letter_logprobs for choice) or "rank" (candidate_nll)
    max_new_tokens: int  # generation limit; 0 when nothing is generated


def _zero(record: Record) -> float:
    return 0.0


REGISTRY: dict[str, KindSpec] = {
    # one letter then <eot>; a longer reply is decided by the first position's log-probs
    "choice": KindSpec(_score_choice, _expected_choice, "generate", GENERATION_LIMITS["choice"]),
    # 正确/错误 can take several tokens in a byte-fallback tokenizer
    "true_false": KindSpec(_score_true_false, lambda r: 0.5, "generate", GENERATION_LIMITS["true_false"]),
    "cloze": KindSpec(_score_cloze, _zero, "generate", GENERATION_LIMITS["cloze"]),
    "perplexity": KindSpec(_score_perplexity, _expected_perplexity, "rank", GENERATION_LIMITS["perplexity"]),
    # chain of thought: long enough for a worked solution; generation stops at <eot>
    "math": KindSpec(_score_math, _zero, "generate", GENERATION_LIMITS["math"]),
    # up to "A, B, C, D"
    "multi_select": KindSpec(_score_multi_select, _expected_multi_select, "generate", GENERATION_LIMITS["multi_select"]),
}
assert set(REGISTRY) == set(KINDS)


def _spec(record: Record) -> KindSpec:
    return REGISTRY[question_kind(record)]


def needs(record: Record) -> str:
    return _spec(record).needs


def max_new_tokens(record: Record) -> int:
    return _spec(record).max_new_tokens


def expected(record: Record) -> float:
    """The item's random-baseline expected score: its ability's declared baseline, else its kind's rule."""
    return _spec(record).expected(record) if record.baseline is None else record.baseline


def score(record: Record, prediction: Prediction) -> Verdict:
    parsed, correct = _spec(record).scorer(record, prediction)
    return Verdict(parsed=parsed, correct=bool(correct), expected=expected(record))
