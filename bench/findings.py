"""Does a study's report show issue 13's four findings and issue 25's transfer? Reads report/summary.json, one line per goal.

    .venv/bin/python bench/findings.py runs/local            # the storage folder, its report/, or a summary.json

Every number comes from the summary's `headline` section (platform/analysis.findings), measured at the
largest size and its largest curated volume; this script only holds the issue's targets and compares.
Exit 0 whether or not a goal is met (the lines say so); exit 2 when there is no summary to read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# The miniature study's targets (issue 13, "Goal"): a study at DoIT scale is not held to them.
ABOVE_BASELINE = 7      # abilities above their random baseline, interval excluding it
PACE_CLASSES = 3
FAST_ABILITIES = 3      # gain-per-doubling interval at or above the threshold (1 point)
MEAN_GAP = 5.0          # curated minus synthetic, points
GAP_ABILITIES = 5       # gap interval excluding 0, curated ahead


def _ci(c: dict | None, digits: int = 1) -> str:
    if not c or c.get("value") is None:
        return "n/a"
    lo, hi = ("n/a" if c.get(k) is None else f"{c[k]:.{digits}f}" for k in ("lo", "hi"))
    return f"{c['value']:.{digits}f} [{lo}, {hi}]"


def goal_lines(h: dict) -> list[tuple[str, bool]]:
    where = f"{h['size']}/{h['volume']}"
    ab = h["above_baseline"]
    lines = [(f"goal1 above_baseline={ab['count']}/{ab['of']} at {where} (target >= {ABOVE_BASELINE})",
              ab["count"] >= ABOVE_BASELINE)]
    p = h["pace"]
    met = p["class_count"] >= PACE_CLASSES and p["at_least_threshold"] >= FAST_ABILITIES and p["non_overlapping"]
    pair = p["widest_pair"] or {}
    lines.append((f"goal2 pace_classes={p['class_count']} (target >= {PACE_CLASSES}) "
                  f"gain_interval_at_least_{p['threshold']:g}pt={p['at_least_threshold']} (target >= {FAST_ABILITIES}) "
                  f"non_overlapping={p['non_overlapping']} ({pair.get('faster')} vs {pair.get('slower')})", met))
    s = h["sources"]
    gap = (s["mean"] or {}).get("gap")
    value = None if gap is None else gap["value"]
    met = value is not None and value >= MEAN_GAP and s["a_better"] >= GAP_ABILITIES
    lines.append((f"goal3 mean_gap={_ci(gap)} at {s['size']}/{s['volume']} (target >= {MEAN_GAP:g}) "
                  f"curated_better={s['a_better']}/{s['of']} (target >= {GAP_ABILITIES}) "
                  f"synthetic_better={s['b_better']}", met))
    t = h["transfer"]
    baseline = "n/a" if t["baseline"] is None else f"{t['baseline']:.1f}"
    lines.append((f"goal4 ood={_ci(t['ood'])} baseline={baseline} at {where} interval_above_baseline="
                  f"{t['side'] == 'above'}", t["side"] == "above"))
    lines.append(goal5(h.get("ood_change")))
    return lines


def goal5(oc: dict | None) -> tuple[str, bool]:
    """Issue 25: at the largest size, OOD at the largest curated volume above the untuned base's and the
    smallest volume's, each difference's interval excluding 0; OOD vs in-domain r across the curated
    settings positive, its interval excluding 0. The summary's ``shown`` is the same test."""
    if not oc or oc.get("row") is None:
        return ("goal5 transfer: no OOD rows at curated volumes (or a report from before issue 25)", False)
    row = oc["row"]
    means = ", ".join([f"base {_ci(row['base'])}" if row["base"] else "base n/a"]
                      + [f"{v['volume']:g}: {v['ood']['value']:.1f}" for v in row["volumes"]])
    met = oc["change_side"] == "above" and oc["base_side"] == "above" and oc["r_side"] == "above"
    return (f"goal5 transfer at {row['size']}: largest-smallest={_ci(row['change'])} largest-base="
            f"{_ci(row['over_base'])} r_curated={_ci(oc['r'], 2)} (targets: each interval above 0; OOD means {means})",
            met)


def summary_path(arg: str) -> Path:
    p = Path(arg)
    for candidate in (p, p / "summary.json", p / "report" / "summary.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{arg}: no summary.json there, in {arg}/ or in {arg}/report/ (run `growthpace report`)")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        path = summary_path(argv[0])
        h = json.loads(path.read_text(encoding="utf-8"))["headline"]
        lines = goal_lines(h)
    except FileNotFoundError as e:
        print(f"findings: {e}", file=sys.stderr)
        return 2
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        print(f"findings: {argv[0]}: not a report summary with a headline section ({type(e).__name__}: {e})",
              file=sys.stderr)
        return 2
    print(f"findings of {path}")
    for text, met in lines:
        print(f"{text} met={met}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
