"""Formulations of an eval item: how a multiple-choice question is put to the model. Pure logic.

``letter`` (the study's rule, the default) asks for the answer letter and reads it as scoring.py's
``choice`` and ``true_false`` kinds say. ``option`` is OLMES's cloze formulation (Gu et al. 2024,
"OLMES: A Standard for Language Model Evaluations"): the item's answers are ranked by perplexity
through the ``perplexity`` kind, so a model that has not yet learnt to bind an answer to its letter
(the miniature study's tiny models score at chance on letters) can still show what it knows:

- a ``choice`` item's candidates are its option lines exactly as the last user turn shows them
  (``B. heart``), the gold line first, then the other options in letter order;
- a ``true_false`` item's candidates are [gold word, its opposite] from 正确/错误;
- the conversation's earlier answers (an OOD item's five worked examples) are written the same way,
  as OLMES formats its few-shot examples in the formulation being scored.

Cloze and math are exact-match kinds and multi-select (ethics) is a set of letters: none has one
option text to rank, so they stay as the study scores them; items that are already ranked stay too.
An item whose options cannot be read is an error naming the item, never silently skipped.

``letter_text_replies`` is the training side (``training.choice_target: letter_text``): a reply that
is exactly one of its question's option letters becomes that option's line; such a reply still
scores under the letter rule (its first answer position is the letter).
"""

from __future__ import annotations

from dataclasses import replace

from growthpace.evaluators.scoring import ALL_OPTION_LETTERS, OPTION_LINE, gold_truth, question_kind
from growthpace.platform.records import Record

FORMULATIONS: tuple[str, ...] = ("letter", "option")
SET_OR_FREE_ANSWERS = ("ethics", "math")  # types whose reply is never one option's letter
TRUE_FALSE_CANDIDATES = ("正确", "错误")  # the words a ranked true/false item chooses between

# What each formulation does, in one sentence for the report and the console.
DESCRIPTIONS = {
    "letter": "the study's rule: choice items by the answer letter, true/false items by the true/false words "
              "of the reply",
    "option": "OLMES cloze: option texts ranked by perplexity for choice and true/false items",
}
UNCHANGED = "math, cloze and ethics as the study scores them"


class FormulationError(ValueError):
    """An item the formulation cannot be applied to; the message names the item."""


def option_lines(text: str) -> dict[str, str]:
    """Letter -> its whole option line (stripped) for the options of ``text``: the last run of lines
    A, B, C, ... (as scoring.py recognises option lines), so a passage above the question that has
    an option-like line of its own does not shift the options."""
    lines = [(m.group(1) or m.group(2), line.strip())
             for line in text.split("\n") for m in [OPTION_LINE.match(line)] if m]
    starts = [i for i, (letter, _) in enumerate(lines) if letter == "A"]
    if not starts:
        return {}
    out: dict[str, str] = {}
    for letter, line in lines[starts[-1]:]:
        if len(out) == len(ALL_OPTION_LETTERS) or letter != ALL_OPTION_LETTERS[len(out)]:
            break
        out[letter] = line
    return out


def _last_user(messages) -> str:
    return next((c for r, c in reversed(messages) if r == "user"), "")


def letter_text_replies(messages: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Every assistant turn that is exactly (stripped) one option letter of the user turn before it
    becomes that option's line; any other reply (a hedge, a word, several letters) stays."""
    out: list[tuple[str, str]] = []
    for role, content in messages:
        if role == "assistant" and out and out[-1][0] == "user":
            line = option_lines(out[-1][1]).get(content.strip()) if len(content.strip()) == 1 else None
            if line is not None:
                content = line
        out.append((role, content))
    return tuple(out)


def with_choice_target(record: Record, target: str) -> Record:
    """A training item under ``training.choice_target``: ``letter`` (the study's) leaves it as it is;
    ``letter_text`` gives bare-letter replies their option text, in curated and synthetic items alike
    (a synthetic item's gold need not parse, so no question kind is asked). Ethics is left as it is:
    its letters are a set (``B`` one of them), not one option; math and ranked items have no options."""
    if target == "letter" or record.question_format == 1 or record.type in SET_OR_FREE_ANSWERS:
        return record
    messages = letter_text_replies(record.messages)
    return record if messages == record.messages else replace(record, messages=messages)


def to_option(record: Record) -> Record:
    """The item under the option formulation (a ranked item), or the item itself for kinds it leaves."""
    kind = question_kind(record)
    shots = letter_text_replies(record.prompt)
    if kind == "choice":
        options = option_lines(_last_user(record.prompt))
        gold = record.gold.strip()
        if len(options) < 2:
            raise FormulationError(f"item {record.idx!r}: option formulation: no option lines A., B., ... "
                                   f"in its last user turn to rank (found {len(options)})")
        if gold not in options:
            raise FormulationError(f"item {record.idx!r}: option formulation: gold letter {gold!r} is not one of "
                                   f"its options {''.join(options)}")
        candidates = (options[gold], *(line for letter, line in options.items() if letter != gold))
    elif kind == "true_false":
        truth = gold_truth(record.gold)
        candidates = TRUE_FALSE_CANDIDATES if truth else TRUE_FALSE_CANDIDATES[::-1]
    else:
        return record
    return replace(record, messages=(*shots, ("assistant", candidates[0])), question_format=1,
                   choices=tuple(candidates))


def formulate(record: Record, formulation: str) -> Record:
    if formulation == "letter":
        return record
    if formulation == "option":
        return to_option(record)
    raise ValueError(f"unknown formulation {formulation!r}; expected one of {', '.join(FORMULATIONS)}")


# Secondary formulations are scored under their own split names. A dot joins them: MLflow metric
# names allow only alphanumerics, _ - . / : and spaces, so `test@letter` could not be logged.
SEPARATOR = "."


def split_name(split: str, formulation: str, primary: str) -> str:
    """Where a split's scores under ``formulation`` are stored: the split itself for the primary
    formulation (what selection, tables and fits read), ``test.letter`` for a secondary one."""
    return split if formulation == primary else f"{split}{SEPARATOR}{formulation}"


def parse_split(name: str) -> tuple[str, str | None]:
    """(base split, secondary formulation or None) of a stored split name."""
    base, sep, formulation = name.rpartition(SEPARATOR)
    return (base, formulation) if sep and formulation in FORMULATIONS else (name, None)


def describe(formulations: tuple[str, ...] | list[str]) -> str:
    """One sentence naming the formulation every score uses (report, console)."""
    primary, *others = formulations
    text = f"Scores use the {primary} formulation ({DESCRIPTIONS[primary]}"
    text += ("; " + UNCHANGED if primary != "letter" else "") + ")"
    if others:
        text += ". Also scored, beside it: " + ", ".join(f"{f} ({DESCRIPTIONS[f]})" for f in others)
    return text + "."
