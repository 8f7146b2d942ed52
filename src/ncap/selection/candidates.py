"""Candidate backbones for ``ncap.select``: what the user names, and how each becomes a model.

A candidate is one of

* a ``keras.applications`` name (``"MobileNetV2"`` or ``"keras.applications.MobileNetV2"``),
  built with ``include_top=False, pooling="avg"`` and the given ``weights``
  (``None`` for random initialisation, ``"imagenet"`` or a path to a weights file);
* a path to a saved Keras model (``.keras`` or ``.h5``), the backbone without its
  classifier;
* a Python callable returning a backbone (given ``input_shape=`` if it takes that
  argument), or a ``"module:function"`` string naming one;
* ``"example:NAME"``, a backbone of the built-in example (:mod:`ncap.example`);
* a dict ``{"name": ..., "model": <any of the above>, "weights": ..., "preprocess": ...,
  "input_size": ...}`` to set the options per candidate.

:func:`parse_candidates` checks names cheaply in the calling process (so a typo
fails before any training); :func:`build_backbone` runs where the candidate is
trained (a Dask worker) and may still fail, which ``select`` reports per candidate.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Smallest input side keras.applications accept (include_top=False); 32 for the rest.
_MIN_SIDE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
_APP_PREFIXES = ("keras.applications.", "tf.keras.applications.", "applications.")


@dataclass(frozen=True)
class CandidateSpec:
    """A resolved candidate: a unique file-safe name, its kind and what to build it from."""

    name: str
    kind: str  # "application", "saved", "callable", "example"
    source: Any  # application name, path, callable, or example backbone name
    weights: Any = None  # keras.applications only, passed through
    preprocess: bool = True  # keras.applications only: apply the family's preprocess_input
    input_size: tuple[int, int] | None = None  # resize images to this (H, W)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the report."""
        src = self.source
        if callable(src):
            src = f"{getattr(src, '__module__', '?')}.{getattr(src, '__qualname__', repr(src))}"
        out: dict[str, Any] = {"kind": self.kind, "source": str(src)}
        if self.kind == "application":
            out["weights"] = None if self.weights is None else str(self.weights)
            out["preprocess"] = self.preprocess
        if self.input_size:
            out["input_size"] = list(self.input_size)
        return out


def safe_name(name: str) -> str:
    """A name usable as a file name: letters, digits, '-', '_', '.'."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    return s or "candidate"


def _application_name(s: str) -> str | None:
    for p in _APP_PREFIXES:
        if s.startswith(p):
            s = s[len(p) :]
            break
    import keras

    obj = getattr(keras.applications, s, None)
    return s if s[:1].isupper() and callable(obj) else None


def _import_callable(s: str) -> Callable[..., Any] | None:
    mod, _, attr = s.partition(":")
    if not mod or not attr or os.sep in mod:
        return None
    try:
        obj: Any = importlib.import_module(mod)
    except ImportError:
        return None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    return obj if callable(obj) else None


def _one(item: Any, weights: Any, preprocess: bool) -> CandidateSpec:
    if isinstance(item, CandidateSpec):
        return item
    if isinstance(item, Mapping):
        unknown = set(item) - {"name", "model", "weights", "preprocess", "input_size"}
        if unknown or "model" not in item:
            raise ValueError(
                f"candidates: a dict candidate needs 'model' and may have 'name', 'weights', "
                f"'preprocess', 'input_size'; got keys {sorted(item)}"
            )
        base = _one(
            item["model"], item.get("weights", weights), bool(item.get("preprocess", preprocess))
        )
        size = item.get("input_size")
        if size is not None:
            size = (int(size), int(size)) if isinstance(size, int) else tuple(int(v) for v in size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"candidates: input_size must be an int or (H, W), got {size}")
        return CandidateSpec(
            name=safe_name(str(item.get("name", base.name))),
            kind=base.kind,
            source=base.source,
            weights=base.weights,
            preprocess=base.preprocess,
            input_size=size,
        )
    if isinstance(item, (str, os.PathLike)):
        s = os.fspath(item)
        if s.startswith("example:"):
            from .example import POOL_BY_NAME

            bname = s[len("example:") :]
            if bname not in POOL_BY_NAME:
                raise ValueError(
                    f"candidates: unknown example backbone {bname!r}; "
                    f"choose from {sorted(POOL_BY_NAME)}"
                )
            return CandidateSpec(name=bname, kind="example", source=bname)
        if os.path.exists(s):
            if os.path.isdir(s) or not s.endswith((".keras", ".h5")):
                raise ValueError(
                    f"candidates: {s!r} is not a saved Keras model (a .keras or .h5 file)"
                )
            base = os.path.splitext(os.path.basename(s))[0]
            return CandidateSpec(name=safe_name(base), kind="saved", source=os.path.abspath(s))
        if s.endswith((".keras", ".h5")) or os.sep in s:
            raise ValueError(f"candidates: no such model file {s!r}")
        app = _application_name(s)
        if app is not None:
            return CandidateSpec(
                name=safe_name(app),
                kind="application",
                source=app,
                weights=weights,
                preprocess=preprocess,
            )
        fn = _import_callable(s)
        if fn is not None:
            return CandidateSpec(name=safe_name(s.partition(":")[2]), kind="callable", source=fn)
        raise ValueError(
            f"candidates: {s!r} is not a keras.applications name, a saved model path, "
            "'module:function', or 'example:NAME'"
        )
    if callable(item):
        name = getattr(item, "__name__", None) or type(item).__name__
        return CandidateSpec(name=safe_name(name), kind="callable", source=item)
    raise TypeError(f"candidates: cannot use a {type(item).__name__} as a candidate")


def parse_candidates(
    candidates: Any, *, weights: Any = None, preprocess: bool = True
) -> list[CandidateSpec]:
    """Normalise the user's candidates into specs with unique names.

    ``candidates`` may be one candidate, a list of them, a mapping name -> candidate,
    or ``None`` / ``"example"`` for the built-in example pool.
    """
    if candidates is None or (isinstance(candidates, str) and candidates == "example"):
        from .example import candidates as example_candidates

        candidates = example_candidates()
    if isinstance(candidates, Mapping) and not {"model"} <= set(candidates):
        items: Iterable[Any] = [
            {"name": n, "model": c} if not isinstance(c, Mapping) else {"name": n, **c}
            for n, c in candidates.items()
        ]
    elif isinstance(candidates, (str, os.PathLike, Mapping)) or callable(candidates):
        items = [candidates]
    else:
        items = list(candidates)
    if not items:
        raise ValueError("candidates: the list is empty")
    specs = [_one(c, weights, preprocess) for c in items]
    # Make names unique (two saved models called model.keras in different folders).
    seen: dict[str, int] = {}
    out = []
    for s in specs:
        n = seen.get(s.name, 0)
        seen[s.name] = n + 1
        if n:
            s = CandidateSpec(
                s.name + f"-{n + 1}", s.kind, s.source, s.weights, s.preprocess, s.input_size
            )
        out.append(s)
    return out


def _raw_backbone(spec: CandidateSpec, data_shape: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    """The backbone as given, and the input shape it will be fed (after resizing)."""
    import keras

    if spec.kind == "example":
        from .example import load_backbone

        m = load_backbone(spec.source)
        return m, tuple(m.input_shape[1:])
    if spec.kind == "saved":
        m = keras.models.load_model(spec.source, compile=False)
        return m, tuple(m.input_shape[1:])
    if spec.kind == "callable":
        fn = spec.source
        try:
            takes_shape = "input_shape" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            takes_shape = False
        m = fn(input_shape=data_shape) if takes_shape else fn()
        if not isinstance(m, keras.Model):
            raise TypeError(
                f"candidate {spec.name!r}: the callable returned a {type(m).__name__}, "
                "not a keras.Model"
            )
        return m, tuple(m.input_shape[1:])
    if spec.kind == "application":
        if len(data_shape) != 3:
            raise ValueError(
                f"candidate {spec.name!r}: keras.applications need images (H, W, C), "
                f"the data has samples of shape {data_shape}"
            )
        side = _MIN_SIDE.get(spec.source, 32)
        h, w = spec.input_size or (max(data_shape[0], side), max(data_shape[1], side))
        cls = getattr(keras.applications, spec.source)
        m = cls(include_top=False, weights=spec.weights, input_shape=(h, w, 3), pooling="avg")
        return m, (h, w, 3)
    raise ValueError(f"candidate {spec.name!r}: unknown kind {spec.kind!r}")


def _preprocess_layer(app: str) -> Any:
    import keras

    module = importlib.import_module(getattr(keras.applications, app).__module__)
    fn = module.preprocess_input

    class Preprocess(keras.layers.Layer):  # preprocess_input wants concrete tensors
        def call(self, x: Any) -> Any:
            return fn(x)

    return Preprocess(name="preprocess")


def build_backbone(spec: CandidateSpec, data_shape: tuple[int, ...]) -> Any:
    """The candidate as a Keras model from the data's samples to a flat feature vector.

    Resizes images and converts grey to RGB (or RGB to grey) when the backbone
    wants another input shape; pools spatial feature maps to a vector.
    """
    import keras

    model, want = _raw_backbone(spec, tuple(data_shape))
    if spec.input_size and spec.kind != "application":
        want = (*spec.input_size, *want[2:]) if len(want) == 3 else want
    inp = keras.Input(tuple(data_shape), name="input")
    h = inp
    if tuple(want) != tuple(data_shape):
        if len(want) != 3 or len(data_shape) != 3:
            raise ValueError(
                f"candidate {spec.name!r}: the backbone takes inputs of shape {want}, "
                f"the data has {tuple(data_shape)} and cannot be adapted"
            )
        wh, ww, wc = want
        if (wh, ww) != tuple(data_shape[:2]) and wh is not None and ww is not None:
            h = keras.layers.Resizing(wh, ww, name="resize")(h)
        c = data_shape[2]
        if wc is not None and wc != c:
            if c == 1:
                h = keras.layers.Concatenate(name="grey_to_rgb")([h] * wc)
            elif wc == 1:
                h = keras.layers.Lambda(
                    lambda t: keras.ops.mean(t, axis=-1, keepdims=True), name="to_grey"
                )(h)
            else:
                raise ValueError(
                    f"candidate {spec.name!r}: the backbone wants {wc} channels, the data has {c}"
                )
    if spec.kind == "application" and spec.preprocess:
        h = _preprocess_layer(spec.source)(h)
    h = model(h)
    if len(h.shape) == 4:
        h = keras.layers.GlobalAveragePooling2D(name="pool_features")(h)
    elif len(h.shape) != 2:
        h = keras.layers.Flatten(name="flatten_features")(h)
    return keras.Model(inp, h, name=f"backbone_{spec.name}".replace("-", "_").replace(".", "_"))
