"""`chat: template`: conversations framed by the tokenizer's own chat template (platform/data/chat.py
TemplateFraming), on the real SmolLM2-135M-Instruct tokenizer (tests/real_model.py), and the templates
that cannot mark the assistant's span refused with one error."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from growthpace.platform.data.chat import IGNORE, ChatEncoder, ChatFormatError, TemplateFraming, framing_for

FEW_SHOT = (("user", "Which is larger, 3 or 7?"), ("assistant", "7"), ("user", "Pick A or B: which is a fruit? "
            "A. apple B. brick"), ("assistant", "A"))


@pytest.fixture(scope="module")
def tokenizer(real_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(real_model)


def _with_template(tokenizer, template):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


def test_training_ids_are_the_templates_and_only_assistant_turns_are_trained(tokenizer):
    enc = framing_for(tokenizer)
    assert isinstance(enc, TemplateFraming)
    assert tokenizer.convert_ids_to_tokens(enc.eot) == "<|im_end|>" and enc.end == "<|im_end|>\n"
    ids, labels = enc.example(FEW_SHOT, 10_000)
    whole = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in FEW_SHOT], tokenize=True,
                                          return_dict=False)
    assert ids == whole  # tokenized piece by piece, the same ids as the template's text whole
    trained = tokenizer.decode([i for i, y in zip(ids, labels) if y != IGNORE])
    assert trained == "7<|im_end|>\nA<|im_end|>\n"
    assert all(y in (IGNORE, i) for i, y in zip(ids, labels))
    assert enc.lengths([FEW_SHOT, FEW_SHOT[:2]], 10_000) == [len(ids), len(enc.example(FEW_SHOT[:2], 10_000)[0])]
    assert enc.example(FEW_SHOT, 9) == (ids[:9], labels[:9]) and enc.lengths([FEW_SHOT], 9) == [9]


def test_the_scoring_prompt_is_the_training_ids_up_to_the_answer(tokenizer):
    enc = framing_for(tokenizer)
    ids, labels = enc.example(FEW_SHOT, 10_000)
    prompt = enc.prompt(FEW_SHOT[:-1])
    answer = ids[len(prompt):]
    assert ids[: len(prompt)] == prompt and labels[len(prompt) - 1] == IGNORE and labels[len(prompt)] != IGNORE
    assert answer == enc.text("A") + enc.text(enc.end)  # the letter is the token scoring reads: enc.text("A")[0]
    assert enc.continuation("A") == answer[:2]
    assert enc.decode(answer + enc.text(" trailing")) == "A"
    assert enc.prompt(FEW_SHOT[:-1], max_length=8) == prompt[-8:]


def test_one_rule_decides_the_framing(tokenizer):
    from growthpace.platform.train.models import chat_tokenizer

    study = chat_tokenizer(copy.deepcopy(tokenizer), "study")  # the study's tokens added: its framing, template or not
    assert study.chat_template and isinstance(framing_for(study), ChatEncoder)
    with pytest.raises(ChatFormatError, match="already has the study's chat tokens"):
        chat_tokenizer(study, "template")
    kept = chat_tokenizer(copy.deepcopy(tokenizer), "template")
    assert len(kept) == len(tokenizer) and kept.pad_token_id is not None  # no token added
    with pytest.raises(ChatFormatError, match="neither the study's chat tokens .* nor a chat template"):
        framing_for(_with_template(tokenizer, None))


@pytest.mark.parametrize("template, why", [
    # the assistant's content is never rendered
    ("{% for m in messages %}{% if m['role'] == 'user' %}<|im_start|>{{ m['content'] }}<|im_end|>{% endif %}{% endfor %}"
     "{% if add_generation_prompt %}<|im_start|>{% endif %}", "does not render message 1 \\(assistant\\) once"),
    # the content is changed
    ("{% for m in messages %}<|im_start|>{{ m['content'] | upper }}<|im_end|>{% endfor %}"
     "{% if add_generation_prompt %}<|im_start|>{% endif %}", "does not render a message's content verbatim"),
    # a completed assistant turn starts with text the generation prompt lacks
    ("{% for m in messages %}<|im_start|>{% if m['role'] == 'assistant' %}<think></think>{% endif %}{{ m['content'] }}"
     "<|im_end|>{% endfor %}{% if add_generation_prompt %}<|im_start|>{% endif %}",
     "generation prompt does not end where the assistant's content begins"),
    # nothing could stop a reply: the turn ends with plain text
    ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}"
     "{% if add_generation_prompt %}assistant: {% endif %}", "first token is no special token"),
    # nothing follows the assistant's content
    ("{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<|im_start|>"
     "{% endif %}", "renders nothing after the assistant's content"),
    # the template refuses the conversation
    ("{{ raise_exception('only system prompts') }}", "fails on a conversation of roles \\[user, assistant\\]"),
])
def test_a_template_that_cannot_mark_the_assistant_span_is_refused(tokenizer, template, why):
    with pytest.raises(ChatFormatError, match="cannot mark the assistant's span: .*" + why):
        framing_for(_with_template(tokenizer, template))


def test_check_chat_names_the_field_and_the_template_file(real_model, tmp_path):
    from growthpace.platform.train.models import ModelError, check_chat

    for f in real_model.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, tmp_path / f.name)
    check_chat(str(tmp_path), "template", "models[0].chat")
    check_chat(str(tmp_path / "nowhere"), "study", "models[0].chat")  # nothing to check for the study's framing
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ModelError, match=r"field 'models\[0\].chat': model .* \(.*chat_template.jinja\): cannot mark"):
        check_chat(str(tmp_path), "template", "models[0].chat")
    (tmp_path / "chat_template.jinja").unlink()
    with pytest.raises(ModelError, match=r"field 'models\[0\].chat': .*nor a chat template"):
        check_chat(str(tmp_path), "template", "models[0].chat")


def _spec(tmp_path, small_data, **model):
    from growthpace.platform.data.specfile import load_spec

    raw = {"name": "t", "storage": str(tmp_path / "s"), "models": [{"size": "s", **model}],
           "data": {"root": str(small_data), "train_split": "1000", "volumes": [10]}}
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return load_spec(p)


def test_a_preset_has_no_template(tmp_path, small_data):
    from growthpace.platform.core.spec import SpecError

    with pytest.raises(SpecError, match=r"field 'models\[0\].chat': preset 'llama-nano' has no chat template"):
        _spec(tmp_path, small_data, name="llama-nano", chat="template")


def test_the_chat_format_is_part_of_a_cells_identity_and_study_keeps_its_ids(tmp_path, small_data, real_model):
    from growthpace.jobs.study import plan_rows, prepare

    default = prepare(_spec(tmp_path, small_data, name=str(real_model)), write=False)
    study = prepare(_spec(tmp_path, small_data, name=str(real_model), chat="study"), write=False)
    template = prepare(_spec(tmp_path, small_data, name=str(real_model), chat="template"), write=False)
    assert [c.cell_id for c in study.cells] == [c.cell_id for c in default.cells]
    assert "chat" not in study.cells[0].training and template.cells[0].training["chat"] == "template"
    assert {c.cell_id for c in template.cells}.isdisjoint(c.cell_id for c in study.cells)
    # plan counts a template model's items in its template: what training will tokenize
    (row,) = plan_rows(template)
    (cell,) = template.cells
    records = template.dataset.pool.select(cell.allocation, cell.seed)
    enc = framing_for(_template_tokenizer(real_model))
    assert row["tokens"] == sum(len(ids) for ids, _ in enc.examples([r.messages for r in records],
                                                                     cell.training["max_length"]))


def _template_tokenizer(folder):
    from growthpace.platform.train.models import source_tokenizer

    return source_tokenizer(str(folder), "template")


def test_a_template_base_is_the_source_unchanged_and_a_study_base_grows(tmp_path):
    """The 7b-33b path, on a tiny model: with no token added the base's shards are the source's files
    (linked), the vocabulary and the embeddings keep their size; ``chat: study`` grows them."""
    import json
    import os

    from safetensors import safe_open

    from growthpace.platform.core.abilities import CHAT_TOKENS
    from growthpace.platform.store.storage import Layout
    from growthpace.platform.train.models import ensure_base_model, model_key

    src = tmp_path / "tiny-instruct"
    shutil.copytree(Path(__file__).parent / "bad_inputs" / "models" / "no-chat-template", src)
    (src / "chat_template.jinja").write_text(
        "{% for m in messages %}<|turn|>{{ m['role'] }}\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|turn|>assistant\n{% endif %}")
    vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    layout = Layout(tmp_path / "store")

    base = Path(ensure_base_model(layout, str(src), None, None, 0, "template"))
    assert base.name == model_key(str(src), None, 0, "template") and base.name.endswith("-template")
    assert os.path.samefile(base / "model.safetensors", src / "model.safetensors")
    assert json.loads((base / "config.json").read_text())["vocab_size"] == vocab
    enc = framing_for(_template_tokenizer(base))
    assert isinstance(enc, TemplateFraming) and len(enc.tok) == vocab and enc.end == "<|end|>\n"

    study = Path(ensure_base_model(layout, str(src), None, None, 0, "study"))
    assert study != base and json.loads((study / "config.json").read_text())["vocab_size"] == vocab + len(CHAT_TOKENS)
    with safe_open(str(study / "model.safetensors"), framework="pt") as f:
        assert f.get_slice("model.embed_tokens.weight").get_shape()[0] == vocab + len(CHAT_TOKENS)
