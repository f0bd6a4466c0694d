"""The study spec's schema: pydantic models, every field typed and bounded, errors naming the field.

Reading a spec file (YAML, line numbers, checks across fields and on disk) is data/specfile.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, field_validator, model_validator

from growthpace.platform.core.abilities import ABILITIES, EVAL_SPLITS, MAX_ABILITIES, OOD_SUBJECTS, PER_ITEM
from growthpace.platform.core.items import KINDS
from growthpace.platform.core.formulation import CHOICE_TARGETS, FORMULATIONS
from growthpace.platform.core.abilities import WORLD
from growthpace.platform.core.paths import SAFE_NAME, PathError, object_store_uri
from growthpace.platform.core.presets import PRESETS


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


# The allowed values of the engine settings, named once: the schema, the engine factory
# (evaluators/engines.py) and the CLI read them here.
BACKENDS: tuple[str, ...] = ("auto", "vllm", "transformers")
PIPELINES: tuple[str, ...] = ("auto", "processor", "actor")
# The processor pipeline's engine (ray.data.llm) loads weights by path on its own node.
PROCESSOR_NEEDS_A_FILESYSTEM = ("evaluation.vllm_pipeline: 'processor' needs storage on a filesystem every node mounts "
                                "(its engine loads weights by path); with an object store use 'actor' or 'auto'")


class SpecError(ValueError):
    """A bad spec: the message names the file and the field."""


# YAML's `true` is not 1 and `10.0` is not an item count: integers are strict (a bool or a float is an
# error, not a silent 1), floats refuse bools, and no float may be inf or NaN (allow_inf_nan below).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Count = Annotated[int, Strict(), Field(ge=1)]
Beta = Annotated[float, Strict(), Field(ge=0, lt=1)]
Bool = Annotated[bool, Strict()]
# A custom Ray resource amount (training workers and scoring actors alike): Ray refuses a negative one
# only when the actor starts, after the training; `true` is not 1.
Amount = Annotated[float, Strict(), Field(ge=0)]


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
    custom: dict[str, Amount] = Field({}, description="custom Ray resources per worker, e.g. {gpu_141g: 1} to pin a node type")
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
    custom: dict[str, Amount] | None = Field(None, description="custom Ray resources per scoring actor of this size")
    concurrency: Int | None = Field(None, ge=1, description="scoring actors (warm engines) of this size; default "
                                                            "evaluation.concurrency")


class ScoringResources(_Strict):
    """Where scoring actors run: their own node group, apart from the training nodes, and per model size."""

    accelerator_type: str | None = Field(None, min_length=1, description="accelerator of the scoring nodes (Ray's names)")
    custom: dict[str, Amount] = Field({}, description="custom Ray resources per scoring actor, e.g. {scoring_node: 1}")
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
    sources: list[str] | None = Field(
        None, description="which cells this model trains: names of data.sources and 'mix' (default: every source "
        "and mix of the grid)"
    )
    training: ModelTraining = ModelTraining()
    pretrain: Pretrain | None = Field(None, description="pre-train the base on a text corpus before the cells")
    chat: Literal["study", "template"] = Field(
        "study", description="the chat format cells train and are scored in: 'study' adds the study's tokens "
        "(<user> <assistant> <eot>, embeddings grown); 'template' uses the tokenizer's own chat template, no token "
        "added (an HF model's only)")

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[str] | None) -> list[str] | None:
        return v if v is None else _unique(v, "sources")

    @field_validator("chat")
    @classmethod
    def _template_needs_an_hf_model(cls, v: str, info) -> str:
        if v == "template" and info.data.get("name") in PRESETS:
            raise ValueError(f"preset {info.data['name']!r} has no chat template (its tokenizer is trained by the "
                             "project, with the study's tokens): use chat: study, or an HF model that has one")
        return v

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
    def _non_negative(cls, caps: dict[str, int]) -> dict[str, int]:
        # which abilities a cap may name is the spec's declaration: Spec._abilities_known checks it
        for ability, n in caps.items():
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
        # the DoIT preset's counts (a declared study reads its files): plan without the data is DoIT's
        missing = [a for a in ABILITIES if a not in v]
        if missing:
            raise ValueError(f"missing abilities {missing}")
        unknown = [a for a in v if a not in ABILITIES]
        if unknown:
            raise ValueError(f"unknown ability {unknown[0]!r}; expected one of {', '.join(ABILITIES)}")
        return Mix._non_negative(v)

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


class AbilitySpec(_Strict):
    """One declared ability, as an lm-evaluation-harness task declares itself: a name, how its items are
    scored (`kind`, the harness's output_type), the random baseline its scores are read against, and
    the formulation its choice items are put in. Nothing is inferred from the name."""

    name: str = Field(min_length=1, max_length=64, pattern=SAFE_NAME,
                      description="letters, digits, '_', '.', '-' (a safe file name: tables, MLflow metrics, plots)")
    kind: Literal[(*KINDS, PER_ITEM)] = Field(
        description="question kind of every item (choice, true_false, cloze, perplexity, math, multi_select), "
        "or per_item: each item's own `kind` field")
    baseline: Float | None = Field(None, ge=0, le=1, description="random-baseline expected score (0-1) of every "
                                   "item; default the kind's rule (1/options for choice, 0.5 true/false, ...)")
    formulation: Literal[FORMULATIONS] | None = Field(
        None, description="how this ability's choice and true/false items are put to the model; default "
        "evaluation.formulation")

    _safe_name = field_validator("name")(_not_dots)


class OodSetSpec(AbilitySpec):
    """A declared out-of-domain set: items of an ability the study never trains, scored on every
    checkpoint like a test split, whose change with instruction data is finding (iii)'s transfer."""

    file: str = Field(min_length=1, description="its items, a file under data.root in the study's layout "
                      "(messages: chat JSONL, every line of this set; doit: a DoIT JSON list)")


class SourceSpec(_Strict):
    """A named source of training items: its own file (or folder) of chat JSONL and its own volumes."""

    name: str = Field(min_length=1, max_length=64, pattern=SAFE_NAME)
    train: str | None = Field(None, min_length=1, description="file or folder under data.root (layout: messages); "
                              "default the DoIT layout's folder of this source")
    volumes: list[Int] | None = Field(None, min_length=1, description="default data.volumes")
    labeled: Bool = Field(True, description="false: an unlabeled pool (DoIT's synthetic): a volume is a total of "
                          "items drawn from the whole pool, not an even spread over abilities")

    _safe_name = field_validator("name")(_not_dots)

    @field_validator("volumes")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        return DataSpec._positive(v)


class DataSpec(_Strict):
    root: str = Field(min_length=1, description="dataset root (the study's layout)")
    generate: Generate | None = Field(None, description="build the embedded procedural dataset at root")
    hub: Hub | None = Field(None, description="fetch the public dataset to root when it is missing")
    declared: Declared | None = Field(None, description="counts `plan` uses when root is missing")
    train_split: Literal["1000", "full"] = "full"
    layout: Literal["doit", "messages"] = Field(
        "doit", description="doit: DoIT's folders (curated/<split>/<ability>_<split>.json, synthetic/<N>/, ood/); "
        "messages: chat-JSONL files named per split (valid, test) and per source (sources[].train)")
    ability_field: str | None = Field(None, min_length=1, description="layout messages: the field of each line that "
                                      "names its ability; default the name of the file it sits in (<ability>.jsonl)")
    valid: str | None = Field(None, min_length=1, description="layout messages: valid items, a file or folder under root")
    test: str | None = Field(None, min_length=1, description="layout messages: test items, a file or folder under root")
    sources: list[Annotated[str, Field(min_length=1, max_length=64, pattern=SAFE_NAME)] | SourceSpec] = Field(
        ["curated"], description="DoIT's curated / synthetic, or named sources with their own files "
        "and volumes")
    compare: list[tuple[str, str]] | None = Field(None, description="pairs of sources the report compares; default every pair")
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
        return Mix._non_negative(caps)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("at least one seed")
        return _unique(v, "seeds")

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list) -> list:
        _unique([s if isinstance(s, str) else s.name for s in v], "sources")
        return v

    @property
    def source_names(self) -> list[str]:
        return [s if isinstance(s, str) else s.name for s in self.sources]

    def source(self, name: str) -> SourceSpec:
        """A source with every default resolved: DoIT's curated is labeled, its synthetic pool is not and
        takes synthetic_volumes."""
        for s in self.sources:
            if not isinstance(s, str) and s.name == name:
                return s if s.volumes is not None else s.model_copy(update={"volumes": list(self.volumes)})
        if name not in self.source_names:
            raise KeyError(name)
        # built from fields already validated; an empty grid is named later (specfile: "zero cells")
        if name == "synthetic":
            return SourceSpec.model_construct(name=name, train=None, labeled=False,
                                              volumes=list(self.synthetic_volumes or self.volumes))
        return SourceSpec.model_construct(name=name, train=None, labeled=True, volumes=list(self.volumes))

    def volumes_field(self, name: str) -> str:
        """The spec field a source's volumes come from (for errors)."""
        for i, s in enumerate(self.sources):
            if not isinstance(s, str) and s.name == name and s.volumes is not None:
                return f"data.sources[{i}].volumes"
        return "data.synthetic_volumes" if name == "synthetic" and self.synthetic_volumes else "data.volumes"

    @property
    def primary_source(self) -> str:
        """The labeled source whose curves the analysis fits and mixes draw from: the first one."""
        return next((n for n in self.source_names if self.source(n).labeled), "curated")

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
    resume_every_s: Float | None = Field(
        None, ge=0, description="write an epoch's DeepSpeed resume state (12-14 bytes/param, 6-7x its weights) only "
        "once this many seconds of training have passed since the last one, and never after the last epoch: a "
        "failure loses at most about this much training (a cell with no state yet restarts from scratch). 0 = after "
        "every epoch but the last. Default: Young's interval sqrt(2 x the state's write time at storage_write_gib_s "
        "x failure_every_h), e.g. 66 min for 7b ZeRO-2 and 2.2 h for 33b ZeRO-3 at 1 GiB/s and 24 h")
    failure_every_h: Float = Field(
        24.0, gt=0, description="assumed mean time between failures of one trial (node loss, preemption), hours: "
        "sets the default resume_every_s")
    storage_write_gib_s: Float = Field(
        1.0, gt=0, description="write bandwidth of one trial's node to `storage`, GiB/s: `plan` turns checkpoint "
        "bytes into seconds of I/O and the GPU-hours that wait for them; it also sets the default resume_every_s")
    max_concurrent_trials: Int = Field(2, ge=1)
    choice_target: Literal[CHOICE_TARGETS] = Field(
        "letter", description="the reply a choice item is trained on: 'letter' (the study's: `B`), 'letter_text' "
        "(the option's line: `B. heart`) or 'cloze' (the question without its options, the reply `heart`; "
        "platform/core/formulation.py); part of the cell's items and id")

    def epochs_for(self, volume: int | None) -> int:
        if volume is not None and volume in self.epochs_by_volume:
            return self.epochs_by_volume[volume]
        return self.epochs


class Benchmarks(_Strict):
    """lm-evaluation-harness tasks scored on every checkpoint (docs/benchmarks.md)."""

    tasks: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="lm-eval task or group names (built-in, or defined in include_path)")
    num_fewshot: Int | None = Field(None, ge=0, description="few-shot examples; default each task's own (0 if none)")
    limit: Int | None = Field(None, ge=1, description="score only the first N docs of each task")
    include_path: list[str] = Field([], description="folders of the user's own task YAMLs (relative to the working directory)")

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, v: list[str]) -> list[str]:
        return _unique(v, "tasks")

    @field_validator("include_path")
    @classmethod
    def _absolute(cls, v: list[str]) -> list[str]:
        # the scoring actors load the tasks too, from another working directory
        return [str(Path(p).expanduser().absolute()) for p in v]


class EvaluationSpec(_Strict):
    splits: list[Literal["valid", "test"]] = list(EVAL_SPLITS)
    ood: Bool = True
    batch_size: Int = Field(64, ge=1)
    warmup_epochs: Int | None = Field(None, ge=0, description="select epochs after this; default 5, or a third of short runs")
    concurrency: Int = Field(1, ge=1, description="scoring actors")
    max_new_tokens: dict[str, Count] = Field({}, description="per question kind, caps the scorer's default limit")
    backend: Literal[BACKENDS] = "auto"
    gpus_per_actor: Float = Field(0.0, ge=0, description="GPUs per scoring actor (vLLM on GPU nodes)")
    min_kv_cache_gib: Float = Field(
        16.0, ge=0, description="KV cache per GPU a scoring engine should have beside its weights; `plan` warns "
        "when a size's engine would have less on the card its scoring is pinned to (evaluation.resources.by_size)")
    vllm_pipeline: Literal[PIPELINES] = Field(
        "auto",
        description="how a vllm backend scores: 'processor' = ray.data.llm vLLMEngineProcessor, one processor "
        "(one engine) per checkpoint, torn down before the next; 'actor' = the engine inside the scoring "
        "actor, kept warm across checkpoints (each next one's weights loaded in place); 'auto' = actor. "
        "Only matters when the resolved backend is vllm",
    )
    resources: ScoringResources = ScoringResources()
    streaming: Bool = Field(True, description="score finished cells while other cells still train")
    retention: Literal["all", "best", "none"] = Field("all", description="checkpoint weights kept after scoring")
    benchmarks: Benchmarks | None = Field(None, description="lm-evaluation-harness tasks on every checkpoint (needs the benchmarks extra)")
    formulation: Annotated[list[Literal[FORMULATIONS]], BeforeValidator(_one_or_list)] = Field(
        ["letter"], min_length=1,
        description="how choice and true/false items are put to the model (docs/scoring.md): 'letter' (the "
        "study's rule), 'option' (the option lines ranked by perplexity, options shown) or 'cloze' (OLMES's cloze "
        "formulation: the question without its options, the option texts ranked), or a list of them: the first "
        "is the primary (selection, tables, fits), the others are scored and reported beside it")

    @field_validator("formulation")
    @classmethod
    def _unique_formulations(cls, v: list[str]) -> list[str]:
        return _unique(v, "formulations")

    @field_validator("splits")
    @classmethod
    def _valid_selects(cls, v: list[str]) -> list[str]:
        # the best epoch is chosen on valid scores (core/selection.py), for the report and for retention
        # 'best': without them the selection is empty and the report fails after the whole study
        if "valid" not in v:
            raise ValueError(f"{v} has no 'valid': every cell's epoch is selected on its valid scores (and "
                             "evaluation.retention: best keeps that epoch); add 'valid'")
        return _unique(v, "splits")

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
    experiment: str = Field("growthpace", description="MLflow experiment name")

    @field_validator("experiment")
    @classmethod
    def _named(cls, v: str) -> str:
        if not v.strip():  # MLflow refuses it, but only at the first tracking call
            raise ValueError(f"{v!r}: an MLflow experiment needs a name")
        return v


class AnalysisSpec(_Strict):
    """Growth-pace analysis (report, `growthpace recommend`); model selection's warm-up stays in evaluation.

    Thresholds are in score points (0-100); docs/analysis.md explains each number and class.
    """

    bootstrap_samples: Int = Field(200, ge=20, description="bootstrap replicates over test items (and seeds)")
    confidence: Float = Field(0.95, gt=0.5, lt=1, description="interval level")
    seed: Int = Field(0, ge=0, description="seed of the bootstrap draws (numpy takes no negative seed)")
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
    cluster_file: str | None = Field(
        None, min_length=1, description="the cluster.yaml the cluster was launched from: its worker node types are "
        "what the pre-flight counts on the autoscaler to add; default ~/ray_bootstrap_config.yaml when it exists "
        "(the copy `ray up` leaves on the head), else only the nodes present count")
    driver_resources: dict[str, Annotated[float, Strict(), Field(gt=0)]] = Field(
        {}, description="custom Ray resources each trial's driver asks for besides its CPUs, e.g. {trial_driver: 1} "
        "with only the head node declaring trial_driver: drivers (and Ray Train's controllers, which follow them) "
        "then stay on the head, and a lost worker node costs only the epoch in flight (docs/cluster.md)")


class Spec(_Strict):
    name: str = Field(min_length=1, pattern=SAFE_NAME)
    storage: str = Field(min_length=1)
    abilities: list[AbilitySpec] | None = Field(
        None, min_length=1, max_length=MAX_ABILITIES,
        description="the study's abilities and how each is scored; absent: the DoIT preset (its ten abilities, "
        "kinds from each item's type and gold)")

    ood: list[OodSetSpec] = Field(
        [], max_length=MAX_ABILITIES,
        description="a declared study's out-of-domain sets (DoIT's preset has its three exam subjects)")

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

    @field_validator("abilities")
    @classmethod
    def _distinct_abilities(cls, v: list[AbilitySpec] | None) -> list[AbilitySpec] | None:
        # names become file names: on a case-insensitive filesystem two that differ in case are one file
        seen: dict[str, str] = {}
        for a in v or []:
            if a.name.lower() in seen:
                raise ValueError(f"abilities {seen[a.name.lower()]!r} and {a.name!r} differ only in case; "
                                 "they would be one file on a case-insensitive filesystem")
            seen[a.name.lower()] = a.name
        return v

    @property
    def declared(self) -> bool:
        """True when the spec declares its abilities; False: the DoIT preset."""
        return self.abilities is not None

    @property
    def ability_names(self) -> tuple[str, ...]:
        return ABILITIES if self.abilities is None else tuple(a.name for a in self.abilities)

    @property
    def ood_subjects(self) -> tuple[str, ...]:
        """Out-of-domain sets: DoIT's three subjects, or the declared study's `ood` sets."""
        return OOD_SUBJECTS if self.abilities is None else tuple(o.name for o in self.ood)

    @property
    def source_pairs(self) -> list[tuple[str, str]]:
        """The pairs of sources the report compares (a minus b): data.compare, else every pair of a
        declared study's sources, else DoIT's curated against synthetic."""
        if self.data.compare is not None:
            return [tuple(p) for p in self.data.compare]
        if not self.declared:
            return [("curated", "synthetic")]
        names = self.data.source_names
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]

    def ability(self, name: str) -> AbilitySpec | None:
        """A declared ability or OOD set; None for the DoIT preset (its kinds follow items.question_kind's rule)."""
        return next((a for a in [*(self.abilities or []), *self.ood] if a.name == name), None)

    @field_validator("storage")
    @classmethod
    def _storage_location(cls, v: str) -> str:
        if "://" in v:
            try:
                object_store_uri(v)
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
            raise ValueError(f"{PROCESSOR_NEEDS_A_FILESYSTEM} (storage is {self.storage})")
        return self

    @property
    def data_root(self) -> Path:
        return Path(self.data.root).expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        # an object store needs tracking.uri (checked above), so the default store is a local file
        return self.tracking.uri or f"sqlite:///{Path(self.storage).expanduser().resolve() / 'mlflow.db'}"
