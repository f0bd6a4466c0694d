"""A study of one's own (issue 23): abilities and sources declared in the spec, data in chat `messages`
JSONL, DoIT as the preset when nothing is declared. Pure and fast: no Ray (tests/test_own_study_run.py
runs the declared studies end to end)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from growthpace.platform.core.abilities import ABILITIES
from growthpace.platform.core.items import DataError
from growthpace.platform.core.spec import SpecError
from growthpace.platform.data.specfile import load_spec

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "experiments" / "example-own-study.yaml"


def write_study(folder: Path, abilities: list[tuple[str, str]], *, per_source: int = 8, test: int = 3,
                sources=("human", "gpt4o"), volumes=None, extra_data: dict | None = None,
                ood: list[tuple[str, str]] = (), **spec_extra) -> Path:
    """A tiny declared study: per ability ``per_source`` train items in each source, ``test`` valid and
    test items; kinds choice / true_false / math / perplexity / cloze as declared. ``ood``: declared
    OOD sets (name, kind) of ``test`` items each, in ood/<name>.jsonl."""

    def item(name: str, kind: str, i: int, tag: str) -> dict:
        if kind == "choice":
            return {"messages": [{"role": "user", "content": f"{name} {tag} {i}?\nA. x\nB. y\nC. z\nD. w"},
                                 {"role": "assistant", "content": "ABCD"[i % 4]}]}
        if kind == "true_false":
            return {"messages": [{"role": "user", "content": f"{name} {tag} {i} holds?"},
                                 {"role": "assistant", "content": "TF"[i % 2]}]}
        if kind == "math":
            return {"messages": [{"role": "user", "content": f"{i} + {i} ({name} {tag})?"},
                                 {"role": "assistant", "content": f"The answer is {2 * i}"}], "answer": str(2 * i)}
        if kind == "perplexity":
            return {"messages": [{"role": "user", "content": f"Spell {name} {tag} {i}"},
                                 {"role": "assistant", "content": "right"}], "choices": ["right", "rihgt", "rigth"]}
        return {"messages": [{"role": "user", "content": f"Fill in {name} {tag} {i}"},
                             {"role": "assistant", "content": f"word{i}"}]}

    data = folder / "data"
    for s in sources:
        rows = [{"id": f"{s}-{a}-{i}", "ability": a, **item(a, k, i, s)} for a, k in abilities for i in range(per_source)]
        (data / "train").mkdir(parents=True, exist_ok=True)
        (data / "train" / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for split in ("valid", "test"):
        rows = [{"id": f"{split}-{a}-{i}", "ability": a, **item(a, k, i, split)} for a, k in abilities for i in range(test)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, kind in ood:
        (data / "ood").mkdir(parents=True, exist_ok=True)
        (data / "ood" / f"{name}.jsonl").write_text(
            "".join(json.dumps({"id": f"ood-{i}", **item(name, kind, i, "ood")}) + "\n" for i in range(test)))
    spec = {
        "name": "own", "storage": str(folder / "store"),
        "abilities": [{"name": a, "kind": k} for a, k in abilities],
        **({"ood": [{"name": n, "kind": k, "file": f"ood/{n}.jsonl"} for n, k in ood]} if ood else {}),
        "models": [{"name": "llama-nano", "size": "s", "resources": {"cpus_per_worker": 0.5, "driver_cpus": 0.25}}],
        "data": {"root": str(data), "layout": "messages", "ability_field": "ability", "valid": "valid.jsonl",
                 "test": "test.jsonl",
                 "sources": [{"name": s, "train": f"train/{s}.jsonl", **({"volumes": volumes[s]} if volumes else {})}
                             for s in sources],
                 "volumes": [len(abilities), 2 * len(abilities)], **(extra_data or {})},
        "training": {"epochs": 1, "per_device_batch": 8, "max_length": 64, "lr": 3e-3, "end_lr": 3e-4},
        "evaluation": {"ood": bool(ood), "warmup_epochs": 0, "max_new_tokens": {"math": 8, "cloze": 4}},
        **spec_extra,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _prepare(path: Path):
    from growthpace.jobs.study import prepare

    return prepare(load_spec(path), write=False)


def test_a_spec_that_declares_nothing_is_the_doit_preset():
    spec = load_spec(REPO / "experiments" / "local.yaml")
    assert not spec.declared and spec.ability_names == ABILITIES
    assert spec.data.primary_source == "curated" and spec.source_pairs == [("curated", "synthetic")]
    assert spec.data.source("synthetic").labeled is False and spec.data.source("synthetic").volumes == [640, 2560]


def test_doit_plan_keeps_its_totals():
    """The figures `plan experiments/doit.yaml --json` gave before abilities could be declared."""
    from typer.testing import CliRunner

    from growthpace.cli import app

    out = CliRunner().invoke(app, ["plan", str(REPO / "experiments" / "doit.yaml"), "--json"])
    assert out.exit_code == 0, out.output
    t = json.loads(out.output)["totals"]
    assert (t["cells"], t["items"], t["epochs"], t["optimizer_steps"], t["tokens"], t["train_tokens"]) == (
        29, 266974, 507, 62871, 103251350, 1556271943)


def test_example_study_checks_and_names_how_each_ability_is_scored():
    from typer.testing import CliRunner

    from growthpace.cli import app

    out = CliRunner().invoke(app, ["check", str(EXAMPLE)])
    assert out.exit_code == 0, out.output
    lines = {line.split()[1]: line for line in out.output.splitlines() if line.startswith("│")}
    assert "math 30" in lines["unit_conversion"] and "0.0%" in lines["unit_conversion"]
    assert "choice 30" in lines["capital_cities"] and "25.0%" in lines["capital_cities"]
    assert "true_false 30" in lines["review_sentiment"] and "50.0%" in lines["review_sentiment"]
    assert "perplexity 30" in lines["spelling"] and "rank" in lines["spelling"] and "33.3%" in lines["spelling"]
    assert "human 120, paraphrased 120" in lines["spelling"] and "human vs paraphrased" in out.output


def test_declared_items_carry_their_kind_and_baseline_into_the_eval_set_hash(tmp_path):
    from growthpace.evaluators.results import eval_set_hash
    from growthpace.evaluators.scoring import expected
    from growthpace.platform.core.items import question_kind

    path = write_study(tmp_path, [("quiz", "choice"), ("spell", "perplexity")])
    study = _prepare(path)
    quiz = study.eval_sets[("test", "quiz")]
    assert {question_kind(r) for r in quiz} == {"choice"} and expected(quiz[0]) == pytest.approx(0.25)
    spell = study.eval_sets[("test", "spell")]
    assert {question_kind(r) for r in spell} == {"perplexity"} and expected(spell[0]) == pytest.approx(1 / 3)
    raw = yaml.safe_load(path.read_text())
    raw["abilities"][1]["baseline"] = 0.5  # a declared baseline wins, and is part of what the results stand on
    path.write_text(yaml.safe_dump(raw))
    again = _prepare(path)
    assert expected(again.eval_sets[("test", "spell")][0]) == 0.5
    assert eval_set_hash(again.eval_sets, {}) != eval_set_hash(study.eval_sets, {})


def test_named_sources_get_their_own_cells_and_the_fingerprint_covers_how_files_are_read(tmp_path):
    path = write_study(tmp_path, [("quiz", "choice"), ("facts", "true_false")])
    study = _prepare(path)
    by = {(c.source, c.volume): c for c in study.cells}
    assert sorted(by) == [("gpt4o", 2), ("gpt4o", 4), ("human", 2), ("human", 4)]
    # the same counts from two sources are two cells, each drawing its own items
    assert by[("human", 4)].allocation.curated == by[("gpt4o", 4)].allocation.curated == {"quiz": 2, "facts": 2}
    assert by[("human", 4)].cell_id != by[("gpt4o", 4)].cell_id
    picked = {s: study.dataset.pool.select(by[(s, 4)].allocation, 0) for s in ("human", "gpt4o")}
    assert all(r.idx.startswith("human-") for r in picked["human"]) and all(r.idx.startswith("gpt4o-") for r in picked["gpt4o"])
    ids = {c.cell_id for c in study.cells}
    # one byte of one train file changes every cell of the study (the fingerprint covers it) ...
    f = tmp_path / "data" / "train" / "human.jsonl"
    f.write_text(f.read_text().replace("quiz human 0?", "quiz human 0 ?"))
    assert not ids & {c.cell_id for c in _prepare(path).cells}
    # ... and so does reading the same bytes another way (another field naming the same abilities)
    for name in ("valid", "test", "train/human", "train/gpt4o"):
        p = tmp_path / "data" / f"{name}.jsonl"
        p.write_text("".join(json.dumps({**r, "skill": r["ability"]}) + "\n"
                             for r in map(json.loads, p.read_text().splitlines())))
    before = {c.cell_id for c in _prepare(path).cells}
    raw = yaml.safe_load(path.read_text())
    raw["data"]["ability_field"] = "skill"
    path.write_text(yaml.safe_dump(raw))
    assert not before & {c.cell_id for c in _prepare(path).cells}


def test_the_ability_can_come_from_the_file_name(tmp_path):
    path = write_study(tmp_path, [("quiz", "choice"), ("facts", "true_false")])
    data = tmp_path / "data"
    for split in ("valid", "test"):  # one file per ability in a folder per split, no ability field
        rows = [json.loads(x) for x in (data / f"{split}.jsonl").read_text().splitlines()]
        (data / split).mkdir()
        for a in ("quiz", "facts"):
            (data / split / f"{a}.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "ability"}) + "\n"
                                                         for r in rows if r["ability"] == a))
    raw = yaml.safe_load(path.read_text())
    (data / "train" / "by").mkdir()
    for s in ("human", "gpt4o"):
        rows = [json.loads(x) for x in (data / "train" / f"{s}.jsonl").read_text().splitlines()]
        (data / "train" / "by" / s).mkdir()
        for a in ("quiz", "facts"):
            (data / "train" / "by" / s / f"{a}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in rows if r["ability"] == a))
    raw["data"].pop("ability_field")
    raw["data"].update(valid="valid", test="test")
    raw["data"]["sources"] = [{"name": s, "train": f"train/by/{s}"} for s in ("human", "gpt4o")]
    path.write_text(yaml.safe_dump(raw))
    study = _prepare(path)
    assert {a: len(v) for a, v in study.dataset.pool.labeled["gpt4o"].items()} == {"quiz": 8, "facts": 8}
    assert [r.type for r in study.eval_sets[("test", "facts")]] == ["facts"] * 3


def test_an_unlabeled_pool_draws_totals_and_mixes_cap_the_declared_abilities(tmp_path):
    path = write_study(tmp_path, [("quiz", "choice"), ("facts", "true_false")])
    raw = yaml.safe_load(path.read_text())
    pool = tmp_path / "data" / "train" / "pool.jsonl"  # no ability field: an unlabeled pool, like DoIT's synthetic
    pool.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"say {i}"},
                                                     {"role": "assistant", "content": str(i)}]}) + "\n" for i in range(30)))
    raw["data"]["sources"].append({"name": "pool", "train": "train/pool.jsonl", "labeled": False, "volumes": [5, 25]})
    raw["data"]["mixes"] = [{"name": "quiz-heavy", "total": 6, "caps": {"quiz": 5}, "synthetic": 3}]
    path.write_text(yaml.safe_dump(raw))
    study = _prepare(path)
    pool_cells = [c for c in study.cells if c.source == "pool"]
    assert [c.allocation.synthetic for c in pool_cells] == [5, 25] and all(not c.allocation.curated for c in pool_cells)
    (mix,) = [c for c in study.cells if c.mix == "quiz-heavy"]
    assert mix.allocation.curated == {"quiz": 5, "facts": 1} and mix.allocation.synthetic == 3
    items = study.dataset.pool.select(mix.allocation, 0)
    assert sum(r.type == "synthetic" for r in items) == 3 and len(items) == 9
    assert study.spec.source_pairs == [("human", "gpt4o"), ("human", "pool"), ("gpt4o", "pool")]


@pytest.mark.parametrize("n", [1, 30])
def test_one_and_thirty_abilities_plan(tmp_path, n):
    kinds = ["choice", "true_false", "math", "perplexity", "cloze"]
    path = write_study(tmp_path, [(f"skill_{i:02d}", kinds[i % len(kinds)]) for i in range(n)], sources=("human",))
    study = _prepare(path)
    assert len(study.spec.ability_names) == n and len(study.cells) == 2
    assert [c.allocation.total for c in study.cells] == [n, 2 * n]
    assert all(set(c.allocation.curated) == set(study.spec.ability_names) for c in study.cells)
    assert len([k for k in study.eval_sets if k[0] == "test"]) == n


def test_spec_limits_on_declared_abilities(tmp_path):
    path = write_study(tmp_path, [("quiz", "choice")])
    raw = yaml.safe_load(path.read_text())
    raw["abilities"] = [{"name": f"a{i}", "kind": "cloze"} for i in range(51)]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="field 'abilities': List should have at most 50 items"):
        load_spec(path)
    raw["abilities"] = [{"name": "quiz", "kind": "multiple_choice"}]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"field 'abilities\[0\]\.kind'"):
        load_spec(path)


def _scores(abilities: list[str], sources: list[str], rng) -> pl.DataFrame:
    rows = []
    for size, lift in (("0.2M", 0.0), ("1.6M", 8.0)):
        for si, source in enumerate(sources):
            for v in (8, 16, 32, 64):
                for epoch in (1, 2):
                    for split in ("valid", "test"):
                        for i, a in enumerate(abilities):
                            p = min(95.0, 25 + lift + (3 + i % 5) * math.log2(v) - 4 * si)
                            s = 100 * rng.binomial(40, p / 100) / 40
                            rows.append((f"{size}-{source}-{v}", epoch, split, a, s, 25.0, 40, size, source, v, ""))
    frame = pl.DataFrame(rows, orient="row", schema=["cell_id", "epoch", "split", "ability", "score", "expected", "items",
                                                     "size", "source", "volume", "mix"])
    return frame.with_columns(model=pl.lit("m"), seed=pl.lit(0), epochs=pl.lit(2))


def test_report_follows_the_declaration(tmp_path):
    """30 declared abilities and three named sources: a panel per ability, every pair of sources compared,
    curves of the first source, the pace table fastest first."""
    from growthpace.jobs import report

    names = [f"skill_{i:02d}" for i in range(30)]
    path = write_study(tmp_path, [(a, "choice") for a in names], sources=("human", "gpt4o", "pool"))
    spec = load_spec(path)
    scores = _scores(names, ["human", "gpt4o", "pool"], np.random.default_rng(0))
    index = report.write_report(scores, tmp_path / "report", "own", lambda e: 0, spec=spec, storage=tmp_path)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["declaration"] == {"abilities": names, "primary": "human",
                                      "pairs": [["human", "gpt4o"], ["human", "pool"], ["gpt4o", "pool"]], "ood": []}
    assert not (tmp_path / "report" / "ood.png").exists()  # no OOD set declared: no panel of DoIT's subjects
    assert {(g["a"], g["b"]) for g in summary["source_gap"]} == {("human", "gpt4o"), ("human", "pool"), ("gpt4o", "pool")}
    assert {r["source"] for r in summary["measured"]} == {"human", "gpt4o", "pool"}
    assert {a["ability"] for a in summary["abilities"]} == set(names)
    h = summary["headline"]
    assert (h["source"], h["above_baseline"]["of"], h["sources"]["a"], h["sources"]["b"]) == ("human", 30, "human", "gpt4o")
    assert h["sources"]["a_better"] > 0  # gpt4o is 4 points behind human by construction
    html = Path(index).read_text()
    assert "Human minus gpt4o" in html and "skill_29" in html
    gains = [a["range_gain_per_doubling"]["value"] for a in report.page.by_pace(summary["abilities"])]
    assert gains == sorted(gains, reverse=True)
    series = report.mlflow_series(summary)
    assert {k for k in series if k.startswith("curve/1.6M/")} == {f"curve/1.6M/{a}" for a in names}
    from PIL import Image

    width, height = Image.open(tmp_path / "report" / "abilities.png").size
    assert height > width / 2  # 30 panels: 5 rows of 6, not the ten-ability 2 x 5 strip


def test_grid_is_sized_to_the_number_of_abilities():
    from growthpace.platform.report.plots import grid_columns

    assert [grid_columns(n) for n in (1, 2, 4, 10, 30, 50)] == [1, 2, 4, 5, 6, 6]


def test_declared_abilities_over_the_doit_folder_layout(tmp_path):
    """The issue's first try: two abilities of one's own in DoIT's curated/{full,valid,test}/ folders."""
    root = tmp_path / "data"
    for split, n in (("full", 12), ("valid", 3), ("test", 3)):
        (root / "curated" / split).mkdir(parents=True)
        for ability, gold in (("arithmetic", lambda i: f"The answer is {i + 1}"), ("translation", lambda i: f"mot{i}")):
            rows = [{"type": ability, "idx": i, "question_format": 0, "answer": str(i + 1),
                     "messages": [{"role": "user", "content": f"{ability} {split} {i}"},
                                  {"role": "assistant", "content": gold(i)}]} for i in range(n)]
            (root / "curated" / split / f"{ability}_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": "mine", "storage": str(tmp_path / "store"),
            "abilities": [{"name": "arithmetic", "kind": "math"}, {"name": "translation", "kind": "cloze"}],
            "models": [{"name": "llama-nano", "size": "s"}],
            "data": {"root": str(root), "volumes": [4, 8]}, "evaluation": {"ood": False}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    study = _prepare(path)
    assert [c.allocation.curated for c in study.cells] == [{"arithmetic": 2, "translation": 2},
                                                           {"arithmetic": 4, "translation": 4}]
    from growthpace.platform.core.items import question_kind

    assert {question_kind(r) for r in study.eval_sets[("test", "arithmetic")]} == {"math"}
    assert {question_kind(r) for r in study.eval_sets[("valid", "translation")]} == {"cloze"}


def test_declared_ood_sets_are_scored_under_their_declaration(tmp_path):
    from growthpace.platform.data.dataset import load_eval_sets

    spec = load_spec(write_study(tmp_path, [("adding", "math"), ("quiz", "choice")], ood=[("far_quiz", "true_false")]))
    assert spec.ood_subjects == ("far_quiz",)
    sets = load_eval_sets(spec)
    far = sets[("ood", "far_quiz")]
    assert len(far) == 3 and {r.type for r in far} == {"far_quiz"} and {r.kind for r in far} == {"true_false"}
    assert {r.baseline for r in far} == {None} and ("test", "far_quiz") not in sets
    # the example study ships one, scored as a choice question
    example = load_spec(EXAMPLE)
    assert example.ood_subjects == ("larger_number",) and example.ability("larger_number").kind == "choice"
    assert {r.kind for r in load_eval_sets(example)[("ood", "larger_number")]} == {"choice"}


def test_declared_ood_sets_are_refused_when_they_cannot_mean_one_thing(tmp_path):
    from growthpace.platform.data.dataset import load_eval_sets

    path = write_study(tmp_path, [("adding", "math")], ood=[("Adding", "choice")])
    with pytest.raises(SpecError, match=r"ood\[0\]\.name.*'Adding' and 'adding'"):
        load_spec(path)
    raw = yaml.safe_load(path.read_text())
    raw["ood"] = [{"name": "far", "kind": "choice", "file": "ood/nowhere.jsonl"}]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match=r"nowhere.jsonl: no such data file \(field 'ood\[0\]\.file'\)"):
        load_eval_sets(load_spec(path))
    raw["ood"] = [{"name": "far", "kind": "perplexity", "file": "ood/Adding.jsonl"}]  # choice items: no candidates
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match=r"Adding.jsonl:1: field '.*'.*kind perplexity"):
        load_eval_sets(load_spec(path))
    doit = yaml.safe_load((REPO / "experiments" / "local.yaml").read_text())
    doit["ood"] = [{"name": "far", "kind": "choice", "file": "x.jsonl"}]
    (tmp_path / "doit.yaml").write_text(yaml.safe_dump(doit))
    with pytest.raises(SpecError, match=r"doit.yaml: field 'ood': out-of-domain sets are declared with the study's abilities"):
        load_spec(tmp_path / "doit.yaml")
