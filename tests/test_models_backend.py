"""Tokenizer, chat framing and the transformers backend on a tiny model built from config."""

import pytest
import torch

from growthpace.platform.core.abilities import ASSISTANT, EOT, USER
from growthpace.platform.data.chat import IGNORE, ChatEncoder
from growthpace.platform.core.presets import PRESETS
from growthpace.platform.train.models import count_params, llama_config, train_tokenizer
from growthpace.platform.data.records import read_split


@pytest.fixture(scope="module")
def tiny_model_dir(small_data, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    recs = [r for rs in read_split(small_data, "1000").values() for r in rs]
    tok = train_tokenizer(recs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(llama_config(PRESETS["llama-nano"], len(tok)))
    d = tmp_path_factory.mktemp("model")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_tokenizer_is_deterministic_and_has_chat_tokens(small_data):
    recs = [r for rs in read_split(small_data, "1000").values() for r in rs]
    a, b = train_tokenizer(recs), train_tokenizer(recs)
    assert a.get_vocab() == b.get_vocab()
    for t in (USER, ASSISTANT, EOT, "<pad>"):
        assert len(a(t, add_special_tokens=False)["input_ids"]) == 1
    text = "Which organ pumps blood? 心脏"
    assert a.decode(a(text, add_special_tokens=False)["input_ids"]) == text


def test_presets_head_dim_32_and_sizes_grow():
    sizes = []
    for name, p in PRESETS.items():
        cfg = llama_config(p, 2048)
        assert cfg.head_dim >= 32 and cfg.hidden_size // cfg.num_attention_heads == cfg.head_dim
        sizes.append(count_params(cfg))
    assert sizes == sorted(sizes)


def test_loss_mask_covers_only_assistant_text_and_eot(tiny_model_dir):
    from transformers import AutoTokenizer

    enc = ChatEncoder(AutoTokenizer.from_pretrained(tiny_model_dir))
    msgs = (("user", "hi"), ("assistant", "B"), ("user", "again"), ("assistant", "C"))
    ids, labels = enc.example(msgs, 512)
    kept = [i for i, l in zip(ids, labels) if l != IGNORE]
    assert kept == enc.text("B") + [enc.eot] + enc.text("C") + [enc.eot]
    assert ids[0] == enc.user and enc.assistant in ids
    ids2, labels2 = enc.example(msgs, 5)
    assert len(ids2) == len(labels2) == 5
    prompt = enc.prompt((("user", "hi"),))
    assert prompt == [enc.user, *enc.text("hi"), enc.eot, enc.assistant]
    assert enc.prompt((("user", "hi " * 50),), max_length=8)[-1] == enc.assistant


def test_backend_continuation_nll_matches_a_plain_forward(tiny_model_dir):
    from growthpace.evaluators.requests import Continuation
    from growthpace.evaluators.transformers_backend import TransformersBackend

    be = TransformersBackend(tiny_model_dir, batch_size=2)
    p = be.enc.prompt((("user", "Which organ pumps blood?"),))
    conts = [be.enc.continuation(x) for x in ("heart", "the liver does", "no")]
    got = be.continuation_nll([Continuation(0, p, c) for c in conts])
    for c, g in zip(conts, got):
        seq = torch.tensor([p + c])
        with torch.no_grad():
            logp = torch.log_softmax(be.model(seq).logits[0], -1)
        want = -sum(logp[len(p) - 1 + j, t].item() for j, t in enumerate(c)) / len(c)
        assert g == pytest.approx(want, abs=1e-4)


def test_backend_generate_first_step_logprobs_and_padding_invariance(tiny_model_dir):
    from growthpace.evaluators.requests import Generation, letter_ids
    from growthpace.evaluators.transformers_backend import TransformersBackend

    be = TransformersBackend(tiny_model_dir, batch_size=4)
    letters = letter_ids(be.enc, "ABCD")
    prompts = [be.enc.prompt((("user", q),)) for q in ("short?", "a much longer question here, is it?")]
    requests = [Generation(i, p, 3, True, "ABCD", letters) for i, p in enumerate(prompts)]
    replies = be.generate(requests)
    solo = TransformersBackend(tiny_model_dir, batch_size=1).generate(requests)
    assert [be.enc.decode(r.tokens) for r in replies] == [be.enc.decode(r.tokens) for r in solo]
    for a, b in zip(replies, solo):
        assert len(a.letter_logprobs) == len(letters)
        assert a.letter_logprobs == pytest.approx(b.letter_logprobs, abs=1e-4)
    with torch.no_grad():
        logp = torch.log_softmax(be.model(torch.tensor([prompts[0]])).logits[0, -1], -1)
    assert replies[0].letter_logprobs[0] == pytest.approx(logp[letters[0]].item(), abs=1e-4)


def _plain_tokenizer(tmp_path):
    """A BPE tokenizer without the chat tokens, as a real base model's would be."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["which organ pumps blood", "the heart pumps blood"] * 50, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")


@pytest.mark.parametrize("tied", [False, True])
def test_base_model_gains_chat_tokens_shard_by_shard(tmp_path, tied):
    """An HF base model (bf16, sharded) gets the chat tokens: only the embedding shards are rewritten,
    the other shards are the same files, dtypes stay, old rows are unchanged and new rows are the mean."""
    import json

    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from growthpace.platform.train.models import ensure_base_model
    from growthpace.platform.store.storage import Layout

    tok = _plain_tokenizer(tmp_path)
    cfg = llama_config(PRESETS["llama-nano"], len(tok))
    cfg.tie_word_embeddings = tied
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16)
    src = tmp_path / "hf-base"
    model.save_pretrained(src, max_shard_size="40KB")
    tok.save_pretrained(src)
    shards = sorted(p.name for p in src.glob("*.safetensors"))
    assert len(shards) > 2 and (src / "model.safetensors.index.json").is_file()

    out = ensure_base_model(Layout(tmp_path / "store"), str(src), None, None, 0)
    new_tok = AutoTokenizer.from_pretrained(out)
    assert len(new_tok) > len(tok) and all(len(new_tok(t, add_special_tokens=False)["input_ids"]) == 1 for t in (USER, ASSISTANT, EOT))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    grown = {index["weight_map"][k] for k in index["weight_map"] if k.endswith(("embed_tokens.weight", "lm_head.weight"))}
    for shard in shards:
        same = (out / shard).read_bytes() == (src / shard).read_bytes()
        assert same == (shard not in grown), shard
    assert sum((out / s).stat().st_size for s in shards) - sum((src / s).stat().st_size for s in shards) \
        == index["metadata"]["total_size"] - json.loads((src / "model.safetensors.index.json").read_text())["metadata"]["total_size"]

    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.dtype == torch.bfloat16 and loaded.config.vocab_size == len(new_tok)
    emb = loaded.get_input_embeddings().weight
    old = model.get_input_embeddings().weight
    assert torch.equal(emb[: len(tok)], old)
    assert torch.equal(emb[len(tok):], old.float().mean(0, keepdim=True).to(old.dtype).expand(len(new_tok) - len(tok), -1))
    if not tied:
        assert torch.equal(loaded.lm_head.weight[: len(tok)], model.lm_head.weight)
    weights = {k: v for s in grown for k, v in load_file(out / s).items()}
    assert all(v.dtype == torch.bfloat16 for v in weights.values())
    logits = loaded(input_ids=torch.tensor([[new_tok.convert_tokens_to_ids(USER), 5, 6]])).logits
    assert logits.shape == (1, 3, len(new_tok)) and torch.isfinite(logits.float()).all()
