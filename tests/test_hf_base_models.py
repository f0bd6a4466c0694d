"""The study's base-model shape: a LLaMA folder with a SentencePiece `tokenizer.model` (no tokenizer.json)
and sharded 16-bit `.bin` weights, turned into the study's base model (chat tokens, grown embeddings,
safetensors in the same dtype) through the project's own path (platform/train/models.py)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from growthpace.platform.core.abilities import CHAT_TOKENS


def _sentencepiece_model() -> bytes:
    import sentencepiece as spm

    text = [f"the quick brown fox jumps over the lazy dog {i} times" for i in range(200)]
    text += ["你好 世界 中文 模型 指令 微调"] * 20
    out = io.BytesIO()
    # byte_fallback and ids as LLaMA's tokenizer has them (unk 0, <s> 1, </s> 2, no pad)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=out, vocab_size=400, model_type="bpe",
                                   byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    return out.getvalue()


@pytest.fixture(scope="module")
def llama_bin_folder(tmp_path_factory):
    """tokenizer.model + tokenizer_config.json (as Chinese-LLaMA ships them), config, two bf16 .bin shards."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    d = tmp_path_factory.mktemp("chinese-llama-like")
    (d / "tokenizer.model").write_bytes(_sentencepiece_model())
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    config = LlamaConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=32, tie_word_embeddings=False,
                         dtype="bfloat16")
    config.save_pretrained(d)
    torch.manual_seed(0)
    state = AutoModelForCausalLM.from_config(config).to(torch.bfloat16).state_dict()
    keys = sorted(state)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves):
        name = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({k: state[k] for k in part}, d / name)
        weight_map.update({k: name for k in part})
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return d, state


def test_sentencepiece_only_tokenizer_loads_with_the_models_ids(llama_bin_folder):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    folder, _ = llama_bin_folder
    assert not (folder / "tokenizer.json").exists()
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tok = AutoTokenizer.from_pretrained(folder)
    for text in ("the quick brown fox", "你好 世界 7 times", "模型 jumps over 中文"):
        assert tok(text, add_special_tokens=False)["input_ids"] == sp.encode(text)


def test_tokenizer_model_without_its_class_is_refused_up_front(llama_bin_folder, tmp_path):
    import shutil

    from growthpace.platform.train.models import ModelError, check_model

    folder, _ = llama_bin_folder
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    (bare / "tokenizer_config.json").unlink()
    with pytest.raises(ModelError, match=r"field 'models\[0\].name'.*tokenizer.model but no tokenizer_config.json"):
        check_model(str(bare), "models[0].name")


def test_bin_base_model_becomes_safetensors_in_its_dtype_with_chat_tokens(llama_bin_folder, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from growthpace.platform.data.chat import ChatEncoder
    from growthpace.platform.train.models import check_model, ensure_base_model
    from growthpace.platform.store.storage import Layout

    folder, state = llama_bin_folder
    check_model(str(folder))
    base = ensure_base_model(Layout(tmp_path / "store"), str(folder), None, None, 0)
    files = sorted(p.name for p in base.iterdir())
    assert not [f for f in files if f.endswith(".bin")] and not [f for f in files if f.startswith(".")], files
    index = json.loads((base / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(state)
    vocab = len(AutoTokenizer.from_pretrained(base))
    assert vocab == 400 + len(CHAT_TOKENS)
    for shard in set(index["weight_map"].values()):
        with safe_open(str(base / shard), framework="pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
                assert t.dtype == torch.bfloat16, k  # never widened to fp32
                if k.endswith(("embed_tokens.weight", "lm_head.weight")):
                    assert t.shape[0] == vocab and torch.equal(t[:400], state[k])
                else:
                    assert torch.equal(t, state[k]), k

    model = AutoModelForCausalLM.from_pretrained(base)
    assert model.get_input_embeddings().num_embeddings == vocab
    enc = ChatEncoder(AutoTokenizer.from_pretrained(base))
    ids, _ = enc.example((("user", "the quick fox"), ("assistant", "你好")), 64)
    assert len({enc.user, enc.assistant, enc.eot} & set(ids)) == 3
    assert model(input_ids=torch.tensor([ids])).logits.shape == (1, len(ids), vocab)


def test_transformers_backend_scores_on_gpu_in_the_checkpoints_dtype(llama_bin_folder, tmp_path):
    from growthpace.evaluators.transformers_backend import placement

    folder, _ = llama_bin_folder
    assert placement(folder, cuda=True) == (torch.device("cuda"), torch.bfloat16)
    assert placement(folder, cuda=False) == (torch.device("cpu"), torch.float32)
    fp16 = tmp_path / "fp16"
    fp16.mkdir()
    (fp16 / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "float16"}))
    assert placement(fp16, cuda=True)[1] == torch.float16


def test_source_tokenizer_files_never_override_the_projects(llama_bin_folder, tmp_path):
    """A base model's special_tokens_map.json (eos </s>) is not copied over what the project writes:
    the reloaded tokenizer still ends a reply with the study's <eot>."""
    import shutil

    from transformers import AutoTokenizer

    from growthpace.platform.core.abilities import EOT
    from growthpace.platform.train.models import ensure_base_model
    from growthpace.platform.store.storage import Layout

    folder, _ = llama_bin_folder
    src = tmp_path / "with-map"
    shutil.copytree(folder, src)
    (src / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    (src / "added_tokens.json").write_text(json.dumps({}))
    base = ensure_base_model(Layout(tmp_path / "store"), str(src), None, None, 0)
    assert AutoTokenizer.from_pretrained(base).eos_token == EOT
    for name in ("special_tokens_map.json", "added_tokens.json"):
        assert not (base / name).exists() or (base / name).read_bytes() != (src / name).read_bytes(), name
