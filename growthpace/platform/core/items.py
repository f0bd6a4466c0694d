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
        return out


KINDS: tuple[str, ...] = ("choice", "true_false", "cloze", "perplexity", "math", "multi_select")

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
    """The kind of an item, from its type and its gold answer (STUDY_FACTS: never the gold alone).

    A history item whose gold is neither a letter nor a true/false word is a data error."""
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
