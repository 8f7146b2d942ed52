"""How a dataset's samples are fed to a backbone that wants other inputs, each step said out loud.

A backbone may want another image size or channel count than the data has, and a
``keras.applications`` backbone wants pixels in 0..255 (its ``preprocess_input``,
or the rescaling built into the model, assumes that range). :func:`plan_adaptation`
decides every step once; :mod:`.candidates` builds the layers from the plan, and the
plan's :attr:`InputAdaptation.notes` are what the run prints at the start and what
the report records per candidate.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The pixel range every keras.applications backbone expects (preprocess_input's input).
APPLICATION_PIXELS = (0.0, 255.0)
# Slack when deciding that data lie in 0..1 or -1..1 (float rounding of stored images).
_RANGE_SLACK = 1e-3


@dataclass(frozen=True)
class InputAdaptation:
    """The steps from the data's samples to the backbone's input, in the order applied.

    Attributes:
        resize: (H, W) to resize images to (bilinear), or None.
        channels: "grey_to_rgb", "to_grey" or None.
        rescale: (scale, offset): pixels become ``x * scale + offset`` before
            ``preprocess_input``, or None.
        preprocess: the keras.applications module whose ``preprocess_input`` is
            applied (e.g. "mobilenet_v2"), or None.
        notes: one line per step, for the header and the report.
        warnings: problems that were not fixed (said out loud, not silent).
    """

    resize: tuple[int, int] | None = None
    channels: str | None = None
    rescale: tuple[float, float] | None = None
    preprocess: str | None = None
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def lines(self) -> list[str]:
        """Notes then warnings (prefixed), as the report lists them."""
        return [*self.notes, *(f"WARNING: {w}" for w in self.warnings)]


def pixel_range(x: np.ndarray) -> tuple[float, float]:
    """Smallest and largest value of the data (what decides the pixel rescaling)."""
    return float(np.min(x)), float(np.max(x))


def _shape_text(shape: tuple[Any, ...]) -> str:
    return "x".join("?" if v is None else str(v) for v in shape)


def _preprocess_effect(module_name: str) -> str:
    """What ``preprocess_input`` of a keras.applications module does to 0..255 pixels."""
    module = importlib.import_module(module_name)
    probe = np.array([[[[0.0] * 3, [255.0] * 3]]], dtype=np.float32)
    out = np.asarray(module.preprocess_input(probe.copy()))
    short = module_name.rsplit(".", 1)[-1]
    lo, hi = float(out.min()), float(out.max())
    if np.allclose(out, probe):
        return f"preprocess_input ({short}) leaves pixels as they are: the model rescales 0..255"
    return f"preprocess_input ({short}) maps 0..255 to {lo:.2f}..{hi:.2f}"


#: Pixel conventions data may follow, tried in this order (0..1 before 0..255: data
#: within 0..1 are taken to be 0..1 images). Every expected range is one of them.
_CONVENTIONS = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))


def _within(lo: float, hi: float, rng: tuple[float, float]) -> bool:
    return lo >= rng[0] - _RANGE_SLACK and hi <= rng[1] + _RANGE_SLACK


def _pixel_steps(
    lo: float, hi: float, want: tuple[float, float], who: str, fix: str
) -> tuple[tuple[float, float] | None, list[str], list[str]]:
    """Rescaling of the data's pixels (min ``lo``, max ``hi``) to ``want``: (scale, offset),
    its note, or a warning when the data follow none of the usual conventions."""
    span = f"data span {lo:.3g}..{hi:.3g}"
    source = next((c for c in _CONVENTIONS if _within(lo, hi, c)), None)
    if source is None:
        return (
            None,
            [],
            [
                f"the data's pixels span {lo:.3g}..{hi:.3g}, not {want[0]:g}..{want[1]:g} "
                f"as {who} expect; left as they are ({fix})"
            ],
        )
    if source == want:
        return None, [], []
    scale = (want[1] - want[0]) / (source[1] - source[0])
    offset = want[0] - source[0] * scale
    if offset != 0:
        what = "mapped"
    else:
        what = f"scaled by {scale:g}" if scale >= 1 else f"divided by {1 / scale:g}"
    note = f"pixels {source[0]:g}..{source[1]:g} {what} to {want[0]:g}..{want[1]:g} ({span})"
    return (scale, offset), [note], []


def plan_adaptation(
    name: str,
    data_shape: tuple[int, ...],
    model_shape: tuple[Any, ...],
    *,
    application: str | None = None,
    preprocess: bool = True,
    pixels: tuple[float, float] | None = None,
    expects: tuple[float, float] | None = None,
) -> InputAdaptation:
    """Every step from samples of ``data_shape`` to a backbone taking ``model_shape``.

    ``application`` is the keras.applications name (its pixels are brought to
    0..255 and its ``preprocess_input`` applied when ``preprocess``); ``pixels``
    is the data's (min, max); ``expects`` the pixel range any other backbone was
    trained on, when known (the built-in example's: 0..1). Pixels are brought to
    the expected range when the data follow another usual convention (0..1,
    -1..1, 0..255); any other range is left alone with a warning.

    Raises:
        ValueError: the shapes cannot be adapted (naming the candidate).
    """
    data_shape, want = tuple(data_shape), tuple(model_shape)
    notes: list[str] = []
    warnings: list[str] = []
    resize = channels = None
    if want != data_shape:
        if len(want) != 3 or len(data_shape) != 3:
            raise ValueError(
                f"candidate {name!r}: the backbone takes inputs of shape {want}, "
                f"the data has {data_shape} and cannot be adapted"
            )
        wh, ww, wc = want
        h, w, c = data_shape
        if (wh, ww) != (h, w) and wh is not None and ww is not None:
            resize = (int(wh), int(ww))
            notes.append(f"images resized {h}x{w} -> {wh}x{ww} (bilinear)")
        if wc is not None and wc != c:
            if c == 1:
                channels = "grey_to_rgb"
                notes.append(f"grey -> {wc} channels (the one channel copied)")
            elif wc == 1:
                channels = "to_grey"
                notes.append(f"{c} channels -> grey (their mean)")
            else:
                raise ValueError(
                    f"candidate {name!r}: the backbone wants {wc} channels, the data has {c}"
                )
    rescale = module = None
    if application is not None and not preprocess:
        span = "" if pixels is None else f" (data span {pixels[0]:.3g}..{pixels[1]:.3g})"
        notes.append(
            f"preprocess_input not applied (--no-preprocess): pixels go in as they are{span}"
        )
    elif application is not None:
        import keras

        if pixels is not None:
            rescale, pix_notes, pix_warnings = _pixel_steps(
                *pixels,
                APPLICATION_PIXELS,
                "keras.applications",
                "rescale the data to 0..255, or pass --no-preprocess",
            )
            notes += pix_notes
            warnings += pix_warnings
        module = getattr(keras.applications, application).__module__
        notes.append(_preprocess_effect(module))
    elif expects is not None and pixels is not None:
        rescale, pix_notes, pix_warnings = _pixel_steps(
            *pixels, expects, "the example backbones", "rescale the data to that range"
        )
        notes += pix_notes
        warnings += pix_warnings
    return InputAdaptation(
        resize=resize,
        channels=channels,
        rescale=rescale,
        preprocess=None if module is None else module,
        notes=tuple(notes),
        warnings=tuple(warnings),
    )


def describe_shapes(data_shape: tuple[int, ...], model_shape: tuple[Any, ...]) -> str:
    """``8x8x1 -> 32x32x3`` (for the header)."""
    return f"{_shape_text(tuple(data_shape))} -> {_shape_text(tuple(model_shape))}"
