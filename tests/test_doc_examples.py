"""Every spec example in the docs loads through the spec schema, so no example can drift from it (issue 28:
docs/cluster.md §9 showed `by_size` directly under `evaluation`, which the spec refuses).

A block fenced as ```yaml (or ```yml) in docs/*.md or README.md is a spec or a spec fragment, unless its
first line is the comment `# not a spec`; an unfenced block that parses as a mapping of spec sections
(name, storage, models, data, ...) is one too. A fragment is merged into a minimal valid spec (mappings
merged key by key, the fragment's lists and values replacing the minimal spec's) before it is validated.
A whole spec (name, storage, models and data of its own) also goes through the checks across fields
(data/specfile.py `_references`), which need neither the data nor the models on disk.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from growthpace.platform.core.spec import Spec
from growthpace.platform.data.specfile import _field_path, _references

REPO = Path(__file__).resolve().parents[1]
DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
MINIMAL = {"name": "doc", "storage": "store", "models": [{"name": "llama-nano", "size": "s"}], "data": {"root": "data"}}
WHOLE = ("name", "storage", "models", "data")


def _blocks() -> list[tuple[str, dict]]:
    """(file:line, the parsed block) of every spec example."""
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            tag, body = m.group(1).strip().lower(), m.group(2)
            where = f"{doc.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}"
            if tag in ("yaml", "yml"):
                if body.lstrip().startswith("# not a spec"):
                    continue
                out.append((where, yaml.safe_load(body)))  # a fenced YAML block that does not parse fails here
            elif not tag:
                try:
                    obj = yaml.safe_load(body)
                except yaml.YAMLError:
                    continue  # a shell session or a diagram
                if isinstance(obj, dict) and obj and set(obj) <= set(Spec.model_fields):
                    out.append((where, obj))
    return out


def _merge(base: dict, fragment: dict) -> dict:
    out = dict(base)
    for key, value in fragment.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


BLOCKS = _blocks()


def test_the_docs_have_spec_examples():
    """The finder sees the examples (docs/cluster.md §9's at least): an empty list would pass vacuously."""
    assert any(where.startswith("docs/cluster.md") for where, _ in BLOCKS), BLOCKS


@pytest.mark.parametrize("where,block", BLOCKS, ids=[w for w, _ in BLOCKS])
def test_doc_example_is_a_valid_spec(where, block):
    assert isinstance(block, dict), f"{where}: a spec example is a YAML mapping"
    spec = Spec.model_validate(_merge(MINIMAL, block))
    if all(k in block for k in WHOLE):
        problems = _references(spec)
        assert not problems, f"{where}: " + "; ".join(f"field '{f}': {why}" for f, why in problems)


def test_a_drifted_example_fails():
    """The check can fail: the §9 example as it was (by_size directly under evaluation) is refused."""
    from pydantic import ValidationError

    drifted = {"evaluation": {"gpus_per_actor": 1, "by_size": {"33b": {"gpus": 2}}}}
    with pytest.raises(ValidationError) as e:
        Spec.model_validate(_merge(MINIMAL, drifted))
    assert [_field_path(err["loc"]) for err in e.value.errors()] == ["evaluation.by_size"]
