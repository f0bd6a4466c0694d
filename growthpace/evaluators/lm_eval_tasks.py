"""lm-evaluation-harness tasks on a loaded checkpoint: the one module that imports ``lm_eval`` (the
``benchmarks`` extra, pinned in pyproject.toml).

lm-eval builds each task's requests, applies its filters and computes its metrics; growthpace owns the
engine. ``BackendLM`` is lm-eval's model interface (``lm_eval.api.model.LM``) over a growthpace
``Backend`` (evaluators/backends.py): the warm engine that scores the checkpoint's eval items answers the
benchmark requests too. Its tokenization mirrors lm-eval's own ``hf`` model (``HFLM``: a context's
trailing whitespace moves to the continuation, the continuation's tokens are the whole's tokens after the
context's, an empty context is the BOS (else EOS) token, prompts are cut from the left to the engine's
length), so its metrics equal ``simple_evaluate(model="hf")``'s on the same checkpoint
(tests/test_lm_eval_tasks.py). As HFLM, it reads the one-token continuations of one prompt (a
multiple-choice task's " A"/" B" or " blue"/" green") from one pass of that prompt (``loglikelihoods``).

Each (checkpoint, task) result is stored with its samples (lm-eval's ``log_samples``) under the key
(checkpoint content hash, task config hash, lm-eval version). A request whose task already has a
current stored result is answered from the stored responses (``Replay``), never by the engine: a rerun,
or a group whose other tasks changed, costs no model work, and ``rescore`` re-runs lm-eval's filters and
metrics over stored responses with no model at all.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import inspect
import json
import logging
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from growthpace.evaluators.backends import Backend
from growthpace.evaluators.requests import MAX_WATCHED, Continuation, Generation
from growthpace.platform.core.spec import SpecError

DISTRIBUTION = "lm_eval"
# lm-eval's own defaults (simple_evaluate): the few-shot draw and the seeds every run starts from, so a
# checkpoint's prompts are the ones lm-eval would build for it.
FEWSHOT_SEED = 1234
SEEDS = (0, 1234, 1234)  # python random, numpy, torch
# mean-aggregated metrics (acc, exact_match) have a closed-form stderr; this bounds the rest (bootstrap)
BOOTSTRAP_ITERS = 1000
MISSING = "the benchmarks extra is not installed (pip install 'growthpace[benchmarks]', or make install)"


class BenchmarkInputError(SpecError):
    """A benchmark the spec names that cannot be scored: one line naming the spec field (exit 2, jobs/entry.py)."""

    def __init__(self, field: str, why: str):
        super().__init__(f"field '{field}': {why}")


def available() -> str | None:
    """None when lm-eval can be imported, else why not."""
    try:
        metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return MISSING
    return None


def lm_eval_version() -> str:
    return metadata.version(DISTRIBUTION)


def _quiet() -> None:
    """lm-eval's INFO lines and datasets' "Generating train split" bars go nowhere: a task's first load
    on a clean machine would print them around the one-line error of a bad benchmark setting."""
    import datasets

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


# -- the model interface ---------------------------------------------------------------------------------


class _Tokens:
    """HFLM's tokenization of text requests (lm_eval/models/huggingface.py, api/model.py TemplateLM)."""

    def __init__(self, tokenizer, max_length: int):
        self.tok = tokenizer
        self.max_length = max_length
        self.prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.eot = tokenizer.eos_token_id
        self.eot_text = tokenizer.decode([self.eot], skip_special_tokens=False)

    def encode(self, s: str) -> list[int]:
        return self.tok.encode(s)

    def pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) of a loglikelihood request."""
        if context == "":
            cont = self.tok.encode(continuation, add_special_tokens=False)
            return ([self.prefix], cont) if cont[:1] != [self.prefix] else (cont[:1], cont[1:])
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        whole, ctx = self.encode(context + continuation), self.encode(context)
        return ctx, whole[len(ctx):]

    def cut(self, context: list[int], continuation: list[int]) -> Continuation:
        """The request as the engine holds it: its last max_length tokens. (HFLM keeps max_length + 1, the
        last only scored; an engine of max_length takes the whole sequence, so one context token fewer
        where a request is cut at all.)"""
        seq = (context + continuation)[-self.max_length:]
        cont = continuation[-len(seq) + 1:] if len(continuation) >= len(seq) else continuation
        return Continuation(0, seq[: len(seq) - len(cont)], cont)

    def rolling(self, text: str) -> list[Continuation]:
        """A loglikelihood_rolling request as disjoint windows (lm_eval.utils, as HFLM)."""
        from lm_eval import utils

        windows = utils.get_rolling_token_windows(token_list=self.encode(text), prefix_token=self.prefix,
                                                  max_seq_len=self.max_length - 1, context_len=1)
        return [self.cut(*utils.make_disjoint_window(w)) for w in windows]


def loglikelihoods(backend: Backend, requests: Sequence[Continuation]) -> list[tuple[float, bool]]:
    """(summed log-prob, greedy) of each request, in order. Requests whose continuation is one token
    and whose prompts are the same token ids are read from ONE pass of that prompt, as HFLM's logits
    cache does: the next-token log-probs at the prompt's last position are every such choice's
    log-likelihood, and a choice is greedy when it is the token greedy decoding writes there. A
    multiple-choice task of one-token choices (" A"/" B", " blue"/" green") then costs one pass per
    document, not one per choice; the pass is a ``Backend.generate`` of one token watching the choices'
    ids (at most MAX_WATCHED a request, so more choices take more requests of the same prompt, whose
    shared part an engine with a prefix cache can reuse). Longer continuations go to ``Backend.loglikelihood``."""
    out: list[tuple[float, bool] | None] = [None] * len(requests)
    shared: dict[tuple[int, ...], list[int]] = {}  # prompt ids -> its one-token requests
    longer = []
    for i, c in enumerate(requests):
        if len(c.continuation) == 1 and c.prompt:
            shared.setdefault(tuple(c.prompt), []).append(i)
        else:
            longer.append(i)
    gens, asked = [], []  # asked: each generation's request indices
    for prompt, idx in shared.items():
        ids = list(dict.fromkeys(requests[i].continuation[0] for i in idx))
        for s in range(0, len(ids), MAX_WATCHED):
            watch = tuple(ids[s:s + MAX_WATCHED])
            gens.append(Generation(len(gens), list(prompt), 1, True, "", watch))
            asked.append([i for i in idx if requests[i].continuation[0] in watch])
    for g, idx, reply in zip(gens, asked, backend.generate(gens) if gens else [], strict=True):
        if len(reply.letter_logprobs) != len(g.letter_ids) or not reply.tokens:
            raise RuntimeError(f"the backend answered a one-token read of {len(g.letter_ids)} tokens with "
                               f"{len(reply.letter_logprobs)} log-probs and {len(reply.tokens)} generated tokens")
        got = dict(zip(g.letter_ids, reply.letter_logprobs))
        for i in idx:
            t = requests[i].continuation[0]
            out[i] = (float(got[t]), t == reply.tokens[0])
    for i, (lp, greedy) in zip(longer, backend.loglikelihood([requests[i] for i in longer]) if longer else [],
                               strict=True):
        out[i] = (float(lp), bool(greedy))
    return out  # type: ignore[return-value]


def _gen_settings(gen_kwargs: dict, eot_text: str) -> tuple[list[str], int]:
    """(stop strings, token limit) of a generate_until request; greedy only (the engine's one decoding)."""
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

    kwargs = normalize_gen_kwargs(dict(gen_kwargs), 256)
    if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0.0) > 0.0:
        raise ValueError(f"generation_kwargs {gen_kwargs} sample; growthpace scores greedily")
    return handle_stop_sequences(kwargs.get("until"), eos=eot_text), int(kwargs["max_gen_toks"])


def _lm_class():
    from lm_eval.api.model import LM

    class BackendLM(LM):
        """lm-eval's model interface over a growthpace Backend; ``replay`` answers requests of tasks
        whose stored result is current (and, with no backend, every request: rescore)."""

        def __init__(self, backend: Backend | None, tokenizer, max_length: int, replay: "Replay | None" = None):
            super().__init__()
            self.backend = backend
            self.tokens = _Tokens(tokenizer, max_length) if tokenizer is not None else None  # None: replay only
            self.replay = replay or Replay({})
            self.asked: list[tuple[str, int]] = []  # (request type, count) the backend answered, for tests

        @property
        def tokenizer_name(self) -> str:
            return getattr(self.tokens.tok, "name_or_path", "tokenizer")

        def _split(self, kind: str, requests) -> tuple[list[Any], list[int]]:
            """Stored answers where the replay has them; indices of the rest, for the engine."""
            out = [self.replay.get(kind, r) for r in requests]
            todo = [i for i, v in enumerate(out) if v is None]
            if todo and self.backend is None:
                r = requests[todo[0]]
                raise KeyError(f"{r.task_name} doc {r.doc_id}: no stored response for this request "
                               f"(the task's prompts changed since it was scored)")
            if todo:
                self.asked.append((kind, len(todo)))
            return out, todo

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            out, todo = self._split("loglikelihood", requests)
            got = loglikelihoods(self.backend, [self.tokens.cut(*self.tokens.pair(*requests[i].args)) for i in todo])
            for i, answer in zip(todo, got, strict=True):
                out[i] = answer
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            out, todo = self._split("loglikelihood_rolling", requests)
            windows = [self.tokens.rolling(requests[i].args[0]) for i in todo]
            flat = [w for ws in windows for w in ws]
            got = iter(loglikelihoods(self.backend, flat))
            for i, ws in zip(todo, windows, strict=True):
                out[i] = float(sum(next(got)[0] for _ in ws))
            return out

        def generate_until(self, requests, disable_tqdm: bool = False):
            out, todo = self._split("generate_until", requests)
            gens, stops = [], []
            for i in todo:
                context, gen_kwargs = requests[i].args
                until, limit = _gen_settings(gen_kwargs, self.tokens.eot_text)
                prompt = self.tokens.encode(context)[-(self.tokens.max_length - limit):] or [self.tokens.prefix]
                gens.append(Generation(i, prompt, limit, True, "", (), stop=(self.tokens.eot,)))
                stops.append(until)
            replies = self.backend.generate(gens) if gens else []
            for i, reply, until in zip(todo, replies, stops, strict=True):
                text = self.tokens.tok.decode(list(reply.tokens), skip_special_tokens=True)
                for s in until:
                    if s:
                        text = text.split(s)[0]
                out[i] = text
            return out

    return BackendLM


def backend_lm(backend: Backend | None, tokenizer, max_length: int, replay: "Replay | None" = None):
    """An ``lm_eval.api.model.LM`` answering through ``backend`` (its checkpoint's tokenizer, its engine length)."""
    return _lm_class()(backend, tokenizer, max_length, replay)


# -- stored responses ------------------------------------------------------------------------------------


def _args_key(args) -> str:
    return json.dumps(list(args), sort_keys=True, default=str)


@dataclass
class Replay:
    """Stored responses by (task, doc, request idx), each with the request's arguments: a request whose
    arguments differ from the stored ones is not answered from the store."""

    by_task: dict[str, list[dict]]  # task -> its stored samples (log_samples)
    _index: dict[tuple[str, int, int], tuple[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        for task, samples in self.by_task.items():
            for s in samples:
                for idx, (args, resps) in enumerate(zip(s["arguments"], s["resps"])):
                    self._index.setdefault((task, int(s["doc_id"]), idx), (_args_key(args), resps[0]))

    def get(self, kind: str, req) -> Any:
        hit = self._index.get((req.task_name, int(req.doc_id), int(req.idx)))
        if hit is None or hit[0] != _args_key(req.args):
            return None
        value = hit[1]
        return (float(value[0]), bool(value[1])) if kind == "loglikelihood" else value


# -- tasks -----------------------------------------------------------------------------------------------


@dataclass
class TaskSet:
    """The spec's benchmarks, loaded once per process: lm-eval's loaded tasks and groups, and each leaf
    task's config hash (what a stored result of it must match)."""

    names: list[str]
    loaded: dict  # TaskManager.load's {"tasks", "groups", "group_map"}
    hashes: dict[str, str]  # leaf task -> config hash
    num_fewshot: int | None
    limit: int | None

    @property
    def tasks(self) -> dict:
        return self.loaded["tasks"]

    def prepare(self) -> None:
        """What simple_evaluate does before evaluate(): the few-shot count, the few-shot draw's seed."""
        for task in self.tasks.values():
            _set_fewshot(task, self.num_fewshot)
            task.set_fewshot_seed(seed=FEWSHOT_SEED)


def _set_fewshot(task, num_fewshot: int | None) -> None:
    own = task.get_config("num_fewshot")
    if num_fewshot is not None and own != 0:  # a task that sets 0 itself is never overridden (lm-eval's rule)
        task.set_config(key="num_fewshot", value=num_fewshot)
    elif own is None:
        task.set_config(key="num_fewshot", value=0)


def _source(o) -> str:
    """A callable in a task config as stable text: its source, else its qualified name (never an address)."""
    try:
        return inspect.getsource(o)
    except (TypeError, OSError):
        return f"{getattr(o, '__module__', '')}.{getattr(o, '__qualname__', type(o).__name__)}"


def _docs_digest(docs) -> str:
    h = hashlib.sha256()
    for d in docs or ():
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    return h.hexdigest()


def task_hash(task, limit: int | None) -> str:
    """What decides a task's stored result besides the checkpoint: its effective config (few-shot count,
    prompts, filters, metrics; the YAML's own path and the manager's metadata left out), its documents'
    content, the limit, the few-shot seed and the lm-eval version."""
    from lm_eval.utils import handle_non_serializable

    cfg = dict(task.dump_config())
    cfg["metadata"] = {k: v for k, v in (cfg.get("metadata") or {}).items() if k != "config_source"}

    def default(o):
        return _source(o) if callable(o) else handle_non_serializable(o)

    docs = {"eval": _docs_digest(task.eval_docs),
            "fewshot": _docs_digest(task.fewshot_docs()) if task.get_config("num_fewshot") else ""}
    blob = json.dumps({"config": cfg, "docs": docs, "limit": limit, "fewshot_seed": FEWSHOT_SEED,
                       "lm_eval": lm_eval_version()}, sort_keys=True, default=default)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


FIELD = "evaluation.benchmarks"


def _yaml_problems(folders: list[Path]) -> str | None:
    """The first task YAML under ``folders`` that does not parse, as file:line (lm-eval's index skips
    such a file silently, and its task would look unknown)."""
    import yaml
    from lm_eval.tasks._yaml_loader import load_yaml

    for folder in folders:
        for path in sorted(folder.rglob("*.yaml")):
            try:
                load_yaml(path, resolve_func=False)
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
                return f"{where}: {getattr(e, 'problem', None) or str(e).splitlines()[0]}"
    return None


@contextlib.contextmanager
def _hub_offline(on: bool = True):
    """The hub not asked while tasks load: a dataset not on disk fails at once instead of after minutes
    of retries. huggingface_hub and datasets read HF_HUB_OFFLINE when imported, so their flags are set
    too (and everything put back after: the rest of the process may download models)."""
    if not on:
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    saved = (os.environ.get("HF_HUB_OFFLINE"), huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved[0]
        huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved[1], saved[2]


@functools.lru_cache(maxsize=4)
def _manager(include_path: tuple[str, ...], builtin: bool = True):
    """lm-eval's task index, once per process and folder list; with ``builtin`` every built-in YAML is
    parsed too (about 6 s on two cores), so it is built only for names the folders do not define."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_path) or None, include_defaults=builtin)


def _manager_for(names: list[str], include_path: tuple[str, ...]):
    if include_path:
        own = _manager(include_path, builtin=False)
        if all(n in own.all_tasks for n in names):
            return own
    return _manager(include_path)


def load_tasks(bench, offline: bool = True) -> TaskSet:
    """Load the spec's benchmarks (``bench``: spec.evaluation.benchmarks) and check every one before the
    first write: an unknown name (with the closest known names), a task YAML that fails to load
    (file:line), a dataset not on disk (one line: the hub is not asked, ``offline``), a few-shot count
    the task's few-shot split cannot give. Raises BenchmarkInputError naming the field."""
    if (why := available()) is not None:
        raise BenchmarkInputError(FIELD, why)
    _quiet()
    folders = [Path(p) for p in bench.include_path]
    for i, f in enumerate(folders):
        if not f.is_dir():
            raise BenchmarkInputError(f"{FIELD}.include_path[{i}]", f"{f} is not a folder")
    if (bad := _yaml_problems(folders)) is not None:
        raise BenchmarkInputError(f"{FIELD}.include_path", bad)
    manager = _manager_for(list(bench.tasks), tuple(str(f.resolve()) for f in folders))
    known = set(manager.all_tasks)
    for i, name in enumerate(bench.tasks):
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise BenchmarkInputError(f"{FIELD}.tasks[{i}]", f"{name!r} is not an lm-eval task or group{hint}")
    loaded = {"tasks": {}, "groups": {}, "group_map": {}}
    for i, name in enumerate(bench.tasks):
        where = f"{FIELD}.tasks[{i}]"
        entry = manager.task_index.get(name)
        src = f" in {entry.yaml_path}" if entry is not None and getattr(entry, "yaml_path", None) else ""
        try:
            with _hub_offline(offline):
                got = manager.load([name])
        except (FileNotFoundError, ConnectionError) as e:
            raise BenchmarkInputError(where, f"{name}: its dataset is not on disk and the hub is not asked "
                                      f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); see docs/benchmarks.md") from None
        except Exception as e:  # noqa: BLE001  lm-eval raises TypeError, jinja2 and datasets errors alike
            raise BenchmarkInputError(where, f"{name} does not load{src}: "
                                      f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
        for k in loaded:
            loaded[k].update(got.get(k, {}))
    out = TaskSet(list(bench.tasks), loaded, {}, bench.num_fewshot, bench.limit)
    out.prepare()
    for name, task in out.tasks.items():
        _check_fewshot(name, task)
        out.hashes[name] = task_hash(task, bench.limit)
    return out


def _check_fewshot(name: str, task) -> None:
    n = task.get_config("num_fewshot") or 0
    if not n:
        return
    docs = task.fewshot_docs()
    have = len(docs) if docs is not None else 0
    fs = task.config.fewshot_split or task.config.training_split or task.config.validation_split
    if fs is not None and fs == task.config.test_split:
        have -= 1  # the doc itself is never its own example
    if n > have:
        raise BenchmarkInputError(f"{FIELD}.num_fewshot", f"{n} examples asked of {name}, whose few-shot split "
                                  f"({fs or 'its docs'}) gives {max(have, 0)}")


# -- scoring ---------------------------------------------------------------------------------------------


@dataclass
class TaskResult:
    """One (checkpoint, leaf task) result: lm-eval's metrics entry and its samples (what rescore needs)."""

    task: str
    metrics: dict  # "<metric>,<filter>" -> value (stderr keys included), numbers as float or None
    samples: list[dict]
    higher_is_better: dict
    n_shot: int


def _plain(x):
    """lm-eval's numbers as JSON's (numpy scalars to float, "N/A" stderr to None)."""
    if isinstance(x, str):
        return None if x == "N/A" else x
    try:
        return float(x)
    except (TypeError, ValueError):
        return x


def run(tasks: TaskSet, lm, only: Sequence[str] | None = None) -> tuple[dict[str, TaskResult], dict[str, dict]]:
    """Every task through lm-eval's evaluate() with ``lm`` (stored responses replayed, the rest asked of
    the engine): (leaf task -> result, group -> its aggregate metrics). ``only``: leaf tasks to run
    (their groups are then left out)."""
    import random

    import numpy as np
    import torch
    from lm_eval import evaluator

    tasks.prepare()
    random.seed(SEEDS[0])
    np.random.seed(SEEDS[1])
    torch.manual_seed(SEEDS[2])
    loaded = tasks.loaded if only is None else {"tasks": {k: tasks.tasks[k] for k in only}, "groups": {}, "group_map": {}}
    res = evaluator.evaluate(lm=lm, task_dict=loaded, limit=tasks.limit, log_samples=True,
                             bootstrap_iters=BOOTSTRAP_ITERS, verbosity="ERROR")
    metrics = {name: {k: _plain(v) for k, v in entry.items() if "," in k}
               for name, entry in res["results"].items()}
    out = {}
    for name in loaded["tasks"]:
        samples = json.loads(json.dumps(res["samples"][name], default=_plain))
        out[name] = TaskResult(name, metrics[name], samples, dict(res["higher_is_better"].get(name, {})),
                               int(res["n-shot"].get(name, 0)))
    groups = {g: metrics[g] for g in loaded["groups"] if g in metrics}
    return out, groups


def rescore(cells, layout, tasks: TaskSet) -> tuple[int, int, int]:
    """lm-eval's filters, metrics and aggregation re-run over every stored (checkpoint, task) result of
    the current task configs, no model loaded (stored responses replayed); (files, metrics changed,
    files left: stored under another task config or lm-eval release, which only ``evaluate`` can redo)."""
    from growthpace.evaluators.benchmark_results import KEY, METRICS, SAMPLES, read_result, write_result
    from growthpace.platform.store.checkpoints import read_checkpoints

    files = changed = left = 0
    todo = []
    for cell in cells:
        if not layout.cell_checkpoints(cell.cell_id).exists():
            continue
        for ck in read_checkpoints(layout, cell.cell_id).checkpoints:
            for task, h in tasks.hashes.items():
                stored = read_result(layout, cell.cell_id, ck.epoch, task)  # every file read before the first write
                if stored is None:
                    continue
                if not stored[KEY].endswith(f"-{h}-{lm_eval_version()}"):
                    left += 1
                    continue
                todo.append((cell.cell_id, ck.epoch, task, stored))
    for cell_id, epoch, task, stored in todo:
        lm = backend_lm(None, None, 0, Replay({task: stored[SAMPLES]}))
        result = run(tasks, lm, only=[task])[0][task]
        files += 1
        if result.metrics != stored[METRICS]:
            changed += 1
        write_result(layout, cell_id, epoch, stored[KEY], result)
    return files, changed, left
