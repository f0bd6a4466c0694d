"""Resume state (DeepSpeed files) is dropped without touching an epoch's weights."""


def test_dropping_resume_state_keeps_the_weights(tmp_path):
    import pyarrow.fs

    from growthpace.platform.train.train import RESUME_STATE, drop_resume_state_at

    ck = tmp_path / "checkpoint_x"
    (ck / RESUME_STATE / "state").mkdir(parents=True)
    (ck / RESUME_STATE / "state" / "optim_states.pt").write_bytes(b"x" * 100)
    (ck / "model").mkdir()
    (ck / "model" / "model.safetensors").write_bytes(b"w")
    fs = pyarrow.fs.LocalFileSystem()
    assert drop_resume_state_at(fs, str(ck)) is True
    assert not (ck / RESUME_STATE).exists() and (ck / "model" / "model.safetensors").exists()
    assert drop_resume_state_at(fs, str(ck)) is False  # already gone: a rerun of the cleanup is harmless
