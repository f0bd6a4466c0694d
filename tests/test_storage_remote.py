"""Storage in an object store: Location and the storage helpers against a real S3 API server on
127.0.0.1 (moto_server), through the same pyarrow filesystem Ray Train persists checkpoints with."""

import json
import os
from pathlib import Path

import polars as pl
import pytest

from growthpace.platform.store import storage
from growthpace.platform.store.storage import Layout, Location, as_location, localize, read_json, write_json
from growthpace.platform.core.paths import PathError

from .servers import S3Server


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    storage._filesystem.cache_clear()
    yield server
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    storage._filesystem.cache_clear()


@pytest.fixture
def root(s3, request):
    return Location(f"s3://{s3.bucket}/{request.node.name.replace('[', '-').replace(']', '')}")


def test_path_arithmetic_without_a_server():
    p = Location("s3://bucket//a/b/epoch_001.parquet")
    assert str(p) == "s3://bucket/a/b/epoch_001.parquet" and p.name == "epoch_001.parquet"
    assert p.suffix == ".parquet" and p.stem == "epoch_001"
    assert str(p.with_suffix(".json")) == "s3://bucket/a/b/epoch_001.json"
    assert str(p.parent) == "s3://bucket/a/b" and p.parent / "c" == Location("s3://bucket/a/b/c")
    assert p.is_relative_to(Location("s3://bucket/a")) and not p.is_relative_to(Location("s3://bucket/a/bb"))
    assert not p.is_relative_to(Path("/a"))
    assert isinstance(as_location("gs://b/x"), Location) and as_location("/tmp/x") == Path("/tmp/x")
    for bad in ("s3://", "ftp://host/x", "s3://b/../x", "s3://b/./x"):
        with pytest.raises(PathError):
            Location(bad)
    with pytest.raises(PathError):  # Layout keeps its safe-name rule for cell ids in an object store too
        Layout("s3://bucket/study").cell("../other")


def test_json_parquet_and_listing(root):
    layout = Layout(root)
    assert layout.remote and not layout.cell_checkpoints("c1").exists()
    marker = {"checkpoints": [{"epoch": 1, "path": "train/c1/checkpoint_000000", "train_loss": 2.5}]}
    write_json(layout.cell_checkpoints("c1"), marker)
    assert read_json(layout.cell_checkpoints("c1")) == marker
    frame = pl.DataFrame({"epoch": [1, 2], "score": [10.0, 20.0]})
    folder = layout.cell("c1") / "tables"  # not scores/: the study's own tables are schema-checked on read
    for e in (2, 1):
        storage.write_parquet(folder / f"epoch_{e:03d}.parquet", frame)
    assert folder.is_dir() and not folder.is_file() and layout.cell_checkpoints("c1").is_file()
    files = sorted(folder.glob("epoch_*.parquet"))
    assert [f.name for f in files] == ["epoch_001.parquet", "epoch_002.parquet"]
    assert storage.read_parquet(files[0]).equals(frame)
    assert storage.read_parquet(files[0], columns=["score"])["score"].to_list() == [10.0, 20.0]
    assert files[0].stat().st_size > 0
    storage.remove_tree(layout.cell("c1"))
    assert not layout.cell("c1").exists() and list(layout.cell("c1").glob("*")) == []


def test_file_sha256_matches_local(root, tmp_path):
    data = os.urandom(3 * 2**20 + 17)
    (tmp_path / "w.bin").write_bytes(data)
    storage.write_bytes(root / "w.bin", data)
    assert storage.file_sha256(root / "w.bin") == storage.file_sha256(tmp_path / "w.bin")


def test_localize_copies_once_and_sees_new_bytes(root, tmp_path, monkeypatch):
    monkeypatch.setenv("GROWTHPACE_CACHE", str(tmp_path / "cache"))
    storage.write_bytes(root / "model" / "config.json", b'{"model_type": "llama"}')
    storage.write_bytes(root / "model" / "sub" / "w.bin", b"1234")
    local = localize(root / "model")
    assert (local / "config.json").read_bytes() == b'{"model_type": "llama"}'
    assert (local / "sub" / "w.bin").read_bytes() == b"1234"
    assert localize(root / "model") == local  # a finished copy is reused
    one = localize(root / "model" / "sub" / "w.bin")
    assert one.name == "w.bin" and one.read_bytes() == b"1234"
    storage.write_bytes(root / "model" / "sub" / "w.bin", b"12345")  # new weights at the same URI
    fresh = localize(root / "model")
    assert fresh != local and (fresh / "sub" / "w.bin").read_bytes() == b"12345"
    assert localize(tmp_path) == tmp_path  # local paths are used in place
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        localize(root / "missing")


def test_upload_tree_puts_the_marker_last_and_replaces(root, tmp_path):
    src = tmp_path / "report"
    (src / "img").mkdir(parents=True)
    (src / "index.html").write_text("<html>")
    (src / "a.png").write_bytes(b"png")
    (src / "img" / "b.png").write_bytes(b"png2")
    written = []
    real = Location.fs.fget

    class Spy:
        def __init__(self, fs):
            self.fs = fs

        def open_output_stream(self, key):
            written.append(key.rsplit("/", 1)[-1])
            return self.fs.open_output_stream(key)

        def __getattr__(self, name):
            return getattr(self.fs, name)

    dest = root / "report"
    storage.write_bytes(dest / "stale.png", b"old")
    try:
        Location.fs = property(lambda self: Spy(real(self)))
        storage.upload_tree(src, dest, last=("index.html",))
    finally:
        Location.fs = property(real)
    assert written[-1] == "index.html" and sorted(written) == ["a.png", "b.png", "index.html"]
    assert sorted(p.name for p in dest.iterdir()) == ["a.png", "img", "index.html"]
    assert (dest / "img" / "b.png").read_bytes() == b"png2"


def _safetensors(tmp_path) -> bytes:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.ones(4, 4)}, tmp_path / "m.safetensors")
    return (tmp_path / "m.safetensors").read_bytes()


def test_safetensors_header_check_reads_no_weights(root, tmp_path):
    from growthpace.platform.store.checkpoints import safetensors_problem

    good = _safetensors(tmp_path)
    storage.write_bytes(root / "good.safetensors", good)
    storage.write_bytes(root / "cut.safetensors", good[:-10])
    storage.write_bytes(root / "junk.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"0" * 64)
    storage.write_bytes(root / "tiny.safetensors", b"\x01")
    assert safetensors_problem(root / "good.safetensors") is None
    assert "the file has" in safetensors_problem(root / "cut.safetensors")
    assert "does not parse" in safetensors_problem(root / "junk.safetensors")
    assert "shorter" in safetensors_problem(root / "tiny.safetensors")


def test_checkpoint_checks_and_hash_in_the_store(root, tmp_path):
    """The evaluate pre-flight and the content key work on a checkpoint that lives in the store."""
    from growthpace.platform.store.checkpoints import check_checkpoint, checkpoint_hash
    from growthpace.platform.store.storage import CheckpointError

    ck = root / "checkpoint_000001"
    storage.write_bytes(ck / "model" / "model.safetensors", _safetensors(tmp_path))
    storage.write_bytes(ck / "model" / "config.json", json.dumps({"model_type": "llama"}).encode())
    with pytest.raises(CheckpointError, match="no tokenizer"):
        check_checkpoint(str(ck), scored=False)
    storage.write_bytes(ck / "model" / "tokenizer.json", b"{}")
    assert check_checkpoint(str(ck), scored=False) is True
    h = checkpoint_hash(str(ck))
    assert h and checkpoint_hash(str(ck)) == h
    storage.write_bytes(ck / "model" / "model.safetensors", _safetensors(tmp_path)[:-4])
    with pytest.raises(CheckpointError, match="corrupted"):
        check_checkpoint(str(ck), scored=False)
    assert checkpoint_hash(str(ck)) != h  # changed weights at the same URI get a new key


def test_checkpoint_hash_memo_rereads_nothing_once_weights_settled(tmp_path, monkeypatch):
    import time

    from growthpace.platform.store import checkpoints

    monkeypatch.setenv("GROWTHPACE_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "ck" / "model"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"a" * 100)
    (model / "config.json").write_text("{}")
    reads = []
    real = checkpoints.file_sha256
    monkeypatch.setattr(checkpoints, "file_sha256", lambda f, h: (reads.append(f.name), real(f, h))[1])
    first = checkpoints.checkpoint_hash(tmp_path / "ck")
    assert checkpoints.checkpoint_hash(tmp_path / "ck") == first and len(reads) == 4  # just written: memo not trusted
    old = time.time() - 60
    for f in model.iterdir():
        os.utime(f, (old, old))
    reads.clear()
    assert checkpoints.checkpoint_hash(tmp_path / "ck") == first and reads  # new times: hashed again, memo written
    reads.clear()
    assert checkpoints.checkpoint_hash(tmp_path / "ck") == first and reads == []  # settled: from the memo
    (model / "model.safetensors").write_bytes(b"b" * 100)  # same size, new bytes
    assert checkpoints.checkpoint_hash(tmp_path / "ck") != first
