"""Report plots: matplotlib (Agg), Okabe–Ito colours, labelled axes, the ideal value marked.

Every function takes entries of the report document (:mod:`reports.content`) and returns a PNG
as a ``data:`` URI for inline embedding (no file, no URL). Labels that came from a dataset or a
model are drawn as plain text: mathtext is off, so ``$`` in a token cannot be interpreted.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from audit.views import clip, fmt_interval, fmt_num  # noqa: E402

#: Okabe & Ito (2008) colour-blind-safe palette
OKABE_ITO = {
    "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73", "yellow": "#F0E442",
    "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7", "black": "#000000",
}
VALUE_COLOR = OKABE_ITO["blue"]
IDEAL_COLOR = OKABE_ITO["vermillion"]
#: diverging map for signed attributions: blue (negative) – white – vermillion (positive)
DIVERGING = LinearSegmentedColormap.from_list("okabe_ito_div", [OKABE_ITO["blue"], "#FFFFFF", OKABE_ITO["vermillion"]])
#: sequential map for attention weights (white → blue)
SEQUENTIAL = LinearSegmentedColormap.from_list("okabe_ito_seq", ["#FFFFFF", OKABE_ITO["blue"]])

MAX_METRICS = 12
MAX_GROUPS = 30
_RC: Any = {"text.parse_math": False, "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9,
       "figure.dpi": 100, "savefig.dpi": 150, "font.family": "DejaVu Sans"}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _axis_label(name: str, unit: str) -> str:
    return f"{name} ({unit})" if unit else f"{name} (unitless)"


def _limits(values: Sequence[float | None]) -> tuple[float, float]:
    vals = [v for v in values if v is not None]
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.12 or max(abs(hi) * 0.1, 0.1)
    return lo - pad, hi + pad


def metric_plot(metrics: list[dict[str, Any]]) -> str | None:
    """One row per metric: the value with its 95 % CI, the ideal as a dashed line."""
    ms = [m for m in metrics if m["value"] is not None][:MAX_METRICS]
    if not ms:
        return None
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(len(ms), 1, figsize=(6.4, 0.95 * len(ms) + 0.5), squeeze=False)
        for ax, m in zip(axes[:, 0], ms, strict=True):
            v, lo, hi, ideal = m["value"], m["ci_low"], m["ci_high"], m["ideal"]
            if lo is not None and hi is not None:
                ax.errorbar([v], [0], xerr=[[max(v - lo, 0)], [max(hi - v, 0)]], fmt="o", color=VALUE_COLOR,
                            ecolor=VALUE_COLOR, capsize=5, lw=2, ms=7)
            else:
                ax.plot([v], [0], "o", color=VALUE_COLOR, ms=7)
            if ideal is not None:
                ax.axvline(ideal, color=IDEAL_COLOR, ls="--", lw=1.5)
            ax.set_xlim(*_limits([v, lo, hi, ideal]))
            ax.set_yticks([])
            ax.set_ylim(-1, 1)
            ax.set_xlabel(_axis_label(m["name"], m["unit"]))
            ci = f", 95% CI {fmt_interval(lo, hi)}" if lo is not None and hi is not None else ", no CI"
            reading = (f"; ideal {ideal:g}" if ideal is not None else "") + f" ({m['direction']})"
            ax.set_title(f"{clip(m['name'], 40)} = {fmt_num(v)}{ci}{reading}", loc="left")
            ax.grid(axis="x", color="#ddd", lw=0.6)
            for side in ("top", "right", "left"):
                ax.spines[side].set_visible(False)
        _legend(fig, any(m["ideal"] is not None for m in ms))
        fig.tight_layout(rect=(0, 0, 1, 0.97 - 0.25 / (0.95 * len(ms) + 0.5)))
        return _png(fig)


def _legend(fig: Any, ideal: bool) -> None:
    """One legend for the figure: value with CI (blue, point + bar), ideal (vermillion, dashed)."""
    handles = [Line2D([], [], color=VALUE_COLOR, marker="o", lw=2, label="value with 95% CI")]
    if ideal:
        handles.append(Line2D([], [], color=IDEAL_COLOR, ls="--", lw=1.5, label="ideal value"))
    fig.legend(handles=handles, loc="upper right", ncol=2, frameon=False, fontsize=8)


def breakdown_plot(rows: list[dict[str, Any]], metric: dict[str, Any]) -> str | None:
    """Per-group values of one metric with CIs (forest plot), the ideal as a dashed line."""
    rows = [r for r in rows if r["value"] is not None][:MAX_GROUPS]
    if len(rows) < 2:
        return None
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(rows) + 1.0))
        y = np.arange(len(rows))[::-1]
        vals = [r["value"] for r in rows]
        lo = [r["ci_low"] if r["ci_low"] is not None else r["value"] for r in rows]
        hi = [r["ci_high"] if r["ci_high"] is not None else r["value"] for r in rows]
        err = np.array([[max(v - a, 0) for v, a in zip(vals, lo, strict=True)], [max(b - v, 0) for v, b in zip(vals, hi, strict=True)]])
        ax.errorbar(vals, y, xerr=err, fmt="o", color=VALUE_COLOR, ecolor=VALUE_COLOR, capsize=3, lw=1.5)
        ideal = metric.get("ideal")
        if ideal is not None:
            ax.axvline(ideal, color=IDEAL_COLOR, ls="--", lw=1.5)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{clip(r['group'], 32)} (n={r['n']})" if r["n"] is not None else clip(r["group"], 32)
                            for r in rows])
        ax.set_xlim(*_limits(vals + lo + hi + [ideal]))
        ax.set_xlabel(_axis_label(metric["name"], metric.get("unit", "")))
        ideal_txt = f"; ideal {ideal:g}" if ideal is not None else "; no ideal declared"
        ax.set_title(f"{clip(metric['name'], 40)} by {rows[0]['group_by']}{ideal_txt}", loc="left")
        ax.grid(axis="x", color="#ddd", lw=0.6)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        _legend(fig, ideal is not None)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (0.32 * len(rows) + 1.0)))
        return _png(fig)


def matrix_plot(example: dict[str, Any]) -> str | None:
    """An attention (or generation attribution) matrix as a heatmap with token labels."""
    mat = np.array([[np.nan if v is None else v for v in r] for r in example["matrix"]], dtype=float)
    if mat.size == 0 or np.all(np.isnan(mat)):
        return None
    with plt.rc_context(_RC):
        n_r, n_c = mat.shape
        fig, ax = plt.subplots(figsize=(min(1.6 + 0.28 * n_c, 7.0), min(1.4 + 0.26 * n_r, 7.0)))
        signed = np.nanmin(mat) < 0
        if signed:
            lim = float(np.nanmax(np.abs(mat))) or 1.0
            im = ax.imshow(mat, cmap=DIVERGING, vmin=-lim, vmax=lim, aspect="auto")
        else:
            im = ax.imshow(mat, cmap=SEQUENTIAL, vmin=0, vmax=float(np.nanmax(mat)) or 1.0, aspect="auto")
        ax.set_xticks(range(n_c))
        ax.set_xticklabels([clip(t, 14) for t in example["col_tokens"]], rotation=90, fontsize=7)
        ax.set_yticks(range(n_r))
        ax.set_yticklabels([clip(t, 14) for t in example["row_tokens"]], fontsize=7)
        ax.set_xlabel(example.get("cols_are", "source token"))
        ax.set_ylabel(example.get("rows_are", "token"))
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        cb.set_label("score (signed)" if signed else "score (non-negative, e.g. attention probability)")
        title = example["method"] + (f" — {example['note']}" if example.get("note") else "")
        ax.set_title(clip(title, 70), loc="left")
        fig.tight_layout()
        return _png(fig)
