"""`growthpace check SPEC`: the study's data and declarations validated without training, and what
each ability will be scored with.

It runs the same resolution as `plan` (jobs/study.py prepare, write=False: the spec, every source's
items, the allocations of every cell, the eval sets in their formulations, the models), so an input
that `run` would refuse is refused here with the same one error, and nothing is written.
"""

from __future__ import annotations

from collections import Counter

from growthpace.evaluators.scoring import REGISTRY, expected
from growthpace.platform.core.formulation import parse_split
from growthpace.platform.core.items import question_kind


def _baseline(records) -> float:
    """Mean random-baseline expected score (0-1) over the items, as the scorer computes it."""
    if not records:
        return float("nan")
    return sum(expected(r) for r in records) / len(records)


def ability_rows(study) -> list[dict]:
    """One row per ability (and OOD set): its kind(s), scorer output type, random baseline, formulation,
    training items per source and eval items per split."""
    spec = study.spec
    pool = study.dataset.pool
    primary = spec.evaluation.formulation[0]
    sets = study.eval_sets or {}
    names = [*spec.ability_names, *(spec.ood_subjects if spec.evaluation.ood else ())]
    rows = []
    for name in names:
        own = spec.ability(name)
        split_items = {s: recs for (s, a), recs in sets.items() if a == name and parse_split(s)[1] is None}
        scored = next(iter(split_items.get("test") or split_items.get("ood") or []), None)
        test = split_items.get("test") or split_items.get("ood") or []
        kinds = Counter(question_kind(r) for r in test)
        labeled = getattr(pool, "labeled", {"curated": pool.curated})
        rows.append({
            "ability": name,
            "declared_kind": own.kind if own is not None else ("ood subject" if name in spec.ood_subjects else "doit rule"),
            "kinds": dict(kinds),
            "output": ",".join(sorted({REGISTRY[k].needs for k in kinds})) if kinds else "",
            "baseline": _baseline(test),
            "formulation": (own.formulation if own is not None and own.formulation else primary)
            if scored is not None else "",
            "train": {src: len(by.get(name, [])) for src, by in labeled.items()},
            "eval": {s: len(r) for s, r in split_items.items()},
        })
    return rows
