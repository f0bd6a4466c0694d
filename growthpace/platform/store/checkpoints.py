"""One epoch checkpoint on disk: what it holds, whether it can be scored, and its content hash.

A checkpoint is the folder Ray Train persisted for one epoch (``train/<cell>/checkpoint_NNNNNN``, or
wherever the cell's ``checkpoints.json`` points), holding the names in ``Layout``::

    model/        HF weights (*.safetensors, maybe sharded with an index), config.json, tokenizer
    deepspeed/    the DeepSpeed state training resumes from
    epoch.json    {"epoch": N, "train_loss": ...}
    digests.json  model/'s content hash and each file's size, time and sha256 (``write_digests``, rank 0,
                  right after the weights): the driver reads it instead of re-reading the weights

platform/train/train.py writes it; evaluation reads it through this module only. The checks read file
headers, never weights, so they cost no download from an object store.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from pathlib import Path

from growthpace.platform.store.storage import (CheckpointError, Layout, Location, StoragePath, as_location, cache_root, file_sha256, read_json, remove_tree, size_and_mtime, write_json)
from growthpace.platform.core.identity import stable_hash

WEIGHT_SUFFIXES = (".safetensors", ".bin")
HASH_SETTLE_NS = 5 * 10**9  # S3 keeps whole seconds; margin for the store's clock against ours


def model_dir(checkpoint: str | StoragePath) -> StoragePath:
    return as_location(checkpoint) / Layout.CHECKPOINT_MODEL


def checkpoint_dtype(model: str | StoragePath) -> str:
    """The dtype a model folder's weights were saved in (config.json ``dtype``, older ``torch_dtype``):
    scoring fp16-trained weights in bf16 adds noise to near-tied perplexity rankings."""
    config = json.loads((as_location(model) / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype") or "float32").removeprefix("torch.")


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
    if recorded is not None:
        return recorded
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
        write_json(memo, {"hash": digest, "hashed_at_ns": started, "checkpoint": str(path)})
    except OSError:
        pass  # a read-only cache only costs the next run a re-hash
    return digest


def check_checkpoint(path: str | StoragePath, *, scored: bool) -> bool:
    """Pre-flight for one checkpoint's model/: config.json parses, a tokenizer is there, every
    safetensors file's header parses and covers the file. True: whole, it can be scored. False: files
    are missing but the epoch was scored (retention deleted them, maybe interrupted part-way), so its
    stored result is final. A missing file before scoring, or a corrupted one, is a CheckpointError."""
    model = model_dir(path)

    def missing(file: StoragePath, why: str = "") -> bool:
        if scored:
            return False
        raise CheckpointError(f"checkpoint {path}: file {file} is missing{why}")

    def corrupted(file: StoragePath, why: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path}: file {file} is corrupted ({why})")

    weights = _weights(model, WEIGHT_SUFFIXES)
    if not weights:
        return missing(model if not model.is_dir() else model / "model.safetensors",
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
    f = Path(model).resolve().parent / Layout.CHECKPOINT_EPOCH
    try:
        return int(json.loads(f.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
