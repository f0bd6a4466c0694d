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

Fill-in-the-blank (the ``cloze`` question kind of chinese), math and multi-select (ethics, a set of
letters) have no one option text to rank: they stay as the study scores them, and so do items that
are already ranked. An item whose options cannot be read is an error naming the item, never silently
skipped.

``with_choice_target`` is the training side (``training.choice_target``): ``letter_text`` turns a reply
that is exactly one of its question's option letters into that option's line (it still scores under
the letter rule: its first answer position is the letter); ``cloze`` writes the pair as the cloze
formulation puts it: the question without its options, the reply the option's text.
"""

from __future__ import annotations

from dataclasses import replace

from growthpace.evaluators.scoring import ALL_OPTION_LETTERS, OPTION_LINE, gold_truth, question_kind
from growthpace.platform.records import Record

FORMULATIONS: tuple[str, ...] = ("letter", "option", "cloze")
CHOICE_TARGETS: tuple[str, ...] = ("letter", "letter_text", "cloze")
SET_OR_FREE_ANSWERS = ("ethics", "math")  # types whose reply is never one option's letter
TRUE_FALSE_CANDIDATES = ("正确", "错误")  # the words a ranked true/false item chooses between

# What each formulation does, in one sentence for the report and the console.
DESCRIPTIONS = {
    "letter": "the study's rule: choice items by the answer letter, true/false items by the true/false words "
              "of the reply",
    "option": "option lines (`B. heart`) ranked by perplexity, the options shown, for choice items; the "
              "true/false words ranked for true/false items",
    "cloze": "OLMES's cloze formulation: the question without its options, the option texts ranked by "
             "perplexity for choice items; the true/false words ranked for true/false items",
}
UNCHANGED = "math, fill-in-the-blank and ethics as the study scores them"


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


def _last_user(messages) -> str:
    return next((c for r, c in reversed(messages) if r == "user"), "")


def _answered_options(messages, write) -> tuple[tuple[str, str], ...]:
    """Every (user, assistant) pair whose reply is exactly (stripped) one option letter of that user
    turn, written as ``write(user text, option line)`` says; any other turn (a hedge, a word, several
    letters, no question before it) stays."""
    out: list[tuple[str, str]] = []
    for role, content in messages:
        if role == "assistant" and out and out[-1][0] == "user":
            line = option_lines(out[-1][1]).get(content.strip()) if len(content.strip()) == 1 else None
            if line is not None:
                question, content = write(out[-1][1], line)
                out[-1] = ("user", question)
        out.append((role, content))
    return tuple(out)


def letter_text_replies(messages: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """A bare-letter reply becomes its option's line; the question stays."""
    return _answered_options(messages, lambda question, line: (question, line))


def cloze_replies(messages: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """A bare-letter reply becomes its option's text and its question loses its option lines."""
    return _answered_options(messages, lambda question, line: (without_options(question), option_text(line)))


def with_choice_target(record: Record, target: str) -> Record:
    """A training item under ``training.choice_target``: ``letter`` (the study's) leaves it as it is;
    ``letter_text`` gives bare-letter replies their option line, ``cloze`` their option text with the
    question's options dropped, in curated and synthetic items alike (a synthetic item's gold need not
    parse, so no question kind is asked). Ethics is left as it is: its letters are a set (``B`` one of
    them), not one option; math and ranked items have no options."""
    if target == "letter" or record.question_format == 1 or record.type in SET_OR_FREE_ANSWERS:
        return record
    if target not in CHOICE_TARGETS:
        raise ValueError(f"unknown choice target {target!r}; expected one of {', '.join(CHOICE_TARGETS)}")
    messages = (letter_text_replies if target == "letter_text" else cloze_replies)(record.messages)
    return record if messages == record.messages else replace(record, messages=messages)


def to_ranked(record: Record, formulation: str) -> Record:
    """The item under a ranked formulation (``option`` or ``cloze``), or the item itself for kinds it
    leaves."""
    kind = question_kind(record)
    cloze = formulation == "cloze"
    shots = (cloze_replies if cloze else letter_text_replies)(record.prompt)
    if kind == "choice":
        options = option_lines(_last_user(record.prompt))
        gold = record.gold.strip()
        if len(options) < 2:
            raise FormulationError(f"item {record.idx!r}: {formulation} formulation: no option lines A., B., ... "
                                   f"in its last user turn to rank (found {len(options)})")
        if gold not in options:
            raise FormulationError(f"item {record.idx!r}: {formulation} formulation: gold letter {gold!r} is not one "
                                   f"of its options {''.join(options)}")
        lines = (options[gold], *(line for letter, line in options.items() if letter != gold))
        candidates = tuple(option_text(line) for line in lines) if cloze else lines
        if cloze:
            if not all(candidates):
                raise FormulationError(f"item {record.idx!r}: cloze formulation: an option has no text to rank")
            # the last question loses its options too (its reply is the gold letter, not yet rewritten)
            last = max(i for i, (role, _) in enumerate(shots) if role == "user")
            shots = (*shots[:last], ("user", without_options(shots[last][1])), *shots[last + 1:])
    elif kind == "true_false":
        truth = gold_truth(record.gold)
        candidates = TRUE_FALSE_CANDIDATES if truth else TRUE_FALSE_CANDIDATES[::-1]
    else:
        return record
    return replace(record, messages=(*shots, ("assistant", candidates[0])), question_format=1,
                   choices=tuple(candidates))


def to_option(record: Record) -> Record:
    return to_ranked(record, "option")


def to_cloze(record: Record) -> Record:
    return to_ranked(record, "cloze")


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
