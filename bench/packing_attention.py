"""Packed rows under sdpa vs flex_attention (vs eager): the same loss and logits? (issue 24, item 8)

    .venv/bin/python bench/packing_attention.py        # about 75 s on 2 CPU cores (flex compiles once)

One packed micro-batch (platform/train/packing.py pack_batch: position ids restart per item) of a tiny
LLaMA through transformers' attention implementations. sdpa gets a dense L x L block-diagonal mask;
flex_attention gets a BlockMask and skips the blocks that are masked. Prints each one's loss and the
largest logit difference from sdpa, and, as the control that the comparison can fail, flex_attention
on the same row with running position ids (attention then crosses items). Forward only: torch 2.13
refuses flex_attention's backward on CPU ("FlexAttention does not support backward on CPU").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: E402

from growthpace.platform.data.chat import IGNORE  # noqa: E402
from growthpace.platform.train.packing import pack_batch  # noqa: E402


def main() -> None:
    g = torch.Generator().manual_seed(0)
    items = []
    for n in [37, 9, 64, 20, 130, 3]:
        ids = torch.randint(3, 200, (n,), generator=g).tolist()
        items.append((ids, [IGNORE] * (n // 2) + ids[n // 2:]))  # loss on the second half, like a reply
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=200, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()
    batch = pack_batch(items)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, "
          f"one packed row of {batch['input_ids'].shape[1]} tokens, {len(items)} items")
    out = {}
    for impl in ("sdpa", "flex_attention", "eager"):
        model.set_attn_implementation(impl)
        t0 = time.perf_counter()
        with torch.no_grad():
            o = model(**batch, use_cache=False)
        out[impl] = o
        print(f"{impl:15s} loss={o.loss.item():.7f} first_call_s={time.perf_counter() - t0:.2f}")
    for impl, o in out.items():
        print(f"{impl:15s} |loss - sdpa|={abs(o.loss.item() - out['sdpa'].loss.item()):.2e} "
              f"max|logit - sdpa|={(o.logits - out['sdpa'].logits).abs().max().item():.2e}")
    model.set_attn_implementation("flex_attention")
    with torch.no_grad():
        crossed = model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False)
    print(f"control: flex_attention with running positions |loss - sdpa|="
          f"{abs(crossed.loss.item() - out['sdpa'].loss.item()):.2e} (attention crosses items)")


if __name__ == "__main__":
    main()
