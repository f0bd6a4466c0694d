"""This interpreter as the lent GPU machine sees it: every module of bench/gpu_machine_lacks.txt is absent,
unless it is in the folder of carried wheels (``GPU_SMOKE_SITE``, bench/gpu_wheels.sh installs them there).

Active only with this folder on PYTHONPATH (bench/gpu_smoke_cpu.sh). Absent means absent to every
lookup: ``import``, ``importlib.util.find_spec`` (what transformers' ``is_*_available`` ask) and
``importlib.metadata``, so nothing half-finds a hidden package."""

from __future__ import annotations

import os
import site
import sys
from importlib.machinery import PathFinder
from pathlib import Path

_LIST = Path(__file__).resolve().parents[1] / "gpu_machine_lacks.txt"
_HIDDEN = frozenset(line.strip() for line in _LIST.read_text().splitlines() if line.strip() and not line.startswith("#"))
_SITE = os.environ.get("GPU_SMOKE_SITE") or None
_VENV = frozenset(site.getsitepackages() + [site.getusersitepackages()])  # where the hidden packages lie


def _carried(path) -> bool:
    return _SITE is not None and Path(path).resolve().is_relative_to(Path(_SITE).resolve())


class _AsOnTheGPUMachine(PathFinder):
    """sys.meta_path's PathFinder, blind to the hidden modules outside the carried folder."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if path is None and name.partition(".")[0] in _HIDDEN:  # a top-level hidden module: not from the venv
            # (a copy vendored elsewhere on sys.path, e.g. setuptools/_vendor, is no installed package)
            return PathFinder.find_spec(name, [p for p in sys.path if p not in _VENV], target)
        return PathFinder.find_spec(name, path, target)

    @classmethod
    def find_distributions(cls, *args, **kwargs):
        for dist in PathFinder.find_distributions(*args, **kwargs):
            files = dist.read_text("top_level.txt") or ""
            tops = set(files.split()) or {dist.metadata["Name"].replace("-", "_").lower()}
            located = getattr(dist, "_path", None)
            if tops & _HIDDEN and not (located is not None and _carried(located)):
                continue
            yield dist


sys.meta_path[:] = [_AsOnTheGPUMachine if f is PathFinder else f for f in sys.meta_path]
for _name in [m for m in sys.modules if m.partition(".")[0] in _HIDDEN]:  # nothing imported before this runs
    del sys.modules[_name]
