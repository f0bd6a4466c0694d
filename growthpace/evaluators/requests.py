"""Records -> model requests -> predictions: the one place requests are built.

Each item's question kind (evaluators/scoring.py) says what the model must produce, as a task's output
type does in lm-evaluation-harness; ``plan_requests`` turns the items into requests once, and every
backend (transformers, vLLM in-process, vLLM through ray.data.llm) answers the same requests:

- a ``Generation`` per generated item: the checkpoint framing's prompt (platform/data/chat.py), cut
  from the left so that prompt and reply fit ``max_length``; greedy reply of at most the kind's token
  limit (capped by ``limits`` and by half of ``max_length``: core/items.py generation_limit),
  stopped at the framing's end of turn (<eot>); for choice items the log-prob of each of the item's option letters (A to H,
  ``scoring.option_letters``) at the FIRST answer position. A limit of 0 reads that position alone: the
  letters' log-probs and no reply (how CMMLU and AGIEval are scored);
- a ``Continuation`` per candidate of a perplexity item: prompt (cut so the candidate fits) and the
  candidate + <eot>, whose mean token NLL ranks the candidates.

``RequestPlan.predictions`` puts the answers back together as one ``Prediction`` per record.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from growthpace.evaluators.scoring import Prediction, needs
from growthpace.platform.core.items import generation_limit, option_letters, question_kind
from growthpace.platform.data.chat import Framing
from growthpace.platform.core.items import ALL_OPTION_LETTERS, Record

# The most token ids one Generation may watch at its first position: every engine is built to return
# that many log-probs there (vllm_backend.engine_args max_logprobs), and the option letters A-H fit.
MAX_WATCHED = len(ALL_OPTION_LETTERS)


@dataclass(frozen=True)
class Generation:
    item: int  # index of the record in the planned list
    prompt: list[int]  # token ids, already cut to fit
    max_tokens: int  # tokens the engine generates (at least 1: the answer position is a step)
    reply: bool  # False: only the letters are read (limit 0), the generated token is dropped
    letters: str  # option letters whose log-prob is read at the first answer position ("" none)
    letter_ids: tuple[int, ...]  # the token each letter starts with, as the model would write it
    stop: tuple[int, ...] | None = None  # token ids that end the reply; None: the chat framing's <eot>


@dataclass(frozen=True)
class Continuation:
    item: int
    prompt: list[int]
    continuation: list[int]  # candidate + <eot>

    @property
    def sequence(self) -> list[int]:
        return self.prompt + self.continuation


@dataclass(frozen=True)
class Reply:
    """A backend's answer to one Generation."""

    tokens: list[int]  # generated ids (<eot> included when reached)
    letter_logprobs: tuple[float, ...]  # one per Generation.letter_ids, at the first answer position


@dataclass(frozen=True)
class RequestPlan:
    n: int  # records planned
    enc: Framing
    generations: list[Generation]
    continuations: list[Continuation]

    def predictions(self, replies: Sequence[Reply], nll: Sequence[float]) -> list[Prediction]:
        """One Prediction per record from the answers, in request order."""
        if len(replies) != len(self.generations) or len(nll) != len(self.continuations):
            raise RuntimeError(f"{len(replies)} replies and {len(nll)} NLLs for {len(self.generations)} "
                               f"generations and {len(self.continuations)} continuations")
        preds: list[Prediction | None] = [None] * self.n
        for g, r in zip(self.generations, replies):
            letters = {ch: float(v) for ch, v in zip(g.letters, r.letter_logprobs)} if g.letters else None
            preds[g.item] = Prediction(text=self.enc.decode(list(r.tokens)) if g.reply else "", letter_logprobs=letters)
        per_item: dict[int, list[float]] = defaultdict(list)
        for c, v in zip(self.continuations, nll):
            per_item[c.item].append(float(v))
        for i, values in per_item.items():
            preds[i] = Prediction(candidate_nll=tuple(values))
        return preds  # type: ignore[return-value]


def by_limit(requests: Sequence[Generation]) -> list[list[int]]:
    """Indices of ``requests`` grouped by token limit and stop ids: what a backend runs in one generate call."""
    groups: dict[tuple[int, tuple[int, ...]], list[int]] = defaultdict(list)
    for n, g in enumerate(requests):
        groups[(g.max_tokens, g.stop or ())].append(n)
    return [groups[k] for k in sorted(groups)]


def stop_ids(g: Generation, eot: int) -> list[int]:
    """The token ids that end ``g``'s reply."""
    return list(g.stop) if g.stop is not None else [eot]


def letter_ids(enc: Framing, letters: str) -> tuple[int, ...]:
    """The token each letter starts with; two letters on one token could not be told apart."""
    ids = tuple(enc.text(ch)[0] for ch in letters)
    if len(set(ids)) != len(ids):
        raise ValueError(f"option letters {letters} share a first token in this tokenizer: {ids}")
    return ids


def plan_requests(enc: Framing, records: Sequence[Record], limits: dict[str, int] | None = None,
                  max_length: int = 1024) -> RequestPlan:
    """The requests for ``records``. Generations come sorted by token limit (then letters-only first,
    then by number of letters), so a backend that runs one limit per call pads and caches alike."""
    limits = limits or {}
    gens: list[Generation] = []
    conts: list[Continuation] = []
    ids: dict[str, tuple[int, ...]] = {}  # option letters -> their tokens, once per plan
    for i, r in enumerate(records):
        prompt = enc.prompt(r.prompt)
        if needs(r) == "rank":
            for cand in r.choices or ():
                c = enc.continuation(cand)
                conts.append(Continuation(i, prompt[-max(1, max_length - len(c)) :], c))
            continue
        kind = question_kind(r)
        limit = generation_limit(kind, limits, max_length)  # the prompt keeps at least half of max_length
        steps = max(1, limit)
        letters = option_letters(r) if kind == "choice" else ""
        if letters not in ids:
            ids[letters] = letter_ids(enc, letters)
        gens.append(Generation(i, prompt[-(max_length - steps) :], steps, limit > 0, letters, ids[letters]))
    gens.sort(key=lambda g: (g.max_tokens, g.reply, len(g.letters), g.item))
    return RequestPlan(len(records), enc, gens, conts)
