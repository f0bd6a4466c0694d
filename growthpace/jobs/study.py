"""What every job starts from: the spec resolved into data, tokenizer, base models and cells."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from growthpace.platform.core.batching import global_batch, optimizer_steps
from growthpace.platform.core.cells import Cell, expand
from growthpace.platform.data.chat import ChatEncoder
from growthpace.platform.data.dataset import (Dataset, base_tokenizer, ensure_generated, load_dataset, write_cell_data,
                                     write_cell_tokens)
from growthpace.platform.core.footprint import checkpoint_footprint
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


def prepare(spec: Spec, *, write: bool, ray: tuple[str, ...] = ()) -> Study:
    """Resolve the spec. With write=False (plan) nothing is written under storage.

    Without the data (data.root absent), `plan` uses the counts the spec declares (data.declared);
    the other commands fetch the public dataset first when data.hub is set.
    """
    from growthpace.platform.data.hub import declared_dataset, fetch

    if not write and not spec.data_root.is_dir() and spec.data.declared is not None and spec.data.generate is None:
        dataset = declared_dataset(spec)
        cells = expand(spec, dataset.pool, dataset.fingerprint, dataset.corpus_digests)
        return Study(spec, Layout.for_spec(spec), dataset, cells, None, None)
    if spec.data.hub is not None and spec.data.generate is None and not spec.data_root.is_dir():
        fetch(spec)
    ensure_generated(spec)
    dataset = load_dataset(spec)
    cells = expand(spec, dataset.pool, dataset.fingerprint, dataset.corpus_digests)
    layout = Layout.for_spec(spec)
    sets = check_inputs(spec, cells, layout, write=write, ray=ray)  # everything read and validated before the first write
    if write:
        tokenizer, key = ensure_tokenizer(layout, dataset.train_records(), dataset.fingerprint)
    else:  # the same BPE that ensure_tokenizer stores, bare: plan imports neither transformers nor torch
        tokenizer, key = read_or_train_bpe(layout, dataset.train_records(), dataset.fingerprint), None
    return Study(spec, layout, dataset, cells, tokenizer, key, sets)


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
    from growthpace.platform.train.models import check_model

    sets = load_eval_sets(spec)
    if write:
        check_scoring_backend(spec)
    for i, m in enumerate(spec.models):
        if write or not m.params:
            check_model(m.name, f"models[{i}].name")
    check_corpora(spec)
    if write:
        from growthpace.evaluators.results import check_checkpoints  # imports the scorers (sympy): not for plan

        check_checkpoints(cells, layout)
        check_stored(cells, layout)
    if ray:
        check_capacity(spec, training="training" in ray, scoring="scoring" in ray)
    return sets


def check_corpora(spec: Spec) -> None:
    """Each pre-training's corpus (models[].pretrain.corpus) is a readable UTF-8 text under data.root."""
    from growthpace.platform.data.corpus import corpus_path, corpus_problem
    from growthpace.platform.core.spec import SpecError

    problems = [f"field 'models[{i}].pretrain.corpus': {why}" for i, m in enumerate(spec.models)
                if m.pretrain is not None and (why := corpus_problem(corpus_path(spec.data_root, m.pretrain)))]
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
    if layout.tracking.exists():
        read_json(layout.tracking)


def check_capacity(spec: Spec, *, training: bool, scoring: bool) -> None:
    from growthpace.jobs.cluster import capacity, connect
    from growthpace.platform.core.capacity import CapacityError, placement_problems

    connect(spec)
    present, node_types = capacity()
    problems = placement_problems(spec, present, node_types, training=training, scoring=scoring)
    if problems:
        raise CapacityError("\n".join(f"field '{f}': {why}; lower it, or run on a cluster that has it (docs/cluster.md)"
                                      for f, why in problems))


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
        m.name: ensure_base_model(layout, m.name, study.tokenizer, study.tokenizer_key, spec.seed)
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
    declares a throughput (None otherwise); hours = GPU-hours / the trial's GPUs.
    """
    declared = getattr(study.dataset, "declared", False)
    models = {m.name: m for m in study.spec.models}
    params = model_params(study)
    selected = [] if declared else [study.dataset.pool.select(c.allocation, c.seed) for c in study.cells]
    lengths = {} if declared else _item_lengths(study, selected)
    rows = []
    for i, cell in enumerate(study.cells):
        if declared:
            items = cell.allocation.total
            tokens = study.dataset.tokens(cell.allocation, cell.training["max_length"])
        else:
            items = len(selected[i])
            tokens = sum(map(lengths[cell.training["max_length"]].__getitem__, map(id, selected[i])))
        gpus = cell.workers * cell.gpus_per_worker
        t = cell.training
        batch = global_batch(t["per_device_batch"], cell.workers, t["grad_accum"])
        steps = optimizer_steps(items, cell.epochs, batch)
        train_tokens = round(tokens * steps * batch / items) if items else 0
        throughput = models[cell.model].resources.throughput_tokens_per_gpu_s
        gpu_hours = train_tokens / throughput / 3600 if throughput and gpus else None
        footprint = checkpoint_footprint(params[cell.model], cell.epochs, t["precision"], t["zero_stage"],
                                         study.spec.evaluation.retention, bool(t.get("keep_resume_state", False)))
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
                "hours": gpu_hours / gpus if gpu_hours is not None else None,
                "weights_bytes_per_epoch": footprint.weights_per_epoch,
                "resume_state_bytes": footprint.resume_state,
                "peak_checkpoint_bytes": footprint.peak,
                "retained_checkpoint_bytes": footprint.retained,
                "declared": bool(declared),
            }
        )
    return rows


def _item_lengths(study: Study, selected: list[list]) -> dict[int, dict[int, int]]:
    """max_length -> id of a pool record -> its training tokens (ChatEncoder.lengths), for every item some
    cell of that max_length selects: one count over all of them. Pool records live as long as the study."""
    wanted: dict[int, dict[int, object]] = {}
    for cell, records in zip(study.cells, selected):
        wanted.setdefault(cell.training["max_length"], {}).update(zip(map(id, records), records))
    enc = ChatEncoder(study.tokenizer)
    return {max_length: dict(zip(records, enc.lengths([r.messages for r in records.values()], max_length)))
            for max_length, records in wanted.items()}


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
            "sources": ",".join(spec.data.sources),
            "volumes": ",".join(map(str, spec.data.volumes)),
            "mixes": ",".join(m.name for m in spec.data.mixes),
            "seeds": ",".join(map(str, spec.data.seeds)),
            "cells": len(study.cells),
        },
    )
    return tracker, parent, {c.cell_id: tracker.child(parent, c) for c in study.cells}


PLAN_TOTALS = ("items", "epochs", "optimizer_steps", "tokens", "train_tokens", "flops", "gpu_hours",
               "peak_checkpoint_bytes", "retained_checkpoint_bytes")


def plan_totals(rows: list[dict]) -> dict:
    """The sums of plan_rows over cells (GPU-hours: of the cells that have a figure)."""
    totals: dict = {"cells": len(rows)}
    for key in PLAN_TOTALS:
        values = [r[key] for r in rows if r[key] is not None]
        totals[key] = sum(values) if values or key != "gpu_hours" else None
    return totals
