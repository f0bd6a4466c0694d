"""The procedural dataset: layout, schema, per-family formats, determinism, atomic writing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from growthpace.platform.data import generate as gen_mod
from growthpace.platform.core.abilities import ABILITIES, CHAT_TOKENS, OOD_SUBJECTS
from growthpace.platform.data.generate import HEDGES, IDIOMS, generate_dataset
from growthpace.platform.data.records import (
    DataError,
    curated_path,
    read_ood,
    read_records,
    WORLD,
    read_split,
    read_world,
    synthetic_path,
    world_path,
)

SMALL = dict(train_per_ability=30, valid_per_ability=5, test_per_ability=5, ood_per_subject=5, synthetic=200)
PERPLEXITY = ("code", "creative_writing", "role_play")
OPTION = re.compile(r"^([A-D])\. ", re.M)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen") / "data"
    summary = generate_dataset(root, seed=0, **SMALL)
    return root, summary


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _options(text: str) -> list[str]:
    return OPTION.findall(text)


def _all(root):
    return {s: read_split(root, s) for s in ("1000", "full", "valid", "test")}


def test_every_file_rereads_and_matches_summary(data):
    root, summary = data
    assert set(summary) == {str(p.relative_to(root)) for p in root.rglob("*.json")}
    for rel, n in summary.items():
        eval_split = rel.startswith(("curated/valid", "curated/test"))
        types = (Path(rel).name.removesuffix("_test.json"),) if rel.startswith("ood/") else ABILITIES
        assert len(read_records(root / rel, eval_split=eval_split, types=types)) == n
    splits = _all(root)
    assert all(set(s) == set(ABILITIES) for s in splits.values())
    assert synthetic_path(root) == root / "synthetic" / "200" / "synthetic_train.json"
    assert set(read_ood(root)) == set(OOD_SUBJECTS)
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert all(f"| {a} |" in readme for a in ABILITIES)


def test_types_formats_ids_and_short_texts(data):
    root, _ = data
    for split, by_ability in _all(root).items():
        for ability, recs in by_ability.items():
            assert len({r.idx for r in recs}) == len(recs)
            for r in recs:
                assert r.type == ability
                assert r.question_format == (1 if ability in PERPLEXITY else 0)
                assert all(len(c) < 200 for _, c in r.messages)
                roles = [role for role, _ in r.messages]
                assert roles == ["user", "assistant"] * (len(roles) // 2)


def test_perplexity_items_have_three_candidates_gold_first(data):
    root, _ = data
    splits = _all(root)
    for ability in PERPLEXITY:
        for split in ("valid", "test"):
            for r in splits[split][ability]:
                assert r.choices is not None and len(r.choices) == 3 and len(set(r.choices)) == 3
                assert r.gold == r.choices[0]
        for r in splits["full"][ability]:
            assert r.choices is None or r.gold == r.choices[0]


def test_multiple_choice_golds_are_listed_letters(data):
    root, _ = data
    splits = _all(root)
    for split, by_ability in splits.items():
        for ability in ("biology", "history", "chinese", "understanding", "reasoning"):
            for r in by_ability[ability]:
                opts = _options(r.prompt[-1][1])
                if ability in ("history", "chinese") and not opts:
                    continue  # true/false or cloze, checked below
                n = 4 if ability != "understanding" else len(opts)
                assert opts == list("ABCD"[:n]) and n in (3, 4)
                assert r.gold in opts


def test_ethics_gold_is_a_sorted_subset(data):
    root, _ = data
    for recs in _all(root).values():
        for r in recs["ethics"]:
            assert _options(r.prompt[-1][1]) == list("ABCD")
            assert 1 <= len(r.gold) <= 3 and set(r.gold) <= set("ABCD")
            assert r.gold == "".join(sorted(set(r.gold)))


def test_math_boxed_answer_matches_and_arithmetic_holds(data):
    root, _ = data
    for recs in _all(root).values():
        for r in recs["math"]:
            m = re.search(r"The answer is \\boxed\{(-?\d+)\}\.$", r.gold)
            assert m and r.answer == m.group(1)
            for x, op, y, z in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)\.", r.gold):
                assert eval(f"{x} {op} {y}") == int(z)
            assert r.gold.split(" = ")[-1].startswith(r.answer + ".")


def test_history_true_false_and_chinese_cloze(data):
    root, _ = data
    recs = [r for s in _all(root).values() for r in s["history"]]
    tf = [r for r in recs if not _options(r.prompt[-1][1])]
    assert tf and {r.gold for r in tf} == {"正确", "错误"}
    idioms = {i for i, _ in IDIOMS}
    recs = [r for s in _all(root).values() for r in s["chinese"]]
    cloze = [r for r in recs if not _options(r.prompt[-1][1])]
    assert cloze and len(cloze) < len(recs)
    for r in cloze:
        blanked = r.prompt[-1][1].split("：")[-1]
        assert len(r.gold) == 1 and "\u4e00" <= r.gold <= "\u9fff"
        assert blanked.replace("_", r.gold) in idioms


def test_understanding_is_a_dialogue(data):
    root, _ = data
    for recs in _all(root).values():
        for r in recs["understanding"]:
            assert len(r.prompt) >= 5  # at least two earlier user/assistant turns, then the question
            assert len(_options(r.prompt[-1][1])) in (3, 4)


def test_ood_is_five_shot(data):
    root, _ = data
    for subject, recs in read_ood(root).items():
        assert len(recs) == 5
        for r in recs:
            assert r.type == subject and r.question_format == 0
            assert len(r.messages) == 12  # 5 worked examples (user, assistant) + question + gold
            for k in range(0, 12, 2):
                assert _options(r.messages[k][1]) == list("ABCD")
                assert r.messages[k + 1][1] in "ABCD" and len(r.messages[k + 1][1]) == 1


def test_1000_split_is_prefix_of_full_and_full_sizes_vary(data):
    root, _ = data
    one, full = read_split(root, "1000"), read_split(root, "full")
    for a in ABILITIES:
        assert 30 <= len(full[a]) <= 60
        assert one[a] == full[a][: min(1000, 30)]
    assert len({len(full[a]) for a in ABILITIES}) > 1


def test_eval_prompts_are_new_where_the_family_allows(data):
    root, _ = data
    full, valid, test = (read_split(root, s) for s in ("full", "valid", "test"))
    for a in ABILITIES:
        if a in ("history", "chinese"):
            continue  # true/false statements and cloze idioms are a closed set
        seen = {r.prompt for r in full[a]}
        assert not [r for r in valid[a] + test[a] if r.prompt in seen], a


def test_synthetic_covers_all_families_and_is_noisy(data):
    root, _ = data
    syn = read_records(synthetic_path(root), eval_split=False)
    assert len(syn) == 200 and {r.type for r in syn} == set(ABILITIES)
    mc = [r for r in syn if r.type in ("biology", "reasoning", "understanding", "ethics")]
    not_letters = [r for r in mc if not re.fullmatch(r"[A-D]{1,3}", r.gold)]
    assert len(not_letters) >= 0.2 * len(mc)
    assert any(r.gold in HEDGES for r in syn)
    # the same prompt kinds as curated: true/false and cloze items are not filtered out
    assert any(r.type == "history" and not _options(r.prompt[-1][1]) for r in syn)
    assert any(r.type == "chinese" and not _options(r.prompt[-1][1]) for r in syn)
    assert all(r.question_format == (1 if r.type in PERPLEXITY else 0) for r in syn)


def test_deterministic_per_seed(data, tmp_path):
    root, _ = data
    generate_dataset(tmp_path / "same", seed=0, **SMALL)
    assert _files(tmp_path / "same") == _files(root)
    generate_dataset(tmp_path / "other", seed=1, **SMALL)
    assert _files(tmp_path / "other") != _files(root)


def test_deterministic_across_hash_seeds(data, tmp_path):
    root, _ = data
    code = ("import sys; from pathlib import Path; from growthpace.platform.data.generate import generate_dataset; "
            f"generate_dataset(Path(sys.argv[1]), seed=0, **{SMALL!r})")
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(Path(gen_mod.__file__).parents[3]))
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "sub")], check=True, env=env)
    assert _files(tmp_path / "sub") == _files(root)


def test_refuses_a_non_empty_root_and_accepts_an_empty_one(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    generate_dataset(root, **SMALL)  # an empty directory is replaced
    assert curated_path(root, "test", "math").is_file()
    before = _files(root)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_dataset(root, seed=1, **SMALL)
    assert _files(root) == before
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_a_crash_leaves_no_half_written_dataset(tmp_path, monkeypatch):
    calls = []

    def failing_write(path, records):
        calls.append(path)
        if len(calls) > 3:
            raise OSError("disk full")
        real_write(path, records)

    real_write = gen_mod.write_records
    monkeypatch.setattr(gen_mod, "write_records", failing_write)
    with pytest.raises(OSError, match="disk full"):
        generate_dataset(tmp_path / "data", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="train_per_ability"):
        generate_dataset(tmp_path / "data", train_per_ability=0)
    assert not (tmp_path / "data").exists()


def test_default_size_is_fast(tmp_path):
    start = time.perf_counter()
    summary = generate_dataset(tmp_path / "data")
    assert time.perf_counter() - start < 10
    assert summary["curated/1000/math_1000.json"] == 1000 and summary["curated/test/math_test.json"] == 40
    assert summary["synthetic/4000/synthetic_train.json"] == 4000



# --- the world corpus (world/world.txt) ---
OLD_MODULES = {"abilities": "growthpace.platform.core.abilities", "records": "growthpace.platform.data.records",
               "spec": "growthpace.platform.data.specfile"}
BEFORE_WORLD = "c50f2a7"  # the last commit whose generator wrote no world corpus: all else must match it
FAMILIES_AND_SUBJECTS = (*ABILITIES, *OOD_SUBJECTS)


def _world_docs(root: Path) -> list[str]:
    assert world_path(root).read_text(encoding="utf-8").endswith("\n")
    return read_world(root)


def _by_family(root: Path) -> dict[str, list[str]]:
    """The corpus cut into its families: written family by family, in this fixed order, equal counts."""
    docs = _world_docs(root)
    n = len(docs) // len(FAMILIES_AND_SUBJECTS)
    return {f: docs[i * n:(i + 1) * n] for i, f in enumerate(FAMILIES_AND_SUBJECTS)}


def _today_imports(src: str) -> str:
    """The old generator's imports, pointed at where those modules live since the re-floor."""
    src = src.replace("from growthpace.platform.records import DataError, Record, write_records",
                      "from growthpace.platform.core.items import DataError, Record\n"
                      "from growthpace.platform.data.records import write_records")
    for old, new in OLD_MODULES.items():
        src = src.replace(f"from growthpace.platform.{old} import", f"from {new} import")
    return src


def _generator_before_world(monkeypatch):
    repo = Path(gen_mod.__file__).parents[3]
    try:
        src = subprocess.run(["git", "-C", str(repo), "show", f"{BEFORE_WORLD}:growthpace/platform/generate.py"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history to rebuild the generator before the world corpus from")
    src = _today_imports(src)
    module = type(sys)("generate_before_world")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look their module up there
    exec(compile(src, "generate_before_world.py", "exec"), module.__dict__)
    return module


def test_world_corpus_changes_no_other_file(data, tmp_path, monkeypatch):
    root, _ = data
    _generator_before_world(monkeypatch).generate_dataset(tmp_path / "old", seed=0, **SMALL)
    before, now = _files(tmp_path / "old"), _files(root)
    assert now.pop(WORLD)
    readme_before, readme_now = before.pop("README.md").decode(), now.pop("README.md").decode()
    assert now == before
    assert readme_now.startswith(readme_before) and "## World corpus (for pre-training)" in readme_now


def test_world_corpus_has_equal_counts_and_plain_text(data, tmp_path):
    root, _ = data
    generate_dataset(tmp_path / "w", seed=0, **SMALL, world_per_family=7)
    assert len(_world_docs(tmp_path / "w")) == 7 * len(FAMILIES_AND_SUBJECTS)
    assert len(_world_docs(root)) == 400 * len(FAMILIES_AND_SUBJECTS)  # the default
    for family, docs in _by_family(root).items():
        assert len(set(docs)) > 1, family
    for d in _world_docs(root):
        assert d and d.strip() == d and d.isprintable(), d  # no newline or control character inside
        assert not any(t in d for t in CHAT_TOKENS), d
        assert not re.search(r"(^|\s)[A-D]\. ", d), d  # no option letters, no option lists


def test_world_corpus_keeps_out_held_combinations_and_eval_questions(data):
    root, _ = data
    world = _by_family(root)
    valid, test = read_split(root, "valid"), read_split(root, "test")
    for a in (a for a in ABILITIES if a not in gen_mod._FACTS):  # closed fact tables are stated on purpose
        for r in valid[a] + test[a]:
            question = gen_mod._stem(gen_mod.Item(list(r.prompt), r.gold, ""))
            assert not [d for d in world[a] if d.startswith(question + " ")], (a, question)
    # the held-out fifth, by the generator's own rule: the prompt (creative, role play) or the expression (code)
    for d in world["creative_writing"]:
        assert not gen_mod._held(0, "creative_writing", d[: d.index(".") + 1]), d
    for d in world["role_play"]:
        req = next(r for r in gen_mod.REQUESTS if f". {r} " in d)
        assert not gen_mod._held(0, "role_play", d[: d.index(f". {req} ") + len(req) + 2]), d
    for d in world["code"]:
        assert not gen_mod._held(0, "code", d.split("return ")[-1]), d


def test_world_facts_are_true_statements(data):
    root, _ = data
    world = _by_family(root)
    assert set(world["history"]) <= {stmt.format(a) for _, stmt, a, _ in gen_mod.HISTORY}
    acts = {f"To {x} is acceptable." for x in gen_mod.ETH_OK} | {f"To {x} is wrong." for x in gen_mod.ETH_WRONG}
    assert set(world["ethics"]) <= acts
    assert all(any(i in d and m in d for i, m in IDIOMS) for d in world["chinese"])
    for d in world["math"]:
        for x, op, y, z in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)\.", d):
            assert eval(f"{x} {op} {y}") == int(z)


def test_world_corpus_is_deterministic_per_seed(data, tmp_path):
    root, _ = data
    generate_dataset(tmp_path / "other", seed=1, **SMALL)
    assert _world_docs(tmp_path / "other") != _world_docs(root)
    # same-seed identity: test_deterministic_per_seed compares every file, world/world.txt included


def test_reading_a_dataset_without_world_corpus_says_so(tmp_path):
    with pytest.raises(DataError, match="no world corpus"):
        read_world(tmp_path)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "400"])
def test_rejects_a_bad_world_per_family(tmp_path, bad):
    with pytest.raises(DataError, match="world_per_family"):
        generate_dataset(tmp_path / "data", **SMALL, world_per_family=bad)
    assert not (tmp_path / "data").exists()


def test_spec_generate_names_a_bad_world_per_family_and_matches_the_generator():
    import inspect

    from pydantic import ValidationError

    from growthpace.platform.core.spec import Generate

    with pytest.raises(ValidationError, match="world_per_family"):
        Generate(world_per_family=0)
    params = inspect.signature(generate_dataset).parameters
    assert {k: params[k].default for k in Generate().model_dump()} == Generate().model_dump()
