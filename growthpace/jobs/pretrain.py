"""Pre-train the bases that models[].pretrain asks for, before any cell trains from them.

The cells' path (jobs/sweep.py): Ray Tune schedules one trial per base to pre-train, at most
training.max_concurrent_trials at once; each trial is a small driver that runs a Ray Train TorchTrainer
(DeepSpeed with the model's zero_stage and precision, gloo on CPU) over platform/train/train.py pretrain_base,
then moves the run's one checkpoint (HF weights + tokenizer) into base/<key> with pretrain.json, whole
(models._save_atomic). That folder is the marker: a rerun with the same inputs starts no trial, and a
killed run leaves no folder (platform/train/pretrain.py: what the key hashes).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from growthpace.platform.data.corpus import corpus_path, documents
from growthpace.platform.train import pretrain
from growthpace.platform.core.cells import pretrain_settings
from growthpace.platform.core.presets import PRESETS
from growthpace.platform.core.spec import SpecError
from growthpace.platform.store.storage import Layout, StoragePath, as_location, file_sha256
from growthpace.platform.core.identity import stable_hash


@dataclass(frozen=True)
class BaseJob:
    """One base to pre-train: which model, from which raw base, into which folder, with what."""

    model: str
    size: str
    field: str  # the spec field of its corpus, for errors
    key: str
    raw: str
    path: str
    corpus: str
    settings: dict[str, Any]
    resources: dict[str, Any]

    def done(self) -> bool:
        return (as_location(self.path) / "config.json").exists()  # written last (models._save_atomic)


def base_jobs(study, raw_bases: dict[str, StoragePath]) -> list[BaseJob]:
    """The pre-trainings the spec asks for, each keyed by its inputs (platform/train/pretrain.py pretrained_key)."""
    spec, layout = study.spec, study.layout
    jobs = []
    for i, m in enumerate(spec.models):
        if m.pretrain is None:
            continue
        settings = pretrain_settings(spec, m)
        corpus = corpus_path(spec.data_root, m.pretrain)
        raw_key = as_location(raw_bases[m.name]).name  # base/<model_key>
        key = pretrain.pretrained_key(raw_key, file_sha256(corpus), settings,
                                      study.tokenizer_key if m.name in PRESETS else None)
        jobs.append(BaseJob(model=m.name, size=m.size, field=f"models[{i}].pretrain.corpus", key=key,
                            raw=str(raw_bases[m.name]), path=str(layout.base_model(key)), corpus=str(corpus),
                            settings=settings, resources={**m.resources.model_dump(), "workers": settings["workers"]}))
    return jobs


def write_tokens(layout: Layout, job: BaseJob, tokenizer) -> StoragePath:
    """The corpus tokenized once, by this driver, with the base's tokenizer: the one epoch's sequences."""
    from growthpace.platform.data.chat import framing_for
    from growthpace.platform.data.dataset import tokens_bytes
    from growthpace.platform.store.storage import write_bytes

    path = layout.pretrain_tokens(job.key)
    if path.exists():
        return path
    enc = framing_for(tokenizer)
    sequences = pretrain.blocks(enc.texts(documents(Path(job.corpus))), enc.eot, job.settings["block"])
    try:
        examples = pretrain.epoch_examples(sequences, job.settings["steps"], job.settings["batch"])
    except ValueError as e:
        raise SpecError(f"field '{job.field}': {job.corpus}: {e} ({job.settings['block']} tokens)") from None
    write_bytes(path, tokens_bytes(examples))
    return path


def _pretrain_trial(param: dict[str, Any]) -> None:
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from growthpace.jobs.placement import worker_scaling
    from growthpace.platform.train.models import _save_atomic
    from growthpace.platform.store.storage import remove_tree, write_json
    from growthpace.platform.train.train import pretrain_base

    config = param["trial"]
    job = BaseJob(**config["job"])
    layout = Layout(config["storage"])
    r = job.resources
    run = layout.train / f"pretrain-{job.key}"
    trainer = TorchTrainer(
        pretrain_base,
        train_loop_config=config["train"],
        scaling_config=worker_scaling(r["workers"], r["cpus_per_worker"], r["gpus_per_worker"], r["custom"],
                                      r["placement"], r["accelerator_type"]),
        torch_config=TorchConfig(backend="nccl" if r["gpus_per_worker"] > 0 else "gloo"),
        run_config=RunConfig(name=run.name, storage_path=str(layout.train),
                             checkpoint_config=CheckpointConfig(num_to_keep=None),
                             failure_config=FailureConfig(max_failures=config.get("max_failures", 1))),
    )
    started = time.monotonic()
    result = trainer.fit()
    info = {**result.metrics, "wall_s": time.monotonic() - started, "model": job.model, "key": job.key,
            "raw_base": job.raw, "settings": job.settings}

    with result.checkpoint.as_directory() as d:
        def install(out: Path) -> None:
            for f in Path(d).iterdir():
                shutil.move(str(f), str(out / f.name))  # the same filesystem: a rename, not a copy
            write_json(out / pretrain.PRETRAIN_INFO, info)

        _save_atomic(as_location(job.path), install)
    remove_tree(run)  # its checkpoint is the base now; a later run of the same key starts afresh
    tune.report({"steps": info["steps"], "last_loss": info["last_loss"]})


def pretrain_bases(study, raw_bases: dict[str, StoragePath], tokenizers: dict[str, Any]) -> tuple[dict[str, StoragePath], list[BaseJob]]:
    """Pre-train every base that has no folder yet; return (model name -> the base its cells train from,
    the jobs trained here). Needs a connected Ray cluster."""
    from ray import tune

    from growthpace.jobs.progress import active
    from growthpace.jobs.errors import SweepError
    from growthpace.jobs.sweep import driver_bundle, fit_grid, trial_errors
    from growthpace.jobs.tune_progress import PretrainProgress

    layout, training = study.layout, study.spec.training
    jobs = base_jobs(study, raw_bases)
    bases = {**raw_bases, **{j.model: as_location(j.path) for j in jobs}}
    pending = [j for j in jobs if not j.done()]
    view = active()
    if view is not None:
        view.bases_to_pretrain(len(jobs), len(jobs) - len(pending))
    if not pending:
        return bases, []
    if view is not None:
        view.enter_stage("pretrain")
    trials = []
    for j in pending:
        tokens = write_tokens(layout, j, tokenizers[j.model])
        train = {**pretrain.train_settings(j.settings), "base_model": j.raw, "tokens": str(tokens)}
        trials.append({"job": asdict(j), "train": train, "storage": str(layout.root),
                       "driver": driver_bundle(j.resources["driver_cpus"], study.spec.ray.driver_resources)})
    trainable = tune.with_resources(_pretrain_trial, lambda p: p["trial"]["driver"])
    name = f"pretrain-{stable_hash(sorted(j.key for j in pending))}"
    results = fit_grid(trainable, trials, name, layout, training.max_concurrent_trials, PretrainProgress())
    failed = [j.size for j in pending if not j.done()]
    if failed:
        raise SweepError(f"pre-training of {len(failed)} base(s) did not finish: {', '.join(failed)}. "
                         f"{trial_errors(results)}")
    return bases, pending


def plan_rows(study) -> list[dict[str, Any]]:
    """Each model's pre-training as `plan` shows it: steps, batch, block, tokens seen, FLOPs (6 x params x
    tokens, as study.plan_rows counts a cell's), and the corpus's own tokens (None where the corpus or a
    counting tokenizer is not at hand). Imports neither torch nor transformers: the preset tokenizer
    here is plan's bare BPE."""
    from growthpace.jobs.study import model_params, stream_tokens

    spec = study.spec
    params = model_params(study)
    rows = []
    for m in spec.models:
        if m.pretrain is None:
            continue
        settings = pretrain_settings(spec, m)
        corpus = corpus_path(spec.data_root, m.pretrain)
        corpus_tokens = None
        if corpus.is_file() and m.name in PRESETS and study.tokenizer is not None:
            corpus_tokens = stream_tokens(documents(corpus), study.tokenizer)
        rows.append({"model": m.name, "size": m.size, "steps": settings["steps"], "batch": settings["batch"],
                     "block": settings["block"], "tokens": pretrain.tokens_seen(settings),
                     "flops": 6 * params[m.name] * pretrain.tokens_seen(settings),
                     "corpus": str(corpus), "corpus_tokens": corpus_tokens})
    return rows
