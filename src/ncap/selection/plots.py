"""PNG plots of a selection run (matplotlib, Agg backend: no display needed).

* ``learning_curves.png``: validation accuracy per epoch, observed epochs shaded, truth marked;
* ``beta.png``: training beta_eff per epoch;
* ``accuracy_vs_beta.png``: per candidate, val accuracy against beta with the
  fitted line, its predictive band, and the prediction at beta = 0;
* ``predicted_vs_true.png``: a dot plot, one row per candidate (labelled once,
  on the left) and one panel per method: the method's score beside the true
  test accuracy, with Spearman's rho in the panel's title.

Accuracy axes stay within [0, 1] (a fitted line or an error bar beyond is drawn
clipped). Legends sit outside the data. A run in which no candidate finished
writes no plots.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from .report import CandidateResult, SelectionReport
from .scoring import ACCURACY_METHODS, METHOD_LABELS

_DPI = 110
# Line styles for pools larger than the ten colours of tab10 (colour x style stays unique).
_STYLES = ("-", "--", ":", "-.")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _looks(n: int) -> list[tuple[Any, str]]:
    """A (colour, line style) per curve: tab10's colours, then again dashed, dotted, ..."""
    cmap = _plt().get_cmap("tab10")
    return [(cmap(i % 10), _STYLES[(i // 10) % len(_STYLES)]) for i in range(n)]


def _accuracy_limits(values: list[float], pad: float = 0.04) -> tuple[float, float]:
    """Limits around ``values`` (with a margin), never beyond [0, 1]."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not v.size:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    margin = max(pad, 0.05 * (hi - lo))
    return max(0.0, lo - margin), min(1.0, hi + margin)


def _finished(report: SelectionReport) -> list[CandidateResult]:
    return [c for c in report.candidates if c.ok]


def _legend_outside(ax: Any, n: int) -> None:
    ax.legend(
        fontsize=7,
        ncol=1 if n <= 14 else 2,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        frameon=False,
    )


def learning_curves(report: SelectionReport, path: str) -> str:
    return _save(learning_curves_figure(report), path)


def learning_curves_figure(report: SelectionReport) -> Any:
    plt = _plt()
    cands = _finished(report)
    fig, ax = plt.subplots(figsize=(8, 5))
    e = report.settings["epochs"]
    values: list[float] = []
    for c, (col, ls) in zip(cands, _looks(len(cands)), strict=True):
        acc = c.curve("val_accuracy")
        values += list(acc)
        ep = np.arange(1, len(acc) + 1)
        ax.plot(ep, acc, ls, color=col, lw=1.2, label=c.name)
        ax.plot(ep[:e], acc[:e], "o", color=col, ms=3)
        if c.truth is not None and c.record.truth_epoch:
            values.append(c.truth)
            ax.plot([c.record.truth_epoch], [c.truth], "*", color=col, ms=10, mec="k", mew=0.5)
    ax.axvspan(0.5, e + 0.5, color="0.92", zorder=0, label=f"observed (epochs 1-{e})")
    ax.set_ylim(*_accuracy_limits(values))
    ax.set_xlabel("epoch (1-based)")
    ax.set_ylabel("validation accuracy")
    title = "Learning curves"
    if report.has_truth:
        title += " (star: true test accuracy)"
    ax.set_title(title)
    _legend_outside(ax, len(cands) + 1)
    return fig


def beta_curves(report: SelectionReport, path: str) -> str:
    return _save(beta_curves_figure(report), path)


def beta_curves_figure(report: SelectionReport) -> Any:
    plt = _plt()
    cands = _finished(report)
    fig, ax = plt.subplots(figsize=(8, 5))
    e = report.settings["epochs"]
    for c, (col, ls) in zip(cands, _looks(len(cands)), strict=True):
        b = c.curve("beta")
        ep = np.arange(1, len(b) + 1)
        ax.plot(ep, b, ls, color=col, lw=1.2, label=c.name)
        ax.plot(ep[:e], b[:e], "o", color=col, ms=3)
        if getattr(c.record, "beta_epoch", None):  # beta="both": the epoch protocol, thin
            be = c.curve("beta_epoch")
            ax.plot(np.arange(1, len(be) + 1), be, ":", color=col, lw=1.0)
    ax.axvspan(0.5, e + 0.5, color="0.92", zorder=0, label=f"observed (epochs 1-{e})")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("epoch (1-based)")
    ax.set_ylabel("training beta_eff (epoch mean of batch beta)")
    vals = np.concatenate([c.curve("beta") for c in cands] or [np.zeros(0)])
    vals = vals[np.isfinite(vals)]
    if vals.size and vals.min() > 0:
        ax.set_yscale("log")
    elif vals.size and np.abs(vals).max() > 0:
        # Signs differ and outliers can be large: linear near 0, logarithmic beyond.
        lin = float(np.median(np.abs(vals[vals != 0]))) if np.any(vals != 0) else 1.0
        ax.set_yscale("symlog", linthresh=lin)
    both = any(getattr(c.record, "beta_epoch", None) for c in cands)
    ax.set_title("beta_eff per epoch" + (" (dotted: the epoch protocol's pass)" if both else ""))
    _legend_outside(ax, len(cands) + 1)
    return fig


def accuracy_vs_beta(report: SelectionReport, path: str) -> str:
    return _save(accuracy_vs_beta_figure(report), path)


def accuracy_vs_beta_figure(report: SelectionReport) -> Any:
    plt = _plt()
    cands = _finished(report)
    n = max(1, len(cands))
    ncol = min(4, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.9 * nrow + 0.6), squeeze=False)
    e = report.settings["epochs"]
    for ax, c in zip(axes.flat, cands, strict=False):
        b, acc = c.curve("beta")[:e], c.curve("val_accuracy")[:e]
        ax.plot(b, acc, "o", color="0.6", ms=4, label="observed epoch")
        values = list(acc)
        p = c.scores.prediction
        title = c.name
        if p is not None:
            ax.plot(p.window_beta, p.window_acc, "o", color="C0", ms=5, label="fitted window")
            fin = b[np.isfinite(b)]
            lo, hi = (min(0.0, fin.min()), max(0.0, fin.max())) if fin.size else (0.0, 1.0)
            pad = 0.05 * (hi - lo or 1.0)
            xs = np.linspace(lo - (pad if lo < 0 else 0.0), hi + pad, 50)
            mean, std = p.line(xs)
            # An accuracy lies in [0, 1]: the line and its band are drawn clipped to it.
            ax.plot(xs, np.clip(mean, 0.0, 1.0), "-", color="C0", lw=1, label="h(beta) ± std")
            ax.fill_between(
                xs,
                np.clip(mean - std, 0.0, 1.0),
                np.clip(mean + std, 0.0, 1.0),
                color="C0",
                alpha=0.15,
            )
            ax.errorbar([0.0], [p.predicted], yerr=[p.std], fmt="none", ecolor="C3", capsize=3)
            # Markers on the [0, 1] edge stay whole (clip_on=False); the bar is clipped.
            ax.plot([0.0], [p.predicted], "s", color="C3", ms=5, clip_on=False, label="h(0) ± std")
            values += [p.predicted - p.std, p.predicted + p.std]
            title += f"\nh(0) = {p.predicted:.3f}"
        if c.truth is not None:
            ax.plot(
                [0.0], [c.truth], "*", color="k", ms=9, clip_on=False, label="true test accuracy"
            )
            values.append(c.truth)
            title += f", true {c.truth:.3f}" if p is not None else f"\ntrue {c.truth:.3f}"
        ax.set_ylim(*_accuracy_limits(values))
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("beta_eff", fontsize=8)
        ax.set_ylabel("val accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(5))
    for ax in list(axes.flat)[len(cands) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.suptitle("Validation accuracy vs beta_eff: Bayesian ridge line, prediction at beta = 0")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def predicted_vs_true(report: SelectionReport, path: str) -> str:
    return _save(predicted_vs_true_figure(report), path)


def predicted_vs_true_figure(report: SelectionReport) -> Any:
    """A dot plot: a row per candidate (best true accuracy on top), a panel per method."""
    plt = _plt()
    cands = sorted(
        (c for c in report.candidates if c.ok and c.truth is not None),
        key=lambda c: c.truth,  # type: ignore[arg-type, return-value]
    )
    methods = report.methods
    truth = np.array([c.truth for c in cands], dtype=np.float64)
    y = np.arange(len(cands))
    height = 0.26 * len(cands) + 1.7
    fig, axes = plt.subplots(
        1, len(methods), figsize=(2.5 * len(methods) + 1.2, height), sharey=True, squeeze=False
    )
    for ax, m in zip(axes.flat, methods, strict=True):
        s = np.array([c.scores.values[m] for c in cands], dtype=np.float64)
        ok = np.isfinite(s)
        colour = "C0" if m == "ncap" else "C1"
        accuracy = m in ACCURACY_METHODS
        if accuracy:
            for yi, si, ti, k in zip(y, s, truth, ok, strict=True):
                if k:
                    ax.plot([si, ti], [yi, yi], "-", color="0.75", lw=1, zorder=1)
            ax.plot(
                truth, y, "*", color="k", ms=8, zorder=3, clip_on=False, label="true test accuracy"
            )
        std = np.array([c.std if m == "ncap" else math.nan for c in cands])
        if m == "ncap" and np.isfinite(std[ok]).any():
            ax.errorbar(
                s[ok],
                y[ok],
                xerr=np.where(np.isfinite(std[ok]), std[ok], 0.0),
                fmt="none",
                ecolor=colour,
                alpha=0.6,
                capsize=2,
                zorder=2,
            )
        ax.plot(
            s[ok], y[ok], "o", color=colour, ms=6, zorder=4, clip_on=False, label="method's score"
        )
        mt = report.metrics.get(m)
        rho = "n/a" if mt is None or not math.isfinite(mt["spearman"]) else f"{mt['spearman']:.2f}"
        ax.set_title(f"{METHOD_LABELS[m]}\nSpearman rho = {rho}", fontsize=9)
        if accuracy:
            ax.set_xlim(*_accuracy_limits(list(s[ok]) + list(truth)))
            ax.set_xlabel("accuracy", fontsize=8)
        else:
            ax.set_xlabel(f"{METHOD_LABELS[m]} score", fontsize=8)
        ax.grid(axis="y", color="0.92", lw=0.8)
        ax.tick_params(labelsize=7)
    axes.flat[0].set_yticks(y, [c.name for c in cands], fontsize=8)
    axes.flat[0].set_ylim(-0.7, len(cands) - 0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("Each method's score beside the true test accuracy (rows: candidates)", y=1.0)
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1))
    return fig


def _save(fig: Any, path: str) -> str:
    """Write ``fig`` to ``path`` and close it."""
    plt = _plt()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def write_plots(report: SelectionReport, directory: str) -> list[str]:
    """Write every plot that has something to show into ``directory``; return their paths.

    No finished candidate: no plots (an empty figure says nothing).
    """
    if not _finished(report):
        return []
    paths = [
        learning_curves(report, os.path.join(directory, "learning_curves.png")),
        beta_curves(report, os.path.join(directory, "beta.png")),
    ]
    if any(c.scores.prediction is not None or c.truth is not None for c in _finished(report)):
        paths.append(accuracy_vs_beta(report, os.path.join(directory, "accuracy_vs_beta.png")))
    if any(c.truth is not None for c in _finished(report)):
        paths.append(predicted_vs_true(report, os.path.join(directory, "predicted_vs_true.png")))
    return paths
