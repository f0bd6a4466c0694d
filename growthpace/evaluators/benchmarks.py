"""Public multiple-choice benchmarks (CMMLU, AGIEval) from local files in their public formats.

The study reports CMMLU and AGIEval, 0-shot and 5-shot, scored by the argmax of the next-token
log-probabilities over the option letters at the answer position. Nothing is downloaded here: point
the loaders at a copy of the public files (the tests ship small handwritten fixtures in the same
formats, tests/fixtures/benchmarks/).

Formats read::

    CMMLU    <root>/test/<subject>.csv    header ",Question,A,B,C,D,Answer" (first column: an index)
             <root>/dev/<subject>.csv     the same; its first k rows are the k-shot examples
    AGIEval  <root>/test/<task>.jsonl     one JSON object a line: passage (str or null), question,
             (or <root>/<task>.jsonl,      options (["(A)...", "(B)...", ...]), label ("A", or ["A"]),
              the public data/v1 layout)   other (ignored); more keys are ignored
             <root>/dev/<task>.jsonl      few-shot file, defined by this project (the public release
                                          keeps its few-shot prompts in one CSV): the same JSON-lines
                                          schema; its first k items are the k-shot examples

Every item becomes a ``Record`` of the project's form: few-shot examples are earlier user/assistant
turns, the last user turn holds the question and one option per line ("A. ..." for CMMLU, "(A)..."
for AGIEval), the gold answer is a letter, and ``choices`` holds the option texts in letter order
(so ``len(choices)`` is the number of options: 4 for CMMLU, 4 or 5 for AGIEval). The first user turn
of a CMMLU conversation starts with CMMLU's instruction line (以下是关于<subject>的单项选择题...).

Scoring: the records are ordinary eval sets (``eval_sets``), scored as every choice item is
(evaluators/requests.py, evaluators/scoring.py) with ``LIMITS``: a generation limit of 0 reads the
log-probability of each of the item's option letters at the first answer position and generates no
reply, so the verdict is the argmax over the item's letters (ties: the alphabetically first), correct
when it equals the gold letter. Accuracy is over items (micro), in percent (jobs/benchmark.py).

Unsupported on purpose: AGIEval's cloze tasks (no options) and multi-answer items; they are errors
that name the file, line and field, not silently skipped items.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from growthpace.platform.core.items import ALL_OPTION_LETTERS
from growthpace.platform.core.items import DataError, Record

BENCHMARKS: tuple[str, ...] = ("cmmlu", "agieval")
CMMLU_HEADER = ["", "Question", "A", "B", "C", "D", "Answer"]
CMMLU_INSTRUCTION = "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"
LIMITS = {"choice": 0}  # read the answer position alone: the option letters' log-probs, no reply


@dataclass(frozen=True)
class Item:
    """One question as read from a file, before framing."""

    idx: str
    question: str  # the user-turn text without the options (AGIEval: passage + question)
    options: tuple[str, ...]  # option texts in letter order, labels stripped
    answer: str  # the gold letter
    where: str  # file:line, for messages


def metric_name(benchmark: str, shots: int) -> str:
    """The MLflow metric key of one benchmark setting: ``bench/<name>/<shots>shot``."""
    return f"bench/{benchmark}/{shots}shot"


# ---------------------------------------------------------------------------------------------
# Readers (validate; errors name file:line and field)
# ---------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: no such benchmark file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 ({e.reason})") from None


def read_cmmlu_csv(path: str | Path) -> list[Item]:
    """One CMMLU subject file (dev or test)."""
    path = Path(path)
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}:1: empty file (expected the header {','.join(CMMLU_HEADER)!r})") from None
    except csv.Error as e:
        raise DataError(f"{path}:1: not valid CSV ({e})") from None
    if [h.strip() for h in header] != CMMLU_HEADER:
        raise DataError(f"{path}:1: header: expected {','.join(CMMLU_HEADER)!r}, got {','.join(header)!r}")
    items: list[Item] = []
    seen: dict[str, int] = {}
    while True:
        line = reader.line_num + 1  # a quoted field may span lines: report where the row starts
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"{path}:{line}: not valid CSV ({e})") from None
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{path}:{line}"
        if len(row) != len(CMMLU_HEADER):
            raise DataError(f"{where}: row: expected {len(CMMLU_HEADER)} fields ({','.join(CMMLU_HEADER)}), got {len(row)}")
        idx, question, *options, answer = (c.strip() for c in row)
        if not question:
            raise DataError(f"{where}: field 'Question': empty")
        for letter, text in zip("ABCD", options):
            if not text:
                raise DataError(f"{where}: field '{letter}': empty option")
        if answer not in ("A", "B", "C", "D"):
            raise DataError(f"{where}: field 'Answer': must be one of A, B, C, D, got {answer!r}")
        idx = idx or str(len(items))
        if idx in seen:
            raise DataError(f"{where}: field '' (index): duplicate index {idx!r} (first at line {seen[idx]})")
        seen[idx] = line
        items.append(Item(idx, question, tuple(options), answer, where))
    if not items:
        raise DataError(f"{path}: no questions after the header")
    return items


def _agieval_options(options: Any, fail) -> tuple[str, ...]:
    if not isinstance(options, list) or len(options) < 2:
        raise fail("options", "must be a list of at least 2 options like \"(A)...\" (cloze tasks are not supported)")
    if len(options) > len(ALL_OPTION_LETTERS):
        raise fail("options", f"at most {len(ALL_OPTION_LETTERS)} options, got {len(options)}")
    out = []
    for i, opt in enumerate(options):
        if not isinstance(opt, str) or not opt.strip():
            raise fail(f"options[{i}]", "must be a non-empty string")
        m = re.match(r"\s*[(（]\s*([A-Za-z])\s*[)）]\s*", opt)
        if m and m.group(1).upper() != ALL_OPTION_LETTERS[i]:
            raise fail(f"options[{i}]", f"labelled ({m.group(1)}) at position {ALL_OPTION_LETTERS[i]}")
        out.append((opt[m.end():] if m else opt).strip())
    return tuple(out)


def read_agieval_jsonl(path: str | Path) -> list[Item]:
    """One AGIEval task file (test, or this project's dev few-shot file)."""
    path = Path(path)
    items: list[Item] = []
    for n, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"

        def fail(field: str, why: str) -> DataError:
            return DataError(f"{where}: field '{field}': {why}")

        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise fail("<record>", f"expected a JSON object, got {type(obj).__name__}")
        question = obj.get("question")
        if not isinstance(question, str) or not question.strip():
            raise fail("question", "missing or empty")
        passage = obj.get("passage")
        if passage is not None and not isinstance(passage, str):
            raise fail("passage", "must be a string or null")
        options = _agieval_options(obj.get("options"), fail)
        label = obj.get("label")
        if isinstance(label, list):
            if len(label) != 1:
                raise fail("label", f"multi-answer items are not supported (got {label!r})")
            label = label[0]
        letters = ALL_OPTION_LETTERS[: len(options)]
        if not isinstance(label, str) or label.strip().upper() not in letters:
            raise fail("label", f"must be one of {', '.join(letters)} (one per option), got {label!r}")
        text = "\n".join(p.strip() for p in (passage, question) if p and p.strip())
        items.append(Item(str(len(items)), text, options, label.strip().upper(), where))
    if not items:
        raise DataError(f"{path}: empty benchmark file")
    return items


# ---------------------------------------------------------------------------------------------
# Loaders -> Records
# ---------------------------------------------------------------------------------------------


def _cmmlu_turn(item: Item) -> str:
    return item.question + "".join(f"\n{L}. {o}" for L, o in zip("ABCD", item.options))


def _agieval_turn(item: Item) -> str:
    return item.question + "".join(f"\n({L}){o}" for L, o in zip(ALL_OPTION_LETTERS, item.options))


def _records(
    kind: str, subject: str, tests: list[Item], shots_from: list[Item], shots: int, turn, header: str = ""
) -> list[Record]:
    history: list[tuple[str, str]] = []
    for ex in shots_from[:shots]:
        history += [("user", turn(ex)), ("assistant", ex.answer)]
    out = []
    for item in tests:
        turns = history + [("user", turn(item)), ("assistant", item.answer)]
        turns[0] = ("user", header + turns[0][1])
        out.append(Record(f"{kind}/{subject}", item.idx, tuple(turns), 0, item.options))
    return out


def _few_shot(dev: Path, shots: int, reader) -> list[Item]:
    if shots <= 0:
        return []
    if not dev.is_file():
        raise DataError(f"{dev}: no such few-shot file ({shots}-shot needs {shots} examples)")
    examples = reader(dev)
    if len(examples) < shots:
        raise DataError(f"{dev}: {shots}-shot needs {shots} examples, the file has {len(examples)}")
    return examples


def _check_shots(shots: int) -> None:
    if shots < 0:
        raise DataError(f"shots: must be 0 or more, got {shots}")


def load_cmmlu(root: str | Path, shots: int) -> dict[str, list[Record]]:
    """Subject -> records; ``shots`` examples from dev/<subject>.csv precede every question."""
    _check_shots(shots)
    root = Path(root)
    files = sorted((root / "test").glob("*.csv"))
    if not files:
        raise DataError(f"{root / 'test'}: no CMMLU <subject>.csv files")
    out = {}
    for f in files:
        subject = f.stem
        header = CMMLU_INSTRUCTION.format(subject=subject.replace("_", " "))
        examples = _few_shot(root / "dev" / f.name, shots, read_cmmlu_csv)
        out[subject] = _records("cmmlu", subject, read_cmmlu_csv(f), examples, shots, _cmmlu_turn, header)
    return out


def load_agieval(root: str | Path, shots: int) -> dict[str, list[Record]]:
    """Task -> records; ``shots`` examples from dev/<task>.jsonl precede every question."""
    _check_shots(shots)
    root = Path(root)
    folder = root / "test" if (root / "test").is_dir() else root
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise DataError(f"{folder}: no AGIEval <task>.jsonl files")
    out = {}
    for f in files:
        examples = _few_shot(root / "dev" / f.name, shots, read_agieval_jsonl)
        out[f.stem] = _records("agieval", f.stem, read_agieval_jsonl(f), examples, shots, _agieval_turn)
    return out


LOADERS = {"cmmlu": load_cmmlu, "agieval": load_agieval}


def load_benchmark(name: str, root: str | Path, shots: int) -> dict[str, list[Record]]:
    if name not in LOADERS:
        raise DataError(f"benchmark: unknown {name!r}; expected one of {', '.join(BENCHMARKS)}")
    return LOADERS[name](root, shots)


# ---------------------------------------------------------------------------------------------
# Writers (the fixtures are written with these)
# ---------------------------------------------------------------------------------------------


def write_cmmlu_csv(path: str | Path, rows: Iterable[tuple[str, str, str, str, str, str]]) -> None:
    """rows: (question, A, B, C, D, answer letter); written with the public header and an index."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CMMLU_HEADER)
        for i, row in enumerate(rows):
            w.writerow([i, *row])


def write_agieval_jsonl(path: str | Path, items: Iterable[dict[str, Any]]) -> None:
    """items: dicts with passage (or None), question, options (texts; "(A)" labels are added), label."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for it in items:
            options = [o if o.lstrip().startswith("(") else f"({L}){o}" for L, o in zip(ALL_OPTION_LETTERS, it["options"])]
            obj = {"passage": it.get("passage"), "question": it["question"], "options": options,
                   "label": it["label"], "other": it.get("other")}
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


Setting = tuple[str, int, dict[str, list[Record]]]  # (benchmark, shots, subject -> records)


def load_settings(sources: dict[str, str | Path], shots: Sequence[int]) -> list[Setting]:
    """Every (benchmark, shots) setting, loaded and validated (before any model is loaded)."""
    return [(name, k, load_benchmark(name, root, k)) for name, root in sources.items() for k in dict.fromkeys(shots)]


def eval_sets(settings: list[Setting]) -> dict[tuple[str, str], list[Record]]:
    """The settings as ordinary eval sets: (``<benchmark>/<k>shot``, subject) -> records."""
    return {(f"{name}/{k}shot", subject): records for name, k, sets in settings for subject, records in sets.items()}
