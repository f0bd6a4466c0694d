"""What every job starts from: the spec resolved into data, tokenizer, base models and cells."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from growthpace.platform.core.batching import global_batch, optimizer_steps
from growthpace.platform.core.cells import Cell, expand
from growthpace.platform.data.chat import framing_for
from growthpace.platform.data.dataset import (Dataset, base_tokenizer, ensure_generated, load_dataset, write_cell_data,
                                     write_cell_tokens)
from growthpace.platform.core.footprint import (RESUME_BYTES_PER_PARAM, checkpoint_footprint, resume_interval_s,
                                                resume_state_epochs, write_seconds)
from growthpace.platform.core.items import Record
from growthpace.platform.core.presets import PRESETS
from growthpace.platform.train.models import ensure_base_model, ensure_tokenizer, param_count, read_or_train_bpe
from growthpace.platform.core.spec import Spec
from growthpace.platform.store.storage import Layout, write_json


@dataclass
class Study:
    spec: Spec
    layout: Layout
    dataset: Dataset
    cells: list[Cell]
    tokenizer: object
    tokenizer_key: str | None
    # (split, ability) -> eval items, read and checked once per command (check_inputs); None for `plan`
    # without the data (data.declared)
    eval_sets: dict[tuple[str, str], list[Record]] | None = None
    # evaluation.benchmarks loaded and checked once per writing command (evaluators/lm_eval_tasks.py TaskSet)
    benchmarks: object = None


def prepare(spec: Spec, *, write: bool, ray: tuple[str, ...] = ()) -> Study:
    """Resolve the spec. With write=False (plan) nothing is written under storage.

    Without the data (data.root absent), `plan` uses the counts the spec declares (data.declared);
    the other commands fetch the public dataset first when data.hub is set.
    """
    from growthpace.platform.data.hub import declared_dataset, fetch

    if not write and not spec.data_root.is_dir() and spec.data.declared is not None and spec.data.generate is None:
        dataset = declared_dataset(spec)
        cells = expand(spec, dataset.pool, dataset.fingerprint, dataset.corpus_digests)
        check_budget(spec, dataset.pool.available)
        return Study(spec, Layout.for_spec(spec), dataset, cells, None, None)
    if spec.data.hub is not None and spec.data.generate is None and not spec.data_root.is_dir():
        fetch(spec)
    ensure_generated(spec)
    dataset = load_dataset(spec)
    cells = expand(spec, dataset.pool, dataset.fingerprint, dataset.corpus_digests)
    check_budget(spec, dataset.pool.available)
    layout = Layout.for_spec(spec)
    # the same BPE that ensure_tokenizer stores, bare: plan imports neither transformers nor torch; a
    # writing command trains it here (again, when not stored yet) only to count a preset's pre-training corpus
    bare = None
    if not write or any(m.pretrain is not None and m.name in PRESETS for m in spec.models):
        bare = read_or_train_bpe(layout, dataset.train_records(), dataset.fingerprint)
    check_blocks(spec, bare)
    benchmarks = check_benchmarks(spec) if write else None  # before check_inputs attaches to Ray
    sets = check_inputs(spec, cells, layout, write=write, ray=ray)  # everything read and validated before the first write
    if write:
        tokenizer, key = ensure_tokenizer(layout, dataset.train_records(), dataset.fingerprint)
    else:
        tokenizer, key = bare, None
    return Study(spec, layout, dataset, cells, tokenizer, key, sets, benchmarks=benchmarks)


def check_inputs(spec: Spec, cells: list[Cell], layout: Layout, *, write: bool,
                 ray: tuple[str, ...] = ()) -> dict[tuple[str, str], list[Record]]:
    """The up-front validation of every input a job reads, so a bad one fails before anything is
    written under storage or to MLflow (docs/reliability.md). The train pool was read by load_dataset
    and the allocations by expand; here: the eval sets the spec scores, each model (a preset, or an HF
    path whose config loads and whose folder has weights and a tokenizer; `plan` checks only the models
    it must load), for the writing commands every trained cell's checkpoints (platform/store/checkpoints.py), and
    for the commands that use Ray (``ray``: "training", "scoring") whether the cluster can place every
    trial and scoring actor (platform/core/capacity.py): Ray starts only after every file check passed.
    Returns the eval sets it read: the command scores these, never reading them again."""
    from growthpace.platform.data.dataset import load_eval_sets
    from growthpace.platform.train.models import check_chat, check_model

    sets = load_eval_sets(spec)
    if write:
        check_scoring_backend(spec)
    for i, m in enumerate(spec.models):
        if write or not m.params:
            check_model(m.name, f"models[{i}].name")
        check_chat(m.name, m.chat, f"models[{i}].chat")  # plan too: it counts tokens in that format
    check_corpora(spec)
    if write:
        from growthpace.evaluators.results import check_checkpoints  # imports the scorers (sympy): not for plan

        check_checkpoints(cells, layout)
        check_stored(cells, layout)
    if ray:
        check_capacity(spec, training="training" in ray, scoring="scoring" in ray)
    return sets


def check_budget(spec: Spec, available: dict[str, int]) -> None:
    """analysis.budget is allocated over the curated pool by the report, after the whole study: a budget
    the pool cannot fill is refused here instead."""
    if spec.analysis.budget is None:
        return
    from growthpace.platform.analysis.growth import budget_problem  # numpy and scipy: only when a budget is set
    from growthpace.platform.core.spec import SpecError

    why = budget_problem(spec.analysis.budget, available)
    if why:
        raise SpecError(f"field 'analysis.budget': {why} (data.root, train_split {spec.data.train_split!r})")


def check_corpora(spec: Spec) -> None:
    """Each pre-training's corpus (models[].pretrain.corpus) is a readable UTF-8 text under data.root."""
    from growthpace.platform.data.corpus import corpus_path, corpus_problem
    from growthpace.platform.core.spec import SpecError

    problems = [f"field 'models[{i}].pretrain.corpus': {why}" for i, m in enumerate(spec.models)
                if m.pretrain is not None and (why := corpus_problem(corpus_path(spec.data_root, m.pretrain)))]
    if problems:
        raise SpecError("\n".join(problems))


def stream_tokens(docs: list[str], tokenizer) -> int:
    """The tokens of the stream platform/train/pretrain.py blocks cuts: each document and its EOT."""
    return sum(framing_for(tokenizer).text_lengths(docs)) + len(docs)


def check_blocks(spec, preset_tokenizer) -> None:
    """Each pre-training corpus holds at least one ``block`` of tokens; otherwise the pre-training stage
    fails after storage and MLflow were written. A preset's corpus is counted with the study's tokenizer
    (``preset_tokenizer``, the bare BPE, nothing written); another model's by its UTF-8 bytes, the most
    tokens a byte-level tokenizer can make of it (so a corpus that passes may still fall short there)."""
    from growthpace.platform.core.spec import SpecError
    from growthpace.platform.data.corpus import corpus_path, corpus_problem, documents

    problems = []
    for i, m in enumerate(spec.models):
        corpus = corpus_path(spec.data_root, m.pretrain) if m.pretrain is not None else None
        if corpus is None or corpus_problem(corpus):
            continue  # check_corpora names a missing or unreadable corpus
        docs = documents(corpus)
        if m.name in PRESETS:
            n, unit = stream_tokens(docs, preset_tokenizer), "tokens"
        else:
            n, unit = sum(len(d.encode()) for d in docs) + len(docs), "bytes (at most that many tokens)"
        if n < m.pretrain.block:
            problems.append(f"field 'models[{i}].pretrain.block': {m.pretrain.block} tokens per sequence, but the "
                            f"corpus {corpus} holds {n} {unit} with its end-of-document tokens: not one block; "
                            "lower block or give a longer corpus")
    if problems:
        raise SpecError("\n".join(problems))


def check_stored(cells: list[Cell], layout: Layout) -> None:
    """Every stored file a job reads back, read (tables: footer and schema) before the first write: a
    damaged one is a StoredFileError naming it and the command that rebuilds it (platform/store/storage.py).
    scores.parquet is left out: `evaluate` rebuilds it from these files."""
    from growthpace.platform.store.storage import check_table, read_json

    for cell in cells:
        for f in (*layout.cell_score_files(cell.cell_id), *layout.cell_prediction_files(cell.cell_id)):
            check_table(f)
        for f in (layout.cell_run(cell.cell_id), layout.cell_card(cell.cell_id)):
            if f.exists():
                read_json(f)
    folder = layout.root / "cells"
    for base in sorted(d.name for d in folder.glob("base-*")) if folder.is_dir() else []:  # untuned bases' results
        for f in (*layout.cell_score_files(base), *layout.cell_prediction_files(base)):
            check_table(f)
    if layout.tracking.exists():
        read_json(layout.tracking)


def check_capacity(spec: Spec, *, training: bool, scoring: bool) -> None:
    from growthpace.jobs.cluster import capacity, connect
    from growthpace.platform.core.capacity import CapacityError, placement_problems

    connect(spec)
    present, node_types = capacity(spec)
    problems = placement_problems(spec, present, node_types, training=training, scoring=scoring)
    if problems:
        raise CapacityError("\n".join(f"field '{f}': {why}; lower it, or run on a cluster that has it (docs/cluster.md)"
                                      for f, why in problems))


def check_benchmarks(spec: Spec):
    """evaluation.benchmarks, loaded: every task known, its YAML and dataset readable, its few-shot split
    large enough (evaluators/lm_eval_tasks.py load_tasks); None when the spec names none."""
    bench = spec.evaluation.benchmarks
    if bench is None:
        return None
    from growthpace.platform.core.spec import SpecError

    if spec.evaluation.vllm_pipeline == "processor":
        raise SpecError("field 'evaluation.benchmarks': lm-eval tasks are scored by the warm engine of the scoring "
                        "actors; set evaluation.vllm_pipeline to 'actor' or 'auto'")
    from growthpace.evaluators.lm_eval_tasks import available, load_tasks

    if (why := available()) is not None:
        raise SpecError(f"field 'evaluation.benchmarks': {why}")
    return load_tasks(bench)


def check_scoring_backend(spec: Spec) -> None:
    """Scoring on GPUs without vLLM would fall back to transformers on an idle GPU (days per 7b
    checkpoint): refuse before anything starts, unless the spec asks for transformers itself."""
    from growthpace.evaluators.vllm_backend import available
    from growthpace.platform.core.spec import SpecError

    ev = spec.evaluation
    gpus, field = ev.gpus_per_actor, "evaluation.gpus_per_actor"
    for size, own in ev.resources.by_size.items():
        if not gpus and own.gpus:
            gpus, field = own.gpus, f"evaluation.resources.by_size.{size}.gpus"
    if gpus > 0 and ev.backend != "transformers":
        problem = available()
        if problem:
            raise SpecError(
                f"field '{field}': scoring asks for {gpus:g} GPU(s) per actor but "
                f"{problem}: install the gpu extra (pip install 'growthpace[gpu]', or use the project's image "
                "deploy/Dockerfile), or set evaluation.backend: transformers"
            )


def materialise(study: Study) -> dict[str, Path]:
    """Write base models and every cell's data and card; return model name -> base model path."""
    spec, layout = study.spec, study.layout
    from rich.progress import track

    from growthpace.platform.core.redaction import redact

    write_json(layout.root / "study.json", redact(spec.model_dump(mode="json")))  # e.g. ray.env_vars.HF_TOKEN -> ***
    bases = {
        m.name: ensure_base_model(layout, m.name, study.tokenizer, study.tokenizer_key, spec.seed, m.chat)
        for m in spec.models
    }
    tokenizers = model_tokenizers(study, bases)
    for cell in track(study.cells, description="cell data", transient=True):
        write_cell_data(layout, cell, study.dataset)
        write_cell_tokens(layout, cell, tokenizers[cell.model])
    return bases


def model_tokenizers(study: Study, bases: dict[str, Path]) -> dict[str, object]:
    """Model name -> the tokenizer of its base (a preset's: the study's; a pre-training keeps it)."""
    return {m.name: study.tokenizer if m.name in PRESETS else base_tokenizer(bases[m.name]) for m in study.spec.models}


def model_params(study: Study) -> dict[str, int]:
    """Parameter count per model name: the spec's declared figure, else counted from the config."""
    # declared data trains no tokenizer: a preset then counts VOCAB_SIZE
    return {m.name: m.params or param_count(m.name, study.tokenizer) for m in study.spec.models}


def plan_rows(study: Study) -> list[dict]:
    """One row per cell: items, tokens, optimizer steps, estimated FLOPs (6 * params * tokens trained),
    resources, GPU-hours and checkpoint storage (platform/core/footprint.py).

    With a declared dataset (data.declared, data absent) items are the allocation's counts and tokens
    are items x the declared tokens per item. ``tokens`` is one pass over the cell's items, real tokens
    (training packs items without padding); ``train_tokens`` is what all epochs train on, each epoch
    filled up to whole global batches by repeating items (platform/core/batching.py), counted at the cell's
    mean tokens per item. GPU-hours = train_tokens / throughput_tokens_per_gpu_s / 3600 when the model
    declares a throughput (None otherwise).

    Checkpoint writes: every epoch's weights, and the resume state after the epochs
    ``resume_state_epochs`` picks for epochs of the estimated length (``resume_every_s``: training.resume_every_s
    or Young's interval from the state's write time, footprint.resume_interval_s; with no
    throughput, every epoch but the last), at training.storage_write_gib_s. The trial's GPUs wait for them
    (checkpoint_write in_place): ``checkpoint_write_gpu_hours``. hours = (GPU-hours + write GPU-hours) /
    the trial's GPUs: the trial's wall time without start-up and scoring.
    """
    declared = getattr(study.dataset, "declared", False)
    models = {m.name: m for m in study.spec.models}
    params = model_params(study)
    selected = [] if declared else [study.dataset.pool.select(c.allocation, c.seed) for c in study.cells]
    lengths = {} if declared else _item_lengths(study, selected)
    framed = _framed_apart(study)
    rows = []
    for i, cell in enumerate(study.cells):
        if declared:
            items = cell.allocation.total
            tokens = study.dataset.tokens(cell.allocation, cell.training["max_length"])
        else:
            items = len(selected[i])
            tokens = sum(map(lengths[framed.get(cell.model), cell.training["max_length"]].__getitem__,
                             map(id, selected[i])))
        gpus = cell.workers * cell.gpus_per_worker
        t = cell.training
        batch = global_batch(t["per_device_batch"], cell.workers, t["grad_accum"])
        steps = optimizer_steps(items, cell.epochs, batch)
        train_tokens = round(tokens * steps * batch / items) if items else 0
        throughput = models[cell.model].resources.throughput_tokens_per_gpu_s
        gpu_hours = train_tokens / throughput / 3600 if throughput and gpus else None
        run = study.spec.training
        epoch_s = gpu_hours * 3600 / gpus / cell.epochs if gpu_hours is not None else None
        every_s = resume_interval_s(params[cell.model] * RESUME_BYTES_PER_PARAM[t["zero_stage"]],
                                    run.storage_write_gib_s, run.failure_every_h, run.resume_every_s)
        states = resume_state_epochs(cell.epochs, epoch_s, every_s, run.keep_resume_state)
        footprint = checkpoint_footprint(params[cell.model], cell.epochs, t["precision"], t["zero_stage"],
                                         study.spec.evaluation.retention, run.keep_resume_state, len(states))
        write_s = write_seconds(footprint.written, run.storage_write_gib_s)
        write_gpu_hours = write_s * gpus / 3600 if gpus else None
        rows.append(
            {
                "cell_id": cell.cell_id,
                "model": cell.model,
                "size": cell.size,
                "source": cell.source,
                "volume": cell.volume if cell.volume is not None else cell.mix,
                "seed": cell.seed,
                "items": items,
                "tokens": tokens,
                "epochs": cell.epochs,
                "global_batch": batch,
                "optimizer_steps": steps,
                "train_tokens": train_tokens,
                "params": params[cell.model],
                "flops": 6 * params[cell.model] * train_tokens,
                "workers": cell.workers,
                "cpus": cell.driver_cpus + cell.workers * cell.cpus_per_worker,
                "gpus": gpus,
                "gpu_hours": gpu_hours,
                "hours": (gpu_hours + write_gpu_hours) / gpus if gpu_hours is not None else None,
                "weights_bytes_per_epoch": footprint.weights_per_epoch,
                "resume_state_bytes": footprint.resume_state,
                "peak_checkpoint_bytes": footprint.peak,
                "retained_checkpoint_bytes": footprint.retained,
                "resume_every_s": every_s,
                "resume_state_epochs": list(states),
                "checkpoint_write_bytes": footprint.written,
                "checkpoint_write_s": write_s,
                "checkpoint_write_gpu_hours": write_gpu_hours,
                "declared": bool(declared),
            }
        )
    return rows


def _shape(name: str, params: int):
    """The model's shape from its config.json when it is a local folder, else LLaMA's for its parameter count."""
    import json

    from growthpace.platform.core.gpu_memory import Shape, llama_shape

    config = Path(name) / "config.json"
    try:
        c = json.loads(config.read_text())
        return Shape(c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return llama_shape(params)


def size_checks(study: Study) -> list[dict]:
    """Per model size on GPUs: its estimated peak training memory per GPU against the card it is pinned to
    (resources.accelerator_type), and its scoring engine's KV cache room on the card its scoring is pinned
    to (evaluation.resources.by_size), each with the warning `plan` prints when it does not fit
    (platform/core/gpu_memory.py)."""
    from growthpace.platform.core.cells import model_training
    from growthpace.platform.core.gpu_memory import (GPU_MEMORY_GIB, TRAINING_HEADROOM, kv_cache_gib,
                                                     training_peak_gib)

    spec, params = study.spec, model_params(study)
    out = []
    for i, m in enumerate(spec.models):
        scoring = spec.evaluation.scoring_for(m.size)
        if m.resources.gpus_per_worker <= 0 and not scoring.gpus:
            continue
        t, warnings = model_training(spec, m), []
        row: dict = {"size": m.size, "model": m.name, "params": params[m.name]}
        if m.resources.gpus_per_worker > 0:
            card = m.resources.accelerator_type
            peak = training_peak_gib(params[m.name], _shape(m.name, params[m.name]), t["zero_stage"],
                                     m.resources.workers, t["per_device_batch"], t["max_length"], t["precision"],
                                     t["gradient_checkpointing"])
            row.update(train_card=card, train_card_gib=GPU_MEMORY_GIB.get(card), train_peak_gib=peak)
            if card is None:
                warnings.append(f"models[{i}] ({m.size}): training is pinned to no card (resources.accelerator_type): "
                                f"its estimated peak of {peak:.1f} GiB per GPU is checked against none")
            elif card in GPU_MEMORY_GIB and peak > TRAINING_HEADROOM * GPU_MEMORY_GIB[card]:
                warnings.append(
                    f"models[{i}] ({m.size}): estimated peak training memory {peak:.1f} GiB per GPU is over "
                    f"{TRAINING_HEADROOM:.0%} of {card}'s {GPU_MEMORY_GIB[card]} GiB: lower "
                    f"models[{i}].training.per_device_batch and raise grad_accum by as much (same global batch), "
                    "e.g. 2 x 4 for 33b on 80 GB cards (docs/cluster.md)")
        if scoring.gpus:
            card, field = scoring.accelerator_type, f"evaluation.resources.by_size.{m.size}"
            row.update(scoring_card=card, scoring_gpus=scoring.gpus)
            if card is None:
                warnings.append(f"{field}: scoring of {m.size} is pinned to no card (accelerator_type): its engine "
                                "may land on any GPU node type, the smallest included")
            elif card in GPU_MEMORY_GIB:
                kv = kv_cache_gib(params[m.name], GPU_MEMORY_GIB[card], scoring.gpus)
                row["scoring_kv_cache_gib"] = kv
                if kv < spec.evaluation.min_kv_cache_gib:
                    warnings.append(
                        f"{field}: a {m.size} engine on {scoring.gpus:g} x {card} keeps {kv:.1f} GiB per GPU for KV "
                        f"cache, under evaluation.min_kv_cache_gib {spec.evaluation.min_kv_cache_gib:g}: pin it to a "
                        "larger card or give it more GPUs (gpus)")
        row["warnings"] = warnings
        out.append(row)
    return out


def _framed_apart(study: Study) -> dict[str, str]:
    """Model name -> itself for the models whose items ``plan`` counts in their own chat template; the
    others are counted with the study's tokenizer."""
    return {m.name: m.name for m in study.spec.models if m.chat == "template"}


def _item_lengths(study: Study, selected: list[list]) -> dict[tuple[str | None, int], dict[int, int]]:
    """(a template model's name or None, max_length) -> id of a pool record -> its training tokens
    (the framing's lengths), for every item some cell of that model and max_length selects: one count over
    all of them. Pool records live as long as the study."""
    from growthpace.platform.train.models import source_tokenizer

    framed = _framed_apart(study)
    wanted: dict[tuple[str | None, int], dict[int, object]] = {}
    for cell, records in zip(study.cells, selected):
        wanted.setdefault((framed.get(cell.model), cell.training["max_length"]), {}).update(zip(map(id, records), records))
    encs = {name: framing_for(source_tokenizer(name, "template") if name else study.tokenizer)
            for name in {name for name, _ in wanted}}
    return {(name, max_length): dict(zip(records, encs[name].lengths([r.messages for r in records.values()], max_length)))
            for (name, max_length), records in wanted.items()}


def tracker_for(study: Study):
    """(StudyTracker, the study's parent run id, cell id -> child run id); MLflow runs made or resumed."""
    from growthpace.platform.store.tracking import StudyTracker

    spec = study.spec
    tracker = StudyTracker(spec.tracking_uri, spec.tracking.experiment, study.layout)
    parent = tracker.parent(
        spec.name,
        {
            "study": spec.name,
            "models": ",".join(f"{m.size}={m.name}" for m in spec.models),
            "sources": ",".join(spec.data.source_names),
            "abilities": ",".join(spec.ability_names),
            "volumes": ",".join(map(str, spec.data.volumes)),
            "mixes": ",".join(m.name for m in spec.data.mixes),
            "seeds": ",".join(map(str, spec.data.seeds)),
            "cells": len(study.cells),
        },
    )
    return tracker, parent, {c.cell_id: tracker.child(parent, c) for c in study.cells}


PLAN_TOTALS = ("items", "epochs", "optimizer_steps", "tokens", "train_tokens", "flops", "gpu_hours",
               "peak_checkpoint_bytes", "retained_checkpoint_bytes", "checkpoint_write_bytes", "checkpoint_write_s",
               "checkpoint_write_gpu_hours")
_MAYBE_NONE = ("gpu_hours", "checkpoint_write_gpu_hours")  # None on a study without GPUs (or throughput)


def plan_totals(rows: list[dict]) -> dict:
    """The sums of plan_rows over cells (GPU-hours: of the cells that have a figure)."""
    totals: dict = {"cells": len(rows)}
    for key in PLAN_TOTALS:
        values = [r[key] for r in rows if r[key] is not None]
        totals[key] = sum(values) if values or key not in _MAYBE_NONE else None
    return totals
