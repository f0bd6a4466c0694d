"""Batched inference with transformers: the reference Backend (evaluators/backends.py).

- ``generate``: greedy replies stopped at <eot>, with the log-probs of each request's letters at the
  FIRST answer position (the study's code read the last step; the first is the intended one);
- ``continuation_nll``: mean token NLL of given continuations (candidate + <eot>) after a prompt.
Requests come from evaluators/requests.py (the chat framing's ids, already cut to ``max_length``), so
training and scoring frame text identically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from growthpace.evaluators.backends import Backend
from growthpace.evaluators.requests import Continuation, Generation, Reply, by_limit, stop_ids
from growthpace.platform.data.chat import framing_for
from growthpace.platform.store.checkpoints import checkpoint_dtype


def placement(model_dir: str | Path, cuda: bool) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) for scoring: on a GPU the checkpoint's own dtype (a bf16 7b in fp32 would need
    twice the memory for no better verdicts); on CPU fp32, where 16-bit matmuls are slow or missing."""
    if not cuda:
        return torch.device("cpu"), torch.float32
    return torch.device("cuda"), getattr(torch, checkpoint_dtype(model_dir))


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model_dir: str | Path, batch_size: int = 64, max_length: int = 1024):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.device, dtype = placement(model_dir, torch.cuda.is_available())
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.enc = framing_for(self.tokenizer)
        self.batch_size = batch_size
        self.max_length = max_length

    def _chunks(self, n: int, lengths: list[int]):
        """Index batches sorted by length, so padding stays small."""
        order = sorted(range(n), key=lambda i: lengths[i])
        for s in range(0, n, self.batch_size):
            yield order[s : s + self.batch_size]

    def generate(self, requests: Sequence[Generation]) -> list[Reply]:
        replies: list[Reply | None] = [None] * len(requests)
        for group in by_limit(requests):
            first = requests[group[0]]
            got = self._generate([requests[n].prompt for n in group], first.max_tokens,
                                 [requests[n].letter_ids for n in group], stop_ids(first, self.enc.eot))
            for n, reply in zip(group, got):
                replies[n] = reply
        return replies  # type: ignore[return-value]

    @torch.inference_mode()
    def _generate(self, prompts: list[list[int]], max_new_tokens: int, watch: list[tuple[int, ...]],
                  stop: list[int]) -> list[Reply]:
        """Greedy replies, and for each prompt the first-step log-probs of its ``watch`` token ids."""
        replies: list[Reply | None] = [None] * len(prompts)
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
                eos_token_id=stop,
                pad_token_id=self.enc.pad,
                output_scores=True,
                return_dict_in_generate=True,
            )
            step0 = torch.log_softmax(out.scores[0].float(), dim=-1)
            for row, i in enumerate(idx):
                replies[i] = Reply(out.sequences[row, width:].tolist(), tuple(step0[row, t].item() for t in watch[i]))
        return replies  # type: ignore[return-value]

    def continuation_nll(self, requests: Sequence[Continuation]) -> list[float]:
        """Mean token NLL of each continuation given its prompt."""
        return [-lp.mean().item() for lp, _ in self._continuation_logprobs(requests)]

    def loglikelihood(self, requests: Sequence[Continuation]) -> list[tuple[float, bool]]:
        """Summed log-prob of each continuation given its prompt, and whether each token is the argmax."""
        return [(lp.sum().item(), greedy) for lp, greedy in self._continuation_logprobs(requests)]

    @torch.inference_mode()
    def _continuation_logprobs(self, requests: Sequence[Continuation]) -> list[tuple[torch.Tensor, bool]]:
        """Each continuation's token log-probs given its prompt, and whether every one is the argmax there."""
        pairs = [(c.prompt, c.continuation) for c in requests]
        out: list[tuple[torch.Tensor, bool]] = [None] * len(pairs)  # type: ignore[list-item]
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
                tokens = torch.tensor(c)
                out[i] = (logp[row, pos, tokens], bool((logp[row, pos].argmax(-1) == tokens).all()))
        return out

    def close(self) -> None:
        del self.model
