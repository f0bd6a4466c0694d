"""Where every step's output lives, and writes that never leave a torn file.

A cell's outputs live under ``cells/<cell_id>``, and the cell id is a hash of everything that
determines its result (Marin's executor): a finished step is found, never redone, and a changed
input gets a new path instead of a stale result.

Storage is a local folder (a ``Path``; on a cluster an NFS mount every node sees) or an object store
URI (``s3://bucket/study``, ``gs://bucket/study``): a ``Location``, the part of ``pathlib.Path`` this
project uses, over the pyarrow filesystem Ray Train itself persists checkpoints with. Each process
resolves the URI from its own environment (instance role, AWS_* / GOOGLE_* variables, AWS_ENDPOINT_URL
for MinIO and the like), so no credential is ever pickled into a config or a Tune experiment state.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Union

from growthpace.platform.core.identity import stable_hash
from growthpace.platform.core.paths import object_store_uri, safe_name
from growthpace.platform.store.tables import (BASE_SCORES, CELL_SCORES, EPOCH_FILE, PREDICTIONS, RESULT_KEY, SCORES, ResultKey,
                                              epoch_file, table_for)


class CheckpointError(ValueError):
    """A checkpoint that cannot be scored (platform/store/checkpoints.py check_checkpoint): names the checkpoint and the file."""


@lru_cache(maxsize=None)
def _filesystem(scheme: str, bucket: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(f"{scheme}://{bucket}")[0]


class Location:
    """A file or folder in an object store, with the ``pathlib.Path`` methods this project uses.

    Writes are whole-object puts: an object store never shows a torn object, so the atomic
    write-then-rename of local files is not needed (nor available) here.
    """

    def __init__(self, uri: str):
        self.scheme, self.key = object_store_uri(uri)

    # -- pure path arithmetic --------------------------------------------------------------------
    def __truediv__(self, name: str) -> "Location":
        return Location(f"{self.scheme}://{self.key}/{name}")

    def __str__(self) -> str:
        return f"{self.scheme}://{self.key}"

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Location) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: "Location") -> bool:
        return str(self) < str(other)

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def parent(self) -> "Location":
        head = self.key.rsplit("/", 1)[0]
        return Location(f"{self.scheme}://{head}") if "/" in self.key else self

    def with_suffix(self, suffix: str) -> "Location":
        return self.parent / (self.stem + suffix)

    def resolve(self) -> "Location":
        return self

    def expanduser(self) -> "Location":
        return self

    def is_relative_to(self, other) -> bool:
        return isinstance(other, Location) and (self == other or str(self).startswith(str(other) + "/"))

    # -- the store ---------------------------------------------------------------------------------
    @property
    def fs(self):
        return _filesystem(self.scheme, self.key.split("/", 1)[0])

    def _type(self):
        import pyarrow.fs

        return self.fs.get_file_info(self.key).type, pyarrow.fs.FileType

    def exists(self) -> bool:
        t, types = self._type()
        return t != types.NotFound

    def is_file(self) -> bool:
        t, types = self._type()
        return t == types.File

    def is_dir(self) -> bool:
        t, types = self._type()
        return t == types.Directory

    def iterdir(self):
        import pyarrow.fs

        for info in self.fs.get_file_info(pyarrow.fs.FileSelector(self.key, allow_not_found=True)):
            yield Location(f"{self.scheme}://{info.path}")

    def glob(self, pattern: str):
        """One level, like ``Path.glob`` with a pattern without '/'."""
        return (p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern))

    def stat(self):
        info = self.fs.get_file_info(self.key)
        return os.stat_result((0, 0, 0, 0, 0, 0, info.size or 0, 0, int((info.mtime_ns or 0) // 10**9), 0))

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.key) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        with self.fs.open_output_stream(self.key) as f:
            f.write(data)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        self.fs.create_dir(self.key, recursive=True)

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self.exists():
            return
        self.fs.delete_file(self.key)

    def rmtree(self) -> None:
        self.fs.delete_dir(self.key)


StoragePath = Union[Path, Location]


def as_location(path: "str | Path | Location") -> StoragePath:
    """A Location for an object store URI, else a local Path."""
    if isinstance(path, (Path, Location)):
        return path
    if "://" in str(path):
        return Location(str(path))
    return Path(path)


def storage_root(storage: str) -> StoragePath:
    """A spec's ``storage``: an object store ``Location``, or a local folder (``~`` expanded, absolute)."""
    return Location(storage) if "://" in storage else Path(storage).expanduser().resolve()


def is_remote(path: StoragePath) -> bool:
    return isinstance(path, Location)


def size_and_mtime(path: StoragePath) -> tuple[int, int]:
    """(bytes, modification time in ns) of a file; object stores give whole seconds (S3) or better."""
    if isinstance(path, Location):
        info = path.fs.get_file_info(path.key)
        return int(info.size or 0), int(info.mtime_ns or 0)
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def remove_tree(path: StoragePath) -> None:
    if isinstance(path, Location):
        path.rmtree()
    else:
        shutil.rmtree(path)


# ---------------------------------------------------------------- reading back what the study wrote
#
# Every stored file is read through read_json / read_parquet, which check it against the schema its
# name implies: a torn, corrupted or wrong-schema file is a StoredFileError naming the file and the
# command that rebuilds it (exit 2 at the CLI), never a traceback from deep inside a job.


class StoredFileError(ValueError):
    """A file under storage that cannot be read back: names the file, what is wrong and how to rebuild it."""


def rebuild_hint(path: "StoragePath") -> str:
    """What to do about a damaged stored file: which command writes it again."""
    name, parent = path.name, path.parent.name
    if name in (SCORES.name, BASE_SCORES.name):
        return f"delete it and run `growthpace evaluate SPEC`, which rebuilds it from cells/*/{CELL_SCORES.name}"
    if parent == CELL_SCORES.name:
        return (f"delete {path.parent}/{path.stem}.parquet and .json and run `growthpace evaluate SPEC`, "
                "which scores that checkpoint again")
    if parent == PREDICTIONS.name:
        return (f"delete it and {path.parent.parent}/{CELL_SCORES.name}/{path.stem}.* and run `growthpace evaluate SPEC`, "
                "which scores that checkpoint again")
    if name == Layout.CELL_CHECKPOINTS:
        return "delete it and run `growthpace sweep SPEC`: the cell is trained again, resuming from its last epoch checkpoint"
    if name in ("card.json", "train.jsonl"):
        return f"delete {path.parent}/train.jsonl and card.json; `growthpace run SPEC` writes them again"
    if name in ("mlflow.json", "tracking.json"):
        return "delete it; the next `growthpace run` or `growthpace sync SPEC` creates a new MLflow run from storage"
    if parent == "report" or name == "summary.json":
        return "run `growthpace report SPEC` to write the report again"
    return "delete it and run again the command that wrote it"


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_json(name: str, obj: Any) -> None:
    """The schema of the JSON files the study writes, by file name (others: any JSON)."""
    # checkpoints.json and epoch.json: checked by their owner, platform/store/checkpoints.py (read_json's check)
    if name.endswith(".json") and EPOCH_FILE.fullmatch(name.removesuffix(".json")):  # a result's key file
        key = RESULT_KEY
        _need(isinstance(obj, dict) and isinstance(obj.get(key), str) and obj[key], f"expected {{{key}: <result key>}}")
        try:
            ResultKey.parse(obj[key])
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
    elif name == "tracking.json":
        _need(isinstance(obj, dict) and isinstance(obj.get("parent_run_id"), str), "expected {parent_run_id: ...}")
    elif name == "mlflow.json":
        _need(isinstance(obj, dict) and isinstance(obj.get("run_id"), str), "expected {run_id: ...}")
    elif name == "card.json":
        _need(isinstance(obj, dict) and isinstance(obj.get("counts"), dict)
              and all(_is_int(n) for n in obj["counts"].values()), "expected {counts: {ability: integer}}")


def _check_parquet(path: "StoragePath", found, height: int | None, columns=None) -> None:
    """Every column of the table the file's name makes it (platform/store/tables.py), of its kind.
    ``found``: the file's column -> dtype; ``height``: its rows (None: only the schema was read);
    ``columns``: the columns read (only those are checked)."""
    table = table_for(path.name, path.parent.name)
    if table is None:
        return
    import polars as pl

    tests = {"str": lambda t: t in (pl.String, pl.Null), "int": lambda t: t.is_integer(),
             "num": lambda t: t.is_numeric(), "bool": lambda t: t in (pl.Boolean, pl.Null),
             "nums": lambda t: t == pl.Null or (isinstance(t, pl.List) and t.inner.is_numeric())}
    for col, kind in table.columns:
        if columns is not None and col not in columns:
            continue
        _need(col in found, f"column {col!r} is missing")
        _need(tests[kind](found[col]), f"column {col!r} has type {found[col]}, expected {kind}")
    _need(height is None or height > 0, "no rows")  # the study never writes an empty table


def _damaged(path: "StoragePath", e: Exception) -> StoredFileError:
    reason = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
    return StoredFileError(f"{path}: damaged or not the table the study writes ({reason}); {rebuild_hint(path)}")


def check_table(path: "StoragePath", columns: list[str] | None = None) -> None:
    """The pre-flight of a stored table: its footer and schema only (cheap), so a job fails before its
    first write instead of when it reaches the file. ``columns``: only those the reader reads."""
    import polars as pl

    path = as_location(path)
    if isinstance(path, Location):
        read_parquet(path, **({"columns": columns} if columns else {}))
        return
    try:
        _check_parquet(path, dict(pl.read_parquet_schema(path)), None, columns)
    except (OSError, ValueError, pl.exceptions.PolarsError) as e:
        raise _damaged(path, e) from None


def read_parquet(path: StoragePath, **kwargs):
    """A stored table; a torn, corrupted or wrong-schema file is a StoredFileError (rebuild_hint)."""
    import polars as pl

    path = as_location(path)
    try:
        if isinstance(path, Location):
            frame = pl.read_parquet(io.BytesIO(path.read_bytes()), **kwargs)
        else:
            frame = pl.read_parquet(path, **kwargs)
        _check_parquet(path, dict(frame.schema), None if kwargs.get("columns") else frame.height, kwargs.get("columns"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, pl.exceptions.PolarsError) as e:
        raise _damaged(path, e) from None
    return frame


def cache_root() -> Path:
    """Node-local copies of remote folders (model weights to load): GROWTHPACE_CACHE or ~/.cache/growthpace."""
    return Path(os.environ.get("GROWTHPACE_CACHE", Path.home() / ".cache" / "growthpace")).expanduser()


def localize(path: "str | Path | Location") -> Path:
    """A local file or folder with the contents of ``path``: itself when local, else a node-local copy.

    The copy is keyed by the URI and by every file's name, size and modification time, so new
    weights written at the same URI get a new copy and a finished copy is reused.
    """
    path = as_location(path)
    if isinstance(path, Path):
        return path
    import pyarrow.fs

    info = path.fs.get_file_info(path.key)
    if info.type == pyarrow.fs.FileType.File:
        infos = [info]
    else:
        selector = pyarrow.fs.FileSelector(path.key, recursive=True, allow_not_found=True)
        infos = [i for i in path.fs.get_file_info(selector) if i.type == pyarrow.fs.FileType.File]
    if not infos:
        raise FileNotFoundError(f"{path}: no such file or folder, or an empty one")
    signature = stable_hash([str(path), sorted((i.path, i.size, i.mtime_ns) for i in infos)], 16)
    dest = cache_root() / "storage" / signature
    if dest.is_dir():
        return dest / path.name if info.type == pyarrow.fs.FileType.File else dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{signature}."))
    try:
        for i in infos:
            rel = path.name if i.path == path.key else i.path[len(path.key) + 1 :]
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with path.fs.open_input_stream(i.path) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.is_dir():  # another process finishing the same copy first is fine: same bytes
            raise
    return dest / path.name if info.type == pyarrow.fs.FileType.File else dest


def file_sha256(path: "str | Path | Location", h: "hashlib._Hash | None" = None) -> str:
    h = h or hashlib.sha256()
    path = as_location(path)
    opened = path.fs.open_input_stream(path.key) if isinstance(path, Location) else open(path, "rb")
    with opened as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic(path: StoragePath, write) -> None:
    if isinstance(path, Location):  # buffered, then one put: an interrupted write leaves no object
        buf = io.BytesIO()
        write(buf)
        path.write_bytes(buf.getvalue())
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: "str | StoragePath", obj: Any) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
    _atomic(as_location(path), lambda f: f.write(data))


def write_bytes(path: "str | StoragePath", data: bytes) -> None:
    _atomic(as_location(path), lambda f: f.write(data))


def write_parquet(path: "str | StoragePath", frame) -> None:
    """Atomically write a polars DataFrame."""
    _atomic(as_location(path), lambda f: frame.write_parquet(f))


def read_json(path: "str | StoragePath", check: Callable[[Any], None] | None = None) -> Any:
    """A stored JSON file; torn, corrupted or of the wrong schema: a StoredFileError (rebuild_hint).
    ``check``: the schema check of the module that owns the file (a ValueError naming the field), e.g.
    platform/store/checkpoints.py's for checkpoints.json and epoch.json."""
    path = as_location(path)
    data = path.read_bytes()  # a missing file stays FileNotFoundError: callers test for it
    try:
        obj = json.loads(data.decode("utf-8"))
        _check_json(path.name, obj)
        if check is not None:
            check(obj)
    except (UnicodeDecodeError, RecursionError, ValueError) as e:  # JSONDecodeError is a ValueError
        why = "not valid JSON" if isinstance(e, (json.JSONDecodeError, UnicodeDecodeError, RecursionError)) else "wrong schema"
        raise StoredFileError(f"{path}: damaged ({why}: {str(e)[:200] or type(e).__name__}); {rebuild_hint(path)}") from None
    return obj


def upload_tree(local: Path, dest: StoragePath, last: tuple[str, ...] = ()) -> None:
    """Copy a finished local folder to an object store prefix. Files named in ``last`` go up after
    every other file: they are what readers check for, so an interrupted upload is never taken as whole."""
    if not isinstance(dest, Location):
        raise TypeError("upload_tree is for object store destinations")
    if dest.exists():  # a replaced report or model: no file of the old one stays behind
        dest.rmtree()
    files = sorted((p for p in local.rglob("*") if p.is_file()), key=lambda p: (p.name in last, str(p)))
    for f in files:
        target = dest
        for part in f.relative_to(local).parts:
            target = target / part
        with open(f, "rb") as src, dest.fs.open_output_stream(target.key) as out:
            shutil.copyfileobj(src, out, 1 << 20)


class Layout:
    """Paths under a study's storage directory: a local folder or an object store prefix."""

    # Inside one epoch checkpoint (Ray Train's checkpoint_NNNNNN, wherever its list puts it): the HF
    # model evaluation loads, the DeepSpeed state training resumes from, and the epoch it ends.
    CHECKPOINT_MODEL = "model"
    CHECKPOINT_STATE = "deepspeed"
    CHECKPOINT_EPOCH = "epoch.json"
    CHECKPOINT_DIGESTS = "digests.json"  # model/'s content hash and file digests, written with the weights
    # A cell's checkpoint list, written when its training finished (platform/store/checkpoints.py owns
    # its keys, and epoch.json's).
    CELL_CHECKPOINTS = "checkpoints.json"

    @classmethod
    def for_spec(cls, spec) -> "Layout":
        return cls(storage_root(spec.storage))

    def __init__(self, root: "str | StoragePath"):
        self.root = as_location(root)

    @property
    def remote(self) -> bool:
        return isinstance(self.root, Location)

    def cell(self, cell_id: str) -> StoragePath:
        return self.root / "cells" / safe_name(cell_id, "cell id")

    def cell_data(self, cell_id: str) -> StoragePath:
        return self.cell(cell_id) / "train.jsonl"

    def cell_card(self, cell_id: str) -> StoragePath:
        return self.cell(cell_id) / "card.json"

    def cell_tokens(self, cell_id: str) -> StoragePath:
        """The cell's items tokenized once by its base model's tokenizer (what every rank trains on)."""
        return self.cell(cell_id) / "tokens.npz"

    def cell_run(self, cell_id: str) -> StoragePath:
        return self.cell(cell_id) / "mlflow.json"

    def cell_checkpoints(self, cell_id: str) -> StoragePath:
        """Written when a cell's training finished: the rerun marker."""
        return self.cell(cell_id) / self.CELL_CHECKPOINTS

    def cell_scores(self, cell_id: str, epoch: int) -> StoragePath:
        return self.cell(cell_id) / CELL_SCORES.name / epoch_file(epoch, ".parquet")

    def cell_result(self, cell_id: str, epoch: int) -> StoragePath:
        """The result key of one epoch's predictions and scores, written after both: its presence means whole."""
        return self.cell_scores(cell_id, epoch).with_suffix(".json")

    def cell_benchmark(self, cell_id: str, epoch: int, task: str) -> StoragePath:
        """One checkpoint's result on one lm-eval task: its key, metrics and samples (evaluators/benchmark_results.py)."""
        return self.cell(cell_id) / "benchmarks" / epoch_file(epoch, "") / f"{safe_name(task, 'lm-eval task')}.json"

    def cell_predictions(self, cell_id: str, epoch: int) -> StoragePath:
        return self.cell(cell_id) / PREDICTIONS.name / epoch_file(epoch, ".parquet")

    def cell_prediction_files(self, cell_id: str) -> list[StoragePath]:
        return self._epoch_files(self.cell(cell_id) / PREDICTIONS.name)

    def cell_score_files(self, cell_id: str) -> list[StoragePath]:
        return self._epoch_files(self.cell(cell_id) / CELL_SCORES.name)

    @staticmethod
    def _epoch_files(folder: StoragePath) -> list[StoragePath]:
        return sorted(folder.glob("epoch_*.parquet")) if folder.is_dir() else []

    def base_model(self, key: str) -> StoragePath:
        return self.root / "base" / safe_name(key, "base model key")

    def pretrain_tokens(self, key: str) -> StoragePath:
        """A pre-training's corpus tokenized once into its epoch's sequences (platform/train/pretrain.py)."""
        return self.root / "pretrain" / f"{safe_name(key, 'pretrained base key')}.npz"

    def tokenizer(self, key: str) -> StoragePath:
        return self.root / "tokenizer" / safe_name(key, "tokenizer key")

    @property
    def train(self) -> StoragePath:
        return self.root / "train"

    @property
    def tune(self) -> StoragePath:
        return self.root / "tune"

    @property
    def scores(self) -> StoragePath:
        return self.root / SCORES.name

    @property
    def base_scores(self) -> StoragePath:
        return self.root / BASE_SCORES.name

    @property
    def report(self) -> StoragePath:
        return self.root / "report"

    @property
    def tracking(self) -> StoragePath:
        return self.root / "tracking.json"
