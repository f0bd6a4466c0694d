"""The record reader: every error names file:line and the field."""

import json

import pytest

from growthpace.platform.core.items import DataError
from growthpace.platform.data.records import read_records


def _line(**kw) -> dict:
    rec = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A"}],
        "type": "biology",
        "idx": "1",
        "question_format": 0,
    }
    rec.update(kw)
    return rec


def _write(tmp_path, lines) -> str:
    p = tmp_path / "biology_test.json"
    p.write_bytes(b"".join((l if isinstance(l, bytes) else json.dumps(l).encode()) + b"\n" for l in lines))
    return p


@pytest.mark.parametrize(
    "bad, pattern",
    [
        (b'{"messages": [', r":2: not valid JSON"),
        ({k: v for k, v in _line().items() if k != "type"}, r":2: field 'type': missing"),
        (_line(type="astrology"), r":2: field 'type': unknown ability"),
        (_line(question_format=2), r":2: field 'question_format'"),
        (_line(question_format=1), r":2: field 'choices': a perplexity-ranked item needs exactly 3"),
        (_line(question_format=1, choices=["a", "b"]), r":2: field 'choices'"),
        (_line(messages=[{"role": "user", "content": "q"}]), r":2: field 'messages': the last turn"),
        (_line(messages=[{"role": "bot", "content": "q"}]), r":2: field 'messages\[0\].role'"),
        (_line(messages=[{"role": "user", "content": 3}, {"role": "assistant", "content": "A"}]), r"messages\[0\].content"),
        (_line(idx="0"), r":2: field 'idx': duplicate id '0' \(first at line 1\)"),
        (b'{"messages": "\xff\xfe"}', r":2: not valid UTF-8"),
        (_line(type="math"), r":2: field 'answer'"),
    ],
)
def test_bad_records_name_file_line_field(tmp_path, bad, pattern):
    path = _write(tmp_path, [_line(idx="0"), bad])
    with pytest.raises(DataError, match=pattern) as e:
        read_records(path, eval_split=True)
    assert str(path) in str(e.value)


def test_empty_and_missing_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("\n")
    with pytest.raises(DataError, match="empty data file"):
        read_records(p, eval_split=False)
    with pytest.raises(DataError, match="no such data file"):
        read_records(tmp_path / "nope.json", eval_split=False)


def test_good_record_roundtrip(tmp_path):
    rec = _line(question_format=1, choices=["right", "close", "far"])
    recs = read_records(_write(tmp_path, [rec]), eval_split=True)
    assert recs[0].gold == "A" and recs[0].prompt == (("user", "q"),) and recs[0].choices == ("right", "close", "far")
    assert recs[0].to_json() == rec


M = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A"}]


@pytest.mark.parametrize("synthetic", [False, True])
def test_fast_reader_builds_what_the_line_by_line_reader_builds_or_defers_to_it(tmp_path, synthetic):
    """read_records takes msgspec's path (_read_fast) when every line passes it and reads the file again
    line by line otherwise: on each of these files the fast path either gives up (None) or returns
    exactly the records, and the line-by-line reader the same records or the error it always named."""
    from growthpace.platform.core.abilities import ABILITIES
    from growthpace.platform.data.records import TRAIN_TYPES, _read_checked, _read_fast

    good = json.dumps(_line(idx="g")).encode()
    variants = [
        json.dumps(_line(idx=2**70)).encode(),  # beyond int64: msgspec's int still takes it
        json.dumps(_line(answer=13)).encode(), json.dumps(_line(answer=True)).encode(),
        json.dumps(_line(answer=2.5)).encode(), b'{"messages": %s, "type": "math", "idx": 1, "question_format": 0, "answer": NaN}' % json.dumps(M).encode(),
        json.dumps(_line(question_format=1.0)).encode(), json.dumps(_line(question_format=True)).encode(),
        json.dumps(_line(idx=True)).encode(), json.dumps(_line(idx=1.0)).encode(), json.dumps(_line(idx=None)).encode(),
        b'{"messages": %s, "type": "biology", "type": "astrology", "idx": "d", "question_format": 0}' % json.dumps(M).encode(),
        b'{"messages": %s, "type": "astrology", "type": "biology", "idx": "d", "question_format": 0}' % json.dumps(M).encode(),
        good + b" " + good, good + b"\n\n" + json.dumps(_line(idx="h")).encode(), b"\xc2\xa0",
        json.dumps(_line(messages=[{"role": "user", "content": "\ud800"}, M[1]])).encode(),
        json.dumps(_line(messages=[{"role": "user", "content": "q", "extra": 1}, M[1]])).encode(),
        json.dumps(_line(messages=[])).encode(), json.dumps(_line(messages=[M[1], M[1]])).encode(),
        json.dumps(_line(choices=None)).encode(), json.dumps(_line(choices=["a", 1])).encode(),
        json.dumps(_line(question_format=1, choices=["a", "b", "c"])).encode(),
        json.dumps(_line(type="math", answer=" ")).encode(), json.dumps(_line(type="math", answer="7")).encode(),
        json.dumps(_line(idx="g")).encode(), json.dumps(_line(idx=0)).encode(), json.dumps(_line(idx="0")).encode(),
        json.dumps({k: v for k, v in _line().items() if k != "idx"}).encode(),
        json.dumps({k: v for k, v in _line().items() if k not in ("type", "question_format")}).encode(),
        json.dumps(_line(type=None)).encode(), json.dumps(_line(type=7)).encode(), b"[1, 2]", b'{"messages": [',
        b'{"messages": "\xff\xfe"}', good + b"\r",
    ]
    types = TRAIN_TYPES if synthetic else ABILITIES
    assert _read_fast(good + b"\n" + json.dumps(_line(idx=2**70, answer=13)).encode(), True, types, synthetic)
    for eval_split in (False, True):
        for i, variant in enumerate(variants):
            data = good + b"\n" + variant + b"\n"
            path = tmp_path / f"{i}.json"
            path.write_bytes(data)
            fast = _read_fast(data, eval_split, types, synthetic)
            try:
                checked = _read_checked(data, path, eval_split, types, synthetic)
            except DataError as e:
                assert fast is None, (variant, e)
                with pytest.raises(DataError) as again:
                    read_records(path, eval_split=eval_split, types=types, label_synthetic=synthetic)
                assert str(again.value) == str(e)
                continue
            assert fast is None or fast == checked, variant
            assert read_records(path, eval_split=eval_split, types=types, label_synthetic=synthetic) == checked
