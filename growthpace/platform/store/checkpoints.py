"""One epoch checkpoint on disk: what it holds, whether it can be scored, and its content hash.

A checkpoint is the folder Ray Train persisted for one epoch (``train/<cell>/checkpoint_NNNNNN``, or
wherever the cell's ``checkpoints.json`` points), holding the names in ``Layout``::

    model/        HF weights (*.safetensors, maybe sharded with an index), config.json, tokenizer
    deepspeed/    the DeepSpeed state training resumes from
    epoch.json    {"epoch": N, "train_loss": ...} (``write_epoch``, rank 0, last; ``read_epoch``)
    digests.json  model/'s content hash and each file's size, time and sha256 (``write_digests``, rank 0,
                  right after the weights): the driver reads it instead of re-reading the weights

platform/train/train.py writes it; evaluation reads it through this module only. The checks read file
headers, never weights, so they cost no download from an object store.

This module also owns a cell's ``checkpoints.json`` (``write_checkpoints`` / ``read_checkpoints``): the
list of its epoch checkpoints and what its training cost, written by jobs/sweep.py when the cell's
training finished (the marker a rerun skips the cell by)::

    {"cell_id": ..., "checkpoints": [{"epoch": N, "path": ..., "train_loss": ...}, ...],
     "wall_s": ..., "compute_s": ..., "setup_s": ..., "imports_s": ..., "gpus": ..., "cpus": ...}

Both files' keys are the constants below and are spelled nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from growthpace.platform.store.storage import (CheckpointError, Layout, Location, StoragePath, _is_int, _need, as_location, cache_root, file_sha256, read_json, remove_tree, size_and_mtime, write_json)
from growthpace.platform.core.identity import stable_hash

WEIGHT_SUFFIXES = (".safetensors", ".bin")
HASH_SETTLE_NS = 5 * 10**9  # S3 keeps whole seconds; margin for the store's clock against ours

# ---------------------------------------------------------------- checkpoints.json and epoch.json
# Where they are is Layout's (cell_checkpoints, CHECKPOINT_EPOCH); what is in them is here.
CHECKPOINTS_FILENAME = Layout.CELL_CHECKPOINTS  # cells/<id>/checkpoints.json
EPOCH_FILENAME = Layout.CHECKPOINT_EPOCH  # <checkpoint>/epoch.json
# checkpoints.json
CELL_ID = "cell_id"
CHECKPOINTS = "checkpoints"  # the list of entries, one per epoch checkpoint, by epoch
WALL_S = "wall_s"  # the cell's last fit(), seconds (a resumed cell counts only its last attempt)
COMPUTE_S = "compute_s"  # of which the epochs (platform/train/train.py train_cell's metrics, same names)
SETUP_S = "setup_s"  # the train function before the first epoch
IMPORTS_S = "imports_s"  # the worker process before the train function
TIMING = (COMPUTE_S, SETUP_S, IMPORTS_S)
GPUS = "gpus"  # what the trial held: workers x GPUs each
CPUS = "cpus"  # driver CPUs + workers x CPUs each
# an entry of checkpoints.json's list, and epoch.json
EPOCH = "epoch"
PATH = "path"  # a checkpoints.json entry only: where the checkpoint is (a URI on an object store)
TRAIN_LOSS = "train_loss"


@dataclass(frozen=True)
class CheckpointRef:
    """One epoch checkpoint of a cell, as its checkpoints.json lists it."""

    cell_id: str
    epoch: int
    path: str  # the checkpoint folder (model/, deepspeed/, epoch.json): a local path or an object store URI
    train_loss: float | None = None


@dataclass(frozen=True)
class CellCheckpoints:
    """A cell's checkpoints.json: its epoch checkpoints and what its training held and took."""

    cell_id: str
    checkpoints: tuple[CheckpointRef, ...]
    wall_s: float | None = None
    gpus: float | None = None
    cpus: float | None = None
    timing: Mapping[str, float] = field(default_factory=dict)  # TIMING keys the training reported


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_checkpoints(obj: Any) -> None:
    """checkpoints.json's schema: every field a reader uses (read_json's check: a ValueError names it)."""
    _need(isinstance(obj, dict) and isinstance(obj.get(CHECKPOINTS), list), f"expected {{{CHECKPOINTS}: [...]}}")
    _need(obj.get(CELL_ID) is None or isinstance(obj[CELL_ID], str), f"{CELL_ID}: expected a string, got {obj.get(CELL_ID)!r}")
    for i, ck in enumerate(obj[CHECKPOINTS]):
        where = f"{CHECKPOINTS}[{i}]"
        _need(isinstance(ck, dict), f"{where}: expected an object")
        _need(_is_int(ck.get(EPOCH)) and ck[EPOCH] >= 0, f"{where}.{EPOCH}: expected an integer, got {ck.get(EPOCH)!r}")
        _need(isinstance(ck.get(PATH), str) and ck[PATH], f"{where}.{PATH}: expected a path, got {ck.get(PATH)!r}")
        loss = ck.get(TRAIN_LOSS)
        _need(loss is None or _is_number(loss), f"{where}.{TRAIN_LOSS}: expected a number, got {loss!r}")
    for key in (WALL_S, *TIMING, GPUS, CPUS):
        _need(obj.get(key) is None or _is_number(obj[key]), f"{key}: expected a number, got {obj.get(key)!r}")


def write_checkpoints(layout: Layout, cell: CellCheckpoints) -> None:
    """A cell's checkpoints.json (jobs/sweep.py, when its training finished: the rerun marker)."""
    entries = []
    for ck in cell.checkpoints:
        if ck.cell_id != cell.cell_id:
            raise ValueError(f"checkpoint {ck.path} is of cell {ck.cell_id}, not {cell.cell_id}")
        entries.append({EPOCH: ck.epoch, **({TRAIN_LOSS: ck.train_loss} if ck.train_loss is not None else {}),
                        PATH: ck.path})
    unknown = set(cell.timing) - set(TIMING)
    if unknown:
        raise ValueError(f"{CHECKPOINTS_FILENAME}: timing {sorted(unknown)} is not one of {TIMING}")
    optional = {WALL_S: cell.wall_s, **cell.timing, GPUS: cell.gpus, CPUS: cell.cpus}
    write_json(layout.cell_checkpoints(cell.cell_id), {
        CELL_ID: cell.cell_id, CHECKPOINTS: entries, **{k: v for k, v in optional.items() if v is not None},
    })


def read_checkpoints(layout: Layout, cell_id: str) -> CellCheckpoints:
    """A cell's checkpoints.json (entries in the stored order: by epoch); a torn or malformed file is a CheckpointError
    naming it and the field (a missing one stays FileNotFoundError: ``layout.cell_checkpoints`` tests it)."""
    marker = layout.cell_checkpoints(cell_id)
    try:
        obj = read_json(marker, check=_check_checkpoints)
    except ValueError as e:  # a StoredFileError: names the file, the field and the command that rebuilds it
        raise CheckpointError(f"{marker}: corrupted checkpoint list ({e})") from None
    refs = tuple(CheckpointRef(cell_id, ck[EPOCH], ck[PATH], None if ck.get(TRAIN_LOSS) is None else float(ck[TRAIN_LOSS]))
                 for ck in obj[CHECKPOINTS])

    def number(key: str) -> float | None:
        return None if obj.get(key) is None else float(obj[key])

    return CellCheckpoints(cell_id, refs, wall_s=number(WALL_S), gpus=number(GPUS), cpus=number(CPUS),
                           timing={k: float(obj[k]) for k in TIMING if obj.get(k) is not None})


def write_epoch(checkpoint: str | StoragePath, epoch: int, train_loss: float) -> None:
    """A checkpoint's epoch.json (platform/train/train.py, rank 0, after everything else of the checkpoint)."""
    (as_location(checkpoint) / EPOCH_FILENAME).write_bytes(json.dumps({EPOCH: epoch, TRAIN_LOSS: train_loss}).encode())


def _check_epoch(obj: Any) -> None:
    _need(isinstance(obj, dict), f"expected {{{EPOCH}: ...}}")
    _need(_is_int(obj.get(EPOCH)) and obj[EPOCH] >= 0, f"{EPOCH}: expected an integer, got {obj.get(EPOCH)!r}")


def read_epoch(checkpoint: str | StoragePath) -> int:
    """The epoch a checkpoint folder ends (its epoch.json); damaged: a StoredFileError naming the file and
    the field, missing: FileNotFoundError."""
    return int(read_json(as_location(checkpoint) / EPOCH_FILENAME, check=_check_epoch)[EPOCH])


def model_dir(checkpoint: str | StoragePath) -> StoragePath:
    return as_location(checkpoint) / Layout.CHECKPOINT_MODEL


def checkpoint_dtype(model: str | StoragePath) -> str:
    """The dtype a model folder's weights were saved in (config.json ``dtype``, older ``torch_dtype``):
    scoring fp16-trained weights in bf16 adds noise to near-tied perplexity rankings."""
    config = json.loads((as_location(model) / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype") or "float32").removeprefix("torch.")


def _weights(model: StoragePath, suffixes: tuple[str, ...]) -> list[StoragePath]:
    return sorted(p for p in model.glob("*") if p.suffix in suffixes and p.is_file()) if model.is_dir() else []


def _hashed_files(model: StoragePath) -> list[StoragePath] | None:
    """The files the content hash covers, in order; None once the weights were deleted."""
    files = _weights(model, (*WEIGHT_SUFFIXES, ".json"))
    return files if any(p.suffix in WEIGHT_SUFFIXES for p in files) else None


class _Both:
    """Feeds each block to the checkpoint's hash and to the file's own (one read of every byte)."""

    def __init__(self, whole, one):
        self.whole, self.one = whole, one

    def update(self, block: bytes) -> None:
        self.whole.update(block)
        self.one.update(block)

    def hexdigest(self) -> str:
        return self.one.hexdigest()


def _content_hash(files: list[StoragePath]) -> tuple[str, dict[str, dict]]:
    """(the checkpoint's content hash, name -> {bytes, sha256})."""
    whole = hashlib.sha256()
    per_file = {}
    for f in files:
        whole.update(f.name.encode())
        size, mtime = size_and_mtime(f)
        per_file[f.name] = {"bytes": size, "mtime_ns": mtime, "sha256": file_sha256(f, _Both(whole, hashlib.sha256()))}
    return whole.hexdigest()[:16], per_file


def write_digests(checkpoint: str | StoragePath) -> str:
    """Where the weights are written (rank 0, before the checkpoint is reported): model/'s content
    hash and file digests into digests.json beside it, so scoring 500 checkpoints does not re-read
    every weight byte over the network. Returns the hash."""
    ck = as_location(checkpoint)
    files = _hashed_files(ck / Layout.CHECKPOINT_MODEL)
    if files is None:
        raise CheckpointError(f"{ck / Layout.CHECKPOINT_MODEL}: no weights to digest")
    digest, per_file = _content_hash(files)
    write_json(ck / Layout.CHECKPOINT_DIGESTS, {"hash": digest, "files": per_file})
    return digest


def _from_digests(checkpoint: str | StoragePath, files: list[StoragePath]) -> str | None:
    """The hash digests.json recorded, when it lists exactly these files at these sizes and modification
    times: weights rewritten in place later (same names, same size) have a newer time and are read again."""
    try:
        seen = read_json(as_location(checkpoint) / Layout.CHECKPOINT_DIGESTS)
        listed = {name: (int(f["bytes"]), int(f["mtime_ns"])) for name, f in seen["files"].items()}
        if listed == {f.name: tuple(size_and_mtime(f)) for f in files}:
            return str(seen["hash"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # absent or unreadable: hash the files
    return None


def checkpoint_hash(path: str | StoragePath) -> str | None:
    """Content hash of a checkpoint's weights and config; None once its weights were deleted. From
    digests.json when it matches the files (names, sizes and times), else by reading them."""
    model = model_dir(path)
    files = _hashed_files(model)
    if files is None:
        return None
    recorded = _from_digests(path, files)
    return recorded if recorded is not None else model_hash(model)


def model_hash(model: str | StoragePath) -> str | None:
    """Content hash of an HF model folder's weights and config (a checkpoint's model/, or an untuned base
    folder, which has no digests.json); None when it holds no weights."""
    model = as_location(model)
    files = _hashed_files(model)
    if files is None:
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
    digest = _content_hash(files)[0]
    try:
        write_json(memo, {"hash": digest, "hashed_at_ns": started, "checkpoint": str(model)})
    except OSError:
        pass  # a read-only cache only costs the next run a re-hash
    return digest


def check_checkpoint(path: str | StoragePath, *, scored: bool, model: str | StoragePath | None = None) -> bool:
    """Pre-flight for one checkpoint's model/: config.json parses, a tokenizer is there, every
    safetensors file's header parses and covers the file. True: whole, it can be scored. False: files
    are missing but the epoch was scored (retention deleted them, maybe interrupted part-way), so its
    stored result is final. A missing file before scoring, or a corrupted one, is a CheckpointError.
    ``model``: the model folder itself when it is not ``path``/model (`growthpace benchmark` MODEL_DIR)."""
    own_folder = model is not None
    model = model_dir(path) if model is None else as_location(model)

    def missing(file: StoragePath, why: str = "") -> bool:
        if scored:
            return False
        raise CheckpointError(f"checkpoint {path}: file {file} is missing{why}")

    def corrupted(file: StoragePath, why: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path}: file {file} is corrupted ({why})")

    weights = _weights(model, WEIGHT_SUFFIXES)
    if not weights:
        return missing(model if not model.is_dir() else model / "model.safetensors",
                       " (a model folder holds *.safetensors or *.bin weights)" if own_folder else
                       " and this epoch has no stored scores (restore the file or retrain the cell)")
    config = model / "config.json"
    if not config.is_file():
        return missing(config)
    try:
        obj = json.loads(config.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise corrupted(config, f"not valid JSON: {e}") from None
    if not isinstance(obj, dict) or "model_type" not in obj:
        raise corrupted(config, "no model_type")
    if not any((model / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return missing(model / "tokenizer.json", " (no tokenizer)")
    index = model / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_bytes().decode("utf-8"))["weight_map"].values())
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise corrupted(index, str(e)) from None
        for shard in sorted(shards):
            if not (model / shard).is_file():
                return missing(model / shard, f" (listed in {index.name})")
    for w in weights:
        if w.stat().st_size == 0:
            raise corrupted(w, "empty")
        if w.suffix == ".safetensors" and isinstance(w, Location):
            problem = safetensors_problem(w)  # header only: no weights are downloaded to check them
            if problem:
                raise corrupted(w, problem)
        elif w.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(w), framework="numpy"):
                    pass
            except Exception as e:  # SafetensorError: a header that does not parse or a truncated file
                raise corrupted(w, str(e)) from None
    return True


def safetensors_problem(w: Location) -> str | None:
    """The safetensors checks on an object: the header parses and its tensors end where the file ends.
    Reads the 8-byte length and the header alone (ranged reads), never the weights."""
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


def remove_weights(path: str | StoragePath) -> list[str]:
    """Delete a checkpoint's model and resume state (retention); its epoch.json stays. Returns what went."""
    removed = []
    for sub in (Layout.CHECKPOINT_MODEL, Layout.CHECKPOINT_STATE):
        d = as_location(path) / sub
        if d.exists():
            remove_tree(d)
            removed.append(str(d))
    return removed


def model_folder(path: str | Path) -> Path:
    """The HF model folder: ``path`` itself, or ``path/model`` for a checkpoint folder."""
    path = Path(path)
    for d in (path, path / Layout.CHECKPOINT_MODEL):
        if (d / "config.json").is_file():
            return d
    raise FileNotFoundError(f"{path}: no model here (no config.json, nor {Layout.CHECKPOINT_MODEL}/config.json)")


def epoch_of(model: str | Path) -> int | None:
    """The epoch of a checkpoint's model folder (from its checkpoint's epoch.json), when it is one."""
    try:
        return read_epoch(Path(model).resolve().parent)
    except (OSError, ValueError):
        return None
