"""CMMLU / AGIEval loaders on the shipped fixtures, their errors, and letter-argmax scoring on a real
tiny model checked against a direct forward pass."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from growthpace.evaluators import benchmarks as bm
from growthpace.evaluators.requests import Continuation, letter_ids
from growthpace.evaluators.backends import predict
from growthpace.platform.core.items import n_options, option_letters
from growthpace.evaluators.scoring import score
from growthpace.jobs.benchmark import score_settings
from growthpace.platform.core.items import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
CMMLU, AGIEVAL = FIXTURES / "cmmlu", FIXTURES / "agieval"


# --- loaders ------------------------------------------------------------------------------------


def test_cmmlu_counts_golds_and_few_shot_turns():
    zero, five = bm.load_cmmlu(CMMLU, 0), bm.load_cmmlu(CMMLU, 5)
    assert sorted(zero) == ["chinese_history", "high_school_biology"]
    assert {k: len(v) for k, v in zero.items()} == {"chinese_history": 8, "high_school_biology": 8}
    assert [r.gold for r in zero["chinese_history"]] == list("BCDABCDA")
    r0, r5 = zero["chinese_history"][2], five["chinese_history"][2]
    assert r0.key == "cmmlu/chinese_history/2" and r0.choices == ("明朝", "元朝", "宋朝", "清朝")
    assert len(r0.messages) == 2 and len(r5.messages) == 12
    assert r0.messages[0][1] == bm.CMMLU_INSTRUCTION.format(subject="chinese history") + (
        "辛亥革命推翻的王朝是\nA. 明朝\nB. 元朝\nC. 宋朝\nD. 清朝"
    )
    # five dev examples as earlier turns, in file order; the instruction opens only the first turn
    assert [c for role, c in r5.prompt if role == "assistant"] == list("ABCDA")
    assert r5.prompt[0][1].startswith(bm.CMMLU_INSTRUCTION.format(subject="chinese history") + "秦朝统一六国")
    assert sum("以下是关于" in c for _, c in r5.prompt) == 1
    assert r5.prompt[-1] == ("user", "辛亥革命推翻的王朝是\nA. 明朝\nB. 元朝\nC. 宋朝\nD. 清朝")
    assert r5.gold == "D" and n_options(r5) == 4


def test_agieval_counts_passages_options_and_few_shot_turns():
    zero, five = bm.load_agieval(AGIEVAL, 0), bm.load_agieval(AGIEVAL, 5)
    assert {k: len(v) for k, v in zero.items()} == {"aqua-rat": 8, "logiqa-zh": 8}
    assert [r.gold for r in zero["aqua-rat"]] == list("ABCDEABC")
    logic = zero["logiqa-zh"][1]
    assert logic.prompt == (("user", "所有的金属都导电，铜是金属。\n由此可以推出：\n(A)铜不导电\n(B)铜导电\n(C)导电的都是金属\n(D)铜是液体"),)
    assert zero["logiqa-zh"][7].prompt[0][1].startswith("\"有的学生是运动员\"")  # passage null: no blank line
    aqua = five["aqua-rat"][4]
    assert aqua.choices == ("11", "7", "16", "81", "18") and aqua.gold == "E" and n_options(aqua) == 5
    assert len(aqua.messages) == 12 and [c for role, c in aqua.prompt if role == "assistant"] == list("ABCDE")


def test_agieval_public_flat_layout_and_missing_few_shot_file(tmp_path):
    for f in (AGIEVAL / "test").glob("*.jsonl"):  # AGIEval's data/v1 keeps <task>.jsonl at the top
        shutil.copy(f, tmp_path / f.name)
    assert sum(len(v) for v in bm.load_agieval(tmp_path, 0).values()) == 16
    with pytest.raises(DataError, match=r"dev/aqua-rat\.jsonl: no such few-shot file \(5-shot"):
        bm.load_agieval(tmp_path, 5)


def test_metric_names():
    assert bm.metric_name("cmmlu", 5) == "bench/cmmlu/5shot"


# --- bad files: one error naming file:line and field ------------------------------------------------

HEADER = ",Question,A,B,C,D,Answer\n"


@pytest.mark.parametrize(
    "text,where,message",
    [
        ("Question,A,B,C,D,Answer\n0,q,a,b,c,d,A\n", 1, "header: expected"),
        (HEADER + "0,q,a,b,c,d,A\n1,q,a,b,c,d,E\n", 3, "field 'Answer': must be one of A, B, C, D, got 'E'"),
        (HEADER + "0,q,a,b,c,d\n", 2, "row: expected 7 fields"),
        (HEADER + "0,q,a,b,,d,A\n", 2, "field 'C': empty option"),
        (HEADER + "0,,a,b,c,d,A\n", 2, "field 'Question': empty"),
        (HEADER + "0,q,a,b,c,d,A\n0,q2,a,b,c,d,B\n", 3, "duplicate index '0'"),
        # a quoted question over two lines: the next row's line number still counts them
        (HEADER + '0,"line one\nline two",a,b,c,d,A\n1,q,a,b,c,d,Z\n', 4, "field 'Answer'"),
    ],
)
def test_cmmlu_bad_file_names_line_and_field(tmp_path, text, where, message):
    f = tmp_path / "test" / "anatomy.csv"
    f.parent.mkdir()
    f.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as e:
        bm.load_cmmlu(tmp_path, 0)
    assert str(e.value).startswith(f"{f}:{where}: ") and message in str(e.value)


GOOD = {"passage": None, "question": "q?", "options": ["(A)x", "(B)y", "(C)z", "(D)w"], "label": "A", "other": None}


@pytest.mark.parametrize(
    "bad,message",
    [
        ("{not json", "not valid JSON"),
        ({**GOOD, "label": "E"}, "field 'label': must be one of A, B, C, D"),
        ({**GOOD, "label": ["A", "C"]}, "field 'label': multi-answer items are not supported"),
        ({**GOOD, "options": None}, "field 'options': must be a list"),
        ({**GOOD, "options": ["(A)x", "(C)y"]}, "field 'options[1]': labelled (C) at position B"),
        ({**GOOD, "question": ""}, "field 'question': missing or empty"),
        ({**GOOD, "passage": 3}, "field 'passage': must be a string or null"),
    ],
)
def test_agieval_bad_file_names_line_and_field(tmp_path, bad, message):
    f = tmp_path / "test" / "lsat-ar.jsonl"
    f.parent.mkdir()
    line = bad if isinstance(bad, str) else json.dumps(bad)
    f.write_text(json.dumps(GOOD) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        bm.load_agieval(tmp_path, 0)
    assert str(e.value).startswith(f"{f}:2: ") and message in str(e.value)


def test_too_few_few_shot_examples(tmp_path):
    shutil.copytree(CMMLU, tmp_path / "cmmlu")
    dev = tmp_path / "cmmlu" / "dev" / "chinese_history.csv"
    dev.write_text("".join(dev.read_text(encoding="utf-8").splitlines(keepends=True)[:3]), encoding="utf-8")
    with pytest.raises(DataError, match=r"chinese_history\.csv: 5-shot needs 5 examples, the file has 2"):
        bm.load_cmmlu(tmp_path / "cmmlu", 5)
    assert len(bm.load_cmmlu(tmp_path / "cmmlu", 2)["chinese_history"][0].messages) == 6


# --- scoring on a real tiny model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_model_dir(tmp_path_factory):
    """A random llama-nano with a tokenizer trained on the fixtures' text."""
    from transformers import AutoModelForCausalLM

    from growthpace.platform.core.presets import PRESETS
    from growthpace.platform.train.models import llama_config, train_tokenizer

    recs = [r for name, root in (("cmmlu", CMMLU), ("agieval", AGIEVAL)) for rs in bm.load_benchmark(name, root, 5).values() for r in rs]
    tok = train_tokenizer(recs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(llama_config(PRESETS["llama-nano"], len(tok)))
    d = tmp_path_factory.mktemp("bench_model")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    (d.parent / "epoch.json").write_text(json.dumps({"epoch": 7}))
    return d


@pytest.fixture(scope="module")
def backend(bench_model_dir):
    from growthpace.evaluators.transformers_backend import TransformersBackend

    return TransformersBackend(bench_model_dir, batch_size=8)


def _direct(be, record):
    """Letter log-probs from one plain forward pass over the prompt (no batching, no padding)."""
    ids = be.enc.prompt(record.prompt)
    assert len(ids) < be.max_length  # nothing truncated: the comparison is exact
    with torch.no_grad():
        logp = torch.log_softmax(be.model(torch.tensor([ids])).logits[0, -1].float(), -1)
    return {L: logp[be.enc.text(L)[0]].item() for L in option_letters(record)}


def _letters_by_nll(be, records):
    """Each letter's log-prob as minus the continuation NLL of its one token after the prompt."""
    out = []
    for r in records:
        letters = option_letters(r)
        ids, prompt = letter_ids(be.enc, letters), be.enc.prompt(r.prompt)
        nll = be.continuation_nll([Continuation(0, prompt, [t]) for t in ids])
        out.append({L: -v for L, v in zip(letters, nll)})
    return out


def test_argmax_rule_matches_a_direct_forward_pass(backend):
    settings = bm.load_settings({"cmmlu": CMMLU, "agieval": AGIEVAL}, [0, 5])
    flat = [r for _, _, sets in settings for rs in sets.values() for r in rs]
    preds = predict(backend, flat, bm.LIMITS)  # batched, padded, the study's pipeline
    assert all(p.text == "" for p in preds)  # the answer position alone: no reply
    got = [p.letter_logprobs for p in preds]
    sample = list(range(0, len(flat), 4))  # every setting and subject; both option counts
    direct = {i: _direct(backend, flat[i]) for i in sample}
    by_nll = _letters_by_nll(backend, [flat[i] for i in sample])
    for i, nll in zip(sample, by_nll):
        d = direct[i]
        assert set(got[i]) == set(nll) == set(d)
        for L in d:
            assert got[i][L] == pytest.approx(d[L], abs=1e-4)
            assert nll[L] == pytest.approx(d[L], abs=1e-4)
    want = [max(g, key=lambda L: (g[L], -ord(L))) for g in got]  # ties: the first letter
    assert [want[i] for i in sample] == [max(d, key=d.get) for d in direct.values()]
    results = [score(r, p) for r, p in zip(flat, preds)]
    assert [x.parsed for x in results] == want
    assert [x.correct for x in results] == [w == r.gold for w, r in zip(want, flat)]
    rows = score_settings(backend, settings)
    assert [(r["benchmark"], r["shots"], r["items"], r["subjects"]) for r in rows] == [
        ("cmmlu", 0, 16, 2), ("cmmlu", 5, 16, 2), ("agieval", 0, 16, 2), ("agieval", 5, 16, 2)]
    start = 0
    for r in rows:
        n = r["items"]
        hits = sum(w == x.gold for w, x in zip(want[start : start + n], flat[start : start + n]))
        assert r["accuracy"] == pytest.approx(100 * hits / n)
        start += n
    assert rows[2]["expected"] == pytest.approx(100 * (8 / 4 + 8 / 5) / 16)  # 4-way logiqa, 5-way aqua


# --- the CLI -------------------------------------------------------------------------------------------


def test_cli_bad_benchmark_file_exits_2_naming_file_line_field(tmp_path, bench_model_dir):
    from typer.testing import CliRunner

    from growthpace.cli import app

    shutil.copytree(CMMLU, tmp_path / "cmmlu")
    f = tmp_path / "cmmlu" / "test" / "chinese_history.csv"
    lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = lines[2].rstrip("\n")[:-1] + "E\n"
    f.write_text("".join(lines), encoding="utf-8")
    result = CliRunner().invoke(app, ["benchmark", str(bench_model_dir), "--cmmlu", str(tmp_path / "cmmlu")])
    assert result.exit_code == 2
    assert f"{f}:3: field 'Answer'" in result.output.replace("\n", "")


def test_cli_prints_the_table_and_logs_into_the_cells_run(tmp_path, bench_model_dir, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from growthpace.cli import app
    from growthpace.platform.store import tracking

    logged = []

    class FakeRun:
        def __init__(self, uri, run_id, client=None):
            self.uri, self.run_id, self.offline = uri, run_id, False

        def log(self, metrics, step):
            logged.append((self.run_id, metrics, step))

    monkeypatch.setattr(tracking, "CellRun", FakeRun)
    spec = yaml.safe_load((Path(__file__).parents[1] / "experiments" / "local.yaml").read_text())
    spec["storage"] = str(tmp_path / "storage")
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "storage" / "cells" / "abc123").mkdir(parents=True)
    (tmp_path / "storage" / "cells" / "abc123" / "mlflow.json").write_text(json.dumps({"run_id": "run-1"}))
    args = ["benchmark", str(bench_model_dir), "--cmmlu", str(CMMLU), "--agieval", str(AGIEVAL),
            "--shots", "0", "--shots", "2", "--spec", str(tmp_path / "spec.yaml"), "--cell", "abc123"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for line in ("cmmlu", "agieval"):
        assert line in result.output
    assert len(logged) == 1
    run_id, metrics, step = logged[0]
    assert run_id == "run-1" and step == 7  # the epoch from the checkpoint's epoch.json
    assert sorted(metrics) == ["bench/agieval/0shot", "bench/agieval/2shot", "bench/cmmlu/0shot", "bench/cmmlu/2shot"]
    missing = CliRunner().invoke(app, [*args[:-1], "nope"])
    assert missing.exit_code == 2 and "no MLflow run recorded for cell 'nope'" in missing.output.replace("\n", "")
