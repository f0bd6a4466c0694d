"""scores.parquet -> report/: growth curves with intervals, pace per ability, a data-budget recommendation.

Model selection follows the study: per cell and ability, the epoch with the best validation score
after the warm-up epochs; its test score is reported (ties go to the earlier epoch). Everything after
selection is platform/growth.py (pure); this module loads what it needs from storage, renders
index.html and the PNGs from one summary dict, and writes that dict as summary.json, so every number
on the page is in the JSON.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from growthpace.platform import growth
from growthpace.platform.abilities import ABILITIES, OOD_SUBJECTS
from growthpace.platform.selection import select  # noqa: F401 - the report's selection, re-exported
from growthpace.platform.storage import Layout, StoragePath, is_remote, read_json, read_parquet, upload_tree, write_bytes
from growthpace.platform.tracking import redact

PER_ABILITY = len(ABILITIES)  # a curated volume v is spread evenly: v / 10 items per ability


# --------------------------------------------------------------------------------------------------
# Loading what the analysis needs from storage


def load_verdicts(storage: StoragePath, selected: pl.DataFrame) -> pl.DataFrame | None:
    """Per-item verdicts of the selected checkpoints, from cells/<id>/predictions/epoch_NNN.parquet.

    Only (cell, split, ability) at their selected epoch are kept. None when no cell has stored
    predictions: the bootstrap then falls back to the binomial draw (growth.bootstrap_binomial).
    """
    frames = []
    wanted = selected.select("cell_id", "selected_epoch", "split", "ability")
    for (cell_id, epoch), part in wanted.group_by(["cell_id", "selected_epoch"]):
        path = Layout(storage).cell_predictions(cell_id, int(epoch))  # a safe cell id, or PathError
        if not path.exists():
            continue
        preds = read_parquet(path, columns=["split", "ability", "idx", "correct"])
        frames.append(
            preds.with_columns(pl.col("idx").cast(pl.String), pl.col("correct").cast(pl.Boolean))
            .join(part.select("split", "ability"), on=["split", "ability"])
            .with_columns(cell_id=pl.lit(cell_id))
        )
    return pl.concat(frames) if frames else None


def size_params(spec) -> dict[str, float]:
    """Size label -> parameter count: declared in the spec, else read from the label ('0.2M', '7b'),
    else counted from the preset's config (or an HF config) without building weights."""
    out: dict[str, float] = {}
    for m in spec.models:
        declared = getattr(m, "params", None)
        n = declared or growth.params_from_label(m.size)
        if n is None:
            try:
                from growthpace.platform.models import PRESETS, VOCAB_SIZE, count_params, describe, llama_config
                from growthpace.platform.abilities import CHAT_TOKENS

                if m.name in PRESETS:
                    n = count_params(llama_config(PRESETS[m.name], VOCAB_SIZE + len(CHAT_TOKENS)))
                else:
                    n = describe(m.name, None)[0]  # an HF config: the tokenizer is not consulted
            except Exception:  # unknown size: the size sensitivity is left out, nothing else
                n = None
        out[m.size] = float(n) if n else math.nan
    return out


def mix_counts(storage: StoragePath, scores: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Named mix -> items per ability, from the mix cells' cards (what the cells really trained on)."""
    out: dict[str, dict[str, int]] = {}
    if "mix" not in scores.columns:
        return out
    for cell_id, mix in scores.filter(pl.col("mix").fill_null("") != "").select("cell_id", "mix").unique().iter_rows():
        card = storage / "cells" / cell_id / "card.json"
        if mix not in out and card.exists():
            out[mix] = {a: int(n) for a, n in read_json(card)["counts"].items()}
    return out


def available_items(spec) -> dict[str, int] | None:
    """Train items per ability in the spec's dataset (the recommender cannot ask for more)."""
    try:
        from growthpace.platform.allocation import Pool

        return Pool.load(spec.data_root, spec.data.train_split, with_synthetic=False).available
    except Exception:
        return None


# --------------------------------------------------------------------------------------------------
# The analysis: selected scores -> summary dict (+ the objects the plots need)


def _largest_size(params: dict[str, float], sizes: list[str]) -> str:
    known = [s for s in sizes if math.isfinite(params.get(s, math.nan))]
    return max(known, key=lambda s: params[s]) if known else sizes[-1]


def analyse(selected: pl.DataFrame, settings, *, params: dict[str, float], verdicts: pl.DataFrame | None = None,
            mixes: dict[str, dict[str, int]] | None = None, available: dict[str, int] | None = None,
            budget: int | None = None, size: str | None = None, name: str | None = None):
    """Everything the report shows, as (summary, measured, fits, recommendation)."""
    sizes = list(dict.fromkeys(selected.sort("size")["size"].to_list()))
    params = {s: params.get(s, growth.params_from_label(s) or math.nan) for s in sizes}
    measured = growth.measure(selected, verdicts, samples=settings.bootstrap_samples, seed=settings.seed,
                              confidence=settings.confidence, params=params)
    fits = growth.fit_curves(measured)
    curves, abilities = growth.pace_table(fits, settings, settings.confidence)
    extrap = growth.extrapolation_table(measured, settings.extrapolate_from)
    errs = [abs(r["error"]) for r in extrap if r["error"] is not None]

    rec = None
    curated = measured.rows.filter((pl.col("source") == "curated") & (pl.col("mix") == ""))
    if fits:
        fitted_sizes = sorted({s for _, s in fits}, key=sizes.index)
        size = size or settings.recommend_size or _largest_size(params, fitted_sizes)
        if size not in fitted_sizes:
            from growthpace.platform.spec import SpecError

            raise SpecError(f"field 'analysis.recommend_size': no fitted curves for size {size!r}; sizes: {fitted_sizes}")
        # Default: half the largest volume, so an ability can get twice its even share and stay
        # within volumes that were measured (at the largest volume any shift upward is extrapolation).
        budget = budget or settings.budget or max(1, int(curated["volume"].max()) // 2)
        rec = growth.recommendation(fits, size, budget, name=name, floor=settings.floor, available=available,
                                    per_ability=PER_ABILITY, confidence=settings.confidence,
                                    trust_doublings=settings.trust_doublings, min_gain=settings.volume_gain)

    method = measured.rows.group_by("bootstrap").len()
    summary = {
        "settings": redact(settings.model_dump(mode="json")),
        "model": ("score(v) = a + (c - a) * sigmoid(k * (log2 v - m)); start a held at the random baseline unless "
                  "the data show otherwise; see docs/analysis.md"),
        "bootstrap": {
            "samples": settings.bootstrap_samples, "confidence": settings.confidence,
            "rows_by_method": dict(zip(method["bootstrap"].to_list(), method["len"].to_list())),
            "seeds": sorted(selected["seed"].unique().to_list()),
        },
        "params": {s: growth._num(p) for s, p in params.items()},
        "measured": [
            {**{k: r[k] for k in ("size", "source", "volume", "mix", "split", "ability", "seeds", "bootstrap")},
             "score": r["score"], "lo": growth._num(r["lo"]), "hi": growth._num(r["hi"]), "baseline": r["expected"]}
            for r in measured.rows.iter_rows(named=True)
        ],
        "curves": curves,
        "abilities": abilities,
        "source_gap": growth.source_gap(measured),
        "transfer": growth.transfer(measured),
        "extrapolation": {"fraction": settings.extrapolate_from, "rows": extrap,
                          "mean_abs_error": growth._num(np.mean(errs)) if errs else None},
        "recommendation": None if rec is None else {
            "size": rec.size, "budget": rec.budget, "name": rec.name, "allocations": rec.allocations,
            "predicted": rec.predicted, "per_ability": rec.per_ability, "gain_over_even": rec.gain,
            "gain_over_reconstruct": rec.gain_vs_reconstruct, "mix": rec.mix, "beyond_data": rec.beyond_data,
        },
        "mix_check": growth.mix_check(measured, fits, mixes or {}, PER_ABILITY, settings.trust_doublings),
    }
    return summary, measured, fits, rec


def mix_yaml(rec: growth.Recommendation, study: str) -> str:
    """The recommendation as a `data.mixes` entry, with what it is predicted to do as a comment."""
    g = rec.gain
    head = (f"# growthpace recommend ({study}, size {rec.size}, budget {rec.budget}): predicted mean "
            f"{rec.predicted['recommended']['value']:.1f} vs even {rec.predicted['even']['value']:.1f}, "
            f"gain {_pm(g)}\n")
    return head + yaml.safe_dump([rec.mix], sort_keys=False, default_flow_style=None)


# --------------------------------------------------------------------------------------------------
# Plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(n: int, cols: int = 5):
    plt = _plt()
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.8 * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return plt, fig, list(axes.flat)


def _finish(plt, fig, axes, out: Path, title: str) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), fontsize=7)
    fig.suptitle(title, fontsize=10)
    # Fixed margins: tight_layout measures every tick label of every panel and costs seconds.
    h = fig.get_figheight()  # inches: title and legend need the same room whatever the number of rows
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.6 / h, top=1 - 0.55 / h, wspace=0.22, hspace=0.45)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _colors(sizes: list[str]) -> dict[str, str]:
    cycle = _plt().rcParams["axes.prop_cycle"].by_key()["color"]
    return {s: cycle[i % len(cycle)] for i, s in enumerate(sizes)}


def _band(ax, part: pl.DataFrame, color: str, style: str, label: str | None) -> None:
    part = part.sort("volume")
    v = part["volume"].to_numpy()
    ax.fill_between(v, part["lo"].to_numpy(), part["hi"].to_numpy(), color=color, alpha=0.15, linewidth=0)
    ax.plot(v, part["score"].to_numpy(), style, color=color, markersize=3, linewidth=1, label=label)


def plot_growth(measured: growth.Measured, fits, classes: dict[str, str], sizes: list[str], out: Path) -> None:
    """Per ability: measured test score (points, 95% band shaded) and the fitted curve, a line per size."""
    plt, fig, axes = _panels(len(ABILITIES))
    colors = _colors(sizes)
    rows = measured.rows.filter((pl.col("source") == "curated") & (pl.col("mix") == "") & (pl.col("split") == "test"))
    for ax, ability in zip(axes, ABILITIES):
        part = rows.filter(pl.col("ability") == ability)
        for size in sizes:
            p = part.filter(pl.col("size") == size)
            if not p.height:
                continue
            p = p.sort("volume")
            v = p["volume"].to_numpy()
            ax.fill_between(v, p["lo"].to_numpy(), p["hi"].to_numpy(), color=colors[size], alpha=0.15, linewidth=0)
            ax.plot(v, p["score"].to_numpy(), "o", color=colors[size], markersize=3)
            fit = fits.get((ability, size))
            if fit is not None:
                grid = np.geomspace(v.min() / 1.5, v.max() * 1.5, 80)
                ax.plot(grid, fit.curve(grid), "-", color=colors[size], linewidth=1.2, label=f"{size} fit")
        if part.height:
            ax.axhline(part["expected"].mean(), color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_title(f"{ability} ({classes.get(ability, 'no fit')})", fontsize=8)
        ax.tick_params(labelsize=7)
    _finish(plt, fig, axes, out, "curated data, test score (%) vs training items (log): points measured, band 95% "
                                 "bootstrap, line fitted; dashed = random baseline")


def _by_source(ax, part: pl.DataFrame, title: str, sizes: list[str], colors: dict, legend: bool) -> None:
    """One panel: a banded line per size and source (curated solid, synthetic dotted), baseline dashed."""
    for size in sizes:
        for source, style in (("curated", "-o"), ("synthetic", ":s")):
            p = part.filter((pl.col("size") == size) & (pl.col("source") == source))
            if p.height:
                _band(ax, p, colors[size], style, f"{size} {source}" if legend else None)
    if part.height:
        ax.axhline(part["expected"].mean(), color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def plot_sources(measured: growth.Measured, sizes: list[str], out: Path) -> None:
    plt, fig, axes = _panels(len(ABILITIES))
    colors = _colors(sizes)
    rows = measured.rows.filter((pl.col("mix") == "") & (pl.col("split") == "test"))
    for i, (ax, ability) in enumerate(zip(axes, ABILITIES)):
        _by_source(ax, rows.filter(pl.col("ability") == ability), ability, sizes, colors, legend=i == 0)
    _finish(plt, fig, axes, out, "curated (solid) vs synthetic (dotted): test score (%) vs items (log), 95% bands; "
                                 "dashed = random baseline")


def plot_ood(measured: growth.Measured, transfer: dict, sizes: list[str], out: Path) -> None:
    """OOD subjects against volume, and OOD mean against in-domain mean (the transfer panel)."""
    plt, fig, axes = _panels(len(OOD_SUBJECTS) + 1, cols=4)
    colors = _colors(sizes)
    rows = measured.rows.filter((pl.col("mix") == "") & (pl.col("split") == "ood"))
    for i, (ax, subject) in enumerate(zip(axes, OOD_SUBJECTS)):
        _by_source(ax, rows.filter(pl.col("ability") == subject), subject, sizes, colors, legend=i == 0)
    ax = axes[len(OOD_SUBJECTS)]
    for r in transfer["rows"]:
        marker = {"curated": "o", "synthetic": "s"}.get(r["source"], "^")
        ax.errorbar(r["in_domain"]["value"], r["ood"]["value"], fmt=marker, color=colors.get(r["size"], "k"),
                    markersize=4, linewidth=0.6,
                    xerr=[[r["in_domain"]["value"] - r["in_domain"]["lo"]], [r["in_domain"]["hi"] - r["in_domain"]["value"]]],
                    yerr=[[r["ood"]["value"] - r["ood"]["lo"]], [r["ood"]["hi"] - r["ood"]["value"]]])
    rr = transfer.get("r")
    ax.set_title("OOD mean vs in-domain mean" + (f": r = {_pm(rr)}" if rr else ""), fontsize=8)
    ax.set_xlabel("in-domain test mean (%)", fontsize=7)
    ax.set_ylabel("OOD mean (%)", fontsize=7)
    ax.tick_params(labelsize=7)
    _finish(plt, fig, axes, out, "out-of-domain subjects vs items (log), 95% bands; right: transfer "
                                 "(o curated, s synthetic, ^ mix)")


def plot_recommendation(rec: growth.Recommendation, out: Path) -> None:
    plt = _plt()
    abilities = list(rec.allocations["recommended"])
    fig, ax = plt.subplots(figsize=(10, 3.2))
    x = np.arange(len(abilities))
    for i, key in enumerate(("even", "reconstruct", "recommended")):
        ax.bar(x + (i - 1) * 0.27, [rec.allocations[key][a] for a in abilities], 0.27,
               label=f"{key}: predicted mean {rec.predicted[key]['value']:.1f}")
    ax.set_xticks(x, abilities, rotation=20, fontsize=7)
    ax.set_ylabel("items", fontsize=8)
    ax.legend(fontsize=7)
    ax.set_title(f"budget {rec.budget} items, curves of size {rec.size}: predicted gain over even {_pm(rec.gain)}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# HTML


def _f(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x + 0.0:,.{digits}f}" if round(x, digits) != 0 else f"{0:.{digits}f}"  # no "-0.0"


def _pm(ci: dict | None, digits: int = 1) -> str:
    """'12.3 [10.1, 14.2]'"""
    if not ci:
        return "n/a"
    return f"{_f(ci['value'], digits)} [{_f(ci['lo'], digits)}, {_f(ci['hi'], digits)}]"


def _vol(ci: dict, smallest: float, largest: float) -> str:
    """A saturation volume; outside the studied volumes it is an extrapolation, and says so."""
    v = ci["value"]
    if v is None:
        return "n/a"
    text = f"{v:,.0f} [{_f(ci['lo'], 0)}, {_f(ci['hi'], 0)}]"
    if v > largest:
        return text + " (past the data)"
    return text + " (before the data)" if v < smallest else text


def _html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _table(selected: pl.DataFrame) -> str:
    wide = (
        selected.with_columns(pl.col("score").round(1))
        .group_by(["size", "source", "volume", "mix", "ability"]).agg(pl.col("score").mean().round(1))
        .pivot(on="ability", index=["size", "source", "volume", "mix"], values="score")
        .sort(["size", "source", "volume"])
    )
    return _html_table([str(c) for c in wide.columns],
                       [["" if v is None else v for v in row] for row in wide.iter_rows()])


def _page(summary: dict, study: str, selected: pl.DataFrame) -> str:
    s = summary
    conf = int(round(s["bootstrap"]["confidence"] * 100))
    methods = ", ".join(f"{n} by {m}" for m, n in s["bootstrap"]["rows_by_method"].items())
    largest = max((c["largest_volume"] for c in s["curves"]), default=0)
    smallest = min((c["smallest_volume"] for c in s["curves"]), default=0)
    parts = [f"""<!doctype html><meta charset="utf-8"><title>{html.escape(study)}: growth pace per ability</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1500px}} table{{border-collapse:collapse;font-size:12px;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}} td:first-child{{text-align:left}} pre{{background:#f4f4f4;padding:.5em}}
.note{{color:#555;font-size:13px}}</style>
<h1>{html.escape(study)}: how each ability grows</h1>
<p class="note">Per cell and ability: the test score (%) at the epoch with the best validation score after the
warm-up epochs (OOD: the epoch best on mean validation). {s['cells']} cells, {s['checkpoints']} checkpoints scored.
Brackets are {conf}% bootstrap intervals ({s['bootstrap']['samples']} replicates over test items
{'and seeds ' if len(s['bootstrap']['seeds']) > 1 else ''}; scores bootstrapped: {html.escape(methods)}; "binomial" =
no stored per-item verdicts, parametric draw from score and item count). Curve per ability and size:
<code>{html.escape(s['model'])}</code>. All numbers are in <a href="summary.json">summary.json</a>.</p>"""]

    parts.append("<h2>Growth pace per ability</h2>")
    parts.append(_html_table(
        ["ability", "class", "gain / doubling of data: at the start", "over the range",
         "saturation volume (90% of gain)", "ceiling", "gain / doubling of params", "evidence"],
        [[a["ability"], a["class"], _pm(a["gain_per_doubling"]), _pm(a["range_gain_per_doubling"]),
          _vol(a["saturation_volume"], smallest, largest), _pm(a["ceiling"]), _pm(a["size_gain_per_doubling"]),
          a["evidence"]] for a in s["abilities"]]))
    st = s["settings"]
    parts.append(f"""<p class="note">Classes: responds to volume = fitted gain per doubling over the studied range
&ge; {st['volume_gain']:g} points{' and its interval above 0' if st['require_interval'] else ''}; to size likewise with
&ge; {st['size_gain']:g} points per doubling of parameters; saturates early = responds to volume and reaches 90% of
its gain {st['early_saturation_doublings']:g}+ doublings before the largest volume; flat = neither. Values
per ability are means over sizes (saturation volume: median). Size sensitivity: slope of the fitted score on
log2(parameters) at each studied volume, averaged.</p>""")
    parts.append('<img src="abilities.png">')
    parts.append("<h3>Fitted curves per size</h3>")
    parts.append(_html_table(
        ["ability", "size", "params", "baseline", "start", "ceiling", "start gain / doubling", "range gain / doubling",
         "saturation volume",
         "midpoint (items)", "steepness / doubling", "R²", "RMSE", "points"],
        [[c["ability"], c["size"], _f(c["params"], 0), _f(c["baseline"]), _pm(c["start"]), _pm(c["ceiling"]),
          _pm(c["gain_per_doubling"]), _pm(c["range_gain_per_doubling"]), _vol(c["saturation_volume"], c["smallest_volume"], c["largest_volume"]),
          _f(2 ** c["midpoint_log2"], 0), _f(c["steepness"], 2), _f(c["r2"], 2), _f(c["rmse"]), c["points"]]
         for c in s["curves"]]))

    parts.append("<h2>Curated vs synthetic</h2>")
    gaps = [g for g in s["source_gap"] if g["ability"] == "mean"]
    if gaps:
        parts.append('<img src="sources.png">')
        parts.append("<p class='note'>Curated minus synthetic test score at the same volume (points), mean over "
                     "abilities, then per ability.</p>")
        parts.append(_html_table(["size", "volume", "curated", "synthetic", "gap"],
                                 [[g["size"], g["volume"], _f(g["curated"]), _f(g["synthetic"]), _pm(g["gap"])]
                                  for g in gaps]))
        per = [g for g in s["source_gap"] if g["ability"] != "mean"]
        vols = sorted({g["volume"] for g in per})
        keyed = {(g["ability"], g["size"], g["volume"]): g for g in per}
        pairs = sorted({(g["ability"], g["size"]) for g in per})
        parts.append(_html_table(["ability", "size", *[f"gap at {v}" for v in vols]],
                                 [[a, z, *[_pm(keyed[(a, z, v)]["gap"]) if (a, z, v) in keyed else "" for v in vols]]
                                  for a, z in pairs]))
    else:
        parts.append("<p>No curated/synthetic pairs at the same volume in this study.</p>")

    parts.append("<h2>Out of domain against in-domain</h2>")
    tr = s["transfer"]
    if tr["rows"]:
        parts.append('<img src="ood.png">')
        parts.append(f"<p class='note'>Mean OOD score against mean in-domain test score per setting; "
                     f"Pearson r across settings: {_pm(tr['r'], 2)}.</p>")
        parts.append(_html_table(["size", "source", "volume", "mix", "in-domain mean", "OOD mean", "OOD baseline"],
                                 [[r["size"], r["source"], r["volume"], r["mix"], _pm(r["in_domain"]), _pm(r["ood"]),
                                   _f(r["ood_baseline"])] for r in tr["rows"]]))
    else:
        parts.append("<p>No OOD scores in this study.</p>")

    ex = s["extrapolation"]
    parts.append("<h2>Extrapolation check</h2>")
    parts.append(f"<p class='note'>Fit on volumes &le; largest / {ex['fraction']:g}, predict the largest; error = "
                 f"predicted - measured (points). Mean absolute error: {_f(ex['mean_abs_error'])}.</p>")
    parts.append(_html_table(["ability", "size", "fitted on", "volume", "predicted", "measured", "error [interval]"],
                             [[r["ability"], r["size"], ", ".join(f"{v:g}" for v in r["fit_volumes"]), _f(r["volume"], 0),
                               _f(r["predicted"]), _f(r["measured"]),
                               _pm({"value": r["error"], "lo": r["error_lo"], "hi": r["error_hi"]})]
                              for r in ex["rows"]]))

    rec = s["recommendation"]
    parts.append("<h2>Data-budget recommendation</h2>")
    if rec:
        parts.append(f"""<p class="note">Allocation of {rec['budget']} curated items over abilities that maximises the
predicted mean test score on the curves of size {html.escape(rec['size'])} (an ability's n items count as total volume
n x {PER_ABILITY}: transfer between abilities is ignored). Every ability keeps {st['floor']:g} of its even share.
Predicted gain over the even split: <b>{_pm(rec['gain_over_even'])}</b> points; over the study's reconstruct mix
scaled to this budget: {_pm(rec['gain_over_reconstruct'])}.
{('Counts past twice the largest volume studied (extrapolated): ' + ', '.join(rec['beyond_data'])) if rec['beyond_data'] else ''}
Run it: add the mix below to a spec's <code>data.mixes</code> (see experiments/recommend-check.yaml), or
<code>growthpace recommend SPEC --budget N</code>.</p><img src="recommendation.png">""")
        keys = ("even", "reconstruct", "recommended")
        parts.append(_html_table(
            ["ability", *[f"{k} items" for k in keys], *[f"{k} predicted" for k in keys]],
            [[a, *[rec["allocations"][k][a] for k in keys], *[_f(rec["per_ability"][k][a]) for k in keys]]
             for a in rec["allocations"]["recommended"]]
            + [["mean", "", "", "", *[_pm(rec["predicted"][k]) for k in keys]]]))
        parts.append(f"<pre>{html.escape(yaml.safe_dump([rec['mix']], sort_keys=False, default_flow_style=None))}</pre>")
    else:
        parts.append("<p>No fitted curves (a curve needs 3 or more curated volumes).</p>")
    mc = s["mix_check"]
    if mc["mixes"]:
        parts.append("<h3>Named mixes: measured against predicted</h3>")
        parts.append("<p class='note'>Mean test score over abilities of each named-mix cell, and what the curves "
                     "of its size predict for its items per ability.</p>")
        parts.append(_html_table(["size", "mix", "items", "measured mean", "predicted mean"],
                                 [[m["size"], m["mix"], m["total"], _pm(m["measured"]), _pm(m["predicted"])]
                                  for m in mc["mixes"]]))
    if mc["gains"]:
        parts.append("<p class='note'>Gain over the even split of the same budget (points): measured (paired "
                     "over test items) against predicted.</p>")
        parts.append(_html_table(["size", "mix", "against", "items", "measured gain", "predicted gain"],
                                 [[g["size"], g["mix"], g["reference"], g["total"], _pm(g["measured"]),
                                   _pm(g["predicted"])] for g in mc["gains"]]))

    parts.append("<h2>Selected scores</h2>" + _table(selected))
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------------
# Entry points


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def write_report(scores: pl.DataFrame, folder: StoragePath, study: str, warmup_for, spec=None,
                 storage: StoragePath | None = None) -> StoragePath:
    """Write index.html, its PNGs and summary.json into a fresh folder, then swap it in.

    With the spec: its analysis settings, parameter counts and dataset; the cells' stored predictions
    and cards are looked up under ``storage`` (default: the report folder's parent, the storage root).
    In an object store the report is built locally and uploaded, index.html last.
    """
    import shutil
    import tempfile

    from growthpace.platform.spec import AnalysisSpec

    if is_remote(folder):
        with tempfile.TemporaryDirectory() as d:
            write_report(scores, Path(d) / "report", study, warmup_for, spec=spec, storage=folder.parent)
            upload_tree(Path(d) / "report", folder, last=("index.html",))
        return folder / "index.html"
    settings = spec.analysis if spec is not None else AnalysisSpec()
    storage = storage if storage is not None else folder.parent
    params = size_params(spec) if spec is not None else {}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".report."))
    try:
        selected = select(scores, warmup_for)
        write_bytes(tmp / "selected.csv", selected.write_csv().encode())
        summary, measured, fits, rec = analyse(
            selected, settings, params=params, verdicts=load_verdicts(storage, selected),
            mixes=mix_counts(storage, scores), available=available_items(spec) if spec is not None else None,
        )
        summary = {"study": study, "cells": scores["cell_id"].n_unique(),
                   "checkpoints": scores.select("cell_id", "epoch").unique().height, **summary}
        sizes = list(dict.fromkeys(measured.rows.sort("params", "size")["size"].to_list()))
        classes = {a["ability"]: a["class"] for a in summary["abilities"]}
        plot_growth(measured, fits, classes, sizes, tmp / "abilities.png")
        plot_sources(measured, sizes, tmp / "sources.png")
        plot_ood(measured, summary["transfer"], sizes, tmp / "ood.png")
        if rec is not None:
            plot_recommendation(rec, tmp / "recommendation.png")
            write_bytes(tmp / f"{rec.name}.yaml", mix_yaml(rec, study).encode())
        summary = _json_safe(summary)
        write_bytes(tmp / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())
        write_bytes(tmp / "index.html", _page(summary, study, selected).encode())
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder / "index.html"


def _metric_key(*parts: str) -> str:
    # MLflow metric names: alphanumerics, _ - . / and space only.
    return "/".join("".join(ch if ch.isalnum() or ch in "_-. " else "_" for ch in str(p)) for p in parts)


def mlflow_series(summary: dict) -> dict[str, dict[int, float]]:
    """What the study's parent run carries: curve/<size>/<ability> at step = volume (measured curated
    test score, so MLflow's compare view draws growth curves across studies) and the pace numbers at
    step 0."""
    series: dict[str, dict[int, float]] = {}
    for r in summary["measured"]:
        if r["source"] == "curated" and r["mix"] == "" and r["split"] == "test":
            series.setdefault(_metric_key("curve", r["size"], r["ability"]), {})[int(r["volume"])] = r["score"]
    for c in summary["curves"]:
        for name in ("ceiling", "gain_per_doubling", "range_gain_per_doubling", "saturation_volume"):
            if c[name]["value"] is not None:
                series[_metric_key("pace", c["size"], c["ability"], name)] = {0: c[name]["value"]}
        if c["r2"] is not None:
            series[_metric_key("pace", c["size"], c["ability"], "r2")] = {0: c["r2"]}
    for a in summary["abilities"]:
        for name in ("gain_per_doubling", "range_gain_per_doubling", "size_gain_per_doubling", "saturation_volume",
                     "ceiling"):
            if a[name]["value"] is not None:
                series[_metric_key("pace", a["ability"], name)] = {0: a[name]["value"]}
    for r in summary["extrapolation"]["rows"]:
        if r["error"] is not None:
            series[_metric_key("extrapolation", r["size"], r["ability"], "error")] = {0: r["error"]}
    if summary["extrapolation"]["mean_abs_error"] is not None:
        series["extrapolation/mean_abs_error"] = {0: summary["extrapolation"]["mean_abs_error"]}
    rec = summary.get("recommendation")
    if rec and rec["gain_over_even"]["value"] is not None:
        series["recommend/predicted_gain_over_even"] = {0: rec["gain_over_even"]["value"]}
    return series


def log_analysis(tracker, run_id: str, folder: Path) -> int:
    """Log the report's numbers on the parent run (points already there are not logged twice)."""
    path = folder / "summary.json"
    if not path.exists():
        return 0
    return tracker.log_series(run_id, mlflow_series(json.loads(path.read_text(encoding="utf-8"))))


def recommend_for_spec(spec, budget: int, size: str | None = None, name: str | None = None):
    """`growthpace recommend`: (recommendation, YAML text) from the spec's finished study."""
    from growthpace.platform.storage import safe_name

    if name is not None:
        safe_name(name, "--name")  # it names <storage>/recommendations/<name>.yaml
    layout = Layout(spec.storage_path)
    if not layout.scores.exists():
        raise FileNotFoundError(f"{layout.scores}: no scores yet; run the study first")
    scores = read_parquet(layout.scores)
    selected = select(scores, spec.evaluation.warmup_for)
    _, _, _, rec = analyse(selected, spec.analysis, params=size_params(spec),
                           verdicts=load_verdicts(layout.root, selected), available=available_items(spec),
                           budget=budget, size=size, name=name)
    if rec is None:
        raise FileNotFoundError(f"{layout.scores}: no curve could be fitted (3+ curated volumes needed)")
    return rec, mix_yaml(rec, spec.name)


if __name__ == "__main__":
    from growthpace.cli import main_for

    main_for("report")
