"""Score every epoch checkpoint of every trained cell through one Ray Data pipeline.

Rows are checkpoints; a scoring actor loads one checkpoint at a time into an inference backend,
scores it on every eval set, and drops the engine before the next. What comes back are predictions,
one row per item (prompt, reply, letter log-probs, candidate NLLs, parsed answer, verdict, baseline);
the driver writes them and the scores derived from them as they stream in.

Results are keyed by (checkpoint content hash, eval set hash, scorer version): a finished key is never
recomputed, and weights changed at the same path get a new key, so they are scored again.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import Progress

from growthpace.evaluators.scoring import SCORER_VERSION
from growthpace.platform.cells import Cell
from growthpace.platform.records import Record
from growthpace.platform.storage import (  # noqa: F401 - CheckpointError is this module's error
    CheckpointError,
    Layout,
    Location,
    StoragePath,
    as_location,
    cache_root,
    file_sha256,
    localize,
    StoredFileError,
    read_json,
    read_parquet,
    rebuild_hint,
    remove_tree,
    size_and_mtime,
    stable_hash,
    write_json,
    write_parquet,
)

console = Console(stderr=True)
PREDICTION_COLUMNS = [
    "split", "ability", "idx", "kind", "prompt", "text", "letter_logprobs", "candidate_nll",
    "parsed", "correct", "expected",
]


HASH_SETTLE_NS = 5 * 10**9  # S3 keeps whole seconds; margin for the store's clock against ours


def eval_set_hash(sets: dict[tuple[str, str], list[Record]], limits: dict[str, int]) -> str:
    items = [[s, a, [r.to_json() for r in recs]] for (s, a), recs in sorted(sets.items())]
    return stable_hash([items, sorted(limits.items())], 16)


def checkpoint_hash(path: str | StoragePath) -> str | None:
    """Content hash of a checkpoint's weights and config; None once its weights were deleted."""
    model = as_location(path) / "model"
    files = sorted(p for p in model.glob("*") if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        return None
    # Hashing reads every weight byte (tens of GB per checkpoint of a 33b model, from the object store
    # when storage is one), so a node-local memo keeps each hash under the files' names, sizes and
    # modification times. As git does with racy timestamps, a memo counts only for files last modified
    # well before it was hashed: a rewrite within the store's mtime resolution is never missed.
    stats = [(f.name, *size_and_mtime(f)) for f in files]
    memo = cache_root() / "hashes" / f"{stable_hash([str(model), stats], 32)}.json"
    try:
        seen = read_json(memo)
        if max(m for _, _, m in stats) < seen["hashed_at_ns"] - HASH_SETTLE_NS:
            return seen["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    started = time.time_ns()
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        file_sha256(f, h)
    digest = h.hexdigest()[:16]
    try:
        write_json(memo, {"hash": digest, "hashed_at_ns": started, "checkpoint": str(path)})
    except OSError:
        pass  # a read-only cache only costs the next run a re-hash
    return digest


def checkpoint_list(layout: Layout, cell_id: str) -> list[dict]:
    """The entries of a cell's checkpoints.json; a torn or malformed file is a CheckpointError naming it."""
    marker = layout.cell_checkpoints(cell_id)
    try:
        entries = read_json(marker)["checkpoints"]
        if not isinstance(entries, list) or not all(isinstance(c, dict) and "epoch" in c and "path" in c for c in entries):
            raise ValueError("expected a list of {epoch, path}")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{marker}: corrupted checkpoint list ({e})") from None
    return entries


def check_checkpoint(path: str | StoragePath, *, scored: bool) -> bool:
    """Pre-flight for one checkpoint's model/: config.json parses, a tokenizer is there, every
    safetensors file's header parses and covers the file. True: whole, it can be scored. False: files
    are missing but the epoch was scored (retention deleted them, maybe interrupted part-way), so its
    stored result is final. A missing file before scoring, or a corrupted one, is a CheckpointError."""
    model = as_location(path) / "model"

    def missing(file: StoragePath, why: str = "") -> bool:
        if scored:
            return False
        raise CheckpointError(f"checkpoint {path}: file {file} is missing{why}")

    weights = sorted(p for p in model.glob("*") if p.suffix in (".safetensors", ".bin") and p.is_file()) if model.is_dir() else []
    if not weights:
        return missing(model if not model.is_dir() else model / "model.safetensors",
                       " and this epoch has no stored scores (restore the file or retrain the cell)")
    config = model / "config.json"
    if not config.is_file():
        return missing(config)
    try:
        obj = json.loads(config.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: file {config} is corrupted (not valid JSON: {e})") from None
    if not isinstance(obj, dict) or "model_type" not in obj:
        raise CheckpointError(f"checkpoint {path}: file {config} is corrupted (no model_type)")
    if not any((model / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return missing(model / "tokenizer.json", " (no tokenizer)")
    index = model / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_bytes().decode("utf-8"))["weight_map"].values())
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"checkpoint {path}: file {index} is corrupted ({e})") from None
        for shard in sorted(shards):
            if not (model / shard).is_file():
                return missing(model / shard, f" (listed in {index.name})")
    from safetensors import safe_open

    for w in weights:
        if w.stat().st_size == 0:
            raise CheckpointError(f"checkpoint {path}: file {w} is corrupted (empty)")
        if w.suffix == ".safetensors" and isinstance(w, Location):
            problem = safetensors_problem(w)  # header only: no weights are downloaded to check them
            if problem:
                raise CheckpointError(f"checkpoint {path}: file {w} is corrupted ({problem})")
        elif w.suffix == ".safetensors":
            try:
                with safe_open(str(w), framework="numpy"):
                    pass
            except Exception as e:  # SafetensorError: a header that does not parse or a truncated file
                raise CheckpointError(f"checkpoint {path}: file {w} is corrupted ({e})") from None
    return True


def safetensors_problem(w: Location) -> str | None:
    """The safetensors checks on an object: the header parses and its tensors end where the file ends.
    Reads the 8-byte length and the header alone (ranged reads), never the weights."""
    import struct

    size = w.stat().st_size
    with w.fs.open_input_file(w.key) as f:
        head = f.read_at(8, 0)
        if len(head) < 8:
            return "shorter than a safetensors header"
        n = struct.unpack("<Q", head)[0]
        if n > min(size - 8, 100 * 2**20):
            return f"header length {n} does not fit the file ({size} bytes)"
        try:
            header = json.loads(f.read_at(n, 8).decode("utf-8"))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            return f"header does not parse: {e}"
    if 8 + n + end != size:
        return f"tensors end at byte {8 + n + end}, the file has {size}"
    return None


def check_checkpoints(cells: list[Cell], layout: Layout) -> int:
    """Pre-flight of every trained cell's checkpoints (before anything is written); returns how many."""
    n = 0
    for cell in cells:
        if not layout.cell_checkpoints(cell.cell_id).exists():
            continue
        for ck in checkpoint_list(layout, cell.cell_id):
            check_checkpoint(ck["path"], scored=stored_key(layout, cell.cell_id, ck["epoch"]) is not None)
            n += 1
    return n


def result_key(ck_hash: str, set_hash: str) -> str:
    return f"{ck_hash}-{set_hash}-{SCORER_VERSION}"


def stored_key(layout: Layout, cell_id: str, epoch: int) -> str | None:
    meta = layout.cell_scores(cell_id, epoch).with_suffix(".json")
    return read_json(meta)["key"] if meta.exists() else None


def flatten_sets(sets: dict[tuple[str, str], list[Record]]) -> tuple[list[tuple[str, str]], list[Record]]:
    """Every eval item in one list, with its (split, ability): the order predictions come back in."""
    keys, flat = [], []
    for key, records in sets.items():
        keys += [key] * len(records)
        flat += records
    return keys, flat


def prediction_rows(cell_id, epoch, key, backend: str, keys: list[tuple[str, str]], flat: list[Record], preds) -> dict[str, list]:
    """One checkpoint's prediction rows (columns as lists), scored; both scoring pipelines build them here."""
    from growthpace.evaluators.scoring import question_kind, score

    out: dict[str, list] = {c: [] for c in ["cell_id", "epoch", "key", "backend", *PREDICTION_COLUMNS]}
    for (split, ability), r, p in zip(keys, flat, preds):
        v = score(r, p)
        row = {
            "cell_id": str(cell_id), "epoch": int(epoch), "key": str(key), "backend": backend,
            "split": split, "ability": ability, "idx": r.idx, "kind": question_kind(r),
            "prompt": r.prompt[-1][1], "text": p.text,
            "letter_logprobs": json.dumps(p.letter_logprobs) if p.letter_logprobs else None,
            "candidate_nll": list(p.candidate_nll) if p.candidate_nll else None,
            "parsed": v.parsed, "correct": bool(v.correct), "expected": float(v.expected),
        }
        for c, x in row.items():
            out[c].append(x)
    return out


class CheckpointScorer:
    """A Ray Data actor: checkpoints in, one prediction row per item out."""

    def __init__(self, sets: dict[tuple[str, str], list[Record]], backend: str, batch_size: int, limits: dict[str, int]):
        self.sets = sets
        self.backend = backend
        self.batch_size = batch_size
        self.limits = limits

    def __call__(self, batch: dict) -> dict:
        import torch

        from growthpace.evaluators.backends import load
        from growthpace.evaluators.checkpoint import predict

        torch.set_num_threads(1)
        keys, flat = flatten_sets(self.sets)
        out: dict[str, list] = {c: [] for c in ["cell_id", "epoch", "key", "backend", *PREDICTION_COLUMNS]}
        for cell_id, epoch, path, key in zip(batch["cell_id"], batch["epoch"], batch["path"], batch["key"]):
            engine = load(self.backend, localize(as_location(path) / "model"), self.batch_size)
            preds = predict(engine, flat, self.limits)
            engine.close()
            for c, xs in prediction_rows(cell_id, epoch, key, self.backend, keys, flat, preds).items():
                out[c] += xs
        return out


def scores_from_predictions(preds: pl.DataFrame) -> pl.DataFrame:
    """Per (cell, epoch, split, ability): score and random baseline in percent, item count."""
    return (
        preds.group_by(["cell_id", "epoch", "split", "ability"], maintain_order=True)
        .agg(
            score=pl.col("correct").cast(pl.Float64).mean() * 100,
            expected=pl.col("expected").mean() * 100,
            items=pl.len().cast(pl.Int64),
        )
    )


def _store(layout: Layout, cell_id: str, epoch: int, key: str, preds: pl.DataFrame) -> pl.DataFrame:
    """Predictions, then scores, then the key file last: a key on disk means both files are whole."""
    scores = scores_from_predictions(preds)
    write_parquet(layout.cell_predictions(cell_id, epoch), preds)
    write_parquet(layout.cell_scores(cell_id, epoch), scores)
    write_json(layout.cell_scores(cell_id, epoch).with_suffix(".json"), {"key": key, "backend": preds["backend"][0]})
    return scores


def plan_scoring(cells: list[Cell], layout: Layout, set_hash: str) -> tuple[list[dict], int]:
    """(checkpoints whose current key has no stored result, number already scored)."""
    todo, done = [], 0
    for cell in cells:
        marker = layout.cell_checkpoints(cell.cell_id)
        if not marker.exists():
            continue
        for ck in checkpoint_list(layout, cell.cell_id):
            have = stored_key(layout, cell.cell_id, ck["epoch"])
            whole = check_checkpoint(ck["path"], scored=have is not None)  # files gone before scoring: an error
            ck_hash = checkpoint_hash(ck["path"]) if whole else None
            if ck_hash is None:  # weights removed by retention after scoring: the stored result is final
                done += 1
                continue
            key = result_key(ck_hash, set_hash)
            if have == key:
                done += 1
            else:
                todo.append({"cell_id": cell.cell_id, "epoch": ck["epoch"], "path": ck["path"], "key": key})
    return todo, done


def evaluate(
    cells: list[Cell],
    layout: Layout,
    sets: dict[tuple[str, str], list[Record]],
    *,
    backend: str,
    batch_size: int,
    concurrency: int,
    limits: dict[str, int] | None = None,
    num_gpus: float = 0.0,
    on_scored=None,
    pipeline: str = "actor",
    remote_args: dict | None = None,
) -> tuple[int, int]:
    """Score every checkpoint without a current result; returns (scored, skipped).
    ``pipeline="processor"`` with the vllm backend scores through ray.data.llm (evaluate_with_processor).
    ``remote_args``: the scoring actors' node group (jobs/placement.py scoring_remote_args)."""
    import ray.data

    limits = limits or {}
    todo, done = plan_scoring(cells, layout, eval_set_hash(sets, limits))
    if not todo:
        return 0, done
    if backend == "vllm" and pipeline == "processor":
        return evaluate_with_processor(
            todo, layout, sets, batch_size=batch_size, limits=limits, num_gpus=num_gpus, on_scored=on_scored,
            concurrency=concurrency, remote_args=remote_args,
        ), done
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items(todo, override_num_blocks=len(todo)).map_batches(
        CheckpointScorer,
        fn_constructor_kwargs={"sets": sets, "backend": backend, "batch_size": batch_size, "limits": limits},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(concurrency, len(todo))),
        num_cpus=1,
        num_gpus=num_gpus,
        **(remote_args or {}),
    )
    with Progress(transient=True, console=console) as progress:
        task = progress.add_task(f"scoring checkpoints ({backend})", total=len(todo))
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            frame = pl.from_pandas(batch)
            for (cell_id, epoch, key), part in frame.group_by(["cell_id", "epoch", "key"], maintain_order=True):
                scores = _store(layout, cell_id, epoch, key, part)
                if on_scored:
                    on_scored(cell_id, epoch, scores)
                progress.advance(task)
    return len(todo), done


def rescore(cells: list[Cell], layout: Layout, sets: dict[tuple[str, str], list[Record]], limits: dict[str, int]) -> int:
    """Re-apply the current scorers to stored predictions (no model is run); returns files rescored."""
    from growthpace.evaluators.scoring import Prediction, score

    by_key = {(s, a, r.idx): r for (s, a), recs in sets.items() for r in recs}
    set_hash = eval_set_hash(sets, limits)
    n = 0
    for cell in cells:
        folder = layout.cell(cell.cell_id) / "predictions"
        for f in sorted(folder.glob("epoch_*.parquet")) if folder.is_dir() else []:
            preds = read_parquet(f)
            rows = preds.to_dicts()
            for row in rows:
                record = by_key.get((row["split"], row["ability"], row["idx"]))
                if record is None:
                    raise StoredFileError(f"{f}: item {row['split']}/{row['ability']}/{row['idx']} is not in the eval sets "
                                          f"(they changed since it was scored); {rebuild_hint(f)}")
                p = Prediction(
                    text=row["text"] or "",
                    letter_logprobs=json.loads(row["letter_logprobs"]) if row["letter_logprobs"] else None,
                    candidate_nll=tuple(row["candidate_nll"]) if row["candidate_nll"] is not None else None,
                )
                v = score(record, p)
                row.update(parsed=v.parsed, correct=bool(v.correct), expected=float(v.expected))
            ck_hash = rows[0]["key"].split("-")[0]
            key = result_key(ck_hash, set_hash)
            new = pl.DataFrame(rows, schema=preds.schema).with_columns(key=pl.lit(key))
            _store(layout, cell.cell_id, int(rows[0]["epoch"]), key, new)
            n += 1
    return n


def apply_retention(cell: Cell, layout: Layout, policy: str, best_epoch: int | None) -> list[str]:
    """Delete checkpoint weights after scoring: keep `all`, the `best` validation epoch, or `none`."""
    if policy == "all":
        return []
    removed = []
    for ck in read_json(layout.cell_checkpoints(cell.cell_id))["checkpoints"]:
        if policy == "best" and ck["epoch"] == best_epoch:
            continue
        if stored_key(layout, cell.cell_id, ck["epoch"]) is None:
            continue  # never delete what has not been scored
        if not as_location(ck["path"]).resolve().is_relative_to(layout.root.resolve()):
            console.print(f"[yellow]warning:[/] {ck['path']}: outside storage {layout.root}; not deleted")
            continue  # a checkpoint list never makes the study delete outside its storage
        for sub in ("model", "deepspeed"):
            d = as_location(ck["path"]) / sub
            if d.exists():
                remove_tree(d)
                removed.append(str(d))
    return removed


def best_valid_epoch(layout: Layout, cell: Cell, warmup: int) -> int | None:
    frames = [read_parquet(f) for f in sorted((layout.cell(cell.cell_id) / "scores").glob("epoch_*.parquet"))]
    if not frames:
        return None
    valid = pl.concat(frames).filter((pl.col("split") == "valid") & (pl.col("epoch") > warmup))
    if valid.is_empty():
        return None
    best = valid.group_by("epoch").agg(pl.col("score").mean()).sort(["score", "epoch"], descending=[True, False])
    return int(best["epoch"][0])


def collect_scores(cells: list[Cell], layout: Layout) -> pl.DataFrame:
    """scores.parquet: one row per (cell, epoch, split, ability), with the cell's settings."""
    frames = []
    for cell in cells:
        folder = layout.cell(cell.cell_id) / "scores"
        files = sorted(folder.glob("epoch_*.parquet")) if folder.is_dir() else []
        if not files:
            continue
        params = cell.params()
        meta = {k: params[k] for k in ("model", "size", "source", "volume", "mix", "seed", "epochs")}
        part = pl.concat([read_parquet(f) for f in files])
        frames.append(part.with_columns(**{k: pl.lit(v) for k, v in meta.items()}))
    if not frames:
        return pl.DataFrame()
    out = pl.concat(frames, how="vertical_relaxed").sort(["cell_id", "epoch", "split", "ability"])
    write_parquet(layout.scores, out)
    return out


def evaluate_with_processor(
    todo: list[dict],
    layout: Layout,
    sets: dict[tuple[str, str], list[Record]],
    *,
    batch_size: int,
    limits: dict[str, int] | None = None,
    num_gpus: float = 0.0,
    max_length: int = 1024,
    on_scored=None,
    concurrency: int = 1,
    remote_args: dict | None = None,
) -> int:
    """The `processor` pipeline: the checkpoints of ``todo`` (rows of plan_scoring), each through its own
    ray.data.llm vLLM processor (one engine, gone before that checkpoint's result is stored), up to
    ``concurrency`` checkpoints at once (one engine each, e.g. one per GPU); the same prediction rows,
    files and ``on_scored`` calls as the actor pipeline, written from this thread. Returns how many
    checkpoints were scored."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from growthpace.evaluators.llm_processor import predict_with_processor

    keys, flat = flatten_sets(sets)
    for ck in todo:
        if "://" in str(ck["path"]):
            raise ValueError(f"{ck['path']}: the processor pipeline loads checkpoints by path from a filesystem "
                             "every node mounts; set evaluation.vllm_pipeline: actor for object-store storage")

    def one(ck: dict):
        return predict_with_processor(Path(ck["path"]) / "model", flat, limits or {}, batch_size=batch_size,
                                      gpus=num_gpus, max_length=max_length, remote_args=remote_args)

    with Progress(transient=True, console=console) as progress, ThreadPoolExecutor(max(1, concurrency)) as pool:
        task = progress.add_task("scoring checkpoints (vllm, ray.data.llm processor)", total=len(todo))
        futures = {pool.submit(one, ck): ck for ck in todo}
        for done in as_completed(futures):
            ck = futures[done]
            part = pl.DataFrame(prediction_rows(ck["cell_id"], ck["epoch"], ck["key"], "vllm", keys, flat, done.result()))
            scores = _store(layout, ck["cell_id"], ck["epoch"], ck["key"], part)
            if on_scored:
                on_scored(ck["cell_id"], ck["epoch"], scores)
            progress.advance(task)
    return len(todo)


if __name__ == "__main__":
    from growthpace.cli import main_for

    main_for("evaluate")
