"""Formulations of an eval item: how a multiple-choice question is put to the model. Pure logic.

``letter`` (the study's rule, the default) asks for the answer letter and reads it as scoring.py's
``choice`` and ``true_false`` kinds say. The other two rank candidate answers by perplexity through
the ``perplexity`` kind, so a model that has not yet learnt to bind an answer to its letter (the
miniature study's tiny models score at chance on letters) can still show what it knows:

- ``option``: the question keeps its option lines and the candidates are those lines exactly as the
  last user turn shows them (``B. heart``), the gold line first, then the other options in letter
  order. Once a model has learnt to copy an option after its letter, this ranks the letters again;
- ``cloze``: OLMES's cloze formulation (CF; Gu et al. 2024, "OLMES: A Standard for Language Model
  Evaluations", which uses it because small models score at chance on letters): the question is put
  WITHOUT its option lines and the candidates are the bare option texts (``heart``), so the ranking
  reads what the model knows about the question, not which option it copies;
- in both, a ``true_false`` item's candidates are [gold word, its opposite] from 正确/错误, and the
  conversation's earlier answers (an OOD item's five worked examples) are written the same way, as
  OLMES formats its few-shot examples in the formulation being scored.

A multi-select item (ethics: the answer is a SET of option letters) is ranked over every non-empty set
of its options, each set written one option per line in letter order (``option``: the lines as shown,
the options in the question; ``cloze``: their texts, the question without its options, as for one
answer), the gold set first. With n options there are 2^n - 1 candidates (15 for 4), so the random
baseline of a ranked set is 1/(2^n - 1), not the letter rule's 1/C(n, k), which assumes a guesser who
knows how many letters to give. Under ``cloze`` the model cannot see which options exist, so it judges
a set by what it knows of each member and by how likely it finds the list to go on or stop.

Fill-in-the-blank (the ``cloze`` question kind of chinese) and math have no option text to rank: they
stay as the study scores them, and so do items that are already ranked. An item whose options cannot
be read is an error naming the item, never silently skipped.

``with_choice_target`` is the training side (``training.choice_target``): ``letter_text`` turns a reply
that is exactly one of its question's option letters into that option's line (it still scores under
the letter rule: its first answer position is the letter); ``cloze`` writes the pair as the cloze
formulation puts it: the question without its options, the reply the option's text; under ``cloze`` a
multi-select reply (a set of its question's option letters) becomes that set as the cloze formulation
ranks it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace

from growthpace.platform.core.items import (ALL_OPTION_LETTERS, OPTION_LINE, Record, gold_truth, last_user_turn,
                                            parse_letter_set, question_kind)

FORMULATIONS: tuple[str, ...] = ("letter", "option", "cloze")
CHOICE_TARGETS: tuple[str, ...] = ("letter", "letter_text", "cloze")
# How ``with_choice_target`` writes each target's items. A target's number goes up whenever it writes any
# item differently, and a cell's id holds it (platform/core/cells.py), so a study rerun under the new rule trains
# new cells instead of serving checkpoints trained on items the old rule wrote. cloze 2: sets as texts.
CHOICE_TARGET_REVISIONS = {"letter": 1, "letter_text": 1, "cloze": 2}
TRUE_FALSE_CANDIDATES = ("正确", "错误")  # the words a ranked true/false item chooses between

# What each formulation does, in one sentence for the report and the console.
DESCRIPTIONS = {
    "letter": "the study's rule: choice items by the answer letter, true/false items by the true/false words "
              "of the reply",
    "option": "option lines (`B. heart`) ranked by perplexity, the options shown, for choice items; every "
              "set of option lines for multi-select items; the true/false words ranked for true/false items",
    "cloze": "OLMES's cloze formulation: the question without its options, the option texts ranked by "
             "perplexity for choice items, every set of them for multi-select items; the true/false words "
             "ranked for true/false items",
}
UNCHANGED = "math and fill-in-the-blank as the study scores them"


class FormulationError(ValueError):
    """An item the formulation cannot be applied to; the message names the item."""


def _option_run(text: str) -> list[tuple[str, int, str]]:
    """(letter, line number, stripped line) of the options of ``text``: the last run of lines A, B, C,
    ... (as scoring.py recognises option lines), so a passage above the question that has an
    option-like line of its own does not shift the options."""
    lines = [(m.group(1) or m.group(2), i, line.strip())
             for i, line in enumerate(text.split("\n")) for m in [OPTION_LINE.match(line)] if m]
    starts = [i for i, (letter, _, _) in enumerate(lines) if letter == "A"]
    if not starts:
        return []
    run: list[tuple[str, int, str]] = []
    for entry in lines[starts[-1]:]:
        if len(run) == len(ALL_OPTION_LETTERS) or entry[0] != ALL_OPTION_LETTERS[len(run)]:
            break
        run.append(entry)
    return run


def option_lines(text: str) -> dict[str, str]:
    """Letter -> its whole option line (stripped) for the options of ``text``."""
    return {letter: line for letter, _, line in _option_run(text)}


def option_text(line: str) -> str:
    """An option line without its label: ``B. heart`` -> ``heart``."""
    m = OPTION_LINE.match(line)
    return line[m.end():].strip() if m else line.strip()


def without_options(text: str) -> str:
    """``text`` without the option lines ``option_lines`` reads (the question the cloze formulation puts)."""
    drop = {i for _, i, _ in _option_run(text)}
    return "\n".join(line for i, line in enumerate(text.split("\n")) if i not in drop).rstrip()


# What may stand between the letters of a set reply (`AC`, `A, C`, `A、C`).
_SET_SEPARATORS = re.compile(r"[\s,，、]+")


def _chosen_lines(question: str, reply: str, multi: bool) -> tuple[str, ...] | None:
    """The option lines of ``question`` that ``reply`` names, when the reply (stripped) is nothing but
    option letters of it: exactly one under single choice, a set of distinct ones under multi-select."""
    options = option_lines(question)
    letters = _SET_SEPARATORS.sub("", reply.strip()) if multi else reply.strip()
    if not letters or (not multi and len(letters) != 1) or len(set(letters)) != len(letters) \
            or not set(letters) <= options.keys():
        return None
    return tuple(line for letter, line in options.items() if letter in letters)


def _answered_options(messages, write, multi: bool = False) -> tuple[tuple[str, str], ...]:
    """Every (user, assistant) pair whose reply names options of that user turn (exactly one letter;
    under ``multi`` a set of letters), written as ``write(user text, chosen option lines)`` says;
    any other turn (a hedge, a word, a letter that is no option, no question before it) stays."""
    out: list[tuple[str, str]] = []
    for role, content in messages:
        if role == "assistant" and out and out[-1][0] == "user":
            lines = _chosen_lines(out[-1][1], content, multi)
            if lines is not None:
                question, content = write(out[-1][1], lines)
                out[-1] = ("user", question)
        out.append((role, content))
    return tuple(out)


def _answer(lines: tuple[str, ...], cloze: bool) -> str:
    """Chosen option lines as a ranked formulation writes the answer: one per line, as shown or (cloze)
    their texts."""
    return "\n".join(option_text(line) if cloze else line for line in lines)


def _as_lines(question: str, lines: tuple[str, ...]) -> tuple[str, str]:
    return question, _answer(lines, cloze=False)


def _as_cloze(question: str, lines: tuple[str, ...]) -> tuple[str, str]:
    return without_options(question), _answer(lines, cloze=True)


def letter_text_replies(messages: tuple[tuple[str, str], ...], multi: bool = False) -> tuple[tuple[str, str], ...]:
    """A bare-letter reply becomes its option's line (a set reply: its lines, one per line); the
    question stays."""
    return _answered_options(messages, _as_lines, multi)


def cloze_replies(messages: tuple[tuple[str, str], ...], multi: bool = False) -> tuple[tuple[str, str], ...]:
    """A bare-letter reply becomes its option's text (a set reply, ``multi``: its options' texts, one
    per line) and its question loses its option lines."""
    return _answered_options(messages, _as_cloze, multi)


def with_choice_target(record: Record, target: str) -> Record:
    """A training item under ``training.choice_target``: ``letter`` (the study's) leaves it as it is;
    ``letter_text`` gives bare-letter replies their option line, ``cloze`` their option text with the
    question's options dropped, in curated and synthetic items alike. Under ``cloze`` a multi-select
    item's set of letters becomes its options' texts as the cloze formulation ranks a set; under
    ``letter_text`` it stays; math and ranked items have no options."""
    if target == "letter" or record.question_format == 1 or record.type == "math":
        return record
    if target not in CHOICE_TARGETS:
        raise ValueError(f"unknown choice target {target!r}; expected one of {', '.join(CHOICE_TARGETS)}")
    try:
        multi = question_kind(record) == "multi_select"
    except ValueError:  # a synthetic history item's hedge is no gold of either kind; it stays as it is
        multi = False
    if multi and target == "letter_text":
        # letter_text still scores under the letter rule, which reads the letters of a set's LAST line:
        # a set written as option lines would read as its last option alone
        return record
    messages = (letter_text_replies if target == "letter_text" else cloze_replies)(record.messages, multi)
    return record if messages == record.messages else replace(record, messages=messages)


def option_sets(letters) -> list[tuple[str, ...]]:
    """Every non-empty set of ``letters``, smallest first, each in letter order."""
    letters = tuple(letters)
    return [c for k in range(1, len(letters) + 1) for c in itertools.combinations(letters, k)]


def to_ranked(record: Record, formulation: str) -> Record:
    """The item under a ranked formulation (``option`` or ``cloze``), or the item itself for kinds it
    leaves."""
    kind = question_kind(record)
    cloze = formulation == "cloze"
    shots = (cloze_replies if cloze else letter_text_replies)(record.prompt, kind == "multi_select")
    if kind in ("choice", "multi_select"):
        multi = kind == "multi_select"
        options = option_lines(last_user_turn(record.prompt))
        gold = parse_letter_set(record.gold) if multi else {record.gold.strip()}
        if len(options) < 2:
            raise FormulationError(f"item {record.idx!r}: {formulation} formulation: no option lines A., B., ... "
                                   f"in its last user turn to rank (found {len(options)})")
        if not gold or not gold <= options.keys():
            raise FormulationError(f"item {record.idx!r}: {formulation} formulation: gold "
                                   f"{'set' if multi else 'letter'} {record.gold.strip()!r} is not "
                                   f"{'a set' if multi else 'one'} of its options {''.join(options)}")
        if cloze and not all(option_text(line) for line in options.values()):
            raise FormulationError(f"item {record.idx!r}: cloze formulation: an option has no text to rank")
        # gold first, then the others in order (a stable sort): one letter each, or every set smallest first
        sets = sorted(option_sets(options) if multi else [(x,) for x in options], key=lambda c: set(c) != gold)
        candidates = tuple(_answer(tuple(options[x] for x in c), cloze) for c in sets)
        if cloze:
            # the last question loses its options too (its reply is the gold, not yet rewritten)
            last = max(i for i, (role, _) in enumerate(shots) if role == "user")
            shots = (*shots[:last], ("user", without_options(shots[last][1])), *shots[last + 1:])
    elif kind == "true_false":
        truth = gold_truth(record.gold)
        candidates = TRUE_FALSE_CANDIDATES if truth else TRUE_FALSE_CANDIDATES[::-1]
    else:
        return record
    return replace(record, messages=(*shots, ("assistant", candidates[0])), question_format=1,
                   choices=tuple(candidates), kind=None if record.kind is None else "perplexity")


def formulate(record: Record, formulation: str) -> Record:
    if formulation == "letter":
        return record
    if formulation in FORMULATIONS:
        return to_ranked(record, formulation)
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
