"""Spec -> cells: the full factorial of models x sources x volumes x seeds, plus named mixes.

A cell id is a short hash of everything that determines the cell's result (model, data fingerprint,
allocation, seed, training settings), so a finished cell is found again and a changed one is new.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from growthpace.platform.core.formulation import CHOICE_TARGET_REVISIONS
from growthpace.platform.core.allocation import Allocation, AllocationError, Pool, even_counts, max_counts
from growthpace.platform.core.spec import Spec, SpecError
from growthpace.platform.core.identity import stable_hash

_NOT_RESULT_FIELDS = {"max_concurrent_trials", "keep_resume_state", "checkpoint_write", "resume_every_s",
                      "failure_every_h", "storage_write_gib_s"}


# The source scores.parquet gives an untuned base, scored as "volume 0" of its size: the reference no
# tuning reaches (the OOD transfer finding, platform/analysis/transfer.py). It is no cell of the grid.
BASE_SOURCE = "base"


@dataclass(frozen=True)
class Cell:
    cell_id: str
    study: str
    model: str
    size: str
    source: str  # a name of data.sources (DoIT: curated | synthetic) or mix
    volume: int | None
    mix: str | None
    seed: int
    allocation: Allocation
    epochs: int
    training: dict[str, Any] = field(repr=False)
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    driver_cpus: float = 0.25
    custom_resources: dict[str, float] = field(default_factory=dict)
    accelerator_type: str | None = None
    placement: str = "strict_pack"

    @property
    def label(self) -> str:
        what = self.mix if self.mix else f"{self.source}-{self.volume}"
        return f"{self.size}/{what}/s{self.seed}"

    def params(self) -> dict[str, Any]:
        """Flat settings for MLflow and tables."""
        return {
            "cell_id": self.cell_id,
            "model": self.model,
            "size": self.size,
            "source": self.source,
            "volume": self.allocation.total if self.volume is None else self.volume,
            "mix": self.mix or "",
            "seed": self.seed,
            "epochs": self.epochs,
            "workers": self.workers,
            **{f"train.{k}": v for k, v in self.training.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cell":
        d = dict(d)
        d["allocation"] = Allocation(**d["allocation"])
        return cls(**d)


def model_training(spec: Spec, m) -> dict[str, Any]:
    """A model's training settings that decide its cells' results. Memory-bound settings may differ per
    model (e.g. ZeRO-3 for 33b); unset = the study-wide value."""
    training = {k: v for k, v in spec.training.model_dump().items() if k not in _NOT_RESULT_FIELDS}
    training.pop("epochs_by_volume")
    training.pop("epochs")
    if training["choice_target"] == "letter":  # the study's default: cells keep the ids they had before the field
        training.pop("choice_target")
    if m.chat != "study":  # the chat format changes every token; the default keeps the ids cells had before it
        training["chat"] = m.chat
    return {**training, **m.training.overrides()}


def _pretrain_settings(pretrain, model_training: dict[str, Any], workers: int, default_seed: int) -> dict[str, Any]:
    """Everything but the corpus and the raw base that decides the pre-trained weights: the spec's
    pretrain block (seed resolved) and the optimizer settings it shares with the model's cells."""
    return {
        "steps": pretrain.steps, "lr": pretrain.lr, "end_lr": pretrain.end_lr, "batch": pretrain.batch,
        "block": pretrain.block, "seed": default_seed if pretrain.seed is None else pretrain.seed,
        "workers": workers,
        **{k: model_training[k] for k in ("betas", "weight_decay", "precision", "zero_stage", "gradient_checkpointing")},
    }


def _pretrain_identity(settings_: dict[str, Any], corpus_sha: str | None) -> dict[str, Any]:
    """What a cell's id takes from its model's pre-training: a changed pre-training gives new cells."""
    return {"settings": settings_, "corpus": corpus_sha}


def pretrain_settings(spec: Spec, m, training: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The settings of a model's pre-training, None without one."""
    if m.pretrain is None:
        return None
    return _pretrain_settings(m.pretrain, training or model_training(spec, m), m.pretrain.workers_for(m.resources),
                              spec.seed)


def pretrain_identity(spec: Spec, m, training: dict[str, Any], corpus_digests: dict[str, str | None]) -> dict[str, Any] | None:
    if m.pretrain is None:
        return None
    return _pretrain_identity(pretrain_settings(spec, m, training), corpus_digests.get(m.size))


def expand(spec: Spec, pool: Pool, data_fingerprint: str, corpus_digests: dict[str, str | None]) -> list[Cell]:
    """Every cell of the study; an impossible allocation is a spec error naming its field."""
    available = pool.available
    primary = spec.data.primary_source
    unlabeled = next((n for n in spec.data.source_names if not spec.data.source(n).labeled), "synthetic")
    requests: list[tuple[str, int | None, str | None, Allocation]] = []
    for source in spec.data.source_names:
        declared = spec.data.source(source)
        fld = spec.data.volumes_field(source)
        for v in declared.volumes:
            try:
                if declared.labeled:
                    alloc = Allocation(even_counts(v, pool.labeled_counts(source), spec.data.caps), source=source,
                                       pool=unlabeled)
                else:
                    if v > pool.unlabeled_size(source):
                        raise AllocationError(f"{v} {source} items asked, {pool.unlabeled_size(source)} exist")
                    alloc = Allocation({}, synthetic=v, source=primary, pool=source)
            except AllocationError as e:
                raise SpecError(f"field '{fld}': volume {v}: {e}") from None
            requests.append((source, v, None, alloc))
    for i, mix in enumerate(spec.data.mixes):
        try:
            if mix.fill == "even":
                counts = even_counts(mix.total, available, mix.caps)
            else:
                counts = max_counts(available, mix.caps)
                if mix.total is not None and sum(counts.values()) > mix.total:
                    raise AllocationError(f"'max' fill gives {sum(counts.values())} items, over total {mix.total}")
            if mix.synthetic > len(pool.synthetic):
                raise AllocationError(f"{mix.synthetic} {unlabeled} items asked, {len(pool.synthetic)} exist")
        except AllocationError as e:
            raise SpecError(f"field 'data.mixes[{i}]' ({mix.name}): {e}") from None
        requests.append(("mix", None, mix.name, Allocation(counts, mix.synthetic, source=primary, pool=unlabeled)))

    cells = []
    seen: dict[str, str] = {}
    for m in spec.models:
        training = model_training(spec, m)
        pretraining = pretrain_identity(spec, m, training, corpus_digests)
        for seed in spec.data.seeds:
            for source, volume, mix, alloc in requests:
                if m.sources is not None and source not in m.sources:
                    continue
                epochs = spec.training.epochs_for(volume)
                identity = {
                    "model": m.name,
                    "init_seed": spec.seed,
                    "data": data_fingerprint,
                    "split": spec.data.train_split,
                    "allocation": [alloc.curated, alloc.synthetic],
                    "seed": seed,
                    "epochs": epochs,
                    "training": training,
                    "workers": m.resources.workers,
                }
                if spec.declared:  # named sources: the same counts from two of them are two cells (DoIT's ids stay)
                    identity["sources"] = [alloc.source, alloc.pool]
                if pretraining is not None:  # absent otherwise: cells without pre-training keep their ids
                    identity["pretrain"] = pretraining
                revision = CHOICE_TARGET_REVISIONS[training.get("choice_target", "letter")]
                if revision > 1:  # absent at the first: cells keep the ids they had before revisions
                    identity["choice_target_revision"] = revision
                cell_id = stable_hash(identity)
                what = f"mix {mix!r}" if mix else f"{source} volume {volume}"
                if cell_id in seen:
                    raise SpecError(
                        f"field 'data.mixes': {what} of model {m.size!r} is the same cell as {seen[cell_id]} "
                        "(same items, same training); drop one of them"
                    )
                seen[cell_id] = what
                cells.append(
                    Cell(
                        cell_id=cell_id,
                        study=spec.name,
                        model=m.name,
                        size=m.size,
                        source=source,
                        volume=volume,
                        mix=mix,
                        seed=seed,
                        allocation=alloc,
                        epochs=epochs,
                        training=training,
                        workers=m.resources.workers,
                        cpus_per_worker=m.resources.cpus_per_worker,
                        gpus_per_worker=m.resources.gpus_per_worker,
                        driver_cpus=m.resources.driver_cpus,
                        custom_resources=dict(m.resources.custom),
                        accelerator_type=m.resources.accelerator_type,
                        placement=m.resources.placement,
                    )
                )
    return cells
