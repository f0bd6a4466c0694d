"""`plan` counts what training trains on, without torch or transformers (issue 13: `plan` is instant)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from growthpace.platform.data.dataset import load_pool
from growthpace.platform.core.presets import PRESETS
from growthpace.platform.train.models import llama_params, param_count, preset_config

ROOT = Path(__file__).resolve().parent.parent

# What a `plan` process loaded by the time it exits (atexit runs after the CLI's own exit).
LOADED = """
import atexit, json, runpy, sys
atexit.register(lambda: sys.stderr.write("LOADED=" + json.dumps(sorted({m.split(".")[0] for m in sys.modules})) + "\\n"))
sys.argv = ["growthpace", *sys.argv[1:]]
runpy.run_module("growthpace.cli", run_name="__main__", alter_sys=True)
"""


def _spec(tmp_path, small_data, models=("llama-nano", "llama-micro")) -> Path:
    raw = {
        "name": "t",
        "storage": str(tmp_path / "s"),
        "models": [{"name": m, "size": f"s{i}"} for i, m in enumerate(models)],
        "data": {"root": str(small_data), "train_split": "1000", "sources": ["curated", "synthetic"],
                 "volumes": [10, 40, 100]},
        "training": {"epochs": 2, "max_length": 48},  # short enough that some items are cut
        "evaluation": {"splits": ["valid", "test"], "ood": True},
    }
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_plan_imports_neither_torch_nor_transformers(tmp_path, small_data):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", LOADED, "plan", str(_spec(tmp_path, small_data)), "--json"],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["totals"]["tokens"] > 0
    loaded = set(json.loads(out.stderr.split("LOADED=")[-1].splitlines()[0]))
    assert "growthpace" in loaded  # the probe saw the CLI's modules
    assert not loaded & {"torch", "transformers"}, loaded & {"torch", "transformers"}


def _cells_tokens_as_trained(spec, tmp_path):
    """Per cell id: the input ids training reads (write_cell_tokens with ensure_tokenizer's tokenizer)."""
    from growthpace.jobs.study import prepare
    from growthpace.platform.data.dataset import read_cell_tokens, write_cell_data, write_cell_tokens
    from growthpace.platform.train.models import ensure_tokenizer
    from growthpace.platform.store.storage import Layout

    study = prepare(spec, write=False)
    layout = Layout(tmp_path / "trained")
    tok, _ = ensure_tokenizer(layout, study.dataset.train_records(), study.dataset.fingerprint)
    counts = {}
    for cell in study.cells:
        write_cell_data(layout, cell, study.dataset)
        examples = read_cell_tokens(write_cell_tokens(layout, cell, tok))
        counts[cell.cell_id] = sum(len(ids) for ids, _ in examples)
    return counts, layout


def test_plan_counts_the_tokens_training_trains_on(tmp_path, small_data):
    from growthpace.jobs.study import plan_rows, prepare
    from growthpace.platform.data.specfile import load_spec

    spec = load_spec(_spec(tmp_path, small_data))
    trained, layout = _cells_tokens_as_trained(spec, tmp_path)
    planned = {r["cell_id"]: r["tokens"] for r in plan_rows(prepare(spec, write=False))}
    assert planned == trained
    assert min(trained.values()) > 0
    # plan reads the tokenizer a run stored instead of training one: the same counts
    stored = spec.model_copy(update={"storage": str(layout.root)})
    assert {r["cell_id"]: r["tokens"] for r in plan_rows(prepare(stored, write=False))} == trained


def test_damaged_stored_tokenizer_is_named(tmp_path, small_data):
    from growthpace.jobs.study import prepare
    from growthpace.platform.data.dataset import load_dataset
    from growthpace.platform.train.models import tokenizer_key
    from growthpace.platform.data.specfile import load_spec
    from growthpace.platform.store.storage import Layout, StoredFileError

    spec = load_spec(_spec(tmp_path, small_data))
    f = Layout.for_spec(spec).tokenizer(tokenizer_key(load_dataset(spec).fingerprint)) / "tokenizer.json"
    f.parent.mkdir(parents=True)
    f.write_text("{not json")
    with pytest.raises(StoredFileError, match="tokenizer.json: damaged"):
        prepare(spec, write=False)


@pytest.mark.parametrize("vocab", [2048, 1900])
def test_preset_params_by_arithmetic_equal_the_torch_models(vocab):
    from growthpace.platform.train.models import count_params, llama_config

    for name, preset in PRESETS.items():
        assert llama_params(preset_config(preset, vocab)) == count_params(llama_config(preset, vocab)), name


def test_llama_folder_params_from_config_json(tmp_path):
    from transformers import LlamaConfig

    from growthpace.platform.train.models import count_params

    shapes = [dict(num_key_value_heads=2, tie_word_embeddings=False),  # GQA, own output head
              dict(num_key_value_heads=4, attention_bias=True, mlp_bias=True, head_dim=24)]
    for i, extra in enumerate(shapes):
        cfg = LlamaConfig(vocab_size=3001, hidden_size=96, intermediate_size=200, num_hidden_layers=3,
                          num_attention_heads=4, **extra)
        cfg.save_pretrained(tmp_path / str(i))
        assert param_count(str(tmp_path / str(i))) == count_params(cfg), extra


def test_piecewise_counts_equal_the_tokenizers_own_on_any_text(small_data):
    """_counts splits text itself (ByteLevel's pattern; a non-ASCII character by the class the tokenizer's
    split gives it) and encodes each distinct piece once: every count must equal the tokenizer's
    encoding of the whole text, for control characters, whitespace runs, contractions, digits, an added
    token's string inside a text, and characters of every kind beyond ASCII (marks, other scripts'
    digits and numerals, Unicode spaces, CJK, emoji)."""
    import random

    from growthpace.platform.data.chat import ChatEncoder
    from growthpace.platform.data.dataset import Dataset
    from growthpace.platform.train.models import train_bpe

    pool = load_pool(small_data, "1000", with_synthetic=True)
    tok = train_bpe(Dataset(small_data, pool, "x").train_records())
    rng = random.Random(0)
    beyond = ["é", "e\u0301", "中文", "三", "٣", "²", "Ⅻ", "\u00a0", "\u2003", "\u3000", "\u2028", "\x85", "\u200b",
              "“", "？", "ß", "Ω", "д", "🙂", "\U0001d7d8"]
    beyond += [chr(rng.choice([rng.randint(0x80, 0x2fff), rng.randint(0x3000, 0xd7ff), rng.randint(0xe000, 0x10ffff)]))
               for _ in range(300)]
    alphabet = [chr(i) for i in range(128)] + list(" \t\n\r'sdtmlrev0123") * 6 + [
        "'s", "'ll", "'re", "  ", "<eot>", "<user>", "<assistant", "\x1c"] + beyond
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(20000)]
    texts += ["", " ", "a  b", "x \n", "it's", "IT'S", "'''s", "1,000.50", "\x1c\x1d\x1e\x1f x", "“百发百中”是什么意思？\nA. x"]
    want = [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
    got = ChatEncoder(tok).text_lengths(texts)
    assert got == want
    assert sum(not t.isascii() for t in texts) > 5000


def test_bpe_trained_from_word_counts_equals_the_one_trained_on_the_text(small_data):
    """train_bpe feeds the trainer word counts (each distinct text split once, here): the tokenizer must be
    the one the trainer makes from the raw text with ByteLevel's own split, for the pool and for text
    of every character class (an added token's string included: training splits it as plain text)."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from growthpace.platform.core.abilities import CHAT_TOKENS
    from growthpace.platform.data.dataset import Dataset
    from growthpace.platform.core.presets import VOCAB_SIZE
    from growthpace.platform.train.models import _corpus, train_bpe
    from growthpace.platform.core.items import Record

    rng = random.Random(1)
    alphabet = [chr(i) for i in range(128)] + list(" \t\n'sdtmlrev0123") * 6 + [
        "'s", "<eot>", "é", "e\u0301", "中文", "三", "٣", "²", "\u3000", "\u2028", "\x85", "🙂"]
    odd = [Record("biology", str(i), (("user", "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))),
                                      ("assistant", rng.choice(["A", "B", " the end", "it's"]))), 0) for i in range(3000)]
    records = Dataset(small_data, load_pool(small_data, "1000", with_synthetic=True), "x").train_records() + odd

    reference = Tokenizer(models.BPE())
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    reference.decoder = decoders.ByteLevel()
    reference.train_from_iterator(_corpus(records), trainer=trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=list(CHAT_TOKENS), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    assert train_bpe(records).to_str() == reference.to_str()
