"""Running a job on a spec: one error naming file:line or the field, exit code 2, for bad input.

`python -m growthpace <command> SPEC` (growthpace/cli.py) comes here; the module paths jobs were
submitted with before it (`python -m growthpace.jobs.run SPEC`, and sweep, evaluate, report) go to it.
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
    from growthpace.platform.core.allocation import AllocationError
    from growthpace.platform.core.capacity import CapacityError
    from growthpace.platform.train.models import ModelError
    from growthpace.platform.core.items import DataError
    from growthpace.platform.core.spec import SpecError
    from growthpace.platform.store.storage import CheckpointError, StoredFileError
    from growthpace.platform.core.paths import PathError
    from growthpace.platform.store.tracking import TrackingError

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
    from growthpace.jobs.errors import SweepError

    try:
        return fn()
    except SweepError as e:  # each failed cell's error and traceback were shown as it failed
        _err().print("[bold red]error:[/] ", end="", markup=True, highlight=False)
        _err().print(str(e), markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(1) from None
    except (*input_errors(), OSError) as e:
        if isinstance(e, OSError) and e.filename is not None:  # the OS naming a path the user gave
            message = _path_error(e)
        elif isinstance(e, FileNotFoundError) and e.errno is not None:  # the OS naming no path (e.g. a
            raise  # deleted working directory): no user can act on '[Errno 2]' alone, so keep the traceback
        elif isinstance(e, input_errors()):
            message = str(e)
        else:  # anything else is a bug and keeps its traceback
            raise
    _err().print("[bold red]error:[/] ", end="", markup=True, highlight=False)
    _err().print(message, markup=False, highlight=False, soft_wrap=True)  # a path or value in [..] is not markup
    raise SystemExit(2) from None


def load_spec(path: Path):
    from growthpace.platform.data.specfile import load_spec as load

    return guard(lambda: load(path))


def as_command(command: str) -> None:
    """`python -m growthpace.jobs.<module> SPEC`, the module paths jobs were submitted with before the CLI,
    run as `python -m growthpace <command> SPEC`. The CLI is reached by its package name, not imported:
    the job modules sit below it and import nothing of it."""
    import runpy

    sys.argv[1:1] = [command]
    runpy.run_module("growthpace", run_name="__main__", alter_sys=True)
