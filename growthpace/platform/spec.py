"""The study spec: one YAML file, validated with pydantic, errors naming the field."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from growthpace.platform.abilities import ABILITIES, EVAL_SPLITS, SOURCES
from growthpace.platform.records import WORLD
from growthpace.platform.storage import SAFE_NAME


def _not_dots(v: str) -> str:
    """Names that may become path components (study, mixes) are never '.' or '..'."""
    if v in (".", ".."):
        raise ValueError(f"{v!r} is not a name: it would make a path leave its folder")
    return v


def _unique(values: list, what: str) -> list:
    """The same seed, source or volume twice would be the same cells twice: the field is named here,
    before cells.expand finds the clash."""
    dup = sorted({v for v in values if values.count(v) > 1}, key=str)
    if dup:
        raise ValueError(f"duplicate {what} {dup} in {values}")
    return values


class SpecError(ValueError):
    """A bad spec: the message names the file and the field."""


# YAML's `true` is not 1 and `10.0` is not an item count: integers are strict (a bool or a float is an
# error, not a silent 1), floats refuse bools, and no float may be inf or NaN (allow_inf_nan below).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Count = Annotated[int, Strict(), Field(ge=1)]
Beta = Annotated[float, Strict(), Field(ge=0, lt=1)]
Bool = Annotated[bool, Strict()]


def _no_bool(v):
    if isinstance(v, bool):
        raise ValueError(f"expected 0, 1, 2 or 3, not a boolean ({v})")
    return v


ZeroStage = Annotated[Literal[0, 1, 2, 3], BeforeValidator(_no_bool)]


def _one_or_list(v):
    """`formulation: option` is the one-item list [option]."""
    return [v] if isinstance(v, str) else v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Resources(_Strict):
    cpus_per_worker: Float = Field(1.0, gt=0)
    gpus_per_worker: Float = Field(0.0, ge=0)
    workers: Int = Field(1, ge=1)
    driver_cpus: Float = Field(0.25, gt=0)
    custom: dict[str, Annotated[float, Strict(), Field(ge=0)]] = Field({}, description="custom Ray resources per worker, e.g. {gpu_141g: 1} to pin a node type")
    accelerator_type: str | None = Field(
        None, min_length=1,
        description="pin the trial's workers to nodes of this accelerator, named as Ray reports it (A100 for an "
        "A100 80 GB, H100, H200, ...)",
    )
    placement: Literal["strict_pack", "pack", "spread"] = Field(
        "strict_pack",
        description="Ray Train's placement strategy for a trial's workers: strict_pack keeps them on one node "
        "(collectives over NVLink, not the network); a trial larger than one node needs pack",
    )
    throughput_tokens_per_gpu_s: Float | None = Field(
        None, gt=0, description="training tokens per GPU-second (an estimate); `plan` turns it into GPU-hours"
    )


class SizeScoring(_Strict):
    """One model size's scoring actors; an unset field takes the evaluation-wide value."""

    gpus: Float | None = Field(None, ge=0, description="GPUs per scoring actor of this size (vLLM tensor parallel "
                                                       "over them when >= 2); default evaluation.gpus_per_actor")
    accelerator_type: str | None = Field(None, min_length=1, description="node type of this size's scoring actors "
                                                                         "(Ray's accelerator names), e.g. H200 for 33b")
    custom: dict[str, float] | None = Field(None, description="custom Ray resources per scoring actor of this size")
    concurrency: Int | None = Field(None, ge=1, description="scoring actors (warm engines) of this size; default "
                                                            "evaluation.concurrency")


class ScoringResources(_Strict):
    """Where scoring actors run: their own node group, apart from the training nodes, and per model size."""

    accelerator_type: str | None = Field(None, min_length=1, description="accelerator of the scoring nodes (Ray's names)")
    custom: dict[str, float] = Field({}, description="custom Ray resources per scoring actor, e.g. {scoring_node: 1}")
    by_size: dict[str, SizeScoring] = Field({}, description="per model size (models[].size): GPUs, node type and "
                                                            "actors of its scoring, e.g. {33b: {gpus: 2, accelerator_type: H200}}")


class ModelTraining(_Strict):
    """Per-model overrides of the memory-bound training settings (e.g. ZeRO-3 and smaller micro-batches for 33b)."""

    per_device_batch: Int | None = Field(None, ge=1)
    grad_accum: Int | None = Field(None, ge=1)
    zero_stage: ZeroStage | None = None
    gradient_checkpointing: Bool | None = None

    def overrides(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Pretrain(_Strict):
    """A short causal-LM pre-training of the base model on a plain-text corpus before any cell trains
    from it (a random preset otherwise learns only the answer-letter prior). Fixed by optimizer steps,
    not time: a run starved of CPU must still see the same tokens."""

    corpus: str = Field(WORLD, min_length=1,
                        description="UTF-8 text under data.root, one document per line, no chat tokens")
    steps: Count = Field(description="optimizer steps of the whole pre-training (one pass over the cut/cycled corpus)")
    lr: Float = Field(1e-3, gt=0)
    end_lr: Float = Field(1e-4, ge=0)
    batch: Count = Field(16, description="sequences per optimizer step, over all workers")
    block: Int = Field(128, ge=8, description="tokens per sequence")
    seed: Int | None = Field(None, description="the pre-training's data order; default the spec's seed (which also seeds the raw base)")
    workers: Int | None = Field(None, gt=0, description="Ray Train workers of the pre-training (default: the "
                                "model's resources.workers, each with its cpus/gpus_per_worker); a base is "
                                "pre-trained once, before its cells, so it may take more of the cluster than a cell")

    def workers_for(self, resources: "Resources") -> int:
        return resources.workers if self.workers is None else self.workers

    @field_validator("corpus")
    @classmethod
    def _relative(cls, v: str) -> str:
        if Path(v).is_absolute() or ".." in Path(v).parts:
            raise ValueError(f"{v!r}: a path relative to data.root, inside it")
        return v


class ModelSpec(_Strict):
    name: str = Field(min_length=1, description="a preset name or an HF path / local directory")
    size: str = Field(min_length=1, description="size label used in tables and plots")
    resources: Resources = Resources()
    params: Int | None = Field(None, gt=0, description="declared parameter count; `plan` uses it instead of loading the config")
    sources: list[Literal["curated", "synthetic", "mix"]] | None = Field(
        None, description="which cells this model trains (default: every source and mix of the grid)"
    )
    training: ModelTraining = ModelTraining()
    pretrain: Pretrain | None = Field(None, description="pre-train the base on a text corpus before the cells")

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[str] | None) -> list[str] | None:
        return v if v is None else _unique(v, "sources")

    @model_validator(mode="after")
    def _pretrain_batch_splits(self) -> "ModelSpec":
        if self.pretrain is not None and self.pretrain.batch % self.pretrain.workers_for(self.resources):
            raise ValueError(f"pretrain.batch {self.pretrain.batch} is not a multiple of its workers "
                             f"{self.pretrain.workers_for(self.resources)}: every worker takes the same share of a step")
        return self


class Mix(_Strict):
    """A named allocation: the study's reconstruct / maximum / mix-N."""

    name: str = Field(min_length=1, pattern=SAFE_NAME, description="letters, digits, '_', '.', '-' (a safe file name)")
    total: Int | None = Field(None, gt=0, description="curated total; None = every capped or full ability")

    _safe_name = field_validator("name")(_not_dots)
    caps: dict[str, Int] = {}
    fill: Literal["even", "max"] = "even"
    synthetic: Int = Field(0, ge=0, description="synthetic items added on top")

    @field_validator("caps")
    @classmethod
    def _known_abilities(cls, caps: dict[str, int]) -> dict[str, int]:
        for ability, n in caps.items():
            if ability not in ABILITIES:
                raise ValueError(f"unknown ability {ability!r} in caps; expected one of {', '.join(ABILITIES)}")
            if n < 0:
                raise ValueError(f"cap for {ability!r} must be >= 0, got {n}")
        return caps

    @model_validator(mode="after")
    def _even_needs_total(self) -> "Mix":
        if self.fill == "even" and self.total is None:
            raise ValueError("fill 'even' needs a total")
        return self


class Generate(_Strict):
    seed: Int = 0
    train_per_ability: Int = Field(1000, gt=0)
    valid_per_ability: Int = Field(20, gt=0)
    test_per_ability: Int = Field(40, gt=0)
    ood_per_subject: Int = Field(20, gt=0)
    synthetic: Int = Field(4000, gt=0)
    world_per_family: Int = Field(400, gt=0, description="documents per family in world/world.txt")


class Hub(_Strict):
    """The public dataset on the Hugging Face Hub, fetched to data.root when it is missing."""

    repo_id: str = Field("ChiyuSONG/dynamics-of-instruction-tuning", min_length=1)
    revision: str = Field(min_length=1, description="a commit sha (pin it: a branch name moves)")
    cache_dir: str | None = Field(None, description="huggingface_hub cache; default HF_HUB_CACHE")
    endpoint: str | None = Field(None, description="Hub endpoint or mirror; default HF_ENDPOINT / huggingface.co")


class Declared(_Strict):
    """What `plan` assumes when data.root is absent: counts and token lengths declared, not read."""

    source: str = Field(min_length=1, description="where the figures come from")
    train: dict[str, Int] = Field(description="train items per ability in the `full` split")
    synthetic: Int = Field(0, ge=0, description="items in the synthetic pool")
    tokens_per_item: dict[str, Count] = Field(description="mean tokens per item, per ability and 'synthetic'")

    @field_validator("train")
    @classmethod
    def _all_abilities(cls, v: dict[str, int]) -> dict[str, int]:
        missing = [a for a in ABILITIES if a not in v]
        if missing:
            raise ValueError(f"missing abilities {missing}")
        return Mix._known_abilities(v)

    @field_validator("tokens_per_item")
    @classmethod
    def _tokens_known(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [k for k in v if k not in ABILITIES and k != "synthetic"]
        if bad:
            raise ValueError(f"unknown keys {bad}; expected abilities or 'synthetic'")
        missing = [a for a in (*ABILITIES, "synthetic") if a not in v]
        if missing:
            raise ValueError(f"missing keys {missing}")
        return v


class DataSpec(_Strict):
    root: str = Field(min_length=1, description="dataset root (the study's layout)")
    generate: Generate | None = Field(None, description="build the embedded procedural dataset at root")
    hub: Hub | None = Field(None, description="fetch the public dataset to root when it is missing")
    declared: Declared | None = Field(None, description="counts `plan` uses when root is missing")
    train_split: Literal["1000", "full"] = "full"
    sources: list[Literal["curated", "synthetic"]] = ["curated"]
    volumes: list[Int] = [10, 40, 160, 640]
    synthetic_volumes: list[Int] | None = Field(None, description="default: the same as volumes")
    caps: dict[str, Int] = {}
    mixes: list[Mix] = []
    seeds: list[Int] = [0]

    @field_validator("volumes", "synthetic_volumes")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None:
            bad = [x for x in v if x <= 0]
            if bad:
                raise ValueError(f"volumes must be positive, got {bad}")
            if len(set(v)) != len(v):
                raise ValueError(f"duplicate volumes in {v}")
        return v

    @field_validator("caps")
    @classmethod
    def _caps_known(cls, caps: dict[str, int]) -> dict[str, int]:
        return Mix._known_abilities(caps)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("at least one seed")
        return _unique(v, "seeds")

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[str]) -> list[str]:
        return _unique(v, "sources")

    @field_validator("mixes")
    @classmethod
    def _unique_mixes(cls, mixes: list[Mix]) -> list[Mix]:  # a field validator: the error names data.mixes
        names = [m.name for m in mixes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate mix names in {names}")
        return mixes


class TrainingSpec(_Strict):
    epochs: Int = Field(3, ge=1)
    epochs_by_volume: dict[Count, Count] = Field({}, description="volume -> epochs, for the smallest volumes")
    lr: Float = Field(1e-5, gt=0)
    end_lr: Float = Field(1e-6, ge=0)
    betas: tuple[Beta, Beta] = (0.9, 0.95)
    weight_decay: Float = Field(0.1, ge=0)
    per_device_batch: Int = Field(8, ge=1)
    grad_accum: Int = Field(1, ge=1)
    max_length: Int = Field(2048, ge=8)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    zero_stage: ZeroStage = 2
    gradient_checkpointing: Bool = False
    packing: Bool = Field(True, description="pack each micro-batch's items into one row (no padding; attention "
                          "kept inside each item); false = pad to the longest item")
    keep_resume_state: Bool = Field(False, description="keep the newest epoch's DeepSpeed state (optimizer etc., "
                                    "about 12-14 bytes/param) after a cell is finished; older epochs never keep it")
    checkpoint_write: Literal["auto", "in_place", "async"] = Field(
        "auto", description="how epoch checkpoints reach storage: 'in_place' = every rank writes straight into the "
        "run's folder on the shared filesystem (one write, training waits for it); 'async' = write to local disk, "
        "Ray uploads in the background while the next epoch trains; 'auto' = in_place on a filesystem, async on "
        "an object store (docs/cluster.md)")
    max_concurrent_trials: Int = Field(2, ge=1)
    choice_target: Literal["letter", "letter_text", "cloze"] = Field(
        "letter", description="the reply a choice item is trained on: 'letter' (the study's: `B`), 'letter_text' "
        "(the option's line: `B. heart`) or 'cloze' (the question without its options, the reply `heart`; "
        "evaluators/formulation.py); part of the cell's items and id")

    def epochs_for(self, volume: int | None) -> int:
        if volume is not None and volume in self.epochs_by_volume:
            return self.epochs_by_volume[volume]
        return self.epochs


class EvaluationSpec(_Strict):
    splits: list[Literal["valid", "test"]] = list(EVAL_SPLITS)
    ood: Bool = True
    batch_size: Int = Field(64, ge=1)
    warmup_epochs: Int | None = Field(None, ge=0, description="select epochs after this; default 5, or a third of short runs")
    concurrency: Int = Field(1, ge=1, description="scoring actors")
    max_new_tokens: dict[str, Count] = Field({}, description="per question kind, caps the scorer's default limit")
    backend: Literal["auto", "vllm", "transformers"] = "auto"
    gpus_per_actor: Float = Field(0.0, ge=0, description="GPUs per scoring actor (vLLM on GPU nodes)")
    vllm_pipeline: Literal["auto", "processor", "actor"] = Field(
        "auto",
        description="how a vllm backend scores: 'processor' = ray.data.llm vLLMEngineProcessor, one processor "
        "(one engine) per checkpoint, torn down before the next; 'actor' = the engine inside the scoring "
        "actor, kept warm across checkpoints (each next one's weights loaded in place); 'auto' = actor. "
        "Only matters when the resolved backend is vllm",
    )
    resources: ScoringResources = ScoringResources()
    streaming: Bool = Field(True, description="score finished cells while other cells still train")
    retention: Literal["all", "best", "none"] = Field("all", description="checkpoint weights kept after scoring")
    formulation: Annotated[list[Literal["letter", "option", "cloze"]], BeforeValidator(_one_or_list)] = Field(
        ["letter"], min_length=1,
        description="how choice and true/false items are put to the model (docs/scoring.md): 'letter' (the "
        "study's rule), 'option' (the option lines ranked by perplexity, options shown) or 'cloze' (OLMES's cloze "
        "formulation: the question without its options, the option texts ranked), or a list of them: the first "
        "is the primary (selection, tables, fits), the others are scored and reported beside it")

    @field_validator("formulation")
    @classmethod
    def _unique_formulations(cls, v: list[str]) -> list[str]:
        return _unique(v, "formulations")

    def scoring_for(self, size: str | None = None) -> SizeScoring:
        """The scoring actors of one model size: resources.by_size[size] with every unset field taken
        from the evaluation-wide settings (gpus_per_actor, resources, concurrency)."""
        own = self.resources.by_size.get(size) if size is not None else None

        def pick(name: str, default):
            value = getattr(own, name) if own is not None else None
            return default if value is None else value

        return SizeScoring(gpus=float(pick("gpus", self.gpus_per_actor)),
                           accelerator_type=pick("accelerator_type", self.resources.accelerator_type),
                           custom=dict(pick("custom", self.resources.custom)), concurrency=pick("concurrency", self.concurrency))

    def warmup_for(self, epochs: int) -> int:
        if self.warmup_epochs is not None:
            return min(self.warmup_epochs, epochs - 1)
        return 5 if epochs > 10 else epochs // 3


class TrackingSpec(_Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default: sqlite under storage")
    experiment: str = "growthpace"


class AnalysisSpec(_Strict):
    """Growth-pace analysis (report, `growthpace recommend`); model selection's warm-up stays in evaluation.

    Thresholds are in score points (0-100); docs/analysis.md explains each number and class.
    """

    bootstrap_samples: Int = Field(200, ge=20, description="bootstrap replicates over test items (and seeds)")
    confidence: Float = Field(0.95, gt=0.5, lt=1, description="interval level")
    seed: Int = Field(0, description="seed of the bootstrap draws")
    volume_gain: Float = Field(1.0, ge=0, description="start gain per doubling of data to count as responding to volume")
    size_gain: Float = Field(1.0, ge=0, description="gain per doubling of parameters to count as responding to size")
    early_saturation_doublings: Float = Field(
        2.0, ge=0, description="saturates early: 90% of the gain reached this many doublings before the largest volume"
    )
    require_interval: Bool = Field(True, description="a response also needs its interval's lower end above 0")
    extrapolate_from: Float = Field(4, gt=1, description="extrapolation check: fit on volumes <= largest / this")
    budget: Int | None = Field(None, gt=0, description="the report's recommendation budget; default half the largest curated volume")
    recommend_size: str | None = Field(None, description="size label whose curves the recommender uses; default the largest")
    floor: Float = Field(0.1, ge=0, le=1, description="recommender: each ability keeps at least this share of its even split")
    trust_doublings: Float = Field(
        1.0, ge=0, description="recommender: a curve is trusted this many doublings past the largest volume, flat beyond"
    )


class RaySpec(_Strict):
    num_cpus: Int | None = Field(None, ge=1, description="logical CPUs of a local cluster")
    health_check_interval_s: Float = 0.1
    env_vars: dict[str, str] = Field({}, description="runtime_env env vars for every task and actor of the study")
    pip: list[str] = Field([], description="runtime_env pip packages (installed per job by Ray, on top of the image)")


class Spec(_Strict):
    name: str = Field(min_length=1, pattern=SAFE_NAME)
    storage: str = Field(min_length=1)

    _safe_name = field_validator("name")(_not_dots)
    models: list[ModelSpec] = Field(min_length=1)
    data: DataSpec
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    tracking: TrackingSpec = TrackingSpec()
    ray: RaySpec = RaySpec()
    analysis: AnalysisSpec = AnalysisSpec()
    seed: Int = 0

    @field_validator("models")
    @classmethod
    def _unique_sizes(cls, models: list[ModelSpec]) -> list[ModelSpec]:  # the error names `models`
        sizes = [m.size for m in models]
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"model size labels must be unique, got {sizes}")
        return models

    @field_validator("storage")
    @classmethod
    def _storage_location(cls, v: str) -> str:
        if "://" in v:
            from growthpace.platform.storage import Location, PathError

            try:
                Location(v)
            except PathError as e:
                raise ValueError(
                    f"{e}; storage is a folder every node sees (local, or an NFS/EFS/Filestore mount) "
                    "or an object store URI (docs/cluster.md)"
                ) from None
        return v

    @model_validator(mode="after")
    def _remote_storage_needs_a_tracking_server(self) -> "Spec":
        if "://" in self.storage and self.tracking.uri is None:
            raise ValueError(
                f"tracking.uri: required when storage is an object store ({self.storage}): the default MLflow "
                "store is a sqlite file under storage, which an object store cannot hold; set the team's MLflow "
                "server (http://...) or a sqlite:/// file on a disk every process of the study sees"
            )
        if "://" in self.storage and self.training.checkpoint_write == "in_place":
            raise ValueError(
                f"training.checkpoint_write: 'in_place' needs storage on a filesystem; with storage {self.storage} "
                "use 'async' or 'auto'"
            )
        if "://" in self.storage and self.evaluation.vllm_pipeline == "processor":
            raise ValueError(
                "evaluation.vllm_pipeline: 'processor' needs storage on a filesystem every node mounts "
                f"(its engine loads weights by path); with storage {self.storage} use 'actor' or 'auto'"
            )
        return self

    @property
    def storage_path(self):
        """A local ``Path`` or an object store ``Location`` (growthpace/platform/storage.py)."""
        from growthpace.platform.storage import Location

        return Location(self.storage) if "://" in self.storage else Path(self.storage).expanduser().resolve()

    @property
    def data_root(self) -> Path:
        return Path(self.data.root).expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{self.storage_path / 'mlflow.db'}"


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _DuplicateKey(Exception):
    def __init__(self, key, line: int, first: int):
        self.key, self.line, self.first = key, line, first


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently, so a
    second `models:` would drop the first list) and reports an integer too long to convert at its line."""

    def construct_mapping(self, node, deep=False):
        first: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in first:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1, first[key])
                first[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: SafeLoader's own error says so, with its line
                break
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError as e:  # Python refuses int() of more than 4300 digits
            raise yaml.constructor.ConstructorError(None, None, f"not a usable integer ({e})", node.start_mark) from None


_SpecLoader.add_constructor("tag:yaml.org,2002:int", _SpecLoader.construct_yaml_int)

MAX_DEPTH = 64


def _too_deep(text: str) -> int | None:
    """The line where the YAML nests deeper than MAX_DEPTH (found from parser events, which do not recurse)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                return event.start_mark.line + 1
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return None


def load_spec(path: str | Path) -> Spec:
    """Parse and validate a spec; relative paths in it are taken from the current directory."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        text = path.read_text(encoding="utf-8")
        deep = _too_deep(text)
        if deep is not None:
            raise SpecError(f"{path}:{deep}: nested more than {MAX_DEPTH} levels deep; a spec is a few levels of mappings")
        raw = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SpecError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except _DuplicateKey as e:
        raise SpecError(f"{path}:{e.line}: duplicate key {e.key!r} (first at line {e.first}); "
                        "YAML would keep only the last one: merge them or delete one") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not valid UTF-8") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping")
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: field '{_field_path(err['loc'])}': {msg}" if err["loc"] else f"{path}: {msg}")
        raise SpecError("\n".join(lines)) from None
    problems = [*_references(spec), *_paths(spec), *_models(spec)]
    if problems:
        raise SpecError("\n".join(f"{path}: field '{field}': {why}" for field, why in problems))
    return spec


# ---------------------------------------------------------------- checks across fields and on disk


def _grid_sources(spec: Spec) -> list[str]:
    return [*spec.data.sources, *(["mix"] if spec.data.mixes else [])]


def _volumes(spec: Spec, source: str) -> list[int]:
    if source == "curated":
        return list(spec.data.volumes)
    return list(spec.data.synthetic_volumes or spec.data.volumes)


def _references(spec: Spec) -> list[tuple[str, str]]:
    """Settings that name something (a volume, a question kind, a size, a source) must name something
    that exists: otherwise they are silently ignored and the study is not the one the spec describes."""
    from growthpace.evaluators.scoring import KINDS

    out = []
    volumes = sorted({v for s in spec.data.sources if s != "mix" for v in _volumes(spec, s)})
    for v in spec.training.epochs_by_volume:
        if v not in volumes:
            out.append((f"training.epochs_by_volume.{v}", f"volume {v} is not one of the grid's volumes {volumes}"))
    for kind in spec.evaluation.max_new_tokens:
        if kind not in KINDS:
            close = difflib.get_close_matches(kind, KINDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append((f"evaluation.max_new_tokens.{kind}", f"not a question kind{hint}; expected one of {', '.join(KINDS)}"))
    sizes = [m.size for m in spec.models]
    for size in spec.evaluation.resources.by_size:
        if size not in sizes:
            out.append((f"evaluation.resources.by_size.{size}", f"{size!r} is not one of the models' sizes {sizes}"))
    if spec.analysis.recommend_size is not None and spec.analysis.recommend_size not in sizes:
        out.append(("analysis.recommend_size", f"{spec.analysis.recommend_size!r} is not one of the models' sizes {sizes}"))
    grid = _grid_sources(spec)
    first: dict[str, int] = {}
    for i, m in enumerate(spec.models):
        if m.name in first:
            j = first[m.name]
            out.append((f"models[{i}].name", f"model {m.name!r} is already listed as size {spec.models[j].size!r} "
                                             f"(models[{j}]): one model has one size"))
        first.setdefault(m.name, i)
        for s in m.sources or []:
            if s not in grid:
                why = "data.mixes is empty" if s == "mix" else f"data.sources is {spec.data.sources}"
                out.append((f"models[{i}].sources", f"source {s!r} matches no cell of the grid ({why})"))
    n = 0
    for m in spec.models:
        for s in grid:
            if m.sources is None or s in m.sources:
                n += len(spec.data.mixes) if s == "mix" else len(_volumes(spec, s))
    if not n and not out:
        out.append(("data", f"the grid has zero cells (sources {spec.data.sources}, volumes {spec.data.volumes}, "
                            f"{len(spec.data.mixes)} mixes, models' sources {[m.sources for m in spec.models]})"))
    return out


# MLflow's tracking URI schemes (a plain path is a local file store).
TRACKING_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


def local_path_problem(value: str, *, folder: bool) -> str | None:
    """Why a local path cannot be used: a symlink loop, a regular file where a folder must be, or an
    ancestor that is a regular file (nothing can be created under it)."""
    p = Path(value).expanduser()
    try:
        p = p.resolve()
    except (RuntimeError, OSError) as e:  # Python 3.11: RuntimeError("Symlink loop from ...")
        return f"{value}: cannot be resolved ({e})"
    for anc in (p, *p.parents):
        try:
            if not anc.exists():
                if anc.is_symlink():
                    return f"{value}: {anc} is a symlink to nothing (dangling, or a loop)"
                continue
        except OSError as e:
            return f"{value}: {anc}: {e.strerror or e}"
        if anc.is_dir():
            return None
        if anc == p:
            return f"{value}: is a file, not a folder" if folder else None
        return f"{value}: {anc} is a regular file, so nothing can be created under it"
    return None


def _paths(spec: Spec) -> list[tuple[str, str]]:
    out = []
    if "://" not in spec.storage:
        why = local_path_problem(spec.storage, folder=True)
        if why:
            out.append(("storage", why))
    why = local_path_problem(spec.data.root, folder=True)
    if why:
        out.append(("data.root", why))
    uri = spec.tracking.uri
    if uri is not None:
        scheme, sep, rest = uri.partition("://")
        if sep and scheme.split("+")[0].lower() not in TRACKING_SCHEMES:
            out.append(("tracking.uri", f"unknown scheme {scheme!r} in {uri!r}; MLflow takes "
                                        f"{', '.join(s + '://' for s in TRACKING_SCHEMES[:6])}..., or a local folder"))
        elif scheme == "sqlite" and rest.startswith("/"):
            why = local_path_problem(str(Path(rest[1:]).parent), folder=True)  # sqlite:///rel, sqlite:////abs
            if why:
                out.append(("tracking.uri", why))
        elif not sep and uri.lower() not in TRACKING_SCHEMES:
            why = local_path_problem(uri, folder=True)
            if why:
                out.append(("tracking.uri", why))
    return out


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
BARE_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # legacy ids without an owner (gpt2)
MISSPELT = 0.75  # difflib ratio to a preset above which a bare name is a typo of it, not a Hub id


def _models(spec: Spec) -> list[tuple[str, str]]:
    """Each model name is a preset, an existing folder or a Hub id (owner/name). Decided without the
    network, so a misspelt preset fails at once (with the closest preset) instead of after the Hub's
    retries; a Hub id is fetched later only when the Hub may be asked (HF_HUB_OFFLINE unset) or is cached.
    A model with declared `params` may be absent here (`plan` does not load it); the writing commands
    check it again (models.check_model in jobs/study.py check_inputs)."""
    from growthpace.platform.models import PRESETS

    out = []
    for i, m in enumerate(spec.models):
        name, fld = m.name, f"models[{i}].name"
        if name in PRESETS:
            continue
        folder = Path(name).expanduser()
        if folder.exists():
            if not folder.is_dir():
                out.append((fld, f"model {name!r} is a file; a model is a preset or a folder with config.json, "
                                 "weights and a tokenizer"))
            continue
        closest = difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=0.0)
        hint = f"did you mean {closest[0]!r}? presets: {', '.join(PRESETS)}"
        if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
            if not m.params:  # declared params: `plan` needs no model (doit.yaml plans away from its cluster)
                out.append((fld, f"model {name!r}: no such folder (and not a preset: {', '.join(PRESETS)})"))
        elif not (HUB_ID.match(name) or BARE_HUB_ID.match(name)):
            out.append((fld, f"model {name!r} is not a preset, an existing folder or a Hub id (owner/name); {hint}"))
        elif "/" not in name and difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=MISSPELT):
            out.append((fld, f"model {name!r} is not a preset nor an existing folder; {hint}"))
        elif not m.params and _offline() and not _hub_cached(name):
            out.append((fld, f"model {name!r}: not a preset nor a folder, and HF_HUB_OFFLINE is set so the Hub "
                             f"is not asked (and it is not in the local cache); presets: {', '.join(PRESETS)}"))
    return out


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
