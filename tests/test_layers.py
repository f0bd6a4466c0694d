"""The package layout is the architecture: each floor imports only the floors below it, and no module
imports itself back through others. Every import statement counts, the ones inside functions too: a
lazy import is still a dependency (it only moves the failure to run time)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "growthpace"

# floor -> the floors it may import (besides itself). Read top to bottom: data flows one way.
ALLOWED: dict[str, set[str]] = {
    "platform.core": set(),
    "platform.store": {"platform.core"},
    "platform.data": {"platform.core", "platform.store"},
    "platform.train": {"platform.core", "platform.store", "platform.data"},
    "platform.analysis": {"platform.core"},
    "platform.report": {"platform.core", "platform.analysis"},
    "evaluators": {"platform.core", "platform.store", "platform.data"},
    "jobs": {"platform.core", "platform.store", "platform.data", "platform.train", "platform.analysis",
             "platform.report", "evaluators"},
    "cli": {"platform.core", "platform.store", "platform.data", "jobs", "evaluators"},
    "__main__": {"cli"},
}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _floor(module: str) -> str | None:
    rest = module.removeprefix("growthpace.")
    for floor in sorted(ALLOWED, key=len, reverse=True):
        if rest == floor or rest.startswith(floor + "."):
            return floor
    return None


def _imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, wherever the statement stands."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("growthpace")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("growthpace"):
            for a in node.names:  # `from growthpace.platform.analysis import growth` imports a module
                sub = f"{node.module}.{a.name}"
                out.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file() else node.module)
    return out


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_floor():
    unplaced = [m for m in _graph() if m not in ("growthpace", "growthpace.platform") and _floor(m) is None]
    assert not unplaced, f"modules outside every floor of ALLOWED: {unplaced}"


def test_no_import_runs_upward():
    wrong = []
    for module, imports in _graph().items():
        floor = _floor(module)
        if floor is None:
            continue
        for imported in imports:
            other = _floor(imported)
            if other is not None and other != floor and other not in ALLOWED[floor]:
                wrong.append(f"{module} ({floor}) imports {imported} ({other})")
    assert not wrong, "imports against the floors:\n" + "\n".join(sorted(wrong))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n not in graph or n == m:
                continue
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_circles():
    found = _cycle(_graph())
    assert found is None, "import circle: " + " -> ".join(found)


def test_the_checker_sees_a_circle_and_an_upward_import():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert "platform.analysis" not in ALLOWED["platform.core"]
    assert _floor("growthpace.platform.core.spec") == "platform.core"
    assert _floor("growthpace.platform.data.dataset") == "platform.data"


@pytest.mark.parametrize("floor", sorted(ALLOWED))
def test_each_floor_exists(floor):
    path = PACKAGE / floor.replace(".", "/")
    assert path.is_dir() or path.with_suffix(".py").is_file(), f"ALLOWED names a floor that is gone: {floor}"
