"""The report's PNGs, drawn with matplotlib (Agg) from the analysis' objects; nothing else is drawn."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from growthpace.platform.analysis import growth
from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS
from growthpace.platform.report.page import pm


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# A laptop page is about 1,300 px wide: figures are drawn that wide (the page scales them down, never up,
# so a wider screen shows them sharp and a narrower one whole).
WIDTH_IN, DPI = 12.0, 110


def grid_columns(n: int) -> int:
    """Columns of a grid of n small multiples: about 2.5 columns per row on a wide page (DoIT's ten
    abilities: 5 x 2), at most 6 so that 30 or 50 panels stay readable."""
    return max(1, min(n, 6, math.ceil(math.sqrt(2.5 * n))))


def _panels(n: int, cols: int | None = None):
    plt = _plt()
    cols = grid_columns(n) if cols is None else cols
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN, 2.4 * rows + 0.9), squeeze=False)
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
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.6 / h, top=1 - 0.55 / h, wspace=0.28, hspace=0.5)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


def _colors(sizes: list[str]) -> dict[str, str]:
    cycle = _plt().rcParams["axes.prop_cycle"].by_key()["color"]
    return {s: cycle[i % len(cycle)] for i, s in enumerate(sizes)}


def _band(ax, part: pl.DataFrame, color: str, style: str, label: str | None) -> None:
    part = part.sort("volume")
    v = part["volume"].to_numpy()
    ax.fill_between(v, part["lo"].to_numpy(), part["hi"].to_numpy(), color=color, alpha=0.15, linewidth=0)
    ax.plot(v, part["score"].to_numpy(), style, color=color, markersize=3, linewidth=1, label=label)


def plot_growth(measured: growth.Measured, fits, classes: dict[str, str], sizes: list[str], out: Path,
                abilities: tuple[str, ...] | list[str] = ABILITIES, primary: str = "curated") -> None:
    """Per ability: measured test score (points, 95% band shaded) and the fitted curve, a line per size."""
    plt, fig, axes = _panels(len(abilities))
    colors = _colors(sizes)
    rows = measured.rows.filter((pl.col("source") == primary) & (pl.col("mix") == "") & (pl.col("split") == "test"))
    for ax, ability in zip(axes, abilities):
        part = rows.filter(pl.col("ability") == ability)
        for size in sizes:
            p = part.filter(pl.col("size") == size)
            if not p.height:
                continue
            _band(ax, p, colors[size], "o", None)
            fit = fits.get((ability, size))
            if fit is not None:
                v = p["volume"].to_numpy()
                grid = np.geomspace(v.min() / 1.5, v.max() * 1.5, 80)
                ax.plot(grid, fit.curve(grid), "-", color=colors[size], linewidth=1.2, label=f"{size} fit")
        if part.height:
            ax.axhline(part["expected"].mean(), color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_title(f"{ability} ({classes.get(ability, 'no fit')})", fontsize=8)
        ax.tick_params(labelsize=7)
    _finish(plt, fig, axes, out, f"{primary} data, test score (%) vs training items (log): points measured, band 95% "
                                 "bootstrap, line fitted; dashed = random baseline")


SOURCE_STYLES = ("-o", ":s", "--^", "-.v", ":D", "--P")


def _by_source(ax, part: pl.DataFrame, title: str, sizes: list[str], colors: dict, legend: bool,
               sources: tuple[str, ...] | list[str] = ("curated", "synthetic")) -> None:
    """One panel: a banded line per size and source (DoIT: curated solid, synthetic dotted), baseline dashed."""
    for size in sizes:
        for i, source in enumerate(sources):
            style = SOURCE_STYLES[i % len(SOURCE_STYLES)]
            p = part.filter((pl.col("size") == size) & (pl.col("source") == source))
            if p.height:
                _band(ax, p, colors[size], style, f"{size} {source}" if legend else None)
    if part.height:
        ax.axhline(part["expected"].mean(), color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def plot_sources(measured: growth.Measured, sizes: list[str], out: Path,
                 abilities: tuple[str, ...] | list[str] = ABILITIES,
                 sources: tuple[str, ...] | list[str] = ("curated", "synthetic")) -> None:
    plt, fig, axes = _panels(len(abilities))
    colors = _colors(sizes)
    rows = measured.rows.filter((pl.col("mix") == "") & (pl.col("split") == "test"))
    for i, (ax, ability) in enumerate(zip(axes, abilities)):
        _by_source(ax, rows.filter(pl.col("ability") == ability), ability, sizes, colors, legend=i == 0,
                   sources=sources)
    styles = {"-o": "solid", ":s": "dotted", "--^": "dashed, triangles", "-.v": "dash-dot", ":D": "dotted, diamonds",
              "--P": "dashed, plus"}
    named = " vs ".join(f"{s} ({styles[SOURCE_STYLES[i % len(SOURCE_STYLES)]]})" for i, s in enumerate(sources))
    _finish(plt, fig, axes, out, f"{named}: test score (%) vs items (log), 95% bands; dashed grey = random baseline")


def plot_ood(measured: growth.Measured, transfer: dict, sizes: list[str], out: Path,
             subjects: list[str] = list(OOD_SUBJECTS)) -> None:
    """OOD sets against volume, and OOD mean against in-domain mean (the transfer panel)."""
    plt, fig, axes = _panels(len(subjects) + 1, cols=4)
    colors = _colors(sizes)
    rows = measured.rows.filter((pl.col("mix") == "") & (pl.col("split") == "ood"))
    for i, (ax, subject) in enumerate(zip(axes, subjects)):
        _by_source(ax, rows.filter(pl.col("ability") == subject), subject, sizes, colors, legend=i == 0)
    ax = axes[len(subjects)]
    for r in transfer["rows"]:
        marker = {"curated": "o", "synthetic": "s"}.get(r["source"], "^")
        ax.errorbar(r["in_domain"]["value"], r["ood"]["value"], fmt=marker, color=colors.get(r["size"], "k"),
                    markersize=4, linewidth=0.6,
                    xerr=[[r["in_domain"]["value"] - r["in_domain"]["lo"]], [r["in_domain"]["hi"] - r["in_domain"]["value"]]],
                    yerr=[[r["ood"]["value"] - r["ood"]["lo"]], [r["ood"]["hi"] - r["ood"]["value"]]])
    rr = transfer.get("r")
    ax.set_title("OOD mean vs in-domain mean" + (f": r = {pm(rr)}" if rr else ""), fontsize=8)
    ax.set_xlabel("in-domain test mean (%)", fontsize=7)
    ax.set_ylabel("OOD mean (%)", fontsize=7)
    ax.tick_params(labelsize=7)
    _finish(plt, fig, axes, out, "out-of-domain subjects vs items (log), 95% bands; right: transfer "
                                 "(o curated, s synthetic, ^ mix)")


def plot_holdout(holdout: dict, out: Path) -> None:
    """Per ability: the largest size's measured score, the smaller sizes' prediction of it, and the
    baseline (the second-largest size's measured score), against volume."""
    rows = holdout["rows"]
    plt, fig, axes = _panels(max(len(rows), 1))
    for i, (ax, r) in enumerate(zip(axes, rows)):
        v = [p["volume"] for p in r["volumes"]]
        ax.plot(v, [p["measured"] for p in r["volumes"]], "-o", color="k", markersize=3, linewidth=1,
                label=f"{holdout['target']} measured" if i == 0 else None)
        ax.plot(v, [p["predicted"] for p in r["volumes"]], "--s", color="C0", markersize=3, linewidth=1,
                label="predicted from smaller sizes" if i == 0 else None)
        ax.plot(v, [math.nan if p["baseline"] is None else p["baseline"] for p in r["volumes"]], ":^", color="C1",
                markersize=3, linewidth=1, label="baseline: second-largest size" if i == 0 else None)
        ax.set_xscale("log")
        ax.set_title(f"{r['ability']}: MAE {pm({'value': r['mae'], 'lo': r['lo'], 'hi': r['hi']})}", fontsize=8)
        ax.tick_params(labelsize=7)
    _finish(plt, fig, axes, out, "size hold-out: curated test score (%) of the largest size vs items (log)")


def plot_recommendation(rec: growth.Recommendation, out: Path) -> None:
    plt = _plt()
    abilities = list(rec.allocations["recommended"])
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 3.6))
    x = np.arange(len(abilities))
    for i, key in enumerate(("even", "reconstruct", "recommended")):
        ax.bar(x + (i - 1) * 0.27, [rec.allocations[key][a] for a in abilities], 0.27,
               label=f"{key}: predicted mean {rec.predicted[key]['value']:.1f}")
    ax.set_xticks(x, abilities, rotation=20, fontsize=7)
    ax.set_ylabel("items", fontsize=8)
    ax.legend(fontsize=7)
    ax.set_title(f"budget {rec.budget} items, curves of size {rec.size}: predicted gain over even {pm(rec.gain)}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


def draw(summary: dict, measured: growth.Measured, fits, rec: growth.Recommendation | None, folder: Path) -> None:
    """Every PNG of the report into folder: abilities, sources, ood, holdout, recommendation."""
    sizes = list(dict.fromkeys(measured.rows.sort("params", "size")["size"].to_list()))
    classes = {a["ability"]: a["class"] for a in summary["abilities"]}
    study = summary.get("declaration") or {"abilities": list(ABILITIES), "primary": "curated"}
    sources = list(dict.fromkeys([study["primary"], *(x for p in study.get("pairs", []) for x in p)]))
    sources += [x for x in ("curated", "synthetic") if not study.get("pairs") and x not in sources]
    plot_growth(measured, fits, classes, sizes, folder / "abilities.png", study["abilities"], study["primary"])
    plot_sources(measured, sizes, folder / "sources.png", study["abilities"], sources)
    ood = study.get("ood", list(OOD_SUBJECTS))
    if ood:
        plot_ood(measured, summary["transfer"], sizes, folder / "ood.png", ood)
    if summary["size_holdout"]["rows"]:
        plot_holdout(summary["size_holdout"], folder / "holdout.png")
    if rec is not None:
        plot_recommendation(rec, folder / "recommendation.png")
