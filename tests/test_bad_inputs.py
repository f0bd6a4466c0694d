"""The bad-input corpus: every malformed spec, data file or checkpoint gets one clear error naming
file:line or the field, exit code 2, no traceback, and nothing written to storage or MLflow.

Three kinds of case, each run through the real CLI in a subprocess (cwd = the case's own folder):

* specs: the files under tests/bad_inputs/specs/ (header comments say the command and what stderr says);
* data: the small generated dataset (conftest.small_data) with one defect injected per case, `growthpace run`;
* checkpoints: a storage with a trained cell whose tiny checkpoint has one defect, `growthpace evaluate`.

`run` and `evaluate` must validate every input before their first write (jobs/study.py check_inputs),
so these cases also prove that a bad eval set, OOD file, model path or checkpoint is caught up front.
The subprocess runs the CLI behind a tripwire that fails on any import of `ray` or `mlflow`: no case
may start Ray or touch a tracking store, even if a regression let a bad input through.

The subprocesses run a few at a time (one module fixture) to keep the corpus fast on small machines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BAD = Path(__file__).resolve().parent / "bad_inputs"

# The real CLI module, run as `python -m growthpace.cli`, with imports of ray and mlflow refused.
TRIPWIRE = """
import atexit, os, runpy, sys
# A bad-input case must be stopped before Ray or MLflow is imported. Probing whether they are installed
# (importlib.util.find_spec, as accelerate and transformers do) is not an import: look at what was
# actually loaded when the process ends.
def _tripwire():
    loaded = sorted({m.split(".")[0] for m in sys.modules} & {"ray", "mlflow"})
    if loaded:
        sys.stderr.write(f"tripwire: a bad-input case imported {loaded}: it got past validation\\n")
        sys.stderr.flush()
        os._exit(3)
atexit.register(_tripwire)
sys.argv = ["growthpace", *sys.argv[1:]]
runpy.run_module("growthpace.cli", run_name="__main__", alter_sys=True)
"""


@dataclass
class Case:
    id: str
    command: str
    expect: list[str] = field(default_factory=list)
    expect_re: list[str] = field(default_factory=list)
    setup: Callable[..., Path] | None = None  # (case folder, small data[, checkpoint]) -> spec path (or target)
    args: list[str] = field(default_factory=list)  # after the spec (or target) on the command line
    env_unset: list[str] = field(default_factory=list)  # variables removed from the CLI's environment
    checkpoint: bool = False  # setup takes the tiny checkpoint too
    snapshot: bool = False  # the case starts with a storage: it must be exactly as it was afterwards


@dataclass
class Result:
    rc: int
    stderr: str
    stdout: str
    folder: Path
    before: dict | None  # storage snapshot when the case starts with a storage


# ---------------------------------------------------------------- specs (files)


def _spec_case(path: Path) -> Case:
    head = [line[1:].strip() for line in path.read_bytes().decode("utf-8", "replace").splitlines() if line.startswith("#")]
    meta: dict[str, list[str]] = {}
    for line in head:
        if ":" in line:
            k, v = line.split(":", 1)
            meta.setdefault(k.strip(), []).append(v.strip())
    needs_data = meta.get("data", ["no"])[0] == "yes"

    def setup(folder: Path, data: Path) -> Path:
        if needs_data:
            (folder / "data").symlink_to(data, target_is_directory=True)
        spec = folder / path.name
        spec.write_bytes(path.read_bytes().replace(b"@BAD@", str(BAD).encode()))
        return spec

    return Case(path.stem, meta.get("command", ["plan"])[0], meta.get("expect", []), meta.get("expect-re", []), setup,
                env_unset=meta.get("env-unset", []))


SPEC_CASES = [_spec_case(p) for p in sorted((BAD / "specs").glob("*.yaml"))]


# ---------------------------------------------------------------- data (one defect per case)

GOOD_SPEC = {
    "name": "bad",
    "storage": "store",
    "models": [{"name": "llama-nano", "size": "s"}],
    "data": {"root": "data", "train_split": "1000", "volumes": [10, 20]},
    "evaluation": {"splits": ["valid", "test"], "ood": True},
}


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _edit_line(rel: str, n: int, edit: Callable[[dict], object]) -> Callable[[Path], None]:
    """Replace line n (1-based) of a data file by edit(record) (a dict, or bytes written as they are)."""

    def mutate(root: Path) -> None:
        path = root / rel
        lines = _lines(path)
        new = edit(json.loads(lines[n - 1]))
        lines[n - 1] = (new if isinstance(new, bytes) else json.dumps(new).encode()) + b"\n"
        path.write_bytes(b"".join(lines))

    return mutate


def _drop(key: str):
    return lambda r: {k: v for k, v in r.items() if k != key}


def _set(**kw):
    return lambda r: {**r, **kw}


def _first_with(rel: str, pred) -> Callable[[Path], int]:
    def find(root: Path) -> int:
        for i, line in enumerate(_lines(root / rel), 1):
            if pred(json.loads(line)):
                return i
        raise AssertionError(f"no record in {rel} fits the case")

    return find


def _torn(rel: str, n: int) -> Callable[[Path], None]:
    """Line n cut in half (a write that was interrupted), the following lines intact."""

    def mutate(root: Path) -> None:
        path = root / rel
        lines = _lines(path)
        lines[n - 1] = lines[n - 1][: len(lines[n - 1]) // 2] + b"\n"
        path.write_bytes(b"".join(lines))

    return mutate


def _truncate_file(rel: str) -> Callable[[Path], None]:
    """The file cut in the middle of its last record (no newline at the end)."""

    def mutate(root: Path) -> None:
        path = root / rel
        data = path.read_bytes()
        last = data.rstrip(b"\n").rfind(b"\n") + 1
        path.write_bytes(data[: last + (len(data) - last) // 2])

    return mutate


def _empty(rel: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).write_bytes(b"")


def _delete(rel: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).unlink()


def _bytes_in_line(rel: str, n: int, junk: bytes) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        path = root / rel
        lines = _lines(path)
        lines[n - 1] = lines[n - 1].replace(b'"content": "', b'"content": "' + junk, 1)
        path.write_bytes(b"".join(lines))

    return mutate


def _duplicate_id(rel: str, n: int, of: int) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        path = root / rel
        lines = _lines(path)
        first = json.loads(lines[of - 1])
        lines[n - 1] = json.dumps({**json.loads(lines[n - 1]), "idx": first["idx"]}).encode() + b"\n"
        path.write_bytes(b"".join(lines))

    return mutate


def _perplexity_line(rel: str, edit) -> Callable[[Path], None]:
    """Edit the first perplexity-ranked (question_format 1) record of an eval file."""

    def mutate(root: Path) -> None:
        n = _first_with(rel, lambda r: r["question_format"] == 1)(root)
        _edit_line(rel, n, edit)(root)

    return mutate


def _math_generate_line(edit) -> Callable[[Path], None]:
    rel = "curated/test/math_test.json"

    def mutate(root: Path) -> None:
        n = _first_with(rel, lambda r: r["question_format"] == 0 and r.get("answer") is not None)(root)
        _edit_line(rel, n, edit)(root)

    return mutate


def _data_case(id: str, mutate: Callable[[Path], None], *expect_re: str, spec: dict | None = None) -> Case:
    def setup(folder: Path, data: Path) -> Path:
        shutil.copytree(data, folder / "data")
        mutate(folder / "data")
        p = folder / "spec.yaml"
        p.write_text(yaml.safe_dump(spec or GOOD_SPEC))
        return p

    return Case(f"data-{id}", "run", [], list(expect_re), setup)


T1000 = "curated/1000"
WITH_SYNTHETIC = {**GOOD_SPEC, "data": {**GOOD_SPEC["data"], "sources": ["curated", "synthetic"]}}

DATA_CASES = [
    # the train pool
    _data_case("torn-json-line-train", _torn(f"{T1000}/biology_1000.json", 7),
               r"curated/1000/biology_1000\.json:7: not valid JSON"),
    _data_case("truncated-file-train", _truncate_file(f"{T1000}/code_1000.json"),
               r"curated/1000/code_1000\.json:60: not valid JSON"),
    _data_case("missing-field-type-train", _edit_line(f"{T1000}/history_1000.json", 3, _drop("type")),
               r"curated/1000/history_1000\.json:3: field 'type': missing"),
    _data_case("unknown-ability-train", _edit_line(f"{T1000}/ethics_1000.json", 5, _set(type="astrology")),
               r"curated/1000/ethics_1000\.json:5: field 'type': unknown ability 'astrology'"),
    _data_case("record-not-object-train", _edit_line(f"{T1000}/math_1000.json", 2, lambda r: b"[1, 2, 3]"),
               r"curated/1000/math_1000\.json:2: field '<record>'"),
    _data_case("last-turn-user-train", _edit_line(f"{T1000}/reasoning_1000.json", 4, lambda r: {**r, "messages": r["messages"][:1]}),
               r"curated/1000/reasoning_1000\.json:4: field 'messages': the last turn"),
    _data_case("empty-ability-file-train", _empty(f"{T1000}/ethics_1000.json"),
               r"curated/1000/ethics_1000\.json: empty data file"),
    _data_case("duplicate-ids-train", _duplicate_id(f"{T1000}/chinese_1000.json", 9, of=2),
               r"curated/1000/chinese_1000\.json:9: field 'idx': duplicate id .* \(first at line 2\)"),
    _data_case("torn-json-line-synthetic", _torn("synthetic/120/synthetic_train.json", 5),
               r"synthetic/120/synthetic_train\.json:5: not valid JSON", spec=WITH_SYNTHETIC),
    # the eval sets (read only after training before the up-front check)
    _data_case("missing-field-messages-valid", _edit_line("curated/valid/biology_valid.json", 2, _drop("messages")),
               r"curated/valid/biology_valid\.json:2: field 'messages': missing"),
    _data_case("wrong-question-format-test", _edit_line("curated/test/history_test.json", 3, _set(question_format=2)),
               r"curated/test/history_test\.json:3: field 'question_format': must be 0 \(generate\) or 1 \(perplexity\), got 2"),
    _data_case("question-format-as-string-test", _edit_line("curated/test/biology_test.json", 1, _set(question_format="1")),
               r"curated/test/biology_test\.json:1: field 'question_format'"),
    _data_case("perplexity-two-choices-valid", _perplexity_line("curated/valid/code_valid.json", lambda r: {**r, "choices": r["choices"][:2]}),
               r"curated/valid/code_valid\.json:\d+: field 'choices': a perplexity-ranked item needs exactly 3"),
    _data_case("perplexity-no-choices-test", _perplexity_line("curated/test/code_test.json", _drop("choices")),
               r"curated/test/code_test\.json:\d+: field 'choices'"),
    _data_case("math-without-answer-test", _math_generate_line(_drop("answer")),
               r"curated/test/math_test\.json:\d+: field 'answer'"),
    _data_case("empty-eval-file-test", _empty("curated/test/role_play_test.json"),
               r"curated/test/role_play_test\.json: empty data file"),
    _data_case("missing-eval-file-valid", _delete("curated/valid/understanding_valid.json"),
               r"curated/valid/understanding_valid\.json: no such data file"),
    _data_case("non-utf8-bytes-valid", _bytes_in_line("curated/valid/chinese_valid.json", 3, b"\xff\xfe"),
               r"curated/valid/chinese_valid\.json:3: not valid UTF-8"),
    _data_case("duplicate-ids-ood", _duplicate_id("ood/physician_test.json", 3, of=1),
               r"ood/physician_test\.json:3: field 'idx': duplicate id"),
    _data_case("missing-ood-file", _delete("ood/urban_rural_planner_test.json"),
               r"ood/urban_rural_planner_test\.json: no such data file"),
    _data_case("options-inline-option-formulation",
               _edit_line("curated/test/biology_test.json", 2,
                          lambda r: {**r, "messages": [{"role": "user", "content": "Q? A. x B. y C. z D. w"},
                                                       {"role": "assistant", "content": "B"}]}),
               r"curated/test/biology_test\.json: biology item '[^']+': option formulation: no option lines",
               spec={**GOOD_SPEC, "evaluation": {**GOOD_SPEC["evaluation"], "formulation": "option"}}),
]


# ---------------------------------------------------------------- checkpoints (a tiny trained cell, one defect)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, small_data) -> Path:
    """A checkpoint folder as training writes it: model/ (config, safetensors, tokenizer) + epoch.json."""
    from transformers import AutoModelForCausalLM

    from growthpace.platform.core.presets import PRESETS
    from growthpace.platform.train.models import llama_config, train_tokenizer
    from growthpace.platform.data.records import read_records

    records = read_records(small_data / "curated" / "1000" / "biology_1000.json", eval_split=False)
    tok = train_tokenizer(records)
    model = AutoModelForCausalLM.from_config(llama_config(PRESETS["llama-nano"], len(tok)))
    ck = tmp_path_factory.mktemp("ck") / "checkpoint_000000"
    model.save_pretrained(ck / "model", safe_serialization=True)
    tok.save_pretrained(ck / "model")
    (ck / "epoch.json").write_text(json.dumps({"epoch": 1, "train_loss": 1.0}))
    return ck


def _trained_storage(folder: Path, data: Path, checkpoint: Path, tokenizer: bool = False) -> tuple[Path, Path, str]:
    """folder/spec.yaml (absolute paths) + a storage whose first cell is trained: (spec, checkpoint, cell id).
    tokenizer: also the study's tokenizer, as `prepare` stores it (so a later command writes nothing new)."""
    from growthpace.platform.core.cells import expand
    from growthpace.platform.data.dataset import load_dataset
    from growthpace.platform.data.specfile import load_spec
    from growthpace.platform.store.storage import Layout, write_json

    spec_path = folder / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({**GOOD_SPEC, "storage": str(folder / "store"),
                                         "data": {**GOOD_SPEC["data"], "root": str(data)}}))
    spec = load_spec(spec_path)
    dataset = load_dataset(spec)
    cell = expand(spec, dataset.pool, dataset.fingerprint, dataset.corpus_digests)[0]
    layout = Layout.for_spec(spec)
    ck = layout.train / cell.cell_id / "checkpoint_000000"
    shutil.copytree(checkpoint, ck)
    if tokenizer:
        from growthpace.platform.train.models import ensure_tokenizer

        ensure_tokenizer(layout, dataset.train_records(), dataset.fingerprint)
    write_json(layout.cell_checkpoints(cell.cell_id),
               {"cell_id": cell.cell_id, "checkpoints": [{"epoch": 1, "train_loss": 1.0, "path": str(ck)}]})
    return spec_path, ck, cell.cell_id


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


CHECKPOINT_DEFECTS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    # id: (mutate(checkpoint folder, cell folder), stderr regex)
    "config-missing": (lambda ck, cell: (ck / "model" / "config.json").unlink(),
                       r"checkpoint .*checkpoint_000000: file .*model/config\.json is missing"),
    "config-garbage": (lambda ck, cell: _truncate(ck / "model" / "config.json"),
                       r"checkpoint .*checkpoint_000000: file .*model/config\.json is corrupted \(not valid JSON"),
    "safetensors-truncated": (lambda ck, cell: _truncate(ck / "model" / "model.safetensors"),
                              r"checkpoint .*: file .*model/model\.safetensors is corrupted \(.*(incomplete|header)"),
    "safetensors-garbage": (lambda ck, cell: (ck / "model" / "model.safetensors").write_bytes(b"not a tensor file " * 64),
                            r"checkpoint .*: file .*model/model\.safetensors is corrupted"),
    "safetensors-empty": (lambda ck, cell: (ck / "model" / "model.safetensors").write_bytes(b""),
                          r"checkpoint .*: file .*model/model\.safetensors is corrupted \(empty\)"),
    "safetensors-missing": (lambda ck, cell: (ck / "model" / "model.safetensors").unlink(),
                            r"checkpoint .*: file .*model/model\.safetensors is missing and this epoch has no stored scores"),
    "model-folder-missing": (lambda ck, cell: shutil.rmtree(ck / "model"),
                             r"checkpoint .*: file .*checkpoint_000000/model is missing and this epoch has no stored scores"),
    "tokenizer-missing": (lambda ck, cell: [(ck / "model" / f).unlink() for f in ("tokenizer.json", "tokenizer_config.json")],
                          r"checkpoint .*: file .*model/tokenizer\.json is missing \(no tokenizer\)"),
    "checkpoint-list-torn": (lambda ck, cell: _truncate(cell / "checkpoints.json"),
                             r"cells/[0-9a-f]+/checkpoints\.json: corrupted checkpoint list"),
}


def _checkpoint_case(id: str, mutate, pattern: str) -> Case:
    def setup(folder: Path, data: Path, checkpoint: Path) -> Path:
        spec, ck, cell_id = _trained_storage(folder, data, checkpoint)
        mutate(ck, folder / "store" / "cells" / cell_id)
        return spec

    return Case(f"checkpoint-{id}", "evaluate", [], [pattern], setup, checkpoint=True, snapshot=True)


CHECKPOINT_CASES = [_checkpoint_case(k, *v) for k, v in CHECKPOINT_DEFECTS.items()]
# ---------------------------------------------------------------- round two (issue 15): paths, pathological
# JSON, generate-data arguments, damaged stored files

def _deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _replace_line(rel: str, n: int, raw: bytes) -> Callable[[Path], None]:
    return _edit_line(rel, n, lambda r: raw)


ROUND2_DATA_CASES = [
    _data_case("math-empty-answer-test", _math_generate_line(_set(answer="")),
               r"curated/test/math_test\.json:\d+: field 'answer': a math item needs the reference final answer \(it is empty\)"),
    _data_case("math-blank-answer-valid", lambda root: _edit_line(
        "curated/valid/math_valid.json", _first_with("curated/valid/math_valid.json", lambda r: r["question_format"] == 0)(root),
        _set(answer="   "))(root), r"curated/valid/math_valid\.json:\d+: field 'answer'"),
    _data_case("deeply-nested-json-train", _replace_line(f"{T1000}/biology_1000.json", 4, _deep_json(100_000)),
               r"curated/1000/biology_1000\.json:4: not a usable record \(JSON nested too deeply"),
    _data_case("huge-number-valid", _replace_line("curated/valid/history_valid.json", 2, b'{"idx": ' + b"7" * 5000 + b"}"),
               r"curated/valid/history_valid\.json:2: not a usable record \(Exceeds the limit"),
    _data_case("deeply-nested-json-ood", _replace_line("ood/teacher_qualification_test.json", 1, b'{"messages": ' + _deep_json(50_000) + b"}"),
               r"ood/teacher_qualification_test\.json:1: not a usable record"),
]


def _path_case(id: str, prepare: Callable[[Path], None], spec: dict, *expect: str, command: str = "run") -> Case:
    """A spec whose storage, data root or tracking path is unusable (prepared in the case folder)."""

    def setup(folder: Path, data: Path) -> Path:
        (folder / "data").symlink_to(data, target_is_directory=True)
        prepare(folder)
        p = folder / "spec.yaml"
        p.write_text(yaml.safe_dump(spec))
        return p

    return Case(f"path-{id}", command, list(expect), [], setup, snapshot=True)


def _file(rel: str) -> Callable[[Path], None]:
    return lambda folder: (folder / rel).write_text("not a folder\n")


def _loop(rel: str) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        (folder / f"{rel}-b").symlink_to(folder / rel)
        (folder / rel).symlink_to(folder / f"{rel}-b")

    return make


def _non_empty_root(folder: Path) -> None:
    (folder / "gen").mkdir()
    (folder / "gen" / "notes.txt").write_text("someone's files\n")


PATH_CASES = [
    _path_case("storage-is-a-file", _file("store"), GOOD_SPEC, "field 'storage'", "is a file, not a folder"),
    _path_case("storage-under-a-file", _file("blob"), {**GOOD_SPEC, "storage": "blob/store"},
               "field 'storage'", "blob is a regular file, so nothing can be created under it"),
    _path_case("storage-symlink-loop", _loop("loop"), {**GOOD_SPEC, "storage": "loop/store"}, "field 'storage'", "Symlink loop"),
    _path_case("data-root-is-a-file", _file("flat.json"), {**GOOD_SPEC, "data": {**GOOD_SPEC["data"], "root": "flat.json"}},
               "field 'data.root'", "is a file, not a folder", command="plan"),
    _path_case("data-root-symlink-loop", _loop("dloop"), {**GOOD_SPEC, "data": {**GOOD_SPEC["data"], "root": "dloop"}},
               "field 'data.root'", "Symlink loop"),
    _path_case("tracking-sqlite-under-a-file", _file("blob"), {**GOOD_SPEC, "tracking": {"uri": "sqlite:///blob/mlflow.db"}},
               "field 'tracking.uri'", "blob: is a file, not a folder"),
    _path_case("generate-into-non-empty-root", _non_empty_root,
               {**GOOD_SPEC, "data": {**GOOD_SPEC["data"], "root": "gen", "generate": {"train_per_ability": 30}}},
               "gen: exists and is not an empty directory; refusing to overwrite a dataset"),
]


def _generate_case(id: str, prepare: Callable[[Path], None], target: str, args: list[str], *expect: str) -> Case:
    """`growthpace generate-data TARGET ...` with a bad target or count; the folder it works in stays as it was."""

    def setup(folder: Path, data: Path) -> Path:
        (folder / "store").mkdir()
        prepare(folder / "store")
        return folder / "store" / target

    return Case(f"generate-{id}", "generate-data", list(expect), [], setup, args=args, snapshot=True)


GENERATE_CASES = [
    _generate_case("non-empty-folder", lambda d: (d / "doit").mkdir() or (d / "doit" / "x.txt").write_text("x"), "doit", [],
                   "exists and is not an empty directory"),
    _generate_case("target-is-a-file", lambda d: (d / "doit").write_text("x"), "doit", [], "is a file, not a folder"),
    _generate_case("under-a-regular-file", lambda d: (d / "blob").write_text("x"), "blob/doit", [],
                   "blob is a regular file, so nothing can be created under it"),
    _generate_case("symlink-loop", _loop("loop"), "loop/doit", [], "Symlink loop"),
    _generate_case("zero-train-per-ability", lambda d: None, "doit", ["--train-per-ability", "0"],
                   "train_per_ability (--train-per-ability) must be a positive integer, got 0"),
    _generate_case("negative-synthetic", lambda d: None, "doit", ["--synthetic", "-5"],
                   "synthetic (--synthetic) must be a positive integer, got -5"),
    _generate_case("zero-world-per-family", lambda d: None, "doit", ["--world-per-family", "0"],
                   "world_per_family (--world-per-family) must be a positive integer, got 0"),
]


# Damaged stored files: a trained (or scored) storage with one file broken; the error names the file and
# the command that rebuilds it, and the storage is exactly as it was.

def _prediction_frame(cell_id: str, **over):
    import polars as pl

    row = {"cell_id": cell_id, "epoch": 1, "key": "abc-def-1", "backend": "transformers", "split": "test",
           "ability": "biology", "idx": "test-0", "kind": "choice", "prompt": "q", "text": "A",
           "letter_logprobs": None, "candidate_nll": None, "parsed": "A", "correct": False, "expected": 0.25, **over}
    return pl.DataFrame([row], schema_overrides={"letter_logprobs": pl.String, "candidate_nll": pl.List(pl.Float64)})


def _scores_frame(**over):
    import polars as pl

    row = {"cell_id": "c0", "epoch": 1, "split": "test", "ability": "biology", "score": 50.0, "expected": 25.0,
           "items": 4, "model": "llama-nano", "size": "s", "source": "curated", "volume": 10, "mix": "", "seed": 0,
           "epochs": 3, **over}
    return pl.DataFrame([row])


def _stored_case(id: str, command: str, mutate: Callable[[Path, Path, str], None], pattern: str,
                 tokenizer: bool = False) -> Case:
    """mutate(store, checkpoint folder, cell id) breaks one stored file of a trained storage."""

    def setup(folder: Path, data: Path, checkpoint: Path) -> Path:
        spec, ck, cell_id = _trained_storage(folder, data, checkpoint, tokenizer=tokenizer)
        mutate(folder / "store", ck, cell_id)
        return spec

    return Case(f"stored-{id}", command, [], [pattern], setup, checkpoint=True, snapshot=True)


def _checkpoints_json(entries) -> Callable[[Path, Path, str], None]:
    def mutate(store: Path, ck: Path, cell_id: str) -> None:
        value = entries(str(ck)) if callable(entries) else entries
        (store / "cells" / cell_id / "checkpoints.json").write_text(json.dumps({"cell_id": cell_id, "checkpoints": value}))

    return mutate


def _scored_epoch(key_bytes: bytes | None = None, table: bytes | None = None) -> Callable[[Path, Path, str], None]:
    """Epoch 1 scored and its weights deleted by retention; then its key file or scores table damaged."""

    def mutate(store: Path, ck: Path, cell_id: str) -> None:
        shutil.rmtree(ck / "model")
        scores = store / "cells" / cell_id / "scores"
        scores.mkdir(parents=True)
        (scores / "epoch_001.json").write_bytes(key_bytes if key_bytes is not None else b'{"key": "x-y-1"}')
        _scores_frame(cell_id=cell_id).write_parquet(scores / "epoch_001.parquet")
        if table is not None:
            (scores / "epoch_001.parquet").write_bytes(table)

    return mutate


def _scores_table(write: Callable[[Path], None], tracking: bytes | None = None) -> Callable[[Path, Path, str], None]:
    def mutate(store: Path, ck: Path, cell_id: str) -> None:
        write(store / "scores.parquet")
        if tracking is not None:
            (store / "tracking.json").write_bytes(tracking)

    return mutate


def _predictions(write: Callable[[Path, str], None]) -> Callable[[Path, Path, str], None]:
    def mutate(store: Path, ck: Path, cell_id: str) -> None:
        folder = store / "cells" / cell_id / "predictions"
        folder.mkdir(parents=True)
        write(folder / "epoch_001.parquet", cell_id)

    return mutate


STORED_CASES = [
    _stored_case("checkpoints-string-epoch", "evaluate", _checkpoints_json(lambda ck: [{"epoch": "1", "path": ck, "train_loss": 1.0}]),
                 r"checkpoints\.json.*checkpoints\[0\]\.epoch: expected an integer, got '1'.*growthpace sweep"),
    _stored_case("checkpoints-not-a-list", "evaluate", _checkpoints_json({"1": "somewhere"}),
                 r"checkpoints\.json.*expected \{checkpoints: \[\.\.\.\]\}"),
    _stored_case("checkpoints-null-path", "evaluate", _checkpoints_json([{"epoch": 1, "path": None}]),
                 r"checkpoints\.json.*checkpoints\[0\]\.path: expected a path"),
    _stored_case("score-key-torn", "evaluate", _scored_epoch(key_bytes=b'{"key": "x-y'),
                 r"scores/epoch_001\.json: damaged \(not valid JSON.*growthpace evaluate"),
    _stored_case("score-key-without-key", "evaluate", _scored_epoch(key_bytes=b'{"backend": "vllm"}'),
                 r"scores/epoch_001\.json: damaged \(wrong schema: expected \{key"),
    _stored_case("score-table-torn", "evaluate", _scored_epoch(table=b"PAR1 torn"),
                 r"scores/epoch_001\.parquet: damaged or not the table the study writes.*growthpace evaluate"),
    _stored_case("cell-run-id-torn", "evaluate", lambda store, ck, cell_id: (store / "cells" / cell_id / "mlflow.json").write_text('{"run_'),
                 r"mlflow\.json: damaged.*growthpace sync"),
    _stored_case("scores-garbage", "report", _scores_table(lambda p: p.write_bytes(b"garbage" * 100)),
                 r"scores\.parquet: damaged or not the table.*delete it and run `growthpace evaluate SPEC`"),
    _stored_case("scores-empty-file", "report", _scores_table(lambda p: p.write_bytes(b"")),
                 r"scores\.parquet: damaged"),
    _stored_case("scores-missing-column", "report", _scores_table(lambda p: _scores_frame().drop("score").write_parquet(p)),
                 r"scores\.parquet: damaged or not the table the study writes \(column 'score' is missing\)"),
    _stored_case("scores-string-score", "report", _scores_table(lambda p: _scores_frame(score="50").write_parquet(p)),
                 r"scores\.parquet: .*column 'score' has type String, expected num"),
    _stored_case("tracking-json-torn", "report",
                 _scores_table(lambda p: _scores_frame().write_parquet(p), tracking=b'{"parent_run_id": "ab'),
                 r"tracking\.json: damaged \(not valid JSON"),
    _stored_case("predictions-garbage", "rescore", _predictions(lambda p, c: p.write_bytes(b"\x00" * 64)),
                 r"predictions/epoch_001\.parquet: damaged.*growthpace evaluate"),
    _stored_case("predictions-missing-column", "rescore", _predictions(lambda p, c: _prediction_frame(c).drop("text").write_parquet(p)),
                 r"predictions/epoch_001\.parquet: .*column 'text' is missing"),
    _stored_case("predictions-unknown-item", "rescore", _predictions(lambda p, c: _prediction_frame(c, idx="no-such-item").write_parquet(p)),
                 r"predictions/epoch_001\.parquet: item test/biology/no-such-item is not in the eval sets", tokenizer=True),
    _stored_case("predictions-torn-logprobs", "rescore",
                 _predictions(lambda p, c: _prediction_frame(c, letter_logprobs='{"A": -0.1, "B"').write_parquet(p)),
                 r"predictions/epoch_001\.parquet: item test/biology/test-0: letter_logprobs is damaged.*growthpace evaluate",
                 tokenizer=True),
    _stored_case("predictions-logprobs-not-a-mapping", "rescore",
                 _predictions(lambda p, c: _prediction_frame(c, letter_logprobs="[1, 2]").write_parquet(p)),
                 r"letter_logprobs is damaged \(expected \{letter: log-prob\}\)", tokenizer=True),
    # a good epoch 1 and a damaged epoch 2: epoch 1 must not be rewritten either (the snapshot checks it)
    _stored_case("predictions-second-file-damaged", "rescore",
                 _predictions(lambda p, c: (_prediction_frame(c).write_parquet(p),
                                            _prediction_frame(c, epoch=2, letter_logprobs="nan{").write_parquet(
                                                p.with_name("epoch_002.parquet")))),
                 r"predictions/epoch_002\.parquet: item test/biology/test-0: letter_logprobs is damaged", tokenizer=True),
]

ROUND2_CASES = ROUND2_DATA_CASES + PATH_CASES + GENERATE_CASES + STORED_CASES


# ---------------------------------------------------------------- round three (issue 28): pre-training corpora,
# rescore on nothing, stored files a reader needs, benchmark's checkpoint check, recommend's options
# (the spec-only classes are specs/101-118)

def _corpus_case(id: str, corpus: str, pretrain: dict, command: str, *expect: str) -> Case:
    """The small dataset plus a pre-training corpus under data.root (the dataset's files linked, not copied)."""

    def setup(folder: Path, data: Path) -> Path:
        (folder / "data").mkdir()
        for child in data.iterdir():
            (folder / "data" / child.name).symlink_to(child, target_is_directory=child.is_dir())
        (folder / "data" / "short.txt").write_text(corpus, encoding="utf-8")
        p = folder / "spec.yaml"
        p.write_text(yaml.safe_dump({**GOOD_SPEC, "models": [{"name": "llama-nano", "size": "s",
                                                                "pretrain": {"corpus": "short.txt", **pretrain}}]}))
        return p

    return Case(f"corpus-{id}", command, list(expect), [], setup)


def _scored_storage(scores: Callable[[str], object] | None = None, checkpoints: dict | None = None,
                    card: object | None = None) -> Callable[[Path, Path, str], None]:
    """A trained cell with scores.parquet (``scores(cell_id)``: the frame) and, optionally, extra or damaged
    fields in its checkpoints.json and its card.json."""

    def mutate(store: Path, ck: Path, cell_id: str) -> None:
        frame = scores(cell_id) if scores is not None else _scores_frame(cell_id=cell_id)
        frame.write_parquet(store / "scores.parquet")
        if checkpoints is not None:
            path = store / "cells" / cell_id / "checkpoints.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), **checkpoints}))
        if card is not None:
            (store / "cells" / cell_id / "card.json").write_text(json.dumps(card))

    return mutate


def _benchmark_case(id: str, mutate: Callable[[Path], Path], pattern: str) -> Case:
    """`growthpace benchmark MODEL_DIR --cmmlu DIR` on a damaged copy of the tiny checkpoint (``mutate``
    returns the folder given on the command line)."""

    def setup(folder: Path, data: Path, checkpoint: Path) -> Path:
        ck = folder / "store" / "checkpoint_000000"
        shutil.copytree(checkpoint, ck)
        return mutate(ck)

    return Case(f"benchmark-{id}", "benchmark", [], [pattern], setup, args=["--cmmlu", "cmmlu"], checkpoint=True,
                snapshot=True)


def _recommend_case(id: str, args: list[str], pattern: str) -> Case:
    def setup(folder: Path, data: Path, checkpoint: Path) -> Path:
        spec, ck, cell_id = _trained_storage(folder, data, checkpoint)
        _scored_storage()(folder / "store", ck, cell_id)
        return spec

    return Case(f"recommend-{id}", "recommend", [], [pattern], setup, args=args, checkpoint=True, snapshot=True)


def _mix_scores(cell_id: str):
    """scores.parquet of one mix cell (no volume: an integer column of nulls, as beside curated cells)."""
    import polars as pl

    return _scores_frame(cell_id=cell_id, source="mix", volume=None, mix="m").with_columns(pl.col("volume").cast(pl.Int64))


def _no_weights(ck: Path) -> Path:
    for f in (ck / "model").glob("*.safetensors"):
        f.unlink()
    return ck


def _bare_model_truncated(ck: Path) -> Path:
    _truncate(ck / "model" / "model.safetensors")
    return ck / "model"


ROUND3_CASES = [
    # a pre-training corpus shorter than one block failed in the pre-training stage, after the first writes
    _corpus_case("shorter-than-a-block-run", "a tiny corpus\n", {"steps": 2, "batch": 2, "block": 64}, "run",
                 "field 'models[0].pretrain.block'", "not one block"),
    _corpus_case("shorter-than-a-block-plan", "one line\nand another\n", {"steps": 2, "batch": 2, "block": 512}, "plan",
                 "field 'models[0].pretrain.block': 512 tokens per sequence"),
    # rescore on a storage that never ran: no folder is created, nothing written
    Case("rescore-never-ran", "rescore", ["no stored predictions to rescore"], [],
         lambda folder, data: _write_spec(folder, data)),
    Case("rescore-empty-storage", "rescore", ["no stored predictions to rescore"], [],
         lambda folder, data: (folder / "store").mkdir() or _write_spec(folder, data), snapshot=True),
    _stored_case("rescore-trained-never-scored", "rescore", lambda store, ck, cell_id: None,
                 r"no stored predictions to rescore"),
    # report: every field a reader uses is checked (checkpoints.json's costs, scores.parquet's settings, a mix's card)
    _stored_case("report-checkpoints-string-wall-s", "report", _scored_storage(checkpoints={"wall_s": "12.5"}),
                 r"checkpoints\.json: corrupted checkpoint list .*wall_s: expected a number, got '12\.5'"),
    _stored_case("report-checkpoints-string-gpus", "report", _scored_storage(checkpoints={"gpus": "1"}),
                 r"checkpoints\.json: corrupted checkpoint list .*gpus: expected a number"),
    _stored_case("report-scores-without-volume", "report",
                 _scored_storage(lambda c: _scores_frame(cell_id=c).drop("volume")),
                 r"scores\.parquet: damaged or not the table the study writes \(column 'volume' is missing\)"),
    _stored_case("report-scores-without-size", "report",
                 _scored_storage(lambda c: _scores_frame(cell_id=c).drop("size")),
                 r"scores\.parquet: .*column 'size' is missing"),
    _stored_case("report-scores-string-volume", "report",
                 _scored_storage(lambda c: _scores_frame(cell_id=c, volume="10")),
                 r"scores\.parquet: .*column 'volume' has type String"),
    _stored_case("report-mix-card-without-counts", "report",
                 _scored_storage(_mix_scores,
                                 card={"items": 10}),
                 r"card\.json: damaged \(wrong schema: expected \{counts"),
    # benchmark runs evaluate's checkpoint check before any model loads
    _benchmark_case("checkpoint-without-weights", _no_weights,
                    r"checkpoint .*checkpoint_000000/model: file .*model/model\.safetensors is missing"),
    _benchmark_case("model-folder-truncated-weights", _bare_model_truncated,
                    r"file .*model/model\.safetensors is corrupted"),
    # recommend: the error names the option the user typed
    _recommend_case("budget-over-pool", ["--budget", "5000"],
                    r"option '--budget': 5000 is more than the 600 curated train items that exist"),
    _recommend_case("unknown-size", ["--budget", "100", "--size", "13b"],
                    r"option '--size': '13b' is not one of the models' sizes \['s'\]"),
]


def _write_spec(folder: Path, data: Path) -> Path:
    (folder / "data").symlink_to(data, target_is_directory=True)
    p = folder / "spec.yaml"
    p.write_text(yaml.safe_dump(GOOD_SPEC))
    return p


CASES = {c.id: c for c in SPEC_CASES + DATA_CASES + CHECKPOINT_CASES + ROUND2_CASES + ROUND3_CASES}


# ---------------------------------------------------------------- running the corpus


def _snapshot(root: Path) -> dict:
    if not os.path.lexists(root):
        return {}
    paths = [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in paths}


def _env(unset: list[str] = ()) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""))
    for key in unset:
        env.pop(key, None)
    return env


def _run(case: Case, folder: Path, data: Path, checkpoint: Path | None) -> Result:
    spec = case.setup(folder, data, checkpoint) if case.checkpoint else case.setup(folder, data)
    before = _snapshot(folder / "store") if case.snapshot else None
    # A clean machine's empty datasets cache: a benchmark's first load generates its splits, and what
    # datasets prints while it does must not reach the one-line error (CI caught it, a warm cache hid it).
    env = {**_env(case.env_unset), "HF_DATASETS_CACHE": str(folder.parent / f"{folder.name}-datasets-cache")}
    out = subprocess.run([sys.executable, "-c", TRIPWIRE, case.command, str(spec), *case.args], capture_output=True,
                         text=True, cwd=folder, env=env, timeout=300)
    return Result(out.returncode, out.stderr, out.stdout, folder, before)


@pytest.fixture(scope="module")
def results(request, tmp_path_factory, small_data) -> dict[str, Result]:
    """Every selected case, run a few at a time."""
    selected = [item.callspec.params["case_id"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "case_id" in item.callspec.params]
    cases = [CASES[i] for i in dict.fromkeys(selected)]
    checkpoint = request.getfixturevalue("tiny_checkpoint") if any(c.checkpoint for c in cases) else None
    folders = {c.id: tmp_path_factory.mktemp(re.sub(r"[^A-Za-z0-9]+", "-", c.id)[:40]) for c in cases}
    with ThreadPoolExecutor(max_workers=max(2, min(4, (os.cpu_count() or 2) + 1))) as pool:
        futures = {c.id: pool.submit(_run, c, folders[c.id], small_data, checkpoint) for c in cases}
        return {i: f.result() for i, f in futures.items()}


def test_corpus_size():
    """Issue 1 asked for at least 30 malformed inputs; issue 15 (round two) for 40 more, issue 28 (round
    three) for 30 more, over their classes."""
    assert len(SPEC_CASES) >= 30 and len(DATA_CASES) >= 15 and len(CHECKPOINT_CASES) >= 8
    round_two = [c for c in SPEC_CASES if 39 <= int(c.id.split("-")[0]) <= 100] + ROUND2_CASES
    assert len(round_two) >= 40
    round_three = [c for c in SPEC_CASES if 100 < int(c.id.split("-")[0]) < 200] + ROUND3_CASES  # issue 28: 30 more
    assert len(round_three) >= 30
    assert len(CASES) == (len(SPEC_CASES) + len(DATA_CASES) + len(CHECKPOINT_CASES) + len(ROUND2_CASES)
                          + len(ROUND3_CASES))  # unique ids


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input(case_id, results):
    case, r = CASES[case_id], results[case_id]
    shown = f"rc={r.rc}\nstderr:\n{r.stderr}\nstdout:\n{r.stdout}"
    assert r.rc == 2, shown
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, shown
    assert r.stderr.strip().startswith("error:"), shown
    assert r.stderr.count("error:") == 1, shown  # one error, not a cascade
    for text in case.expect:
        assert text in r.stderr, f"expected {text!r}\n{shown}"
    for pattern in case.expect_re:
        assert re.search(pattern, r.stderr), f"expected /{pattern}/\n{shown}"
    store = r.folder / "store"
    if r.before is None:  # nothing at all under storage
        assert not store.exists() or not any(store.iterdir()), sorted(map(str, store.rglob("*")))
    else:  # the storage the case started with, untouched
        assert _snapshot(store) == r.before
    assert not list(r.folder.rglob("mlflow.db")) and not (r.folder / "mlruns").exists()


# ---------------------------------------------------------------- what must still pass


def test_good_spec_plans(tmp_path, small_data):
    """The control: the corpus's good spec and data pass `plan` (so each case fails on its defect)."""
    (tmp_path / "data").symlink_to(small_data, target_is_directory=True)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(GOOD_SPEC))
    out = subprocess.run([sys.executable, "-c", TRIPWIRE, "plan", "spec.yaml"], capture_output=True, text=True,
                         cwd=tmp_path, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr
    assert "total: 2 cells" in out.stdout
    assert not (tmp_path / "store").exists()


def test_good_and_retained_checkpoints_pass_preflight(tmp_path, small_data, tiny_checkpoint):
    """A whole checkpoint passes; so does one whose weights retention deleted after it was scored."""
    from growthpace.evaluators.results import check_checkpoints, pending
    from growthpace.jobs.study import check_inputs
    from growthpace.platform.core.cells import expand
    from growthpace.platform.data.dataset import load_dataset
    from growthpace.platform.data.specfile import load_spec
    from growthpace.platform.store.storage import Layout, write_json

    spec_path, ck, cell_id = _trained_storage(tmp_path, small_data, tiny_checkpoint)
    spec = load_spec(spec_path)
    dataset = load_dataset(spec)
    cells = expand(spec, dataset.pool, dataset.fingerprint, dataset.corpus_digests)
    layout = Layout.for_spec(spec)
    check_inputs(spec, cells, layout, write=True)
    found = pending(cells, layout, "sethash")
    assert [t.cell_id for t in found.todo] == [cell_id] and found.scored_before == 0

    # retention deletes model/ after the epoch's scores are stored; a kill may stop it part-way
    write_json(layout.cell_scores(cell_id, 1).with_suffix(".json"), {"key": "x-sethash-1", "backend": "transformers"})
    (ck / "model" / "config.json").unlink()
    assert check_checkpoints(cells, layout) == 1
    found = pending(cells, layout, "sethash")
    assert (found.todo, found.scored_before) == ([], 1)
    shutil.rmtree(ck / "model")
    assert check_checkpoints(cells, layout) == 1
    found = pending(cells, layout, "sethash")
    assert (found.todo, found.scored_before) == ([], 1)
