"""The study's console: one progress view, and everything the libraries print sent to a log file.

Ray (Tune's trial tables, Train's controller, Data, the core worker's C++ warnings), DeepSpeed, MLflow and
transformers all write to this process's stdout/stderr, some from C++ where no Python setting reaches. So,
while a study runs, file descriptors 1 and 2 point at ``<storage>/logs/ray.log`` and only ``console``
(a duplicate of the terminal's stderr) reaches the person: the stage, cells trained n/N with elapsed
time and ETA, checkpoints scored n/M, failures with their full error. On a terminal that is a live rich
view; elsewhere (CI, `ray job submit` logs) one plain line per event.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console

# Every growthpace message goes through this console; StudyView points it at the terminal it saved.
console = Console(stderr=True)

_active: StudyView | None = None


def active() -> StudyView | None:
    return _active


# What a library printed while output was held (ray.init's token-authentication notice, its start-up
# warnings: jobs/cluster.py connect): the study's log file takes it once the view captures the libraries'
# output, so the terminal shows growthpace's own lines, and a spec the cluster refuses its one error line.
_held: Path | None = None


@contextlib.contextmanager
def held_output():
    """File descriptors 1 and 2 point at a private file for the duration (Python logging and the child
    processes started meanwhile alike), unless the view already sends them to its log. If the block
    fails, what it printed goes to the terminal after all."""
    global _held
    if _active is not None and _active._saved:
        yield
        return
    folder = Path(tempfile.gettempdir()) / "growthpace"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"held-{os.getpid()}.log"
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    failed = True
    try:
        yield
        failed = False
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        if failed:
            sys.stderr.write(path.read_text(errors="replace"))
            path.unlink(missing_ok=True)
        else:
            _held = path
            atexit.register(take_held_output)  # no view took it (a refused spec): leave no file behind


def take_held_output() -> str:
    """What was printed while output was held, once (StudyView.capture writes it into the log)."""
    global _held
    if _held is None:
        return ""
    path, _held = _held, None
    try:
        text = path.read_text(errors="replace")
        path.unlink()
    except OSError:
        return ""
    return text


def log_path(layout, name: str) -> Path:
    """Where a study's library output goes: under its storage, or a local folder for object-store storage."""
    if layout.remote:
        return Path(tempfile.gettempdir()) / "growthpace" / name / "logs" / "ray.log"
    return Path(layout.root) / "logs" / "ray.log"


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class StudyView:
    """Counts what the study did and shows it; ``with StudyView(...)`` owns the process's stdout/stderr."""

    def __init__(self, log: Path, cells: int = 0, checkpoints: int = 0):
        self.log = log
        self.cells, self.checkpoints = cells, checkpoints
        self.trained = self.skipped = self.scored = self.failures = 0
        self.bases = self.pretrained = 0  # bases to pre-train (models[].pretrain), and those done
        self.stage = "prepare"
        self.started = time.monotonic()
        self.train_started: float | None = None
        self.train_ended: float | None = None  # the last cell's end: the elapsed time stops there
        self._lock = threading.Lock()
        self._live = None
        self._saved: list[int] = []
        self._last_scored_line = 0.0
        self.labels: dict[str, str] = {}  # cell_id -> the label a person reads
        self._said: set[str] = set()

    # -- counting -------------------------------------------------------------------------------------
    def set_totals(self, cells: int, checkpoints: int) -> None:
        self.cells, self.checkpoints = cells, checkpoints
        self._refresh()

    def enter_stage(self, stage: str) -> None:
        with self._lock:
            self.stage = stage
            if stage.startswith("train") and self.train_started is None:
                self.train_started = time.monotonic()
        self._event(f"stage: {stage}")

    def bases_to_pretrain(self, total: int, done: int) -> None:
        self.bases, self.pretrained = total, done
        if done:
            self._event(f"pretrain: {done}/{total} bases already pre-trained")

    def base_pretrained(self, size: str) -> None:
        with self._lock:
            self.pretrained += 1
        self._event(f"pre-trained {size}: {self.pretrain_line()}")

    def pretrain_line(self) -> str:
        return f"{self.pretrained}/{self.bases} bases pre-trained"

    def cells_skipped(self, n: int) -> None:
        self.skipped = n
        if n:
            self._event(f"cells: {n} already trained, skipped")

    def cell_trained(self, label: str) -> None:
        with self._lock:
            self.trained += 1
            if self.trained + self.skipped >= self.cells:
                self.train_ended = time.monotonic()
        self._event(f"trained {label}: {self.cells_line()}")

    def cell_failed(self, label: str, error: str, what: str = "cell") -> None:
        with self._lock:
            self.failures += 1
        self.note(f"[bold red]{what} {label} failed[/] (full log: {self.log}):", markup=True)
        self.note(error.rstrip())

    def checkpoint_scored(self) -> None:
        with self._lock:
            self.scored += 1
            now = time.monotonic()
            quiet = now - self._last_scored_line < 30 and self.scored < self.checkpoints
            if not quiet:
                self._last_scored_line = now
        if not quiet:
            self._event(f"scored {self.scored}/{self.checkpoints} checkpoints")
        else:
            self._refresh()

    def scored_before(self, n: int) -> None:
        with self._lock:
            self.scored = max(self.scored, n)
        self._refresh()

    def cells_line(self) -> str:
        done = self.trained + self.skipped
        text = f"{done}/{self.cells} cells trained"
        if self.train_started is not None:
            elapsed = (self.train_ended or time.monotonic()) - self.train_started
            text += f", {_clock(elapsed)} elapsed"
            left = self.cells - done
            if self.trained and left > 0:
                text += f", ETA {_clock(elapsed / self.trained * left)}"
        return text

    def status(self) -> str:
        parts = [f"[{self.stage}]", *([self.pretrain_line()] if self.bases else []), self.cells_line(),
                 f"{self.scored}/{self.checkpoints} checkpoints scored"]
        if self.failures:
            parts.append(f"{self.failures} failed")
        return "  ".join(parts)

    # -- showing --------------------------------------------------------------------------------------
    def note(self, text: str, markup: bool = False) -> None:
        """A line that stays (above the live view on a terminal)."""
        console.print(text, markup=markup, highlight=False, soft_wrap=True)

    def note_once(self, text: str) -> None:
        """A line said once per run (the scoring backend chosen, when scoring runs twice)."""
        if text not in self._said:
            self._said.add(text)
            self.note(text)

    def _event(self, text: str) -> None:
        if self._live is not None:
            self._refresh()
        else:  # not a terminal: one plain line per event
            self.note(f"{_clock(time.monotonic() - self.started):>6} {text}")

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def _render(self):
        """The live view on a terminal: redrawn twice a second, so the clock runs between events."""
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        if not self.cells:
            grid.add_row(Text(f"[{self.stage}]", style="bold"), Text("reading the spec, the data and the models"))
            return grid
        cells = ProgressBar(total=self.cells, completed=self.trained + self.skipped, width=20)
        scored = ProgressBar(total=max(1, self.checkpoints), completed=self.scored, width=20)
        failed = Text(f"{self.failures} failed", style="bold red") if self.failures else Text("")
        if self.bases:
            bases = ProgressBar(total=self.bases, completed=self.pretrained, width=20)
            grid.add_row(Text(f"[{self.stage}]", style="bold"), bases, Text(self.pretrain_line()))
        grid.add_row(Text("" if self.bases else f"[{self.stage}]", style="bold"), cells, Text(self.cells_line()))
        grid.add_row(Text(""), scored, Text(f"{self.scored}/{self.checkpoints} checkpoints scored"), failed)
        return grid

    def __enter__(self) -> StudyView:
        global _active
        _active = self
        return self

    def capture(self) -> None:
        """From here on the libraries' output goes to the log file and the live view starts.

        Called once the study's inputs are validated: a spec rejected before its first write leaves no
        log file behind and its one error line alone on the console."""
        if self._saved:
            return
        self.log.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        terminal = os.dup(2)
        self._saved = [os.dup(1), terminal]
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, take_held_output().encode())  # what Ray printed as the pre-flight started it
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        self._stream = os.fdopen(os.dup(terminal), "w", buffering=1, encoding="utf-8", errors="replace")
        console.file = self._stream
        console.soft_wrap = True  # a long path stays one line; the terminal wraps it, not rich
        self.note(f"Ray, DeepSpeed and MLflow output: {self.log}")
        if console.is_terminal:
            from rich.live import Live

            # Not redirecting sys.stdout/stderr: what libraries print belongs in the log file.
            self._live = Live(console=console, refresh_per_second=2, transient=True, get_renderable=self._render,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
            self._refresh()

    def finish(self) -> None:
        """Stop the live view, leaving its last state as one line (before the closing summary)."""
        if self._live is not None:
            self._live.stop()
            self._live = None
            self.note(self.status())

    def __exit__(self, *exc) -> None:
        global _active
        _active = None
        if not self._saved:  # stopped before capture(): nothing was redirected
            return
        self.finish()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        console.file = None  # back to sys.stderr
        console.soft_wrap = False
        self._stream.close()
        if exc[0] is not None and not issubclass(exc[0], (KeyboardInterrupt, SystemExit)):
            console.print(f"Ray, DeepSpeed and MLflow output of this run: {self.log}", highlight=False, soft_wrap=True)


def view_for(spec):
    """The view of a study run by this spec (``study_view`` at its log path)."""
    from growthpace.platform.store.storage import Layout

    return study_view(log_path(Layout.for_spec(spec), spec.name))


@contextlib.contextmanager
def study_view(log: Path, cells: int = 0, checkpoints: int = 0):
    """The active view, or a new one for the duration (a step run alone: `growthpace sweep`, `evaluate`)."""
    if _active is not None:
        yield _active
        return
    with StudyView(log, cells, checkpoints) as view:
        yield view


class _Bar:
    def __init__(self, advance):
        self.advance = advance


@contextlib.contextmanager
def scoring_progress(total: int, label: str):
    """Advance once per scored checkpoint: the active view's count, else a transient bar of its own."""
    if _active is not None:
        yield _Bar(_active.checkpoint_scored)
        return
    from rich.progress import Progress

    with Progress(transient=True, console=console) as progress:
        task = progress.add_task(label, total=total)
        yield _Bar(lambda: progress.advance(task))
