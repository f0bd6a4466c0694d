"""The study spec: one YAML file, validated with pydantic, errors naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from growthpace.platform.abilities import ABILITIES, EVAL_SPLITS, SOURCES
from growthpace.platform.storage import SAFE_NAME


def _not_dots(v: str) -> str:
    """Names that may become path components (study, mixes) are never '.' or '..'."""
    if v in (".", ".."):
        raise ValueError(f"{v!r} is not a name: it would make a path leave its folder")
    return v


class SpecError(ValueError):
    """A bad spec: the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    workers: int = Field(1, ge=1)
    driver_cpus: float = Field(0.25, gt=0)
    custom: dict[str, float] = Field({}, description="custom Ray resources per worker, e.g. {gpu_141g: 1} to pin a node type")
    accelerator_type: str | None = Field(
        None, min_length=1,
        description="pin the trial's workers to nodes of this accelerator (Ray's names: A100-80G, H100, H200, ...)",
    )
    placement: Literal["strict_pack", "pack", "spread"] = Field(
        "strict_pack",
        description="Ray Train's placement strategy for a trial's workers: strict_pack keeps them on one node "
        "(collectives over NVLink, not the network); a trial larger than one node needs pack",
    )
    throughput_tokens_per_gpu_s: float | None = Field(
        None, gt=0, description="training tokens per GPU-second (an estimate); `plan` turns it into GPU-hours"
    )


class ScoringResources(_Strict):
    """Where scoring actors run: their own node group, apart from the training nodes."""

    accelerator_type: str | None = Field(None, min_length=1, description="accelerator of the scoring nodes (Ray's names)")
    custom: dict[str, float] = Field({}, description="custom Ray resources per scoring actor, e.g. {scoring_node: 1}")


class ModelTraining(_Strict):
    """Per-model overrides of the memory-bound training settings (e.g. ZeRO-3 and smaller micro-batches for 33b)."""

    per_device_batch: int | None = Field(None, ge=1)
    grad_accum: int | None = Field(None, ge=1)
    zero_stage: Literal[0, 1, 2, 3] | None = None
    gradient_checkpointing: bool | None = None

    def overrides(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ModelSpec(_Strict):
    name: str = Field(min_length=1, description="a preset name or an HF path / local directory")
    size: str = Field(min_length=1, description="size label used in tables and plots")
    resources: Resources = Resources()
    params: int | None = Field(None, gt=0, description="declared parameter count; `plan` uses it instead of loading the config")
    sources: list[Literal["curated", "synthetic", "mix"]] | None = Field(
        None, description="which cells this model trains (default: every source and mix of the grid)"
    )
    training: ModelTraining = ModelTraining()


class Mix(_Strict):
    """A named allocation: the study's reconstruct / maximum / mix-N."""

    name: str = Field(min_length=1, pattern=SAFE_NAME, description="letters, digits, '_', '.', '-' (a safe file name)")
    total: int | None = Field(None, gt=0, description="curated total; None = every capped or full ability")

    _safe_name = field_validator("name")(_not_dots)
    caps: dict[str, int] = {}
    fill: Literal["even", "max"] = "even"
    synthetic: int = Field(0, ge=0, description="synthetic items added on top")

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
    seed: int = 0
    train_per_ability: int = Field(1000, gt=0)
    valid_per_ability: int = Field(20, gt=0)
    test_per_ability: int = Field(40, gt=0)
    ood_per_subject: int = Field(20, gt=0)
    synthetic: int = Field(4000, gt=0)


class Hub(_Strict):
    """The public dataset on the Hugging Face Hub, fetched to data.root when it is missing."""

    repo_id: str = Field("ChiyuSONG/dynamics-of-instruction-tuning", min_length=1)
    revision: str = Field(min_length=1, description="a commit sha (pin it: a branch name moves)")
    cache_dir: str | None = Field(None, description="huggingface_hub cache; default HF_HUB_CACHE")
    endpoint: str | None = Field(None, description="Hub endpoint or mirror; default HF_ENDPOINT / huggingface.co")


class Declared(_Strict):
    """What `plan` assumes when data.root is absent: counts and token lengths declared, not read."""

    source: str = Field(min_length=1, description="where the figures come from")
    train: dict[str, int] = Field(description="train items per ability in the `full` split")
    synthetic: int = Field(0, ge=0, description="items in the synthetic pool")
    tokens_per_item: dict[str, int] = Field(description="mean tokens per item, per ability and 'synthetic'")

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
    volumes: list[int] = [10, 40, 160, 640]
    synthetic_volumes: list[int] | None = Field(None, description="default: the same as volumes")
    caps: dict[str, int] = {}
    mixes: list[Mix] = []
    seeds: list[int] = [0]

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
        return v

    @field_validator("mixes")
    @classmethod
    def _unique_mixes(cls, mixes: list[Mix]) -> list[Mix]:  # a field validator: the error names data.mixes
        names = [m.name for m in mixes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate mix names in {names}")
        return mixes


class TrainingSpec(_Strict):
    epochs: int = Field(3, ge=1)
    epochs_by_volume: dict[int, int] = Field({}, description="volume -> epochs, for the smallest volumes")
    lr: float = Field(1e-5, gt=0)
    end_lr: float = Field(1e-6, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.1, ge=0)
    per_device_batch: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(2048, ge=8)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    zero_stage: Literal[0, 1, 2, 3] = 2
    gradient_checkpointing: bool = False
    packing: bool = Field(True, description="pack each micro-batch's items into one row (no padding; attention "
                          "kept inside each item); false = pad to the longest item")
    keep_resume_state: bool = Field(False, description="keep the newest epoch's DeepSpeed state (optimizer etc., "
                                    "about 12-14 bytes/param) after a cell is finished; older epochs never keep it")
    checkpoint_write: Literal["auto", "in_place", "async"] = Field(
        "auto", description="how epoch checkpoints reach storage: 'in_place' = every rank writes straight into the "
        "run's folder on the shared filesystem (one write, training waits for it); 'async' = write to local disk, "
        "Ray uploads in the background while the next epoch trains; 'auto' = in_place on a filesystem, async on "
        "an object store (docs/cluster.md)")
    max_concurrent_trials: int = Field(2, ge=1)

    def epochs_for(self, volume: int | None) -> int:
        if volume is not None and volume in self.epochs_by_volume:
            return self.epochs_by_volume[volume]
        return self.epochs


class EvaluationSpec(_Strict):
    splits: list[Literal["valid", "test"]] = list(EVAL_SPLITS)
    ood: bool = True
    batch_size: int = Field(64, ge=1)
    warmup_epochs: int | None = Field(None, ge=0, description="select epochs after this; default 5, or a third of short runs")
    concurrency: int = Field(1, ge=1, description="scoring actors")
    max_new_tokens: dict[str, int] = Field({}, description="per question kind, caps the scorer's default limit")
    backend: Literal["auto", "vllm", "transformers"] = "auto"
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per scoring actor (vLLM on GPU nodes)")
    vllm_pipeline: Literal["auto", "processor", "actor"] = Field(
        "auto",
        description="how a vllm backend scores: 'processor' = ray.data.llm vLLMEngineProcessor, one processor "
        "(one engine) per checkpoint, torn down before the next; 'actor' = the engine inside the scoring "
        "actor; 'auto' = processor when scoring runs on GPUs (gpus_per_actor > 0), else actor. "
        "Only matters when the resolved backend is vllm",
    )
    resources: ScoringResources = ScoringResources()
    streaming: bool = Field(True, description="score finished cells while other cells still train")
    retention: Literal["all", "best", "none"] = Field("all", description="checkpoint weights kept after scoring")

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

    bootstrap_samples: int = Field(200, ge=20, description="bootstrap replicates over test items (and seeds)")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="interval level")
    seed: int = Field(0, description="seed of the bootstrap draws")
    volume_gain: float = Field(1.0, ge=0, description="start gain per doubling of data to count as responding to volume")
    size_gain: float = Field(1.0, ge=0, description="gain per doubling of parameters to count as responding to size")
    early_saturation_doublings: float = Field(
        2.0, ge=0, description="saturates early: 90% of the gain reached this many doublings before the largest volume"
    )
    require_interval: bool = Field(True, description="a response also needs its interval's lower end above 0")
    extrapolate_from: float = Field(4, gt=1, description="extrapolation check: fit on volumes <= largest / this")
    budget: int | None = Field(None, gt=0, description="the report's recommendation budget; default half the largest curated volume")
    recommend_size: str | None = Field(None, description="size label whose curves the recommender uses; default the largest")
    floor: float = Field(0.1, ge=0, le=1, description="recommender: each ability keeps at least this share of its even split")
    trust_doublings: float = Field(
        1.0, ge=0, description="recommender: a curve is trusted this many doublings past the largest volume, flat beyond"
    )


class RaySpec(_Strict):
    num_cpus: int | None = Field(None, ge=1, description="logical CPUs of a local cluster")
    health_check_interval_s: float = 0.1
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
    seed: int = 0

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


def load_spec(path: str | Path) -> Spec:
    """Parse and validate a spec; relative paths in it are taken from the current directory."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SpecError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not valid UTF-8") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping")
    try:
        return Spec.model_validate(raw)
    except ValidationError as e:
        lines = [
            f"{path}: field '{_field_path(err['loc'])}': {err['msg']}" if err["loc"] else f"{path}: {err['msg']}"
            for err in e.errors()
        ]
        raise SpecError("\n".join(lines)) from None
