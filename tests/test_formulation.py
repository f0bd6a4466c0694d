"""Formulations (platform/core/formulation.py): the option transform of every kind, its baselines, the
training replies of training.choice_target, the spec fields, and a two-formulation eval's keys."""

import polars as pl
import pytest
import yaml

from growthpace.platform.data.dataset import load_pool
from growthpace.platform.core.formulation import (
    CHOICE_TARGETS, FORMULATIONS, FormulationError, describe, formulate, letter_text_replies, option_lines,
    parse_split, split_name, with_choice_target, without_options,
)
from growthpace.evaluators.scoring import REGISTRY, Prediction, needs, score
from growthpace.platform.core.items import question_kind
from growthpace.platform.core.items import Record

BIO = Record("biology", "b1", (("user", "Which organelle holds the DNA?\nA. ribosome\nB. nucleus\nC. mitochondrion\n"
                                "D. cell membrane"), ("assistant", "B")), 0)
DIALOGUE = Record("understanding", "u1", (
    ("user", "My sister lives in Lima."), ("assistant", "Got it."),
    ("user", "Question: Where does my sister live?\nA. Cairo\nB. Lima\nC. Rome"), ("assistant", "C")), 0)
OOD = Record("physician", "p1", (
    ("user", "Lack of which vitamin causes scurvy?\nA. vitamin B12\nB. vitamin A\nC. vitamin D\nD. vitamin C"),
    ("assistant", "D"),
    ("user", "Which organ is inflamed in hepatitis?\nA. liver\nB. lung\nC. kidney\nD. pancreas"),
    ("assistant", "A")), 0)


def baseline(record):
    """An item's random-baseline expected score, as its verdict carries it."""
    return REGISTRY[question_kind(record)].expected(record)


def tf(gold: str) -> Record:
    return Record("history", f"t-{gold}", (("user", "判断：秦朝统一了六国。"), ("assistant", gold)), 0)


def test_choice_with_four_options_ranks_the_option_lines_gold_first_then_letter_order():
    o = formulate(BIO, "option")
    assert question_kind(BIO) == "choice" and question_kind(o) == "perplexity" and needs(o) == "rank"
    assert o.choices == ("B. nucleus", "A. ribosome", "C. mitochondrion", "D. cell membrane")
    assert o.prompt == BIO.prompt and o.gold == "B. nucleus"
    assert baseline(o) == pytest.approx(0.25)
    assert score(o, Prediction(candidate_nll=(1.0, 2.0, 2.0, 3.0))).correct
    assert not score(o, Prediction(candidate_nll=(2.0, 1.0, 2.0, 3.0))).correct
    assert not score(o, Prediction(candidate_nll=(1.0, 1.0, 2.0, 3.0))).correct  # a tie stays wrong


def test_choice_with_three_options_and_a_dialogue_before_it():
    o = formulate(DIALOGUE, "option")
    assert o.choices == ("C. Rome", "A. Cairo", "B. Lima")
    assert o.messages[:3] == DIALOGUE.messages[:3]  # "Got it." is no option letter: the dialogue is as it was
    assert baseline(o) == pytest.approx(1 / 3)


@pytest.mark.parametrize("gold, candidates", [("正确", ("正确", "错误")), ("对", ("正确", "错误")),
                                              ("错误", ("错误", "正确")), ("×", ("错误", "正确"))])
def test_true_false_ranks_the_gold_word_against_its_opposite(gold, candidates):
    o = formulate(tf(gold), "option")
    assert question_kind(tf(gold)) == "true_false"
    assert o.choices == candidates and o.gold == candidates[0] and o.question_format == 1
    assert baseline(o) == pytest.approx(0.5)
    assert score(o, Prediction(candidate_nll=(0.5, 0.7))).correct
    assert not score(o, Prediction(candidate_nll=(0.7, 0.5))).correct


def test_ood_five_shot_item_ranks_its_own_options_and_its_worked_examples_show_option_lines():
    o = formulate(OOD, "option")
    assert o.choices == ("A. liver", "B. lung", "C. kidney", "D. pancreas")
    assert o.messages[1] == ("assistant", "D. vitamin C")  # the worked example, as the formulation writes answers
    assert o.prompt[-1] == OOD.prompt[-1]


@pytest.mark.parametrize("record", [
    Record("chinese", "c1", (("user", "成语填空：朝三暮_"), ("assistant", "四")), 0),  # cloze: exact match
    Record("math", "m1", (("user", "1+1=?"), ("assistant", "2")), 0, answer="2"),
    Record("code", "k1", (("user", "Write f"), ("assistant", "def f(): pass")), 1, choices=("a", "b", "c")),
])
def test_kinds_without_one_option_text_to_rank_stay_as_the_study_scores_them(record):
    assert formulate(record, "option") is record


ETHICS = Record("ethics", "e1", (("user", "Which are wrong?\nA. lie\nB. help\nC. cheat\nD. thank"),
                                 ("assistant", "AC")), 0)


@pytest.mark.parametrize("formulation, gold, first_singles", [
    ("cloze", "lie\ncheat", ("lie", "help", "cheat", "thank")),
    ("option", "A. lie\nC. cheat", ("A. lie", "B. help", "C. cheat", "D. thank")),
])
def test_multi_select_ranks_every_set_of_its_options_gold_first(formulation, gold, first_singles):
    o = formulate(ETHICS, formulation)
    assert question_kind(ETHICS) == "multi_select" and question_kind(o) == "perplexity" and needs(o) == "rank"
    assert o.prompt == (ETHICS.prompt if formulation == "option" else (("user", "Which are wrong?"),))
    assert len(o.choices) == 2 ** 4 - 1 and len(set(o.choices)) == len(o.choices)
    assert o.gold == o.choices[0] == gold and o.choices[1:5] == first_singles  # then smallest sets first
    assert o.choices[-1].count("\n") == 3  # the set of all four
    assert baseline(o) == pytest.approx(1 / 15)
    assert score(o, Prediction(candidate_nll=(1.0, *[2.0] * 14))).correct
    assert not score(o, Prediction(candidate_nll=(2.0, 1.0, *[2.0] * 13))).correct
    assert not score(o, Prediction(candidate_nll=(1.0, 1.0, *[2.0] * 13))).correct  # a tie stays wrong
    three = Record("ethics", "e3", (("user", "Which?\nA. x\nB. y\nC. z"), ("assistant", "B")), 0)
    assert formulate(three, formulation).choices[0] == ("y" if formulation == "cloze" else "B. y")
    assert baseline(formulate(three, formulation)) == pytest.approx(1 / 7)


@pytest.mark.parametrize("reply, trained", [("AC", "lie\ncheat"), ("C, A", "lie\ncheat"), ("B", "help"),
                                            ("AE", None), ("AA", None), ("I would say A", None), ("", None)])
def test_multi_select_training_reply_is_its_set_written_as_the_cloze_formulation_ranks_it(reply, trained):
    item = Record("ethics", "e4", (ETHICS.messages[0], ("assistant", reply)), 0)
    out = with_choice_target(item, "cloze")
    if trained is None:
        assert out is item  # no set of its options (a letter that is none, a repeat, prose): it stays
    else:
        ranked = formulate(Record("ethics", "e4", item.messages, 0), "cloze")
        assert out.gold == trained == ranked.choices[0] and out.prompt == ranked.prompt  # trained as it is ranked


@pytest.mark.parametrize("text, gold, why", [("Which? A. x B. y", "A", "no option lines"),
                                             ("Which?\nA. x\nB. y", "AC", "gold set 'AC' is not a set"),
                                             ("Which?\nA. x\nB. y", "maybe", "gold set 'maybe'")])
def test_a_multi_select_item_whose_sets_cannot_be_read_is_an_error_naming_it(text, gold, why):
    bad = Record("ethics", "e9", (("user", text), ("assistant", gold)), 0)
    for formulation in ("option", "cloze"):
        with pytest.raises(FormulationError, match=rf"item 'e9'.*{why}"):
            formulate(bad, formulation)


def test_option_lines_are_read_robustly():
    assert option_lines("Q?\n(A) one\n  (B) two\nC、three\nD）four") == {
        "A": "(A) one", "B": "(B) two", "C": "C、three", "D": "D）four"}
    passage = "A. an option-like line of a passage\nQuestion?\nA. x\nB. y"
    assert option_lines(passage) == {"A": "A. x", "B": "B. y"}  # the last run of options
    assert list(option_lines("Q\n" + "\n".join(f"{c}. o{c}" for c in "ABCDEFGH"))) == list("ABCDEFGH")
    assert option_lines("A：你好\nB：再见") == {}  # speaker labels are not options
    assert option_lines("Q\nA. x\nC. z") == {"A": "A. x"}  # a gap ends the run


@pytest.mark.parametrize("text, why", [("Pick one: A. x B. y C. z", "no option lines"),
                                       ("Pick one:\nA. x\nB. y\nC. z", "gold letter 'D' is not one")])
def test_an_item_whose_options_cannot_be_read_is_an_error_naming_it(text, why):
    bad = Record("reasoning", "r7", (("user", text), ("assistant", "D")), 0)
    with pytest.raises(FormulationError, match=rf"item 'r7'.*{why}"):
        formulate(bad, "option")


def test_choice_target_letter_text_gives_bare_letters_their_option_line():
    assert with_choice_target(BIO, "letter") is BIO
    assert with_choice_target(BIO, "letter_text").gold == "B. nucleus"
    assert with_choice_target(OOD, "letter_text").messages[1::2] == (("assistant", "D. vitamin C"), ("assistant", "A. liver"))
    spaced = Record("biology", "b2", (BIO.messages[0], ("assistant", " B\n")), 0)
    assert with_choice_target(spaced, "letter_text").gold == "B. nucleus"
    ethics = Record("ethics", "e2", (("user", "Which are wrong?\nA. lie\nB. help"), ("assistant", "A")), 0)
    assert with_choice_target(ethics, "letter_text") is ethics  # a set: the letter rule reads its last line's letters
    assert with_choice_target(ETHICS, "letter_text") is ETHICS
    assert with_choice_target(tf("正确"), "letter_text") == tf("正确")
    not_an_option = Record("biology", "b3", (BIO.messages[0], ("assistant", "E")), 0)
    assert with_choice_target(not_an_option, "letter_text") is not_an_option


def test_choice_target_on_synthetic_replies_a_bare_letter_gets_its_text_a_hedge_stays():
    bare = Record("synthetic", "s1", (("user", "Which?\nA. tea\nB. coffee"), ("assistant", "B")), 0)
    hedge = Record("history", "s2", (("user", "Who?\nA. Qin\nB. Han"),
                                     ("assistant", "I believe the answer is B, though other views exist.")), 0)
    assert with_choice_target(bare, "letter_text").gold == "B. coffee"
    assert with_choice_target(hedge, "letter_text") is hedge  # a synthetic history gold need not parse: no error
    assert letter_text_replies((("assistant", "A"),)) == (("assistant", "A"),)  # no question before it


def test_a_letter_text_reply_still_scores_under_the_letter_rule():
    reply = with_choice_target(BIO, "letter_text").gold
    verdict = score(BIO, Prediction(text=reply, letter_logprobs={"A": -3.0, "B": -0.1, "C": -4.0, "D": -5.0}))
    assert verdict.correct and verdict.parsed == "B"


def test_split_names_of_secondary_formulations_are_mlflow_metric_names():
    from mlflow.utils.validation import validate_param_and_metric_name

    assert split_name("test", "option", "option") == "test"
    assert split_name("test", "letter", "option") == "test.letter"
    assert parse_split("test.letter") == ("test", "letter") and parse_split("valid") == ("valid", None)
    assert parse_split("cmmlu/0shot") == ("cmmlu/0shot", None)
    assert validate_param_and_metric_name(f"{split_name('ood', 'letter', 'option')}/physician")


# ------------------------------------------------------------------------------------ the cloze formulation


def test_cloze_puts_the_question_without_its_options_and_ranks_the_bare_texts_gold_first():
    c = formulate(BIO, "cloze")
    assert c.prompt == (("user", "Which organelle holds the DNA?"),)
    assert c.choices == ("nucleus", "ribosome", "mitochondrion", "cell membrane") and c.gold == "nucleus"
    assert question_kind(c) == "perplexity" and baseline(c) == pytest.approx(0.25)
    assert score(c, Prediction(candidate_nll=(0.4, 0.5, 0.6, 0.7))).correct
    assert not score(c, Prediction(candidate_nll=(0.5, 0.5, 0.6, 0.7))).correct  # a tie stays wrong
    assert formulate(BIO, "cloze") == c and formulate(BIO, "option") == formulate(BIO, "option")


def test_cloze_keeps_a_dialogue_and_its_passage_and_drops_only_the_last_run_of_options():
    c = formulate(DIALOGUE, "cloze")
    assert c.prompt == (DIALOGUE.messages[0], DIALOGUE.messages[1], ("user", "Question: Where does my sister live?"))
    assert c.choices == ("Rome", "Cairo", "Lima")
    passage = "A. note: the key is under the mat.\nWhere is the key?\nA. under the mat\nB. in the car"
    assert without_options(passage) == "A. note: the key is under the mat.\nWhere is the key?"
    assert option_lines(passage) == {"A": "A. under the mat", "B": "B. in the car"}


def test_cloze_writes_the_worked_examples_as_questions_and_texts():
    c = formulate(OOD, "cloze")
    assert c.prompt == (("user", "Lack of which vitamin causes scurvy?"), ("assistant", "vitamin C"),
                        ("user", "Which organ is inflamed in hepatitis?"))
    assert c.choices == ("liver", "lung", "kidney", "pancreas")


@pytest.mark.parametrize("gold", ["正确", "×"])
def test_cloze_ranks_true_false_words_as_the_option_formulation_does(gold):
    assert formulate(tf(gold), "cloze") == formulate(tf(gold), "option")


def test_cloze_leaves_kinds_without_one_option_text_and_rejects_an_option_without_text():
    math = Record("math", "m1", (("user", "1 + 1?"), ("assistant", "The answer is \\boxed{2}.")), 0)
    assert formulate(math, "cloze") is math and with_choice_target(math, "cloze") is math
    empty = Record("biology", "x", (("user", "Which?\nA.\nB. heart"), ("assistant", "B")), 0)
    with pytest.raises(FormulationError, match="'x'.*cloze formulation"):
        formulate(empty, "cloze")


def test_choice_target_cloze_trains_the_question_without_options_on_the_option_text():
    assert with_choice_target(BIO, "cloze").messages == (("user", "Which organelle holds the DNA?"),
                                                         ("assistant", "nucleus"))
    assert with_choice_target(OOD, "cloze").messages[1::2] == (("assistant", "vitamin C"), ("assistant", "liver"))
    hedge = Record("history", "h", (("user", "Who?\nA. Qin\nB. Han"), ("assistant", "I think B")), 0)
    assert with_choice_target(hedge, "cloze") is hedge  # the reply needs its options: the pair stays
    with pytest.raises(ValueError, match="choice target"):
        with_choice_target(BIO, "words")


def test_describe_names_each_formulation_and_what_it_leaves():
    text = describe(["cloze", "letter"])
    assert text.startswith("Scores use the cloze formulation (OLMES") and "without its options" in text
    assert "fill-in-the-blank" in text and "Also scored, beside it: letter" in text


# ------------------------------------------------------------------------------------------- the spec


def _spec_file(tmp_path, small_data, evaluation=None, training=None):
    raw = {"name": "t", "storage": str(tmp_path / "s"), "models": [{"name": "llama-nano", "size": "a"}],
           "data": {"root": str(small_data), "train_split": "1000", "sources": ["curated"], "volumes": [10]},
           "training": {"epochs": 2, **(training or {})}, "evaluation": evaluation or {}}
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return p


def test_spec_formulation_default_one_name_or_a_list(tmp_path, small_data):
    from growthpace.platform.core.spec import EvaluationSpec
    from growthpace.platform.data.specfile import load_spec

    assert load_spec(_spec_file(tmp_path, small_data)).evaluation.formulation == ["letter"]
    assert load_spec(_spec_file(tmp_path, small_data, {"formulation": "option"})).evaluation.formulation == ["option"]
    two = load_spec(_spec_file(tmp_path, small_data, {"formulation": ["option", "letter"]}))
    assert two.evaluation.formulation == ["option", "letter"]
    assert set(EvaluationSpec.model_fields["formulation"].annotation.__args__[0].__args__) == set(FORMULATIONS)


@pytest.mark.parametrize("value, why", [("mc", "cloze"), (["option", "option"], "duplicate"), ([], "at least 1")])
def test_a_bad_formulation_names_the_field(tmp_path, small_data, value, why):
    from growthpace.platform.core.spec import SpecError
    from growthpace.platform.data.specfile import load_spec

    with pytest.raises(SpecError, match=rf"field 'evaluation\.formulation.*{why}"):
        load_spec(_spec_file(tmp_path, small_data, {"formulation": value}))


def test_choice_target_is_part_of_the_cell_id_and_the_default_keeps_the_old_ids(tmp_path, small_data):
    from growthpace.platform.core.cells import expand
    from growthpace.platform.core.spec import SpecError
    from growthpace.platform.data.specfile import load_spec

    pool = load_pool(small_data, "1000", with_synthetic=False)
    letter = expand(load_spec(_spec_file(tmp_path, small_data)), pool, "fp", {})[0]
    text = expand(load_spec(_spec_file(tmp_path, small_data, training={"choice_target": "letter_text"})), pool, "fp", {})[0]
    assert "choice_target" not in letter.training and text.training["choice_target"] == "letter_text"
    assert letter.cell_id != text.cell_id
    with pytest.raises(SpecError, match=r"field 'training\.choice_target'"):
        load_spec(_spec_file(tmp_path, small_data, training={"choice_target": "text"}))
    from growthpace.platform.core.spec import TrainingSpec

    assert set(TrainingSpec.model_fields["choice_target"].annotation.__args__) == set(CHOICE_TARGETS)


def test_a_choice_target_revision_gives_that_targets_cells_new_ids_and_leaves_the_others(tmp_path, small_data,
                                                                                          monkeypatch):
    from growthpace.platform.core import formulation
    from growthpace.platform.core.cells import expand
    from growthpace.platform.data.specfile import load_spec

    pool = load_pool(small_data, "1000", with_synthetic=False)
    specs = {t: load_spec(_spec_file(tmp_path, small_data, training={"choice_target": t})) for t in CHOICE_TARGETS}

    def ids():
        return {t: expand(spec, pool, "fp", {})[0].cell_id for t, spec in specs.items()}

    assert set(formulation.CHOICE_TARGET_REVISIONS) == set(CHOICE_TARGETS)
    before = ids()
    monkeypatch.setitem(formulation.CHOICE_TARGET_REVISIONS, "cloze", formulation.CHOICE_TARGET_REVISIONS["cloze"] + 1)
    after = ids()
    assert after["cloze"] != before["cloze"]  # items written by another rule: another cell
    assert (after["letter"], after["letter_text"]) == (before["letter"], before["letter_text"])


@pytest.mark.parametrize("target", ["letter_text", "cloze"])
def test_choice_target_cells_train_on_option_lines_or_texts(tmp_path, small_data, target):
    from growthpace.platform.core.cells import expand
    from growthpace.platform.data.dataset import load_dataset, write_cell_data
    from growthpace.platform.data.records import read_records
    from growthpace.platform.data.specfile import load_spec
    from growthpace.platform.store.storage import Layout
    from growthpace.platform.core.formulation import option_text

    spec = load_spec(_spec_file(tmp_path, small_data, training={"choice_target": target}))
    dataset = load_dataset(spec)
    cell = expand(spec, dataset.pool, dataset.fingerprint, dataset.corpus_digests)[0]
    layout = Layout.for_spec(spec)
    layout.cell_data(cell.cell_id).parent.mkdir(parents=True, exist_ok=True)
    card = write_cell_data(layout, cell, dataset)
    written = read_records(layout.cell_data(cell.cell_id), eval_split=False)
    plain = dataset.pool.select(cell.allocation, cell.seed)
    bio = [(a, b) for a, b in zip(plain, written) if a.type == "biology"]
    lines = [option_lines(a.prompt[-1][1])[a.gold] for a, _ in bio]
    assert bio and [b.gold for _, b in bio] == (lines if target == "letter_text" else [option_text(x) for x in lines])
    if target == "cloze":
        assert all(not option_lines(b.prompt[-1][1]) and b.prompt[-1][1] in a.prompt[-1][1] for a, b in bio)
    ethics = [(a, b) for a, b in zip(plain, written) if a.type == "ethics"]
    assert ethics
    for a, b in ethics:
        if target == "letter_text":
            assert a == b
            continue
        assert b.prompt == (("user", without_options(a.prompt[-1][1])),)
        options = option_lines(a.prompt[-1][1])
        assert b.gold == "\n".join(option_text(options[x]) for x in options if x in a.gold.strip())
    from growthpace.platform.core.allocation import card as card_of

    assert card["content_sha256"] == card_of(written)["content_sha256"] != card_of(plain)["content_sha256"]


# ----------------------------------------------------------------------------------- the eval sets


def test_two_formulations_give_both_sets_of_keys_and_the_hash_follows_the_formulation(tmp_path, small_data):
    from growthpace.evaluators.results import eval_set_hash, flatten_sets, prediction_rows, scores_from_predictions
    from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS
    from growthpace.platform.data.dataset import load_eval_sets
    from growthpace.platform.data.specfile import load_spec

    def sets(value):
        return load_eval_sets(load_spec(_spec_file(tmp_path, small_data, {"formulation": value})))

    letter, option, both = sets("letter"), sets("option"), sets(["option", "letter"])
    primary = {(s, a) for s in ("valid", "test") for a in ABILITIES} | {("ood", s) for s in OOD_SUBJECTS}
    assert set(letter) == set(option) == primary
    assert set(both) == primary | {(f"{s}.letter", a) for s, a in primary}
    assert both[("test", "biology")] == option[("test", "biology")]
    assert both[("test.letter", "biology")] == letter[("test", "biology")]
    assert all(question_kind(r) == "perplexity" for r in option[("test", "biology")])
    assert all(question_kind(r) == "perplexity" and len(r.choices) == 15 for r in option[("test", "ethics")])
    hashes = {eval_set_hash(s, {}) for s in (letter, option, both)}
    assert len(hashes) == 3

    keys, flat = flatten_sets(both)
    preds = [Prediction(text="A", candidate_nll=tuple(float(i) for i in range(len(r.choices))) if r.choices else None)
             for r in flat]
    rows = pl.DataFrame(prediction_rows("c", 1, "k", "fake", keys, flat, preds))
    scores = scores_from_predictions(rows)
    assert set(zip(scores["split"], scores["ability"])) == set(both)
    ranked = scores.filter((pl.col("split") == "test") & (pl.col("ability") == "biology")).row(0, named=True)
    assert ranked["score"] == 100.0 and ranked["expected"] == pytest.approx(25.0)  # gold has the lowest NLL
    sets_row = scores.filter((pl.col("split") == "test") & (pl.col("ability") == "ethics")).row(0, named=True)
    assert sets_row["score"] == 100.0 and sets_row["expected"] == pytest.approx(100 / 15)
    as_letters = scores.filter((pl.col("split") == "test.letter") & (pl.col("ability") == "ethics")).row(0, named=True)
    assert as_letters["expected"] > 100 / 15  # the letter rule's 1/C(4, k)


@pytest.mark.parametrize("split, ability, question, gold, formulation, why", [
    ("test", "reasoning", "Who is tallest? A. Kim B. Max C. Bob D. Cy", "A", "option", "no option lines"),
    ("valid", "ethics", None, "AE", "cloze", "gold set 'AE' is not a set of its options"),  # E: no option
])
def test_an_unreadable_item_in_an_eval_file_names_the_file_ability_and_idx(tmp_path, small_data, split, ability,
                                                                           question, gold, formulation, why):
    import json
    import shutil

    from growthpace.platform.data.dataset import load_eval_sets
    from growthpace.platform.core.items import DataError
    from growthpace.platform.data.records import curated_path
    from growthpace.platform.data.specfile import load_spec

    root = tmp_path / "data"
    shutil.copytree(small_data, root)
    path = curated_path(root, split, ability)
    lines = path.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    if question is not None:
        first["messages"][0]["content"] = question
    first["messages"][-1]["content"] = gold
    path.write_text("\n".join([json.dumps(first, ensure_ascii=False), *lines[1:]]) + "\n", encoding="utf-8")
    p = _spec_file(tmp_path, root, {"formulation": formulation})
    with pytest.raises(DataError, match=rf"{path}: {ability} item '{first['idx']}': {formulation} formulation: {why}"):
        load_eval_sets(load_spec(p))
    assert load_eval_sets(load_spec(_spec_file(tmp_path, root))) is not None  # letter: the item is the study's


# ------------------------------------------------------------------------------------------ the report


def _scores() -> pl.DataFrame:
    rows = []
    for cell, volume in (("c1", 10), ("c2", 40)):
        for epoch in (1, 2):
            for split in ("valid", "test", "ood", "valid.letter", "test.letter", "ood.letter"):
                ability = "physician" if split.startswith("ood") else "biology"
                letter = split.endswith(".letter")
                best = 2 if volume == 40 else 1
                rows.append({"cell_id": cell, "epoch": epoch, "split": split, "ability": ability,
                             "score": (60.0 if epoch == best else 40.0) - (30.0 if letter else 0.0) + volume / 10,
                             "expected": 25.0, "items": 20, "model": "m", "size": "a", "source": "curated",
                             "volume": volume, "mix": "", "seed": 0, "epochs": 2})
    return pl.DataFrame(rows)


def test_report_states_the_formulation_and_shows_the_secondary_at_the_primary_selected_epoch():
    from growthpace.platform.analysis.summary import formulations
    from growthpace.platform.report.page import _formulations, block
    from growthpace.platform.core.selection import select

    scores = _scores()
    selected = select(scores, 0)
    assert set(selected["split"]) == {"test", "ood"}  # selection reads the primary's splits only
    fm = formulations(scores, selected, ["option", "letter"])
    assert fm["primary"] == "option" and fm["secondary"] == ["letter"]
    assert fm["sentence"].startswith("Scores use the option formulation (option lines (`B. heart`) ranked by "
                                     "perplexity, the options shown")
    assert "; math and fill-in-the-blank as the study scores them)" in fm["sentence"]
    by = {(r["volume"], r["split"]): r for r in fm["rows"]}
    assert by[(10, "test")]["scores"] == {"option": 61.0, "letter": 31.0}  # epoch 1, the option-selected one
    assert by[(40, "ood")]["scores"] == {"option": 64.0, "letter": 34.0}
    assert by[(40, "test")]["baselines"] == {"option": 25.0, "letter": 25.0}
    html = _formulations({"formulation": fm})
    assert "test.letter" in html and "option (primary)" in html and "31.0" in html
    assert formulations(scores, selected)["primary"] == "option"  # without a spec: read from the split names
    alone = formulations(scores.filter(~pl.col("split").str.contains(r"\.")), selected)
    assert alone["primary"] == "letter" and alone["rows"] == [] and _formulations({"formulation": alone}) == ""
    assert "$" not in block("formulations", primary="p", secondary="s", table="t")
