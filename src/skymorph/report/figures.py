"""The report's figures (matplotlib), each returned as an embedded PNG at twice its display size.

Every figure carries no title of its own: its one title is the caption the HTML
shows above it (and its ``alt`` text).  Figures are drawn ~1300 CSS pixels wide
and saved at 2x (``DPI``) so that they stay sharp on high-density screens; every
axis is labelled, histogram y axes included.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Figure", "type_colours", "raincloud_figure", "gini_m20_figure", "completeness_figure",
           "kept_rejected_figure", "maps_figure", "stamps_figure", "stamps_axes", "reliability_plot",
           "plot_scan",
           "WIDTH_IN", "DPI"]

WIDTH_IN = 13.0
"""Width of a full-width figure in inches; at 100 CSS px per inch it is shown 1300 px wide."""
CSS_PX_PER_IN = 100
DPI = 2 * CSS_PX_PER_IN
"""Saved at twice the display resolution."""

_BASE_COLOURS = {"SPH": "#d62728", "ETD": "#ff7f0e", "LTD": "#2ca02c", "IRR": "#1f77b4", "UNC": "#7f7f7f",
                 "NOCONS": "#c7c7c7"}


@dataclass(frozen=True)
class Figure:
    """One figure of the report."""

    key: str
    """Identifier (the HTML element id)."""
    title: str
    """Caption shown once, above the image (and its alt text)."""
    png: str
    """Base64 PNG."""
    width: int
    """Display width in CSS pixels (half the PNG's width)."""
    height: int
    note: str = ""
    """Caveat shown beside the figure."""


def type_colours(types: Sequence[str]) -> dict[str, str]:
    """A colour per type: the paper's five keep theirs, other types take tab10 colours."""
    import matplotlib

    cycle = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
    spare = [c for c in cycle if c not in _BASE_COLOURS.values()]
    out = {}
    for t in types:
        out[t] = _BASE_COLOURS.get(t) or spare[len([k for k in out if k not in _BASE_COLOURS]) % len(spare)]
    out.setdefault("NOCONS", _BASE_COLOURS["NOCONS"])
    return out


def _subplots(ncols: int, nrows: int = 1, height: float = 4.0, width: float = WIDTH_IN):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    # constrained layout keeps labels clear of the next panel without tight_layout's warnings
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height * nrows), squeeze=False,
                             layout="constrained")
    return fig, axes.ravel()


def _finish(fig, key: str, title: str, note: str = "") -> Figure:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    data = buf.getvalue()
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
    return Figure(key=key, title=title, png=base64.b64encode(data).decode(), width=w // 2, height=h // 2,
                  note=note)


def _raincloud(ax, groups: list[np.ndarray], names: list[str], colours: dict[str, str],
               rng: np.random.Generator, max_points: int = 2000) -> None:
    """Half violin (cloud) + box + jittered points (rain), one row per group."""
    from scipy.stats import gaussian_kde

    for i, (values, name) in enumerate(zip(groups, names, strict=True)):
        colour = colours.get(name, "#444444")
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        if values.size > 2 and np.ptp(values) > 0:
            grid = np.linspace(values.min(), values.max(), 200)
            try:
                dens = gaussian_kde(values)(grid)
                ax.fill_between(grid, i, i + 0.4 * dens / dens.max(), color=colour, alpha=0.5, lw=0)
            except np.linalg.LinAlgError:
                pass
        ax.boxplot(values, positions=[i - 0.12], orientation="horizontal", widths=0.12, showfliers=False,
                   patch_artist=True, boxprops={"facecolor": "white", "edgecolor": colour},
                   medianprops={"color": colour, "lw": 2})
        shown = values if values.size <= max_points else rng.choice(values, max_points, replace=False)
        ax.scatter(shown, i - 0.3 + rng.uniform(-0.07, 0.07, shown.size), s=6, color=colour, alpha=0.5)
    ax.set_yticks(range(len(names)), [f"{n}\n(N={np.isfinite(g).sum()})" for n, g in zip(names, groups,
                                                                                         strict=True)])
    ax.set_ylim(-0.6, len(names) - 0.4)


def raincloud_figure(key: str, title: str, sample: pd.DataFrame, types: Sequence[str],
                     columns: Sequence[tuple[str, str]], colours: dict[str, str], rng: np.random.Generator,
                     note: str = "") -> Figure:
    """Raincloud plots of ``columns`` (column, axis label), one panel each, one row per type."""
    fig, axes = _subplots(len(columns), height=4.2)
    for ax, (col, label) in zip(axes, columns, strict=True):
        groups = [pd.to_numeric(sample.loc[sample["morph_type"] == t, col], errors="coerce").to_numpy(float)
                  for t in types]
        _raincloud(ax, groups, list(types), colours, rng)
        ax.set_xlabel(label)
        ax.set_ylabel("type")
        if col in ("sersic_n", "r_e"):
            pos = np.concatenate([g[np.isfinite(g) & (g > 0)] for g in groups] or [np.array([])])
            if pos.size and pos.max() / max(pos.min(), 1e-9) > 30:
                ax.set_xscale("log")
    return _finish(fig, key, title, note)


def gini_m20_figure(etg: pd.DataFrame, ltg: pd.DataFrame, etg_name: str, ltg_name: str,
                    line: tuple[float, float], merger: tuple[float, float], sersic_split: float) -> Figure:
    """Fig. 12: the Gini-M20 plane with the Lotz et al. (2008) lines, and Sersic n of ETG / LTG."""
    has_n = any(_finite_count(f, "sersic_n") for f in (etg, ltg))
    fig, axes = _subplots(2 if has_n else 1, height=5.6, width=WIDTH_IN if has_n else WIDTH_IN * 0.6)
    ax = axes[0]
    for name, frame, colour in ((ltg_name, ltg, "#1f77b4"), (etg_name, etg, "#d62728")):
        ax.scatter(frame["m20"], frame["gini"], s=14, alpha=0.7, color=colour, label=f"{name} ({len(frame)})")
    m = np.linspace(-3.2, 0.0, 50)
    ax.plot(m, line[0] * m + line[1], "k--", lw=1.2,
            label=f"E/S0/Sa vs Sb-Ir: G = {line[0]:g} M20 + {line[1]:g}")
    ax.plot(m, merger[0] * m + merger[1], color="#9467bd", ls=":", lw=1.8,
            label=f"mergers above: G = {merger[0]:g} M20 + {merger[1]:g}")
    gini = pd.concat([etg["gini"], ltg["gini"]]).astype(float)
    m20 = pd.concat([etg["m20"], ltg["m20"]]).astype(float)
    if np.isfinite(gini).any():
        ax.set_ylim(min(0.3, np.nanmin(gini) - 0.02), max(0.75, np.nanmax(gini) + 0.02))
    if np.isfinite(m20).any():
        ax.set_xlim(min(-0.5, np.nanmax(m20) + 0.1), max(-3.0, np.nanmin(m20) - 0.1))
    else:
        ax.invert_xaxis()  # M20 grows to the left by convention (Lotz et al. 2004)
    ax.set_xlabel("M20 (more concentrated to the right)")
    ax.set_ylabel("Gini G")
    ax.legend(fontsize=9, loc="lower left")
    if has_n:
        ax = axes[1]
        n_e, n_l = _finite_values(etg, "sersic_n"), _finite_values(ltg, "sersic_n")
        top = max(6.0, float(np.nanmax(np.r_[n_e, n_l, 1.0])))
        bins = np.linspace(0, top, 30)
        ax.hist(n_l, bins=bins, histtype="step", density=True, color="#1f77b4", lw=1.5, label=ltg_name)
        ax.hist(n_e, bins=bins, histtype="step", density=True, color="#d62728", lw=1.5, label=etg_name)
        ax.axvline(sersic_split, color="k", ls="--", lw=1, label=f"n = {sersic_split:g}")
        ax.set_xlabel("Sersic n")
        ax.set_ylabel("probability density")
        ax.legend(fontsize=9)
    title = "Fig. 12: ETG versus LTG on the Gini-M20 plane with the Lotz et al. (2008) lines"
    return _finish(fig, "fig12", title + (", and their Sersic n" if has_n else ""))


def _type_label(t: str, labels: dict[str, str]) -> str:
    """'SPH: spheroid'; the no-consensus value by its words alone."""
    words = labels.get(t, "")
    if t == "NOCONS":
        return words or "no consensus"
    return f"{t}: {words}" if words and words != t else t


def _finite_values(frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame.columns:
        return np.array([])
    values = pd.to_numeric(frame[col], errors="coerce").to_numpy(float)
    return values[np.isfinite(values)]


def _finite_count(frame: pd.DataFrame, col: str) -> int:
    return int(_finite_values(frame, col).size)


def _grid(n: int) -> tuple[int, int]:
    ncol = min(4, n)
    return ncol, math.ceil(n / ncol)


def completeness_figure(curves: dict[str, dict[str, list]], labels: dict[str, str],
                        confidence: float) -> Figure:
    """Fig. 13: kept fraction per quantile bin with Wilson intervals, one panel per quantity."""
    ncol, nrow = _grid(len(curves))
    fig, axes = _subplots(ncol, nrow, height=3.3)
    for ax, (col, curve) in zip(axes, curves.items(), strict=False):
        centre, frac = np.asarray(curve["centre"], float), np.asarray(curve["fraction"], float)
        low, high = np.asarray(curve["low"], float), np.asarray(curve["high"], float)
        ax.errorbar(centre, frac, yerr=[frac - low, high - frac], fmt="o-", ms=4, capsize=3)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(labels.get(col, col))
        ax.set_ylabel("fraction kept")
    for ax in axes[len(curves):]:
        ax.set_visible(False)
    level = f"{confidence * 100:g}%"
    return _finish(fig, "fig13", f"Fig. 13: completeness (kept = consensus) with {level} Wilson intervals")


def kept_rejected_figure(table: pd.DataFrame, kept: np.ndarray, columns: Sequence[tuple[str, str]],
                         tests: dict[str, dict]) -> Figure:
    """Fig. 14: normalised histograms of kept and rejected galaxies, per quantity."""
    ncol, nrow = _grid(len(columns))
    fig, axes = _subplots(ncol, nrow, height=3.4)
    for ax, (col, label) in zip(axes, columns, strict=False):
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(float)
        a, b = values[kept], values[~kept]
        both = values[np.isfinite(values)]
        low, high = (np.percentile(both, 1), np.percentile(both, 99)) if both.size > 1 else (0.0, 0.0)
        bins = np.linspace(low, high, 25) if high > low else 10
        for group, name, colour in ((a, "kept", "C0"), (b, "rejected", "C3")):
            group = group[np.isfinite(group)]
            # a density of a group with no value inside the bins would divide by zero
            if np.histogram(group, bins=bins)[0].sum() > 0:
                ax.hist(group, bins=bins, histtype="step", density=True, lw=1.5, label=name, color=colour)
        ax.set_xlabel(label)
        ax.set_ylabel("probability density")
        t = tests.get(col, {})
        nan = float("nan")
        # the tests as the panel's heading, clear of the histograms
        ax.set_title(f"KS p = {t.get('ks_pvalue', nan):.2g}, d = {t.get('cohens_d', nan):.2f}, "
                     f"δ = {t.get('cliffs_delta', nan):.2f}", fontsize=10)
        ax.legend(fontsize=9)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    return _finish(fig, "fig14", "Fig. 14: kept versus rejected galaxies (KS p-value, Cohen's d, Cliff's δ)")


def maps_figure(maps: dict[str, np.ndarray], types: np.ndarray, order: Sequence[str],
                colours: dict[str, str], labels: dict[str, str]) -> Figure:
    """Figs. 5f, 7: 2-D maps (UMAP, t-SNE) coloured by type; no-consensus galaxies in light grey."""
    fig, axes = _subplots(len(maps), height=6.0, width=WIDTH_IN if len(maps) > 1 else WIDTH_IN * 0.55)
    for ax, (name, xy) in zip(axes, maps.items(), strict=True):
        for t in order:
            sel = types == t
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=12, alpha=0.8, color=colours.get(t, "#444444"),
                           label=_type_label(t, labels) + f" ({int(sel.sum())})")
        ax.set_xlabel(f"{name} 1")
        ax.set_ylabel(f"{name} 2")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=9, markerscale=1.5)
    return _finish(fig, "maps", "Figs. 5f, 7: UMAP and t-SNE maps coloured by morphology type")


def stamps_figure(images: dict[str, list[tuple[str, np.ndarray]]], labels: dict[str, str],
                  per_row: int) -> Figure:
    """Example stamps: one row per type, already stretched to [0, 1], the id under each."""
    fig = stamps_axes(images, labels, per_row)
    return _finish(fig, "stamps", "Example stamps of each type (random members, shown as in the montages)")


def _id_label(gid: str, width_pt: float, fontsize: float) -> str:
    """The id as it fits under a panel ``width_pt`` points wide: on one line, else broken into
    lines short enough (a digit is ~0.6 em wide), so long survey ids (18 digits) never run
    into the next panel."""
    per_line = max(4, int(width_pt / (0.62 * fontsize)))
    if len(gid) <= per_line:
        return gid
    return "\n".join(gid[i:i + per_line] for i in range(0, len(gid), per_line))


def stamps_axes(images: dict[str, list[tuple[str, np.ndarray]]], labels: dict[str, str], per_row: int):
    """The matplotlib figure of :func:`stamps_figure` (not yet saved)."""
    rows = [t for t in images if images[t]]
    ncol = max(per_row, 1)
    side = WIDTH_IN / ncol
    fig, axes = _subplots(ncol, max(len(rows), 1), height=side + 0.25)
    axes = axes.reshape(max(len(rows), 1), ncol)
    fontsize = 9.0
    width_pt = 0.85 * side * 72  # the panel less the gap to its neighbour
    label_lines = max((_id_label(str(gid), width_pt, fontsize).count("\n") + 1
                       for t in rows for gid, _ in images[t]), default=1)
    if label_lines > 1:  # room under every row for the longest id
        fig.set_size_inches(WIDTH_IN, max(len(rows), 1) * (side + 0.25 + 0.15 * (label_lines - 1)))
    for r, t in enumerate(rows):
        for c in range(ncol):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images[t]):
                gid, img = images[t][c]
                ax.imshow(img, cmap="gray", vmin=0, vmax=1, origin="lower", interpolation="nearest")
                ax.set_xlabel(_id_label(str(gid), width_pt, fontsize), fontsize=fontsize, linespacing=1.0)
            else:
                ax.set_axis_off()
            if c == 0:
                ax.set_ylabel(_type_label(t, labels).replace(": ", "\n"), fontsize=11)
    return fig


def draw_reliability(ax, cv: dict[str, Any]) -> None:
    """Reliability diagram of the extension's cross-validated predictions on ``ax``."""
    bins = [b for b in cv["reliability"] if b["n"]]
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=0.09,
           color="tab:blue", alpha=0.7, label="fraction correct per bin")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="tab:red", ms=3,
            label="(mean confidence, fraction correct)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top probability (cross-validated)")
    ax.set_ylabel("fraction correct")
    ax.legend(fontsize=8, loc="upper left")


def reliability_figure(cv: dict[str, Any]) -> Figure:
    """The extension's reliability diagram as a report figure."""
    fig, axes = _subplots(1, height=5.0, width=6.0)
    draw_reliability(axes[0], cv)
    return _finish(fig, "reliability", f"Reliability of the extended types: ECE {cv['ece']:.3f} "
                   f"(uncalibrated {cv['ece_uncalibrated']:.3f})")


def reliability_plot(cv: dict[str, Any], path: str | os.PathLike) -> None:
    """The extension's reliability diagram as a PNG file of its own (``extend/reliability.png``):
    accuracy vs confidence per bin of the cross-validated predictions, titled with the ECE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
    draw_reliability(ax, cv)
    ax.set_title(f"reliability: ECE {cv['ece']:.3f} (uncalibrated {cv['ece_uncalibrated']:.3f})", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_scan(scan: pd.DataFrame, path: str | os.PathLike, best: int | None = None) -> Path:
    """Plot the Davies-Bouldin index of reduce's dimension scan against d (PNG) and return the path.

    Parameters
    ----------
    scan : DataFrame
        The scan table of :func:`skymorph.core.reduction.scan_dims` (columns ``dims``,
        ``davies_bouldin``).
    path : str or Path
        The PNG file to write (``reduce/dims_scan.png`` in a run).
    best : int, optional
        The chosen d, circled in red.

    Returns
    -------
    Path
        ``path``.

    See Also
    --------
    skymorph.core.reduction.scan_dims : computes the table.

    Examples
    --------
    >>> scan = pd.DataFrame({"dims": [50, 100], "davies_bouldin": [1.2, 0.9]})
    >>> plot_scan(scan, tmp_path / "scan.png", best=100).name  # doctest: +SKIP
    'scan.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(scan["dims"], scan["davies_bouldin"], "o-", color="C0")
    if best is not None:
        row = scan[scan["dims"] == best].iloc[0]
        ax.plot([best], [row["davies_bouldin"]], "o", color="C3", ms=10, mfc="none",
                label=f"lowest: d = {best}")
        ax.legend(frameon=False)
    ax.set_xlabel("UMAP dimension d")
    ax.set_ylabel("Davies-Bouldin index (K-means)")
    ax.set_title("Choice of the UMAP dimension")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
