"""The study's record schema and dataset layout: read, validate, and name the culprit on error.

Layout under a data root::

    curated/{1000,full,valid,test}/<type>_<split>.json
    synthetic/<N>/synthetic_train.json
    ood/<subject>_test.json

One JSON object per line. Every error names ``file:line`` and the field.
"""

from __future__ import annotations

import gc
import io
import json
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Literal

import msgspec
from msgspec import UNSET, UnsetType

from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS, WORLD
from growthpace.platform.core.items import DataError, Record


def parse_record(obj: Any, where: str, *, eval_split: bool, types: tuple[str, ...] | None = ABILITIES) -> Record:
    """Validate one decoded JSON object; ``where`` is ``file:line`` for the error message."""

    def fail(field: str, why: str) -> DataError:
        return DataError(f"{where}: field '{field}': {why}")

    if not isinstance(obj, dict):
        raise fail("<record>", f"expected a JSON object, got {type(obj).__name__}")
    for field in ("messages", "type", "idx", "question_format"):
        if field not in obj:
            raise fail(field, "missing")
    rtype = obj["type"]
    if not isinstance(rtype, str) or not rtype:
        raise fail("type", "must be a non-empty string")
    if types is not None and rtype not in types:
        raise fail("type", f"unknown ability {rtype!r}; expected one of {', '.join(types)}")
    idx = obj["idx"]
    if not isinstance(idx, (str, int)) or isinstance(idx, bool):
        raise fail("idx", "must be a string or an integer")
    fmt = obj["question_format"]
    if fmt not in (0, 1) or isinstance(fmt, bool):
        raise fail("question_format", f"must be 0 (generate) or 1 (perplexity), got {fmt!r}")
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise fail("messages", "must be a non-empty list")
    turns = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise fail(f"messages[{i}].role", "must be 'user' or 'assistant'")
        if not isinstance(m.get("content"), str):
            raise fail(f"messages[{i}].content", "must be a string")
        turns.append((m["role"], m["content"]))
    if turns[-1][0] != "assistant":
        raise fail("messages", "the last turn must be the assistant's gold answer")
    if turns[0][0] != "user":
        raise fail("messages[0].role", "a conversation starts with the user")
    choices = obj.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise fail("choices", "must be a list of strings")
        choices = tuple(choices)
    if fmt == 1 and eval_split:
        if choices is None or len(choices) != 3:
            raise fail("choices", "a perplexity-ranked item needs exactly 3 candidates, the correct one first")
    answer = obj.get("answer")
    if answer is not None and not isinstance(answer, str):
        answer = str(answer)
    if rtype == "math" and eval_split and fmt == 0 and (answer is None or not answer.strip()):
        raise fail("answer", "a math item needs the reference final answer" + (" (it is empty)" if answer is not None else ""))
    return Record(rtype, str(idx), tuple(turns), fmt, choices, answer)


def read_records(
    path: str | Path, *, eval_split: bool, types: tuple[str, ...] | None = ABILITIES, label_synthetic: bool = False
) -> list[Record]:
    """Read and validate a JSON-lines file; ids must be unique within an ability.

    ``label_synthetic``: complete each object as the synthetic pool's records are (_label_synthetic)
    before validation. A file whose every line passes is read by _read_fast; any other is read again
    line by line (_read_checked), which raises the first problem's file:line and field.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    data = path.read_bytes()
    with no_cycle_collection():
        records = _read_fast(data, eval_split, types, label_synthetic)
        if records is None:
            records = _read_checked(data, path, eval_split, types, label_synthetic)
    if not records:
        raise DataError(f"{path}: empty data file")
    return records


@contextmanager
def no_cycle_collection():
    """Records hold no reference cycles; while 10^5 of them are built and used the cycle collector
    would only rescan the growing heap, over and over (a third of reading a DoIT-scale pool)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Turn(msgspec.Struct, gc=False):
    role: Literal["user", "assistant"]
    content: str


class _Shape(msgspec.Struct, gc=False):
    """The JSON types parse_record requires of a record, checked by msgspec while it decodes a line. The
    synthetic pool's labelling may fill type, idx and question_format, so here they may be absent."""

    messages: list[_Turn]
    type: str | None | UnsetType = UNSET
    idx: str | int | UnsetType = UNSET
    question_format: Literal[0, 1] | UnsetType = UNSET
    choices: list[str] | None = None
    answer: str | int | None = None


_decode_shape = msgspec.json.Decoder(_Shape).decode


def _read_fast(data: bytes, eval_split: bool, types: tuple[str, ...] | None, label: bool) -> list[Record] | None:
    """The records of a JSON-lines file, built as parse_record builds them, when every line is one
    parse_record accepts; None at the first line it might not (msgspec's JSON is RFC 8259 alone: no
    NaN, no lone surrogate), for _read_checked to name the problem. It only tells good from not
    known to be good; the rule and its messages are parse_record's."""
    records: list[Record] = []
    seen: set[str] = set()
    allowed = None if types is None else frozenset(types)
    try:
        for n, line in enumerate(data.split(b"\n"), start=1):
            if not line or line.isspace():  # ASCII whitespace: a subset of what str.strip drops
                continue
            s = _decode_shape(line)
            rtype, idx, fmt = _label_synthetic(s.type, s.idx, s.question_format, n) if label else (
                s.type, s.idx, s.question_format)
            turns = s.messages
            known = rtype in allowed if allowed is not None else isinstance(rtype, str) and rtype != ""
            if (not known or idx is UNSET or fmt is UNSET or not turns or turns[-1].role != "assistant"
                    or turns[0].role != "user"):
                return None
            choices, answer = s.choices, s.answer
            if choices is not None:
                choices = tuple(choices)
            if answer is not None and not isinstance(answer, str):
                answer = str(answer)
            if eval_split and ((fmt == 1 and (choices is None or len(choices) != 3)) or (
                    rtype == "math" and fmt == 0 and (answer is None or not answer.strip()))):
                return None
            idx = str(idx)
            key = f"{rtype}/{idx}"  # Record.key
            if key in seen:
                return None
            seen.add(key)
            records.append(Record(rtype, idx, tuple([(t.role, t.content) for t in turns]), fmt, choices, answer))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return records


def json_lines(data: bytes, path: Path) -> Iterator[tuple[int, str, Any]]:
    """(line number, "file:line", decoded value) of each non-blank line of a JSON-lines file; the first line
    that is not UTF-8 or not JSON raises a DataError naming file:line."""
    for n, raw in enumerate(io.BytesIO(data), start=1):
        where = f"{path}:{n}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: not valid UTF-8 ({e.reason})") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise DataError(f"{where}: not a usable record (JSON nested too deeply to read)") from None
        except ValueError as e:  # e.g. an integer of more than 4300 digits
            raise DataError(f"{where}: not a usable record ({e})") from None
        yield n, where, obj


def _read_checked(data: bytes, path: Path, eval_split: bool, types: tuple[str, ...] | None, label: bool) -> list[Record]:
    """read_records line by line (json and parse_record): raises the first problem's file:line and field."""
    records: list[Record] = []
    seen: dict[str, int] = {}
    for n, where, obj in json_lines(data, path):
        if label and isinstance(obj, dict):
            obj = dict(obj)
            obj["type"], obj["idx"], obj["question_format"] = _label_synthetic(
                obj.get("type"), obj.get("idx", UNSET), obj.get("question_format", UNSET), n)
        rec = parse_record(obj, where, eval_split=eval_split, types=types)
        if rec.key in seen:
            raise DataError(f"{where}: field 'idx': duplicate id {rec.idx!r} (first at line {seen[rec.key]})")
        seen[rec.key] = n
        records.append(rec)
    return records


# The synthetic pool of the public dataset (GPT-4 general instructions) carries no ability labels.
# Its records are typed SYNTHETIC unless they name one of the ten abilities (the embedded generated
# pool does); a SYNTHETIC item counts toward a cell's total but toward no ability. `idx` and
# `question_format` default to the line number and 0 (generate), since that file need not have them.
SYNTHETIC = "synthetic"
TRAIN_TYPES: tuple[str, ...] = (*ABILITIES, SYNTHETIC)


def _label_synthetic(rtype: Any, idx: Any, fmt: Any, line: int, abilities: tuple[str, ...] = ABILITIES) -> tuple[Any, Any, Any]:
    """(type, idx, question_format) of a synthetic pool's record; UNSET: the field is absent."""
    return (rtype if rtype in abilities else SYNTHETIC, f"line-{line}" if idx is UNSET else idx,
            0 if fmt is UNSET else fmt)


def read_synthetic(path: str | Path, abilities: tuple[str, ...] = ABILITIES) -> list[Record]:
    """Read a synthetic pool: unlabelled records become type 'synthetic'; errors still name file:line."""
    if abilities != ABILITIES:  # a declared study's pool: its records may name only its own abilities
        return [r if r.type in abilities else replace(r, type=SYNTHETIC)
                for r in read_records(path, eval_split=False, types=None, label_synthetic=True)]
    return read_records(path, eval_split=False, types=TRAIN_TYPES, label_synthetic=True)


def write_records(path: str | Path, records: list[Record]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")


def curated_path(root: Path, split: str, ability: str) -> Path:
    return Path(root) / "curated" / split / f"{ability}_{split}.json"


def synthetic_path(root: Path) -> Path:
    """The synthetic pool: ``synthetic/<N>/synthetic_train.json`` (the largest N present), or the one
    JSON file in that folder (the public dataset: ``synthetic/40960/general_instruction_gpt4_41k.json``)."""
    base = Path(root) / "synthetic"
    sizes = sorted((int(d.name) for d in base.glob("*") if d.is_dir() and d.name.isdigit()), reverse=True)
    if not sizes:
        raise DataError(f"{base}: no synthetic/<N>/ folder")
    folder = base / str(sizes[0])
    default = folder / "synthetic_train.json"
    if default.exists():
        return default
    files = sorted(folder.glob("*.json"))
    if len(files) == 1:
        return files[0]
    raise DataError(f"{folder}: expected synthetic_train.json or exactly one .json file, found {[f.name for f in files]}")


def ood_path(root: Path, subject: str) -> Path:
    return Path(root) / "ood" / f"{subject}_test.json"




def world_path(root: Path) -> Path:
    """The plain-text pre-training corpus of the procedural world: one document per line."""
    return Path(root) / WORLD


def read_world(root: Path) -> list[str]:
    path = world_path(root)
    if not path.is_file():
        raise DataError(f"{path}: no world corpus; the procedural generator writes it (a dataset generated "
                        "before it existed lacks it: move that dataset away and generate it again)")
    return path.read_text(encoding="utf-8").removesuffix("\n").split("\n")


def read_split(root: Path, split: str, abilities: tuple[str, ...] = ABILITIES) -> dict[str, list[Record]]:
    """All abilities of one curated split, keyed by ability."""
    eval_split = split in ("valid", "test")
    return {a: read_records(curated_path(root, split, a), eval_split=eval_split, types=abilities) for a in abilities}


def read_ood(root: Path, subjects: tuple[str, ...] = OOD_SUBJECTS) -> dict[str, list[Record]]:
    """OOD subjects: 5-shot exam questions. Their `type` is the subject name."""
    return {s: read_records(ood_path(root, s), eval_split=True, types=(s,)) for s in subjects}


def iter_synthetic(root: Path) -> Iterator[Record]:
    yield from read_synthetic(synthetic_path(root))


# ---------------------------------------------------------------- chat `messages` JSONL (data.layout: messages)


def jsonl_files(root: Path, rel: str, field: str) -> list[Path]:
    """A file, or every *.jsonl / *.json file of a folder (sorted), under a data root."""
    p = Path(root) / rel
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in (".jsonl", ".json"))
        if not files:
            raise DataError(f"{p}: field '{field}': no .jsonl files in this folder")
        return files
    if not p.is_file():
        raise DataError(f"{p}: field '{field}': no such file or folder")
    return [p]


def declare(record: Record, kind: str, baseline: float | None, where: str) -> Record:
    """An evaluation item under its ability's declaration (spec `abilities:`): its kind (the item's own
    for ``per_item``) and baseline set, checked to fit; ``where`` names the file:line or item."""
    from growthpace.platform.core.abilities import PER_ITEM
    from growthpace.platform.core.items import KINDS, kind_problem

    if kind == PER_ITEM:
        kind = record.kind
        if kind not in KINDS:
            got = "missing" if kind is None else f"{kind!r} is not one of {', '.join(KINDS)}"
            raise DataError(f"{where}: field 'kind': {got} (its ability is declared kind: {PER_ITEM})")
    record = replace(record, kind=kind, baseline=baseline, question_format=1 if kind == "perplexity" else 0)
    problem = kind_problem(record, kind)
    if problem:
        raise DataError(f"{where}: field '{problem[0]}': {problem[1]} (kind {kind})")
    return record


def read_messages(path: Path, *, abilities: tuple[str, ...], ability_field: str | None,
                  labeled: bool = True, scoring: dict[str, tuple[str, float | None]] | None = None,
                  ability: str | None = None) -> list[Record]:
    """The items of one chat-JSONL file: ``{"messages": [{"role", "content"}, ...], ...}`` per line, the
    last turn the assistant's gold. The ability is the line's ``ability_field`` or, without one, the
    file's name (``arithmetic.jsonl``). Optional fields: ``id`` (default the line number), ``choices``
    (a perplexity item's candidates, the correct one first; or a choice item's option texts),
    ``answer`` (a math item's final answer), ``kind`` (an ability declared ``per_item``). Unlabeled
    (an unlabeled pool): a line without the ability field, or naming no declared ability, is
    'synthetic'. ``scoring`` (evaluation items): ability -> (kind, baseline), applied by ``declare``.
    ``ability``: every line is this ability's (a declared OOD set's file). Errors name file:line and the field."""
    records: list[Record] = []
    seen: dict[str, int] = {}
    if ability is not None:
        ability_field = None
    from_file = ability or (path.stem if ability_field is None else None)
    for n, where, obj in json_lines(path.read_bytes(), path):
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        field = ability_field or "<file name>"
        ability = from_file if ability_field is None else obj.get(ability_field)
        if ability not in abilities:
            if not labeled:
                ability = SYNTHETIC
            else:
                what = "missing" if ability is None else f"{ability!r} is not a declared ability"
                raise DataError(f"{where}: field '{field}': {what}; the spec declares {', '.join(abilities)}")
        kind = obj.get("kind")
        record = parse_record({"type": ability, "idx": obj.get("id", obj.get("idx", f"line-{n}")),
                               "question_format": 1 if kind == "perplexity" else 0,
                               **{k: obj[k] for k in ("messages", "choices", "answer") if k in obj}},
                              where, eval_split=False, types=None)
        if kind is not None:
            if not isinstance(kind, str):
                raise DataError(f"{where}: field 'kind': must be a string")
            record = replace(record, kind=kind)
        if scoring is not None:
            record = declare(record, *scoring[record.type], where)
        if record.key in seen:
            raise DataError(f"{where}: field 'id': duplicate id {record.idx!r} (first at line {seen[record.key]})")
        seen[record.key] = n
        records.append(record)
    if not records:
        raise DataError(f"{path}: empty data file")
    return records
