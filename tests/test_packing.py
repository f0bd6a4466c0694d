"""Packing: the same per-token loss as padding, with no attention across items; fewer tokens computed."""

import pytest
import torch

from growthpace.platform.data.chat import IGNORE
from growthpace.platform.train.packing import pack_batch, pad_batch, train_tokens


def _items(lengths, vocab=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(3, vocab, (n,), generator=g).tolist()
        labels = [IGNORE] * (n // 2) + ids[n // 2:]  # loss on the second half, like an assistant answer
        out.append((ids, labels))
    return out


def _token_losses(logits, labels):
    """Per-token cross-entropy of each label after the shift, in order (ignored labels dropped)."""
    logits, labels = logits[..., :-1, :].reshape(-1, logits.shape[-1]), labels[..., 1:].reshape(-1)
    keep = labels != IGNORE
    return torch.nn.functional.cross_entropy(logits[keep].float(), labels[keep], reduction="none")


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()


def test_packed_per_token_loss_equals_padded(tiny_llama):
    batch = _items([37, 9, 64, 20])
    with torch.no_grad():
        padded = pad_batch(batch, pad_id=0)
        out_pad = tiny_llama(**padded, use_cache=False)
        packed = pack_batch(batch)
        out_pack = tiny_llama(**packed, use_cache=False)
    a = _token_losses(out_pad.logits, padded["labels"])
    b = _token_losses(out_pack.logits, packed["labels"])
    assert a.shape == b.shape and a.numel() == sum(len(y) - len(y) // 2 for _, y in batch)
    assert (a - b).abs().max().item() <= 1e-4
    assert abs(out_pad.loss.item() - out_pack.loss.item()) <= 1e-4  # the mean the trainer steps on


def test_without_restarting_positions_attention_would_cross_items(tiny_llama):
    """The check above can fail: the same packed row with running positions mixes the items."""
    batch = _items([37, 9, 64, 20])
    packed = pack_batch(batch)
    with torch.no_grad():
        iso = tiny_llama(**packed, use_cache=False).logits
        mixed = tiny_llama(input_ids=packed["input_ids"], labels=packed["labels"], use_cache=False).logits
    assert (iso - mixed).abs().max().item() > 1e-3


def test_packing_never_learns_across_the_item_boundary():
    batch = [([5, 6, 7], [5, 6, 7]), ([8, 9], [8, 9])]
    packed = pack_batch(batch)
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert packed["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9]]


def test_packed_tokens_are_the_real_tokens_padding_computes_more():
    lengths = [10, 200, 30, 30, 500, 12, 40, 80, 9, 300]
    real = sum(lengths) * 2 * 64 // 10  # 10 items padded to one global batch of 64 = 6.4 passes over them
    packed = train_tokens(lengths, 2, per_device_batch=8, workers=4, grad_accum=2, seed=0)
    assert abs(packed - real) <= 2 * 500  # the padding repeats whole items, in shuffled order
    padded = train_tokens(lengths, 2, per_device_batch=8, workers=4, grad_accum=2, seed=0, packed=False)
    assert padded > 2.0 * packed


def test_cell_tokens_round_trip_and_match_one_call_per_item(tmp_path, small_data):
    from growthpace.platform.data.chat import ChatEncoder
    from growthpace.platform.data.dataset import read_cell_tokens, tokens_bytes
    from growthpace.platform.train.models import train_tokenizer
    from growthpace.platform.data.records import read_split

    recs = [r for rs in read_split(small_data, "1000").values() for r in rs][:40]
    enc = ChatEncoder(train_tokenizer(recs))
    batched = enc.examples([r.messages for r in recs], 64)
    assert batched == [enc.example(r.messages, 64) for r in recs]
    (tmp_path / "tokens.npz").write_bytes(tokens_bytes(batched))
    assert read_cell_tokens(tmp_path / "tokens.npz") == batched



def test_attention_choice_skips_masked_blocks_on_gpu_only(monkeypatch):
    """flex_attention for packed rows on a GPU (bench/packing_attention.py: it matches sdpa's loss);
    sdpa on CPU (no flex backward there) and for padded rows; flash-attention-2 where installed."""
    import importlib.util

    from growthpace.platform.train.packing import attention_implementation

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn" else real(name, *a))
    assert attention_implementation(torch.device("cpu"), packed=True) == "sdpa"
    assert attention_implementation(torch.device("cuda", 0), packed=True) == "flex_attention"
    assert attention_implementation(torch.device("cuda", 0), packed=False) == "sdpa"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" else real(name, *a))
    assert attention_implementation(torch.device("cuda", 0), packed=True) == "flash_attention_2"
