"""Running a job on a spec: one error naming file:line or the field, exit code 2, for bad input.

`python -m growthpace <command> SPEC` (growthpace/cli.py) and the module paths jobs were submitted
with before it (`python -m growthpace.jobs.run SPEC`, and sweep, evaluate, report) both come here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

err = Console(stderr=True)


def input_errors() -> tuple[type[Exception], ...]:
    from growthpace.platform.allocation import AllocationError
    from growthpace.platform.models import ModelError
    from growthpace.platform.records import DataError
    from growthpace.platform.spec import SpecError
    from growthpace.platform.storage import CheckpointError, PathError
    from growthpace.platform.tracking import TrackingError

    return (SpecError, DataError, AllocationError, ModelError, FileNotFoundError, TrackingError, CheckpointError, PathError)


def guard(fn: Callable[[], Any]) -> Any:
    """``fn()``; bad input is printed as one error and ends the process with exit code 2."""
    try:
        return fn()
    except input_errors() as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
        raise SystemExit(2) from None


def load_spec(path: Path):
    from growthpace.platform.spec import load_spec as load

    return guard(lambda: load(path))


def run_job(job: Callable[[Any], Any], argv: list[str] | None = None) -> None:
    """`python -m growthpace.jobs.<job> SPEC`: ``job(spec)``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        err.print(f"usage: python -m growthpace <command> SPEC (got {' '.join(args) or 'no arguments'})")
        raise SystemExit(2)
    spec = load_spec(Path(args[0]))
    guard(lambda: job(spec))
