"""jobs/progress.py alone: what reaches the person and what goes to the log file."""

import os
import sys

from growthpace.jobs.progress import StudyView, _clock, active, study_view


def test_library_output_goes_to_the_log_and_events_to_the_console(tmp_path, capfd):
    log = tmp_path / "logs" / "ray.log"
    with study_view(log, cells=2, checkpoints=4) as view:
        assert active() is view
        view.capture()
        view.capture()  # once: a second call changes nothing
        with study_view(log) as inner:  # a step inside `run` shares the run's view
            assert inner is view
        os.write(2, b"core_worker.cc:2465: C++ noise\n")
        os.write(1, b"Trial status: 2 PENDING\n")  # pytest swaps sys.stdout/stderr: write to the descriptors
        print("python warning", file=sys.__stderr__, flush=True)
        view.enter_stage("train + score")
        view.labels["c1"] = "nano/curated-10/s0"
        view.cell_trained(view.labels["c1"])
        assert view.train_started is not None and "elapsed, ETA" in view.cells_line()
        view.cell_failed("nano/curated-30/s0", "Traceback (most recent call last):\nValueError: bad")
        view.checkpoint_scored()
    assert active() is None
    out, err = capfd.readouterr()
    assert "noise" not in err + out and "Trial status" not in err + out and "python warning" not in err
    text = log.read_text()
    assert "C++ noise" in text and "Trial status: 2 PENDING" in text and "python warning" in text
    assert f"output: {log}" in err
    assert "trained nano/curated-10/s0: 1/2 cells trained" in err
    assert "cell nano/curated-30/s0 failed" in err and "ValueError: bad" in err
    assert "scored 1/4 checkpoints" in err
    os.write(2, b"after the view\n")  # the descriptors are back
    assert "after the view" in capfd.readouterr().err


def test_status_line_counts_skipped_cells_and_gives_an_eta(tmp_path):
    view = StudyView(tmp_path / "ray.log", cells=4, checkpoints=12)
    view.skipped = 1
    view.train_started = 0.0  # long ago: the ETA scales the time per trained cell by the cells left
    view.trained = 1
    line = view.status()
    assert "2/4 cells trained" in line and "ETA" in line and "0/12 checkpoints scored" in line
    view.failures = 1
    assert "1 failed" in view.status()
    assert _clock(59) == "59s" and _clock(61) == "1m01s"


def test_live_view_on_a_terminal_draws_both_counts(tmp_path):
    from rich.console import Console

    view = StudyView(tmp_path / "ray.log", cells=4, checkpoints=12)
    view.stage, view.trained, view.scored, view.failures = "train", 2, 5, 1
    term = Console(width=120, record=True, force_terminal=True)
    term.print(view._render())
    text = term.export_text()
    assert "[train]" in text and "2/4 cells trained" in text and "5/12 checkpoints scored" in text and "1 failed" in text


def test_a_study_stopped_before_capture_writes_no_log_and_prints_nothing(tmp_path, capfd):
    """A bad spec fails in prepare, before capture(): its error line must stand alone, nothing written."""
    log = tmp_path / "store" / "logs" / "ray.log"
    try:
        with study_view(log) as view:
            assert active() is view
            raise ValueError("field 'data.volumes': bad")
    except ValueError:
        pass
    assert active() is None
    assert not (tmp_path / "store").exists()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_pretrain_stage_counts_bases(tmp_path, capfd):
    log = tmp_path / "logs" / "ray.log"
    with study_view(log, cells=3, checkpoints=3) as view:
        view.capture()
        assert "bases pre-trained" not in view.status()  # a study without pre-training shows no such count
        view.bases_to_pretrain(3, 1)
        view.enter_stage("pretrain")
        view.base_pretrained("mini")
        assert view.status().startswith("[pretrain]  2/3 bases pre-trained  0/3 cells trained")
        view.cell_failed("micro", "RuntimeError: boom", what="pre-training of")
    err = capfd.readouterr().err
    assert "pretrain: 1/3 bases already pre-trained" in err and "stage: pretrain" in err
    assert "pre-trained mini: 2/3 bases pre-trained" in err and "pre-training of micro failed" in err


def test_what_ray_prints_as_it_starts_goes_to_the_log_not_the_terminal(tmp_path, capfd):
    """Issue 28: Ray's token-authentication WARNING opened every `growthpace run` and preceded the one error
    line of a spec the cluster refuses. jobs/cluster.py connect runs ray.init inside progress.held_output: what it prints
    (Python logging and child processes alike write to descriptors 1 and 2) waits for the view's log file."""
    from growthpace.jobs import progress

    with progress.held_output():
        os.write(2, b"WARNING authentication_token_setup.py:85 -- Token authentication is enabled\n")
        print("ray start-up line", file=sys.__stdout__, flush=True)
    out, err = capfd.readouterr()
    assert "Token authentication" not in err + out and "start-up line" not in out
    log = tmp_path / "logs" / "ray.log"
    with study_view(log) as view:
        view.capture()  # a refused spec never gets here: its one error line stays alone
    text = log.read_text()
    assert "Token authentication is enabled" in text and "ray start-up line" in text
    assert progress.take_held_output() == ""  # taken once, its file removed
    assert "Token authentication" not in capfd.readouterr().err


def test_ray_start_up_output_is_shown_when_ray_fails_to_start(capfd):
    from growthpace.jobs import progress

    try:
        with progress.held_output():
            os.write(2, b"raylet failed to start: port in use\n")
            raise RuntimeError("ray.init failed")
    except RuntimeError:
        pass
    assert "raylet failed to start" in capfd.readouterr().err
    assert progress.take_held_output() == ""
