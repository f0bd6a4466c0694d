"""Batched inference with transformers: what every scoring backend must give.

- ``generate``: greedy replies stopped at <eot>, with the log-probs of chosen tokens at the FIRST
  answer position (the study's code read the last step; the first is the intended one);
- ``continuation_nll``: mean token NLL of given continuations (candidate + <eot>) after a prompt.
Prompts are token ids from ChatEncoder, so training and scoring frame text identically.
"""

from __future__ import annotations

from pathlib import Path

import torch

from growthpace.platform.chat import ChatEncoder


def placement(model_dir: str | Path, cuda: bool) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) for scoring: on a GPU the checkpoint's own dtype (a bf16 7b in fp32 would need
    twice the memory for no better verdicts); on CPU fp32, where 16-bit matmuls are slow or missing."""
    if not cuda:
        return torch.device("cpu"), torch.float32
    import json

    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return torch.device("cuda"), getattr(torch, name)


class TransformersBackend:
    name = "transformers"

    def __init__(self, model_dir: str | Path, batch_size: int = 64, max_length: int = 1024):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.device, dtype = placement(model_dir, torch.cuda.is_available())
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.enc = ChatEncoder(self.tokenizer)
        self.batch_size = batch_size
        self.max_length = max_length

    def _chunks(self, n: int, lengths: list[int]):
        """Index batches sorted by length, so padding stays small."""
        order = sorted(range(n), key=lambda i: lengths[i])
        for s in range(0, n, self.batch_size):
            yield order[s : s + self.batch_size]

    @torch.inference_mode()
    def generate(
        self, prompts: list[list[int]], max_new_tokens: int, watch: list[int] | None = None
    ) -> tuple[list[str], list[dict[int, float]]]:
        """Greedy replies, and for each prompt the first-step log-probs of the ``watch`` token ids."""
        texts: list[str] = [""] * len(prompts)
        first: list[dict[int, float]] = [{} for _ in prompts]
        prompts = [p[-(self.max_length - max_new_tokens) :] for p in prompts]
        for idx in self._chunks(len(prompts), [len(p) for p in prompts]):
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), self.enc.pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(idx):  # left padding: every reply starts at the same column
                ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]) :] = 1
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=self.enc.eot,
                pad_token_id=self.enc.pad,
                output_scores=True,
                return_dict_in_generate=True,
            )
            step0 = torch.log_softmax(out.scores[0].float(), dim=-1)
            for row, i in enumerate(idx):
                texts[i] = self.enc.decode(out.sequences[row, width:].tolist())
                if watch:
                    first[i] = {t: step0[row, t].item() for t in watch}
        return texts, first

    @torch.inference_mode()
    def continuation_nll(self, prompts: list[list[int]], continuations: list[list[int]]) -> list[float]:
        """Mean token NLL of each continuation given its prompt (one pair per entry)."""
        pairs = []
        for p, c in zip(prompts, continuations):
            p = p[-max(1, self.max_length - len(c)) :]
            pairs.append((p, c))
        nll = [0.0] * len(pairs)
        for idx in self._chunks(len(pairs), [len(p) + len(c) for p, c in pairs]):
            width = max(len(pairs[i][0]) + len(pairs[i][1]) for i in idx)
            ids = torch.full((len(idx), width), self.enc.pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(idx):
                seq = pairs[i][0] + pairs[i][1]
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            for row, i in enumerate(idx):
                p, c = pairs[i]
                pos = torch.arange(len(p) - 1, len(p) + len(c) - 1)
                token_lp = logp[row, pos, torch.tensor(c)]
                nll[i] = -token_lp.mean().item()
        return nll

    def letter_ids(self, letters: str) -> dict[str, int]:
        """The token that starts each option letter as the model would write it."""
        return {ch: self.enc.text(ch)[0] for ch in letters}

    def close(self) -> None:
        del self.model
