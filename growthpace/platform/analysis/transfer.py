"""Finding (iii), out-of-domain transfer, as the study means it: how the OOD score changes with instruction data.

The study's claim is that OOD scores rise with the volume of instruction data as the in-domain ones do.
An OOD mean above its random baseline does not show that (a pre-trained base already knows many of the
facts); a rise does. So, per size: the OOD mean over subjects at each curated volume and at volume 0,
the untuned base the size's cells start from, scored by the same scorer; the change from the smallest
to the largest curated volume and from the base to the largest, each with a paired bootstrap interval
over OOD items (growth.Measured resamples the same items in every row, so a difference carries only
its own uncertainty); the same per subject; and how OOD and in-domain means move together across the
plain curated settings. Nothing here knows what a subject's curve should look like.

Pure: growth.Measured in, dicts out (summary.py words nothing; page.py says it).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from growthpace.platform.analysis import growth
from growthpace.platform.core.cells import BASE_SOURCE

def _mean(part: pl.DataFrame, boot: np.ndarray) -> tuple[float, np.ndarray]:
    """(point, replicates) of the mean over part's rows (subjects)."""
    return float(part["score"].mean()), boot[part["_i"].to_numpy()].mean(axis=0)


def _diff(a: tuple[float, np.ndarray], b: tuple[float, np.ndarray], confidence: float) -> dict:
    return growth._ci(a[0] - b[0], a[1] - b[1], confidence)


def plain_settings(measured: growth.Measured, source: str) -> growth.Measured:
    """The rows of one source's plain settings (no mix), every split."""
    part, boot = measured.pick(source=source, mix="")
    return growth.Measured(part, boot, measured.confidence)


def without_base(measured: growth.Measured) -> growth.Measured:
    """Every row but the untuned bases': what the rest of the analysis reads."""
    keep = (measured.rows["source"] != BASE_SOURCE).to_numpy()
    return growth.Measured(measured.rows.filter(pl.Series(keep)), measured.boot[keep], measured.confidence)


def ood_change(measured: growth.Measured, source: str = "curated") -> dict:
    """Per size: OOD means by volume of ``source`` (the study's primary: DoIT's curated) and at the untuned
    base, the change smallest -> largest volume and base -> largest volume (paired intervals), per subject
    as well; ``r``: Pearson r of the OOD and in-domain means across that source's plain settings of every
    size, with its interval."""
    conf = measured.confidence
    ood, boot = measured.pick(split="ood", mix="")
    r = growth.transfer(plain_settings(measured, source))["r"]
    out: dict = {"rows": [], "r": r}
    frame = ood.with_row_index("_i")
    for size in sorted(frame["size"].unique().to_list()):
        part = frame.filter(pl.col("size") == size)
        cur = part.filter(pl.col("source") == source)
        if not cur.height:
            continue
        base = part.filter(pl.col("source") == BASE_SOURCE)
        volumes = sorted(cur["volume"].unique().to_list())
        # Means over the subjects every compared row was scored on, so no difference is a change of subjects.
        units = [cur.filter(pl.col("volume") == v) for v in volumes] + ([base] if base.height else [])
        subjects = sorted(set.intersection(*(set(u["ability"].to_list()) for u in units)))
        if not subjects:
            continue
        on = lambda u: u.filter(pl.col("ability").is_in(subjects)).sort("ability")  # noqa: E731
        means = {v: _mean(on(u), boot) for v, u in zip(volumes, units)}
        small, large = volumes[0], volumes[-1]
        b = _mean(on(base), boot) if base.height else None
        row = {
            "size": size, "smallest": small, "largest": large, "subjects": subjects,
            "baseline": float(on(cur)["expected"].mean()),
            "volumes": [{"volume": v, "ood": growth._ci(*means[v], conf)} for v in volumes],
            "base": None if b is None else growth._ci(*b, conf),
            "change": _diff(means[large], means[small], conf) if len(volumes) > 1 else None,
            "over_base": None if b is None else _diff(means[large], b, conf),
            "per_subject": [],
        }
        for s in subjects:
            one = {v: _mean(u.filter(pl.col("ability") == s), boot) for v, u in zip(volumes, units)}
            sb = _mean(base.filter(pl.col("ability") == s), boot) if base.height else None
            row["per_subject"].append({
                "subject": s, "scores": {str(v): growth._num(one[v][0]) for v in volumes},
                "base": None if sb is None else growth._num(sb[0]),
                "change": _diff(one[large], one[small], conf) if len(volumes) > 1 else None,
                "over_base": None if sb is None else _diff(one[large], sb, conf),
            })
        out["rows"].append(row)
    return out
