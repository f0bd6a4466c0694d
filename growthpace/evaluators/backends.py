"""The inference backend contract (which backend scores a checkpoint is evaluators/engines.py).

A backend is one loaded checkpoint that answers the requests of evaluators/requests.py, in the order
given (lm-evaluation-harness's small model interface): ``generate`` (greedy replies with the letter
log-probs at the first answer position), ``continuation_nll``, ``loglikelihood`` (summed log-prob and
is-greedy, what lm-eval tasks ask) and ``close``. Requests arrive cut to
``max_length``; a backend neither frames, cuts nor groups by kind. VLLMBackend, TransformersBackend
and ProcessorBackend (ray.data.llm) implement it.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from growthpace.evaluators.requests import Continuation, Generation, Reply, RequestPlan, plan_requests
from growthpace.evaluators.scoring import Prediction
from growthpace.platform.core.items import Record
from growthpace.platform.data.chat import Framing


class Backend(Protocol):
    name: str  # recorded with every prediction row
    enc: Framing  # the checkpoint's chat framing: prompts are planned with it
    max_length: int  # prompt + reply tokens the engine holds

    def generate(self, requests: Sequence[Generation]) -> list[Reply]:
        """Greedy replies stopped at <eot> (at most ``max_tokens`` each), with the log-probs of each
        request's ``letter_ids`` at the first generated position."""
        ...

    def continuation_nll(self, requests: Sequence[Continuation]) -> list[float]:
        """Mean token NLL of each continuation given its prompt."""
        ...

    def loglikelihood(self, requests: Sequence[Continuation]) -> list[tuple[float, bool]]:
        """Summed log-prob of each continuation given its prompt, and whether greedy decoding writes
        every one of its tokens (lm-eval's loglikelihood request, evaluators/lm_eval_tasks.py)."""
        ...

    def close(self) -> None:
        """Free the engine, so the next checkpoint starts with nothing carried over."""
        ...

    def answer(self, plan: RequestPlan) -> list[Prediction]:
        """Every request of a plan; an engine that runs both kinds in one pass overrides it."""
        return plan.predictions(self.generate(plan.generations), self.continuation_nll(plan.continuations))


def predict(backend: Backend, records: Sequence[Record], limits: dict[str, int] | None = None) -> list[Prediction]:
    """What one loaded checkpoint says to every record; ``limits`` caps generation per question kind."""
    return backend.answer(plan_requests(backend.enc, records, limits, backend.max_length))
