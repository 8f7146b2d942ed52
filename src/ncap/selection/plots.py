"""PNG plots of a selection run (matplotlib, Agg backend: no display needed).

* ``learning_curves.png``: validation accuracy per epoch, observed epochs shaded, truth marked;
* ``beta.png``: training beta_eff per epoch;
* ``accuracy_vs_beta.png``: per candidate, val accuracy against beta with the
  fitted line, its predictive band, and the prediction at beta = 0;
* ``predicted_vs_true.png``: every method's score against the true accuracy, with rho.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from .report import SelectionReport
from .scoring import METHOD_LABELS, METHODS


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list[Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def learning_curves(report: SelectionReport, path: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    e = report.settings["epochs"]
    cands = [c for c in report.candidates if c.ok]
    for c, col in zip(cands, _colors(len(cands)), strict=True):
        acc = c.curve("val_accuracy")
        ep = np.arange(1, len(acc) + 1)
        ax.plot(ep, acc, "-", color=col, lw=1.2, label=c.name)
        ax.plot(ep[:e], acc[:e], "o", color=col, ms=3)
        if c.truth is not None and c.record.truth_epoch:
            ax.plot([c.record.truth_epoch], [c.truth], "*", color=col, ms=10, mec="k", mew=0.5)
    ax.axvspan(0.5, e + 0.5, color="0.9", zorder=0, label=f"observed (1-{e})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    title = "Learning curves"
    if report.has_truth:
        title += " (star: true test accuracy)"
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    return _save(fig, path)


def beta_curves(report: SelectionReport, path: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    e = report.settings["epochs"]
    cands = [c for c in report.candidates if c.ok]
    for c, col in zip(cands, _colors(len(cands)), strict=True):
        b = c.curve("beta")
        ep = np.arange(1, len(b) + 1)
        ax.plot(ep, b, "-", color=col, lw=1.2, label=c.name)
        ax.plot(ep[:e], b[:e], "o", color=col, ms=3)
    ax.axvspan(0.5, e + 0.5, color="0.9", zorder=0, label=f"observed (1-{e})")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training beta_eff (epoch mean of batch beta)")
    vals = np.concatenate([c.curve("beta") for c in cands] or [np.zeros(0)])
    vals = vals[np.isfinite(vals)]
    if vals.size and vals.min() > 0:
        ax.set_yscale("log")
    elif vals.size and np.abs(vals).max() > 0:
        # Signs differ and outliers can be large: linear near 0, logarithmic beyond.
        lin = float(np.median(np.abs(vals[vals != 0]))) if np.any(vals != 0) else 1.0
        ax.set_yscale("symlog", linthresh=lin)
    ax.set_title("beta_eff per epoch")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def accuracy_vs_beta(report: SelectionReport, path: str) -> str:
    plt = _plt()
    cands = [c for c in report.candidates if c.ok]
    n = max(1, len(cands))
    ncol = min(4, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 3.0 * nrow), squeeze=False)
    e = report.settings["epochs"]
    for ax, c in zip(axes.flat, cands, strict=False):
        b, acc = c.curve("beta")[:e], c.curve("val_accuracy")[:e]
        ax.plot(b, acc, "o", color="0.6", ms=4, label="observed")
        p = c.scores.prediction
        if p is not None:
            ax.plot(p.window_beta, p.window_acc, "o", color="C0", ms=5, label="fitted window")
            fin = b[np.isfinite(b)]
            lo, hi = (min(0.0, fin.min()), max(0.0, fin.max())) if fin.size else (0.0, 1.0)
            pad = 0.05 * (hi - lo or 1.0)
            xs = np.linspace(lo - (pad if lo < 0 else 0.0), hi + pad, 50)
            mean, std = p.line(xs)
            ax.plot(xs, mean, "-", color="C0", lw=1)
            ax.fill_between(xs, mean - std, mean + std, color="C0", alpha=0.15)
            ax.errorbar(
                [0.0],
                [p.predicted],
                yerr=[p.std],
                fmt="s",
                color="C3",
                ms=5,
                capsize=3,
                label=f"h(0) = {p.predicted:.3f}",
            )
        if c.truth is not None:
            ax.plot([0.0], [c.truth], "*", color="k", ms=9, label=f"true {c.truth:.3f}")
        ax.set_title(c.name, fontsize=9)
        ax.set_xlabel("beta_eff", fontsize=8)
        ax.set_ylabel("val accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(cands) :]:
        ax.axis("off")
    fig.suptitle(
        "Validation accuracy vs beta_eff: Bayesian ridge line, prediction at beta = 0", y=1.0
    )
    fig.tight_layout()
    return _save(fig, path)


def predicted_vs_true(report: SelectionReport, path: str) -> str:
    plt = _plt()
    cands = [c for c in report.candidates if c.ok and c.truth is not None]
    fig, axes = plt.subplots(1, len(METHODS), figsize=(3.3 * len(METHODS), 3.4), squeeze=False)
    truth = np.array([c.truth for c in cands], dtype=np.float64)
    for ax, m in zip(axes.flat, METHODS, strict=True):
        s = np.array([c.scores.values[m] for c in cands], dtype=np.float64)
        ok = np.isfinite(s)
        ax.plot(s[ok], truth[ok], "o", color="C0" if m == "ncap" else "C1")
        if m == "ncap":
            std = np.array([c.std for c in cands])
            ax.errorbar(
                s[ok],
                truth[ok],
                xerr=np.where(np.isfinite(std[ok]), std[ok], 0),
                fmt="none",
                ecolor="C0",
                alpha=0.5,
            )
        for c, x, y, k in zip(cands, s, truth, ok, strict=True):
            if k:
                ax.annotate(c.name, (x, y), fontsize=5, alpha=0.7)
        mt = report.metrics.get(m)
        rho = "n/a" if mt is None or not math.isfinite(mt["spearman"]) else f"{mt['spearman']:.2f}"
        ax.set_title(f"{METHOD_LABELS[m]}: rho = {rho}", fontsize=9)
        ax.set_xlabel("LogME score" if m == "logme" else "predicted final accuracy", fontsize=8)
        ax.set_ylabel("true test accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
        if m != "logme" and ok.any():
            lo = min(float(np.min(s[ok])), float(truth.min()))
            hi = max(float(np.max(s[ok])), float(truth.max()))
            ax.plot([lo, hi], [lo, hi], "k:", lw=0.7)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: str) -> str:
    plt = _plt()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_plots(report: SelectionReport, directory: str) -> list[str]:
    """Write every plot that applies into ``directory``; return their paths."""
    paths = [
        learning_curves(report, os.path.join(directory, "learning_curves.png")),
        beta_curves(report, os.path.join(directory, "beta.png")),
        accuracy_vs_beta(report, os.path.join(directory, "accuracy_vs_beta.png")),
    ]
    if report.has_truth:
        paths.append(predicted_vs_true(report, os.path.join(directory, "predicted_vs_true.png")))
    return paths
