"""The report's index.html from its summary dict: tables and numbers here, the prose in templates/report.html.

Every value put into the page is escaped here; the template holds only trusted markup.
"""

from __future__ import annotations

import html
import math
import re
from functools import lru_cache
from pathlib import Path
from string import Template

import polars as pl
import yaml

from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS

TEMPLATE = Path(__file__).parent / "templates" / "report.html"
_BLOCK = re.compile(r"^<!--# (\w+) -->$", re.MULTILINE)


@lru_cache(maxsize=1)
def blocks() -> dict[str, Template]:
    """The template file's named blocks (the text before the first block is its own comment)."""
    parts = _BLOCK.split(TEMPLATE.read_text(encoding="utf-8"))
    return {name: Template(body.strip("\n")) for name, body in zip(parts[1::2], parts[2::2])}


def block(name: str, **values) -> str:
    return blocks()[name].substitute(values)


# --------------------------------------------------------------------------------------------------
# Numbers as text


def f(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x + 0.0:,.{digits}f}" if round(x, digits) != 0 else f"{0:.{digits}f}"  # no "-0.0"


def pm(ci: dict | None, digits: int = 1) -> str:
    """'12.3 [10.1, 14.2]'"""
    if not ci:
        return "n/a"
    return f"{f(ci['value'], digits)} [{f(ci['lo'], digits)}, {f(ci['hi'], digits)}]"


def vol(ci: dict, smallest: float, largest: float) -> str:
    """A saturation volume; outside the studied volumes it is an extrapolation, and says so."""
    v = ci["value"]
    if v is None:
        return "n/a"
    text = f"{v:,.0f} [{f(ci['lo'], 0)}, {f(ci['hi'], 0)}]"
    if v > largest:
        return text + " (past the data)"
    return text + " (before the data)" if v < smallest else text


def cost(c: dict | None) -> str:
    """'1.25 GPU-h (40.0 core-h)'; 'n/a' when a cell behind it has no recorded or planned cost."""
    if not c or (c.get("gpu_hours") is None and c.get("core_hours") is None):
        return "n/a"
    return f"{f(c.get('gpu_hours'), 2)} GPU-h ({f(c.get('core_hours'), 2)} core-h)"


def marked(verdict: dict | None, gap: dict | None = None) -> str:
    """A gap with its interval (default: the paired test's), '*' when the paired test is significant after BH."""
    if gap is None and verdict is not None:
        gap = {"value": verdict["gap"], "lo": verdict["lo"], "hi": verdict["hi"]}
    return pm(gap) + (" *" if verdict and verdict.get("significant") else "")


def html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'  # wide tables scroll, not the page


def selected_table(selected: pl.DataFrame, order: list[str] | None = None) -> str:
    """The selected scores, one column per ability in ``order`` (the study's declared abilities and OOD
    sets; default DoIT's)."""
    wide = (
        selected.with_columns(pl.col("score").round(1))
        .group_by(["size", "source", "volume", "mix", "ability"]).agg(pl.col("score").mean().round(1))
        .pivot(on="ability", index=["size", "source", "volume", "mix"], values="score")
        .sort(["size", "source", "volume"])
    )
    keys = ["size", "source", "volume", "mix"]
    order = order if order is not None else [*ABILITIES, *OOD_SUBJECTS]
    known = [a for a in order if a in wide.columns]  # the study's order, not the pivot's
    wide = wide.select(*keys, *known, *[c for c in wide.columns if c not in keys and c not in known])
    return html_table([str(c) for c in wide.columns], [["" if v is None else v for v in row] for row in wide.iter_rows()])


def mix_yaml(rec, study: str) -> str:
    """A growth.Recommendation as a `data.mixes` entry, with what it is predicted to do as a comment."""
    head = (f"# growthpace recommend ({study}, size {rec.size}, budget {rec.budget}): predicted mean "
            f"{rec.predicted['recommended']['value']:.1f} vs even {rec.predicted['even']['value']:.1f}, "
            f"gain {pm(rec.gain)}\n")
    return head + yaml.safe_dump([rec.mix], sort_keys=False, default_flow_style=None)


# --------------------------------------------------------------------------------------------------
# The headline findings, in words (analysis.findings has the numbers)


def _names(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def _gains(rows: list[dict]) -> str:
    return ", ".join(f"{r['ability']} {pm(r['gain'])}" for r in rows)


def headline_sentences(h: dict) -> list[str]:
    """The report's opening findings as plain sentences, each with its interval, each saying what was
    measured whichever way it came out."""
    conf = f"{h['confidence'] * 100:g}%"
    out = []
    primary = h.get("source", "curated")
    where = f"{h['size']} at {h['volume']:g} {primary} items" if h["size"] is not None else None
    ab = h["above_baseline"]
    if where is None:
        out.append(f"No {primary} test scores in this study: no headline findings.")
        return out
    above = [r["ability"] for r in ab["rows"] if r["side"] == "above"]
    out.append(f"At the largest size and volume ({where}), {ab['count']} of {ab['of']} abilities score above their "
               f"random baseline with the {conf} interval excluding it"
               + (f": {_names(above)}." if above else "."))

    p = h["pace"]
    rows = {r["ability"]: r for r in p["rows"]}
    if not p["rows"]:
        out.append(f"No growth curves were fitted (a curve needs 3 or more {primary} volumes): no pace finding.")
    else:
        per = "points per doubling of data (over the studied range, mean over sizes)"
        if p["fastest"]:
            out.append(f"Fastest growing, with the interval at or above {p['threshold']:g} point: "
                       f"{_gains([rows[a] for a in p['fastest'][:3]])} {per}; {p['at_least_threshold']} of "
                       f"{len(p['rows'])} abilities clear it.")
        else:
            top = p["rows"][0]
            out.append(f"No ability's gain per doubling of data has its {conf} interval at or above "
                       f"{p['threshold']:g} point; the fastest measured is {top['ability']} at {pm(top['gain'])} {per}.")
        flat = [rows[a] for a in p["flat"]]
        if not flat:
            said = "No ability is flat."
        elif len(flat) == len(rows):  # the slowest and the fastest say it; ten intervals would not
            said = f"All {len(flat)} abilities are flat, from {_gains(flat[-1:])} to {_gains(flat[:1])}."
        else:
            said = f"Flat: {_gains(flat)}."
        classes = ", ".join(f"{c} {n}" for c, n in sorted(p["classes"].items(), key=lambda kv: -kv[1]))
        n = p["class_count"]
        out.append(f"{said} {n} pace {'class' if n == 1 else 'classes'} ({classes}); " + _separated(p, rows))

    src = h["sources"]
    a, b = src.get("a") or "curated", src.get("b") or "synthetic"
    if src["mean"] is None:
        out.append(f"No {a}/{b} pair at the same volume at size {h['size']}: no source finding.")
    else:
        gap, side = src["mean"]["gap"], src["mean"]["side"]
        verdict = {"above": f"{a} beats {b}", "below": f"{b} beats {a}",
                   None: f"{a} and {b} are not told apart"}[side]
        out.append(f"{a[:1].upper() + a[1:]} minus {b} at {src['volume']:g} items on {src['size']}: {pm(gap)} points "
                   f"on average ({verdict}); {src['a_better']} of {src['of']} abilities' gap intervals exclude 0 in "
                   f"{a}'s favour, {src['b_better']} in {b}'s.")

    tr = h["transfer"]
    if tr["ood"] is None:
        out.append(f"No OOD scores at {where}: no transfer finding.")
    else:
        verdict = {"above": "above it, the interval excluding it", "below": "below it, the interval excluding it",
                   None: "not distinguishable from it, the interval includes it"}[tr["side"]]
        out.append(f"The OOD mean at {where} is {pm(tr['ood'])} against its random baseline "
                   f"{f(tr['baseline'])}: {verdict} (a level, not transfer: an untuned base may reach it).")
    oc = h.get("ood_change")
    if oc is not None and tr["ood"] is not None:
        out.append(ood_change_sentence(oc, conf))
    return out


def ood_means(row: dict) -> str:
    """'base 41.7, 40 items 49.2, ..., 2560 items 39.2' (OOD means of one size)."""
    parts = [] if row["base"] is None else [f"untuned base {f(row['base']['value'])}"]
    return ", ".join(parts + [f"{v['volume']:g} items {f(v['ood']['value'])}" for v in row["volumes"]])


def ood_change_sentence(oc: dict, conf: str) -> str:
    """Finding (iii) in words, as its numbers have it: transfer only when OOD rises from the smallest
    volume and from the untuned base and follows the in-domain mean, every interval excluding 0."""
    row = oc["row"]
    if row is None:
        return f"No OOD scores at curated volumes of {oc['size']}: no transfer finding."
    r = f"; across curated settings OOD and in-domain means correlate at r = {pm(oc['r'], 2)}" if oc.get("r") else ""
    nums = (f"{row['largest']:g} minus {row['smallest']:g} items {pm(row['change'])} points"
            + ("" if row["over_base"] is None else f", minus the untuned base {pm(row['over_base'])}"))
    means = f"OOD means on {row['size']}: {ood_means(row)}"
    if oc["shown"]:
        return (f"Cross-ability transfer: OOD rises with instruction data ({nums}, {conf} intervals above 0{r}). "
                f"{means}.")
    if oc["falls"]:
        n = oc["falls_excluding_0"]
        sure = {0: "neither interval excludes 0", 1: "one interval below 0", 2: "both intervals below 0"}[n]
        return f"No cross-ability transfer: OOD falls with tuning (forgetting): {nums} ({sure}){r}. {means}."
    return (f"Cross-ability transfer not shown: {nums}{r}; not every interval is above 0. {means}.")


def _separated(p: dict, rows: dict[str, dict]) -> str:
    pair = p["widest_pair"]
    if pair is None:
        return "too few intervals to compare paces."
    a, b = rows[pair["faster"]], rows[pair["slower"]]
    if pair["separated"]:
        return f"{a['ability']} {pm(a['gain'])} and {b['ability']} {pm(b['gain'])} grow at paces whose intervals do not overlap."
    return (f"every two abilities' gain intervals overlap (even {a['ability']} {pm(a['gain'])} and "
            f"{b['ability']} {pm(b['gain'])}), so no two paces are told apart.")


def console_lines(summary: dict, index: str, tracking_uri: str) -> list[str]:
    """The closing lines of `growthpace run`: where the report is, its headline findings, how to see MLflow."""
    lines = [f"report: {index}", f"  {_formulation(summary)['sentence']}",
             *(f"  {s}" for s in headline_sentences(summary["headline"]))]
    if tracking_uri.startswith("sqlite:///"):
        lines.append(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 "
                     "(then open http://127.0.0.1:5000)")
    else:
        lines.append(f"MLflow UI: {tracking_uri}")
    return lines


# --------------------------------------------------------------------------------------------------
# Sections, in page order


def _head(s: dict, study: str) -> str:
    b = s["bootstrap"]
    bases = sorted({c["basis"] for c in _costs(s)} - {"unknown"})
    return block(
        "head", study=html.escape(study),
        findings="".join(f"<li>{html.escape(x)}</li>" for x in headline_sentences(s["headline"])), cells=s["cells"], checkpoints=s["checkpoints"],
        conf=int(round(b["confidence"] * 100)), samples=b["samples"],
        and_seeds="and seeds " if len(b["seeds"]) > 1 else "",
        methods=html.escape(", ".join(f"{n} by {m}" for m, n in b["rows_by_method"].items())),
        model=html.escape(s["model"]),
        cost_basis=html.escape(" and ".join(bases) if bases else "none recorded or planned (n/a)"),
        formulation=html.escape(_formulation(s)["sentence"]),
    )


def _formulation(s: dict) -> dict:
    """summary["formulation"]; a summary from before formulations existed used the study's letter rule."""
    from growthpace.platform.core.formulation import describe

    return s.get("formulation") or {"primary": "letter", "secondary": [], "sentence": describe(["letter"]), "rows": []}


def _formulations(s: dict) -> str:
    """The secondary formulations' scores beside the primary's, at the checkpoints the primary selected."""
    fm = _formulation(s)
    if not fm["secondary"]:
        return ""
    listed = [fm["primary"], *fm["secondary"]]
    rows = [[r["size"], r["source"], r["volume"], r["mix"], r["split"], r["ability"],
             *(f(r["scores"].get(x)) for x in listed), *(f(r["baselines"].get(x)) for x in listed)]
            for r in fm["rows"]]
    table = html_table(["size", "source", "volume", "mix", "split", "ability",
                        *(f"{x}{' (primary)' if x == fm['primary'] else ''}" for x in listed),
                        *(f"baseline {x}" for x in listed)], rows)
    return block("formulations", primary=html.escape(fm["primary"]),
                 secondary=html.escape(", ".join(fm["secondary"])), table=table)


def _costs(s: dict) -> list[dict]:
    found = [g["cost"] for g in s["source_gap"] if g.get("cost")]
    found += [r["cost"] for r in s["paired"]["rows"] if r.get("cost")]
    if s["recommendation"]:
        found.append(s["recommendation"]["cost"])
    return found


def by_pace(abilities: list[dict]) -> list[dict]:
    """Abilities fastest first (gain per doubling over the studied range), those without a gain last:
    with 30 or 50 abilities the table is read from the top."""
    def gain(a: dict) -> float:
        v = (a.get("range_gain_per_doubling") or {}).get("value")
        return -math.inf if v is None else v
    return sorted(abilities, key=gain, reverse=True)


def _pace(s: dict) -> str:
    largest = max((c["largest_volume"] for c in s["curves"]), default=0)
    smallest = min((c["smallest_volume"] for c in s["curves"]), default=0)
    st = s["settings"]
    table = html_table(
        ["ability", "class", "gain / doubling of data: at the start", "over the range",
         "saturation volume (90% of gain)", "ceiling", "gain / doubling of params", "evidence"],
        [[a["ability"], a["class"], pm(a["gain_per_doubling"]), pm(a["range_gain_per_doubling"]),
          vol(a["saturation_volume"], smallest, largest), pm(a["ceiling"]), pm(a["size_gain_per_doubling"]),
          a["evidence"]] for a in by_pace(s["abilities"])])
    curves = html_table(
        ["ability", "size", "params", "baseline", "start", "ceiling", "start gain / doubling", "range gain / doubling",
         "saturation volume", "midpoint (items)", "steepness / doubling", "R²", "RMSE", "points"],
        [[c["ability"], c["size"], f(c["params"], 0), f(c["baseline"]), pm(c["start"]), pm(c["ceiling"]),
          pm(c["gain_per_doubling"]), pm(c["range_gain_per_doubling"]),
          vol(c["saturation_volume"], c["smallest_volume"], c["largest_volume"]),
          f(2 ** c["midpoint_log2"], 0), f(c["steepness"], 2), f(c["r2"], 2), f(c["rmse"]), c["points"]]
         for c in s["curves"]])
    return block("pace", table=table, curves=curves, volume_gain=f"{st['volume_gain']:g}",
                 require_interval=" and its interval above 0" if st["require_interval"] else "",
                 size_gain=f"{st['size_gain']:g}", early_doublings=f"{st['early_saturation_doublings']:g}")


def _sources(s: dict) -> str:
    compared = s.get("declaration", {}).get("pairs", [["curated", "synthetic"]])
    named = ", ".join(f"{a}/{b}" for a, b in compared) or "source"
    title = html.escape("; ".join(f"{a[:1].upper() + a[1:]} vs {b}" for a, b in compared) or "Sources")
    gaps = [g for g in s["source_gap"] if g["ability"] == "mean"]
    if not gaps:
        return block("no_sources", title=title, pairs=html.escape(named))
    table = html_table(["a", "b", "size", "volume", "a's score", "b's score", "gap (a - b)", "cost"],
                       [[g["a"], g["b"], g["size"], g["volume"], f(g["score_a"]), f(g["score_b"]), pm(g["gap"]),
                         cost(g.get("cost"))] for g in gaps])
    per = [g for g in s["source_gap"] if g["ability"] != "mean"]
    vols = sorted({g["volume"] for g in per})
    keyed = {(g["a"], g["b"], g["ability"], g["size"], g["volume"]): g for g in per}
    at = {a: i for i, a in enumerate(s.get("declaration", {}).get("abilities", []))}
    pairs = sorted({(g["a"], g["b"], g["ability"], g["size"]) for g in per},
                   key=lambda k: (k[0], k[1], at.get(k[2], len(at)), k[2], k[3]))
    per_ability = html_table(
        ["a", "b", "ability", "size", *[f"gap at {v}" for v in vols]],
        [[x, y, a, z, *[marked(keyed[(x, y, a, z, v)].get("paired"), keyed[(x, y, a, z, v)]["gap"])
                        if (x, y, a, z, v) in keyed else "" for v in vols]] for x, y, a, z in pairs])
    return block("sources", table=table, per_ability=per_ability, alpha=f"{s['paired']['alpha']:g}", title=title,
                 pairs=html.escape(named))


def _ood(s: dict) -> str:
    tr = s["transfer"]
    if not tr["rows"]:
        return block("no_ood")
    table = html_table(["size", "source", "volume", "mix", "in-domain mean", "OOD mean", "OOD baseline"],
                       [[r["size"], r["source"], r["volume"], r["mix"], pm(r["in_domain"]), pm(r["ood"]),
                         f(r["ood_baseline"])] for r in tr["rows"]])
    oc = s.get("ood_change") or {"rows": [], "r": None}
    vols = sorted({v["volume"] for r in oc["rows"] for v in r["volumes"]})
    change = html_table(
        ["size", "untuned base", *[f"{v:g} items" for v in vols], "largest - smallest", "largest - base"],
        [[r["size"], pm(r["base"]), *[next((pm(x["ood"]) for x in r["volumes"] if x["volume"] == v), "")
                                        for v in vols], pm(r["change"]), pm(r["over_base"])] for r in oc["rows"]])
    return block("ood", table=table, r=html.escape(pm(tr["r"], 2)), change=change,
                 r_curated=html.escape(pm(oc.get("r"), 2)), conf=int(round(s["bootstrap"]["confidence"] * 100)))


def _extrapolation(s: dict) -> str:
    ex = s["extrapolation"]
    table = html_table(["ability", "size", "fitted on", "volume", "predicted", "measured", "error [interval]"],
                       [[r["ability"], r["size"], ", ".join(f"{v:g}" for v in r["fit_volumes"]), f(r["volume"], 0),
                         f(r["predicted"]), f(r["measured"]),
                         pm({"value": r["error"], "lo": r["error_lo"], "hi": r["error_hi"]})] for r in ex["rows"]])
    return block("extrapolation", table=table, fraction=f"{ex['fraction']:g}", mae=f(ex["mean_abs_error"]))


def _holdout(s: dict, conf: int) -> str:
    h = s["size_holdout"]
    if not h["rows"]:
        return block("no_holdout")
    table = html_table(
        ["ability", "MAE [interval]", "baseline MAE (second-largest size)", "ladder", "fitted on", "verdict"],
        [[r["ability"], pm({"value": r["mae"], "lo": r["lo"], "hi": r["hi"]}),
          pm({"value": r["baseline_mae"], "lo": r["baseline_lo"], "hi": r["baseline_hi"]})
          + (f" ({r['baseline_size']})" if r["baseline_size"] else ""),
          {"curve": "curve parameters", "score": "scores"}[r["method"]], ", ".join(r["fitted_on"]), r["verdict"]]
         for r in h["rows"]])
    return block("holdout", table=table, fitted_on=html.escape(", ".join(h["fitted_on"])),
                 target=html.escape(str(h["target"])), conf=conf, tolerance=f"{h['tolerance']:g}",
                 cost_fitted=cost(h.get("cost_fitted")), cost_target=cost(h.get("cost_target")))


def _decisions(s: dict, conf: int) -> str:
    d = s["decision_accuracy"]
    if not d["rows"]:
        return block("no_decisions")
    table = html_table(
        ["ability", "agreement [interval]", "decisions", "by kind"],
        [[r["ability"], pm({"value": r["agree"], "lo": r["lo"], "hi": r["hi"]}, 2), r["pairs"],
          ", ".join(f"{k}: {f(v, 2)} of {r['kinds'][k]}" for k, v in r["by_kind"].items())] for r in d["rows"]])
    return block("decisions", table=table, target=html.escape(str(d["target"])), conf=conf,
                 cost_smaller=cost(d.get("cost_smaller")), cost_target=cost(d.get("cost_target")))


def _paired(s: dict) -> str:
    p = s["paired"]
    rows = p["rows"]
    if not rows:
        return block("no_paired")
    # The page lists the significant rows and every mix / recommendation row; summary.json has all.
    shown = [r for r in rows if r["significant"] or r["kind"] != "source"]
    table = html_table(
        ["kind", "a", "b", "split", "ability", "gap a - b [interval]", "p", "q", "items", "cost"],
        [[r["kind"], r["a"], r["b"], r["split"], r["ability"], marked(r), f(r["p"], 4), f(r["q"], 4), r["items"],
          cost(r.get("cost"))] for r in shown])
    note = (f"Shown: the {sum(r['significant'] for r in rows)} significant rows and every mix comparison "
            f"({len(shown)} of {len(rows)}; all in summary.json).")
    return block("paired", table=table, n=len(rows), alpha=f"{p['alpha']:g}", shown=html.escape(note))


def _recommendation(s: dict) -> str:
    rec = s["recommendation"]
    out = []
    if rec:
        keys = ("even", "reconstruct", "recommended")
        table = html_table(
            ["ability", *[f"{k} items" for k in keys], *[f"{k} predicted" for k in keys]],
            [[a, *[rec["allocations"][k][a] for k in keys], *[f(rec["per_ability"][k][a]) for k in keys]]
             for a in rec["allocations"]["recommended"]]
            + [["mean", "", "", "", *[pm(rec["predicted"][k]) for k in keys]]])
        beyond = ("Counts past twice the largest volume studied (extrapolated): " + ", ".join(rec["beyond_data"])
                  if rec["beyond_data"] else "")
        out.append(block(
            "recommendation", budget=rec["budget"], size=html.escape(rec["size"]),
            per_ability=len(s.get("declaration", {}).get("abilities", ABILITIES)),
            floor=f"{s['settings']['floor']:g}", gain=pm(rec["gain_over_even"]), per_1000=pm(rec["gain_per_1000_items"], 2),
            gain_reconstruct=pm(rec["gain_over_reconstruct"]), cost=cost(rec.get("cost")), beyond=html.escape(beyond),
            table=table, mix=html.escape(yaml.safe_dump([rec["mix"]], sort_keys=False, default_flow_style=None))))
    else:
        out.append(block("no_recommendation"))
    mc = s["mix_check"]
    if mc["mixes"]:
        out.append(block("mixes", table=html_table(
            ["size", "mix", "items", "measured mean", "predicted mean", "cost"],
            [[m["size"], m["mix"], m["total"], pm(m["measured"]), pm(m["predicted"]), cost(m.get("cost"))]
             for m in mc["mixes"]])))
    if mc["gains"]:
        out.append(block("mix_gains", alpha=f"{s['paired']['alpha']:g}", table=html_table(
            ["size", "mix", "against", "items", "measured gain", "paired gap [interval]", "q", "predicted gain",
             "predicted gain / 1,000 items", "cost"],
            [[g["size"], g["mix"], g["reference"], g["total"], pm(g["measured"]), marked(g.get("paired")),
              f((g.get("paired") or {}).get("q"), 4), pm(g["predicted"]), f(g.get("predicted_gain_per_1000_items"), 2),
              cost(g.get("cost"))] for g in mc["gains"]])))
    return "\n".join(out)


def _benchmarks(s: dict) -> str:
    """lm-eval metrics of each cell's selected epoch against volume (analysis/benchmarks.py); nothing
    when the study scores no benchmarks."""
    entries = s.get("benchmarks") or []
    if not entries:
        return ""
    rows = []
    for e in entries:
        for g in e["groups"]:
            rows.append([e["metric"], g["size"], g["source"],
                         "; ".join(f"{p['volume']:,}: {pm(p['score']) if p['score']['lo'] is not None else f(p['score']['value'])}"
                                   for p in g["points"]),
                         pm(g.get("range_gain_per_doubling")), f((e.get("size_gain_per_doubling") or {}).get(g["source"])),
                         g["class"] or "n/a", g["evidence"]])
    table = html_table(["benchmark metric", "size", "source", "score at each volume (interval from lm-eval's stderr)",
                        "gain / doubling over the range", "gain / doubling of params (all sizes)", "class", "evidence"], rows)
    return block("benchmarks", table=table)


def render(summary: dict, study: str, selected: pl.DataFrame) -> str:
    """index.html: every section of the report, in reading order."""
    s = summary
    conf = int(round(s["bootstrap"]["confidence"] * 100))
    return "\n".join([
        _head(s, study), _pace(s), _sources(s), _ood(s), _extrapolation(s),
        _holdout(s, conf), _decisions(s, conf), _paired(s), _recommendation(s), _formulations(s), _benchmarks(s),
        block("selected", table=selected_table(selected, [*s.get("declaration", {}).get("abilities", ABILITIES),
                                                          *s.get("declaration", {}).get("ood", OOD_SUBJECTS)])),
    ]) + "\n"
