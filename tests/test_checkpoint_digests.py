"""digests.json: the content hash written where the weights are, read by the driver instead of the weights."""

from growthpace.platform.store import checkpoints
from growthpace.platform.store.storage import Layout, read_json


def _checkpoint(root):
    model = root / "ck" / Layout.CHECKPOINT_MODEL
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"a" * 100)
    (model / "config.json").write_text("{}")
    (model / "tokenizer.json").write_text('{"v": 1}')
    return root / "ck", model


def test_digests_give_the_same_hash_without_reading_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("GROWTHPACE_CACHE", str(tmp_path / "cache"))
    ck, model = _checkpoint(tmp_path)
    hashed = checkpoints.checkpoint_hash(ck)  # no digests: read from the files
    written = checkpoints.write_digests(ck)
    assert written == hashed
    files = read_json(ck / Layout.CHECKPOINT_DIGESTS)["files"]
    assert set(files) == {"model.safetensors", "config.json", "tokenizer.json"} and files["model.safetensors"]["bytes"] == 100

    reads = []
    real = checkpoints.file_sha256
    monkeypatch.setattr(checkpoints, "file_sha256", lambda f, h: (reads.append(f.name), real(f, h))[1])
    assert checkpoints.checkpoint_hash(ck) == hashed and reads == []  # from digests.json

    (model / "model.safetensors").write_bytes(b"b" * 101)  # rewritten after the digests: they no longer count
    changed = checkpoints.checkpoint_hash(ck)
    assert changed != hashed and "model.safetensors" in reads

    written = checkpoints.write_digests(ck)
    (model / "model.safetensors").write_bytes(b"c" * 101)  # the same size rewritten in place: its time tells
    assert checkpoints.checkpoint_hash(ck) != changed

    (model / "model.safetensors").unlink()  # retention removed the weights: no hash, digests or not
    assert checkpoints.checkpoint_hash(ck) is None


def test_unreadable_digests_fall_back_to_hashing(tmp_path, monkeypatch):
    monkeypatch.setenv("GROWTHPACE_CACHE", str(tmp_path / "cache"))
    ck, _ = _checkpoint(tmp_path)
    want = checkpoints.write_digests(ck)
    (ck / Layout.CHECKPOINT_DIGESTS).write_text("{not json")
    assert checkpoints.checkpoint_hash(ck) == want
