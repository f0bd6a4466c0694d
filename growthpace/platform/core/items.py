"""The evaluation item and its question kind: the vocabulary every stage shares. Pure, no files.

``Record`` is one instruction as the study's schema has it (chat turns whose last assistant turn is
the gold answer). ``question_kind`` decides from its type and gold which kind of question it is;
the option-letter rules (which letters an item has, which lines are its options, which letters a
reply names) are written here once, for the scorers, the request planner and the formulations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

class DataError(ValueError):
    """Bad data: the message names file:line and field."""


@dataclass(frozen=True)
class Record:
    """One instruction: chat turns whose last assistant turn is the gold answer."""

    type: str
    idx: str
    messages: tuple[tuple[str, str], ...]
    question_format: int
    choices: tuple[str, ...] | None = None
    answer: str | None = None
    # A declared ability's scoring (spec `abilities:`); None: the DoIT preset's rule (question_kind)
    kind: str | None = None
    baseline: float | None = None

    @property
    def gold(self) -> str:
        return self.messages[-1][1]

    @property
    def prompt(self) -> tuple[tuple[str, str], ...]:
        """Every turn before the gold answer (few-shot examples are earlier turns)."""
        return self.messages[:-1]

    @property
    def key(self) -> str:
        return f"{self.type}/{self.idx}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "messages": [{"role": r, "content": c} for r, c in self.messages],
            "type": self.type,
            "idx": self.idx,
            "question_format": self.question_format,
        }
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.answer is not None:
            out["answer"] = self.answer
        if self.kind is not None:  # absent for DoIT's items: their eval set hashes stay as they were
            out["kind"] = self.kind
        if self.baseline is not None:
            out["baseline"] = self.baseline
        return out


KINDS: tuple[str, ...] = ("choice", "true_false", "cloze", "perplexity", "math", "multi_select")
# Each kind's reply limit in tokens (0: ranked, nothing generated); evaluators/scoring.py says why each.
GENERATION_LIMITS: dict[str, int] = {"choice": 4, "true_false": 8, "cloze": 8, "perplexity": 0, "math": 512,
                                     "multi_select": 8}


def generation_limit(kind: str, limits: dict[str, int], max_length: int) -> int:
    """A reply's token limit: the kind's, lowered by evaluation.max_new_tokens (``limits``), and at most
    half of training.max_length, so the prompt keeps at least the other half. A limit at or above
    max_length would cut the prompt to nothing (math's 512 under max_length 256)."""
    return min(GENERATION_LIMITS[kind], limits.get(kind, GENERATION_LIMITS[kind]), max_length // 2)


def capped_limits(limits: dict[str, int], max_length: int) -> dict[str, tuple[int, int]]:
    """kind -> (the limit asked, the limit used) for each kind that max_length lowers: `plan` and
    `evaluate` print it."""
    out = {}
    for kind, default in GENERATION_LIMITS.items():
        asked = min(default, limits.get(kind, default))
        used = generation_limit(kind, limits, max_length)
        if used < asked:
            out[kind] = (asked, used)
    return out


def effective_limits(limits: dict[str, int], max_length: int) -> dict[str, int]:
    """``limits`` with each kind that max_length lowers at its lowered limit: what a stored result's key
    hashes (evaluators/results.py eval_set_hash), so a study the cap leaves alone keeps its keys."""
    return {**limits, **{kind: used for kind, (_, used) in capped_limits(limits, max_length).items()}}


def describe_capped(limits: dict[str, int], max_length: int) -> str | None:
    """The line `plan` and `evaluate` print when training.max_length lowers a reply limit."""
    capped = capped_limits(limits, max_length)
    if not capped:
        return None
    what = ", ".join(f"{kind} {used} (not {asked})" for kind, (asked, used) in capped.items())
    return (f"note: replies capped at {what} tokens: training.max_length {max_length} keeps at least half of it "
            "for the prompt; raise it, or lower evaluation.max_new_tokens, to silence this")

ALL_OPTION_LETTERS = "ABCDEFGH"
# The one alphabet of option letters; every other letter rule is a prefix of it.
GOLD_LETTERS = ALL_OPTION_LETTERS[:4]  # a gold answer that is one of these makes a history/chinese item a choice item
SELECT_LETTERS = ALL_OPTION_LETTERS[:6]  # the study reads A-F on a multi-select reply's last line
DEFAULT_N_OPTIONS = 4


TRUE_WORDS = ("正确", "对", "T", "√", "V")
FALSE_WORDS = ("错误", "错", "F", "×", "X")


def gold_truth(gold: str) -> bool | None:
    g = gold.strip()
    return True if g in TRUE_WORDS else False if g in FALSE_WORDS else None


def question_kind(record: Record) -> str:
    """The kind of an item: the one its ability declares (or the item itself, `per_item`), else the DoIT
    preset's rule, from its type and its gold answer (STUDY_FACTS: never the gold alone).

    A history item whose gold is neither a letter nor a true/false word is a data error."""
    if record.kind is not None:
        return record.kind
    if record.question_format == 1:
        return "perplexity"
    if record.type == "math":
        return "math"
    if record.type == "ethics":
        return "multi_select"
    letter_gold = record.gold.strip() in GOLD_LETTERS and len(record.gold.strip()) == 1
    if record.type == "chinese":
        return "choice" if letter_gold else "cloze"
    if record.type == "history" and not letter_gold:
        if gold_truth(record.gold) is None:
            raise ValueError(
                f"{record.key}: field 'messages': a history item's gold must be a letter A-D or one of "
                f"{'/'.join(TRUE_WORDS + FALSE_WORDS)}, got {record.gold!r}"
            )
        return "true_false"
    return "choice"


# An option line starts (after indentation) with "A. ", "A.", "A．", "A、", "A)", "A）", "(A)" or "（A）".
# Colons are deliberately not option markers: dialogues use "A：" as speaker labels.
_LETTER = f"[{ALL_OPTION_LETTERS}]"
OPTION_LINE = re.compile(rf"^[ \t\u3000]*(?:[(（][ \t]*({_LETTER})[ \t]*[)）]|({_LETTER})[ \t]*[.．、)）])", re.M)


def last_user_turn(messages: tuple[tuple[str, str], ...]) -> str:
    """The text of the last user turn of a conversation ("" when it has none): where an item's
    question and its option lines stand."""
    return next((content for role, content in reversed(messages) if role == "user"), "")


def n_options(record: Record) -> int:
    """Number of options of a choice item: one per entry of ``choices`` where a format-0 item lists
    its option texts there (the benchmark loaders), else the longest run A, B, C, ... of option lines
    in the last user turn; fewer than two (options written inline) gives the default, 4."""
    if record.question_format == 0 and record.choices:
        return min(len(record.choices), len(ALL_OPTION_LETTERS))
    found = {a or b for a, b in OPTION_LINE.findall(last_user_turn(record.prompt))}
    n = 0
    while n < len(ALL_OPTION_LETTERS) and ALL_OPTION_LETTERS[n] in found:
        n += 1
    return n if n >= 2 else DEFAULT_N_OPTIONS


def option_letters(record: Record) -> str:
    """The item's option letters, "ABCD" for a 4-way item; what a backend reads log-probs for."""
    return ALL_OPTION_LETTERS[: n_options(record)]


# The letters the study reads on the last line: every capital A-F, wherever it stands (so E or F,
# not options of a 4-option item, make the set differ; other capitals are not read).
_SELECT_LETTER = re.compile(f"[{SELECT_LETTERS}]")


def _last_nonempty_line(text: str) -> str:
    for line in reversed(text.split("\n")):
        if line.strip():
            return line
    return ""


def parse_letter_set(text: str) -> frozenset[str]:
    """The capital letters A-F on the last non-empty line of the text."""
    return frozenset(_SELECT_LETTER.findall(_last_nonempty_line(text)))


def kind_problem(record: Record, kind: str) -> tuple[str, str] | None:
    """(field, why) when a declared kind does not fit the item: it could not be scored as that kind."""
    gold = record.gold.strip()
    if kind == "perplexity":
        if not record.choices or len(record.choices) < 2:
            return "choices", "a perplexity item needs its candidates (two or more, the correct one first)"
    elif kind == "choice":
        letters = option_letters(record)
        if gold not in letters or len(gold) != 1:
            return "messages", f"a choice item's gold must be one of its options {letters}, got {gold!r}"
    elif kind == "multi_select":
        picked = parse_letter_set(gold)
        if not picked or not picked <= set(option_letters(record)):
            return "messages", f"a multi-select gold must be a set of its options {option_letters(record)}, got {gold!r}"
    elif kind == "true_false":
        if gold_truth(gold) is None:
            return "messages", f"a true/false gold must be one of {'/'.join(TRUE_WORDS + FALSE_WORDS)}, got {gold!r}"
    elif kind == "math":
        if not (record.answer or "").strip():
            return "answer", "a math item needs the reference final answer"
    return None
