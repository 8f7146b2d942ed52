"""The header a selection run prints before it trains: what runs, on what, and where it goes.

It names the candidates (with their weights and every input adaptation known
before building), the epochs observed and trained, the data's sizes, where the
run trains (in process or on Dask), the run directory and the caches. A
candidate whose input shape is only known once built (a saved model, a callable)
gets its adaptation printed when it finishes, and recorded in the report either way.
"""

from __future__ import annotations

from typing import Any

from .adapt import pixel_range
from .candidates import CandidateSpec, keras_cache_dir, planned_adaptation

_INDENT = "    "


def weights_text(spec: CandidateSpec) -> str:
    """How a keras.applications candidate is initialised, said plainly."""
    w = spec.weights
    if w is None:
        return "random initialisation (no --weights; --weights imagenet for pre-trained)"
    if isinstance(w, str) and w == "imagenet":
        return "ImageNet weights"
    return f"weights from {w}"


def describe_candidate(spec: CandidateSpec) -> str:
    """One line: what the candidate is."""
    src = spec.describe()["source"]
    if spec.kind == "application":
        return f"keras.applications.{spec.source}, {weights_text(spec)}"
    if spec.kind == "example":
        from .example import POOL_BY_NAME

        desc = POOL_BY_NAME[spec.source].description if spec.source in POOL_BY_NAME else ""
        return f"built-in example backbone{': ' + desc if desc else ''}"
    if spec.kind == "saved":
        return f"saved model {src}"
    return f"callable {src}"


def _data_line(summary: dict[str, Any]) -> str:
    shape = "x".join(str(v) for v in summary.get("input_shape", []))
    sizes = f"{summary.get('n_train')} train, {summary.get('n_val')} val"
    if summary.get("n_test"):
        sizes += f", {summary['n_test']} test"
    return (
        f"data: {summary.get('name', '?')}: {sizes} samples of {shape}, "
        f"{summary.get('num_classes')} classes"
    )


def _epochs_line(settings: Any) -> str:
    line = f"epochs: every predictor reads epochs 1-{settings.epochs}"
    if settings.truth_epochs and settings.truth_epochs > settings.epochs:
        line += (
            f"; training goes on to epoch {settings.truth_epochs}, whose test accuracy is "
            "the truth (evaluation mode)"
        )
    elif settings.truth_epochs:
        line += f"; the test accuracy after epoch {settings.truth_epochs} is the truth"
    return line


def _where_line(settings: Any) -> str:
    probe = "-".join(str(w) for w in settings.hidden)
    train = (
        f"training: batch {settings.batch_size}, Adam lr {settings.learning_rate:g}, "
        f"seed {settings.seed}, frozen probe {probe} (dropout {settings.dropout:g}); "
    )
    threads = settings.threads
    if settings.scheduler is not None:
        return train + f"on the Dask scheduler {settings.scheduler}"
    if settings.workers > 1:
        per = "the cores shared between them"
        if threads:
            per = f"{threads} TensorFlow thread{'s' if threads != 1 else ''} each"
        return train + f"on {settings.workers} Dask worker processes ({per})"
    return train + "in this process"


def run_header(plan: Any) -> list[str]:
    """The header lines for a :class:`~ncap.selection.pipeline.Plan`."""
    s, data, specs = plan.settings, plan.dataset, plan.specs
    reused = set(plan.reused)
    n_train = len(specs) - len(reused)
    head = f"ncap select: {len(specs)} candidates"
    if reused:
        head += f" ({len(reused)} reused from the run directory, {n_train} to train)"
    lines = [head, _data_line(data.summary()), _epochs_line(s), _where_line(s)]
    if plan.store is not None:
        lines.append(
            f"out: {plan.store.out} (each candidate is saved when it finishes; "
            "--resume continues an interrupted run)"
        )
    caches = []
    if any(c.kind == "example" for c in specs):
        from .example import cache_dir

        caches.append(f"example backbones pre-trained once into {cache_dir()}")
    if any(c.kind == "application" and c.weights == "imagenet" for c in specs):
        caches.append(f"ImageNet weights in {keras_cache_dir()}/models")
    if caches:
        lines.append("cache: " + "; ".join(caches))
    pixels = pixel_range(data.x_train) if any(c.kind == "application" for c in specs) else None
    width = max(len(c.name) for c in specs)
    lines.append("candidates:")
    for spec in specs:
        mark = " (reused)" if spec.name in reused else ""
        lines.append(f"  {spec.name:<{width}}  {describe_candidate(spec)}{mark}")
        plan_ = planned_adaptation(spec, data.input_shape, pixels)
        if plan_ is not None:
            lines += [f"  {'':<{width}}  {_INDENT}{line}" for line in plan_.lines]
    lines += [f"note: {n}" for n in plan.notes]
    return lines
