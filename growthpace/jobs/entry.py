"""Running a job on a spec: one error naming file:line or the field, exit code 2, for bad input.

`python -m growthpace <command> SPEC` (growthpace/cli.py) and the module paths jobs were submitted
with before it (`python -m growthpace.jobs.run SPEC`, and sweep, evaluate, report) both come here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from functools import cache
from typing import Any, Callable


@cache
def _err():
    """The error console, made on first use: a job that succeeds never imports rich for it."""
    from rich.console import Console

    return Console(stderr=True)


def input_errors() -> tuple[type[Exception], ...]:
    from growthpace.platform.allocation import AllocationError
    from growthpace.platform.capacity import CapacityError
    from growthpace.platform.models import ModelError
    from growthpace.platform.records import DataError
    from growthpace.platform.spec import SpecError
    from growthpace.platform.storage import CheckpointError, PathError, StoredFileError
    from growthpace.platform.tracking import TrackingError

    return (SpecError, DataError, AllocationError, ModelError, FileNotFoundError, FileExistsError, TrackingError,
            CheckpointError, PathError, StoredFileError, CapacityError)


def _path_error(e: OSError) -> str:
    """An OSError about a path the user gave (a folder under a regular file, a symlink loop, no permission)."""
    if isinstance(e, (FileExistsError, NotADirectoryError)) and Path(e.filename).is_file():
        return f"{e.filename} is a regular file, so nothing can be created under it; give a folder path"
    where = f"{e.filename}" + (f" -> {e.filename2}" if getattr(e, "filename2", None) else "")
    return f"{where}: {e.strerror or e}; check that path (and the spec field or option that names it)"


def guard(fn: Callable[[], Any]) -> Any:
    """``fn()``; bad input is printed as one error and ends the process with exit code 2."""
    from growthpace.jobs.sweep import SweepError

    try:
        return fn()
    except SweepError as e:  # each failed cell's error and traceback were shown as it failed
        _err().print("[bold red]error:[/] ", end="", markup=True, highlight=False)
        _err().print(str(e), markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
    except (*input_errors(), OSError) as e:
        if isinstance(e, OSError) and e.filename is not None:  # the OS naming a path the user gave
            message = _path_error(e)
        elif isinstance(e, input_errors()):
            message = str(e)
        else:  # anything else is a bug and keeps its traceback
            raise
    _err().print("[bold red]error:[/] ", end="", markup=True, highlight=False)
    _err().print(message, markup=False, highlight=False, soft_wrap=True)  # a path or value in [..] is not markup
    raise SystemExit(2) from None


def load_spec(path: Path):
    from growthpace.platform.spec import load_spec as load

    return guard(lambda: load(path))


def run_job(job: Callable[[Any], Any], argv: list[str] | None = None) -> None:
    """`python -m growthpace.jobs.<job> SPEC`: ``job(spec)``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        _err().print(f"usage: python -m growthpace <command> SPEC (got {' '.join(args) or 'no arguments'})")
        raise SystemExit(2)
    spec = load_spec(Path(args[0]))
    guard(lambda: job(spec))
