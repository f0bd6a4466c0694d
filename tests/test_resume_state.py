"""Resume state (DeepSpeed files): dropped without touching an epoch's weights; where a restart resumes from."""


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


def test_a_restart_resumes_from_the_newest_committed_state():
    from growthpace.platform.train.train import resume_point

    # states after epochs 2 and 4 (4 supersedes 2); 5 and 6 committed without: load 4, retrain 5-6 unsaved
    committed = [(1, False), (2, False), (3, False), (4, True), (5, False), (6, False)]
    assert resume_point(committed, 15) == (3, 6)
    assert resume_point([(1, False), (2, True)], 15) == (1, 2)  # the newest has it: nothing redone


def test_a_restart_before_any_state_starts_from_scratch():
    from growthpace.platform.train.train import resume_point

    assert resume_point([], 15) == (None, 0)
    assert resume_point([(1, False), (2, False)], 15) == (None, 2)  # epochs 1-2 retrained, not saved again


def test_a_finished_cell_loads_its_last_checkpoint_whose_state_may_be_gone():
    from growthpace.platform.train.train import resume_point

    assert resume_point([(1, True), (2, False), (3, False)], 3) == (2, 3)


def test_has_resume_state(tmp_path):
    import pyarrow.fs

    from growthpace.platform.train.train import RESUME_STATE, has_resume_state

    fs = pyarrow.fs.LocalFileSystem()
    (tmp_path / "a" / RESUME_STATE).mkdir(parents=True)
    (tmp_path / "b" / "model").mkdir(parents=True)
    assert has_resume_state(fs, str(tmp_path / "a")) and not has_resume_state(fs, str(tmp_path / "b"))
