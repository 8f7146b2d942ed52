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

import difflib
import importlib
import inspect
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .adapt import InputAdaptation, plan_adaptation

# Smallest input side keras.applications accept (include_top=False); 32 for the rest.
_MIN_SIDE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
#: Pixel range the built-in example's backbones were pre-trained on (digits / 16).
EXAMPLE_PIXELS = (0.0, 1.0)
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


def application_names() -> list[str]:
    """Every backbone constructor in ``keras.applications`` (MobileNetV2, ResNet50, ...)."""
    import keras

    return sorted(
        n
        for n in dir(keras.applications)
        if n[:1].isupper() and callable(getattr(keras.applications, n))
    )


def _application_name(s: str) -> str | None:
    for p in _APP_PREFIXES:
        if s.startswith(p):
            s = s[len(p) :]
            break
    return s if s in application_names() else None


def _close_names(s: str) -> list[str]:
    """keras.applications and example names close to ``s`` (a typo like ResNet5O)."""
    from .example import POOL_BY_NAME

    apps = application_names()
    by_lower = {a.lower(): a for a in apps}
    if s.lower() in by_lower:
        return [by_lower[s.lower()]]
    if s in POOL_BY_NAME:
        return [f"example:{s}"]
    close = difflib.get_close_matches(s.lower(), list(by_lower), n=3, cutoff=0.75)
    return [by_lower[c] for c in close]


def _import_callable(s: str) -> Callable[..., Any]:
    """The callable ``module:function`` names; a distinct error for each way it can fail."""
    mod, _, attr = s.partition(":")
    if not mod or not attr:
        raise ValueError(f"candidates: {s!r}: write a callable as 'module:function'")
    try:
        obj: Any = importlib.import_module(mod)
    except ModuleNotFoundError as err:
        if err.name is not None and (mod == err.name or mod.startswith(err.name + ".")):
            raise ValueError(
                f"candidates: {s!r}: no module named {err.name!r} (looked in the working "
                f"directory {os.getcwd()} and on sys.path; a module is a file "
                f"{mod.replace('.', os.sep)}.py or a package folder)"
            ) from err
        raise ValueError(
            f"candidates: {s!r}: importing module {mod!r} failed: {type(err).__name__}: {err}"
        ) from err
    except Exception as err:  # the module's own code failed: show why
        raise ValueError(
            f"candidates: {s!r}: importing module {mod!r} failed: {type(err).__name__}: {err}"
        ) from err
    where = getattr(obj, "__file__", None) or mod
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            owner = ".".join([mod, *attr.split(".")[:i]])
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(
                f"candidates: {s!r}: {owner} ({where}) has no attribute {part!r}{hint}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(
            f"candidates: {s!r}: {mod}.{attr} is a {type(obj).__name__}, not a callable "
            "returning a backbone"
        )
    return obj


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
        if ":" in s:
            fn = _import_callable(s)
            return CandidateSpec(name=safe_name(s.partition(":")[2]), kind="callable", source=fn)
        app = _application_name(s)
        if app is not None:
            return CandidateSpec(
                name=safe_name(app),
                kind="application",
                source=app,
                weights=weights,
                preprocess=preprocess,
            )
        close = _close_names(s)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"candidates: {s!r} is not a keras.applications name{hint}; a candidate is a "
            "keras.applications name (MobileNetV2, ...), a saved model file (.keras, .h5), "
            "'module:function' or 'example:NAME'"
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


def application_input_shape(spec: CandidateSpec, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The input shape a keras.applications candidate is built with for this data."""
    if len(data_shape) != 3:
        raise ValueError(
            f"candidate {spec.name!r}: keras.applications need images (H, W, C), "
            f"the data has samples of shape {tuple(data_shape)}"
        )
    side = _MIN_SIDE.get(spec.source, 32)
    h, w = spec.input_size or (max(data_shape[0], side), max(data_shape[1], side))
    return (h, w, 3)


def adaptation(
    spec: CandidateSpec,
    data_shape: tuple[int, ...],
    model_shape: tuple[Any, ...],
    pixels: tuple[float, float] | None = None,
) -> InputAdaptation:
    """The steps that feed the data to this candidate (see :mod:`.adapt`)."""
    app = spec.kind == "application"
    return plan_adaptation(
        spec.name,
        tuple(data_shape),
        tuple(model_shape),
        application=spec.source if app else None,
        preprocess=spec.preprocess,
        pixels=pixels,
        expects=EXAMPLE_PIXELS if spec.kind == "example" else None,
    )


def planned_adaptation(
    spec: CandidateSpec, data_shape: tuple[int, ...], pixels: tuple[float, float] | None
) -> InputAdaptation | None:
    """The adaptation known before building (keras.applications), or None (known once built)."""
    if spec.kind != "application":
        return None
    return adaptation(spec, data_shape, application_input_shape(spec, data_shape), pixels)


def _one_in_one_out(spec: CandidateSpec, m: Any) -> Any:
    """A backbone must map one input to one feature output (ncap puts its probe on that)."""
    n_in, n_out = len(m.inputs or []), len(m.outputs or [])
    if n_in != 1 or n_out != 1:
        raise ValueError(
            f"candidate {spec.name!r}: the backbone has {n_in} input(s) and {n_out} output(s); "
            "ncap needs one input and one feature output (wrap it, e.g. "
            "keras.Model(m.inputs[0], m.outputs[0]))"
        )
    return m


def _raw_backbone(spec: CandidateSpec, data_shape: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
    """The backbone as given, and the input shape it will be fed (after resizing)."""
    m, shape = _raw_backbone_as_given(spec, data_shape)
    return _one_in_one_out(spec, m), shape


def _raw_backbone_as_given(
    spec: CandidateSpec, data_shape: tuple[int, ...]
) -> tuple[Any, tuple[int, ...]]:
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
        shape = application_input_shape(spec, data_shape)
        cls = getattr(keras.applications, spec.source)
        m = cls(include_top=False, weights=spec.weights, input_shape=shape, pooling="avg")
        return m, shape
    raise ValueError(f"candidate {spec.name!r}: unknown kind {spec.kind!r}")


def _preprocess_layer(module_name: str) -> Any:
    import keras

    fn = importlib.import_module(module_name).preprocess_input

    class Preprocess(keras.layers.Layer):  # preprocess_input wants concrete tensors
        def call(self, x: Any) -> Any:
            return fn(x)

    return Preprocess(name="preprocess")


def build_adapted_backbone(
    spec: CandidateSpec,
    data_shape: tuple[int, ...],
    pixels: tuple[float, float] | None = None,
) -> tuple[Any, InputAdaptation]:
    """The candidate as a Keras model from the data's samples to a flat feature vector.

    Resizes images, converts grey to RGB (or RGB to grey), brings pixels to the
    0..255 that keras.applications expect (``pixels``: the data's min and max)
    and applies their ``preprocess_input``, as :func:`adaptation` plans; pools
    spatial feature maps to a vector. Returns the model and the plan.
    """
    import keras

    model, want = _raw_backbone(spec, tuple(data_shape))
    if spec.input_size and spec.kind != "application":
        want = (*spec.input_size, *want[2:]) if len(want) == 3 else want
    plan = adaptation(spec, data_shape, want, pixels)
    inp = keras.Input(tuple(data_shape), name="input")
    h = inp
    if plan.resize is not None:
        h = keras.layers.Resizing(*plan.resize, name="resize")(h)
    if plan.channels == "grey_to_rgb":
        h = keras.layers.Concatenate(name="grey_to_rgb")([h] * int(want[2]))
    elif plan.channels == "to_grey":
        h = keras.layers.Lambda(
            lambda t: keras.ops.mean(t, axis=-1, keepdims=True), name="to_grey"
        )(h)
    if plan.rescale is not None:
        h = keras.layers.Rescaling(*plan.rescale, name="rescale_pixels")(h)
    if plan.preprocess is not None:
        h = _preprocess_layer(plan.preprocess)(h)
    h = model(h)
    if len(h.shape) == 4:
        h = keras.layers.GlobalAveragePooling2D(name="pool_features")(h)
    elif len(h.shape) != 2:
        h = keras.layers.Flatten(name="flatten_features")(h)
    name = f"backbone_{spec.name}".replace("-", "_").replace(".", "_")
    return keras.Model(inp, h, name=name), plan


def build_backbone(
    spec: CandidateSpec,
    data_shape: tuple[int, ...],
    pixels: tuple[float, float] | None = None,
) -> Any:
    """The model of :func:`build_adapted_backbone`, without the plan."""
    return build_adapted_backbone(spec, data_shape, pixels)[0]


# --- weights, checked before any training -------------------------------------------


class _WeightsRequest(Exception):  # noqa: N818 - a signal, not an error
    """Raised from inside a keras.applications constructor: the weights file it asked for."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__("weights requested")
        self.fname = kwargs.get("fname", args[0] if args else None)
        self.origin = kwargs.get("origin", args[1] if len(args) > 1 else None)
        self.cache_subdir = kwargs.get("cache_subdir", "models")
        self.cache_dir = kwargs.get("cache_dir")
        self.args_, self.kwargs_ = args, kwargs


def keras_cache_dir() -> str:
    """Keras' download cache (``$KERAS_HOME`` or ``~/.keras``), as ``keras.utils.get_file`` uses."""
    try:
        from keras.src.backend.config import keras_home

        home = keras_home()
    except ImportError:  # a Keras without that private helper: its documented default
        home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    home = os.path.expanduser(home)
    return home if os.access(home, os.W_OK) else os.path.join("/tmp", ".keras")


def _imagenet_request(spec: CandidateSpec, shape: tuple[int, ...]) -> _WeightsRequest | None:
    """The weights file Keras would fetch for this candidate (builds it, loads nothing)."""
    import keras
    from keras.src.utils import file_utils

    real = file_utils.get_file

    def intercept(*args: Any, **kwargs: Any) -> str:
        raise _WeightsRequest(args, kwargs)

    file_utils.get_file = intercept
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "weights for 224x224 will be loaded"
            getattr(keras.applications, spec.source)(
                include_top=False, weights="imagenet", input_shape=shape, pooling="avg"
            )
    except _WeightsRequest as req:
        return req
    except ValueError as err:  # the family refuses this input size with ImageNet weights
        raise ValueError(f"candidate {spec.name!r} with ImageNet weights: {err}") from None
    finally:
        file_utils.get_file = real
        keras.backend.clear_session()
    return None


def _weights_hint(spec: CandidateSpec) -> str:
    return (
        "or pass --weights PATH (weights= in Python) to a weights file, or leave it out "
        "for random initialisation"
    )


def check_weights(
    specs: Iterable[CandidateSpec], data_shape: tuple[int, ...], *, download: bool = True
) -> list[str]:
    """Check every keras.applications candidate's weights before any training.

    A weights path must be a file; ``"imagenet"`` needs the file in Keras' cache
    (:func:`keras_cache_dir`), fetched here once when ``download`` (workers then
    read the cache). Returns notes for the run header.

    Raises:
        ValueError: one line naming the candidate, the file, and what to do.
    """
    from keras.src.utils import file_utils

    notes: list[str] = []
    for spec in specs:
        if spec.kind != "application" or spec.weights is None:
            continue
        w = spec.weights
        if isinstance(w, str) and w == "imagenet":
            req = _imagenet_request(spec, application_input_shape(spec, data_shape))
            if req is None or not req.fname:
                continue
            base = os.path.expanduser(req.cache_dir) if req.cache_dir else keras_cache_dir()
            path = os.path.join(base, req.cache_subdir, req.fname)
            if os.path.isfile(path):
                continue
            if not download:
                raise ValueError(
                    f"weights: {spec.name}'s ImageNet weights are not in Keras' cache ({path}): "
                    f"put the file there (it is {req.origin}), {_weights_hint(spec)}"
                )
            try:
                file_utils.get_file(*req.args_, **req.kwargs_)
            except Exception as err:  # offline, proxy, disk: one line, then stop
                why = " ".join(str(err).split())
                # Keras says "URL fetch failure on URL: ... -- REASON": the reason is enough.
                why = why.rsplit(" -- ", 1)[-1] if " -- " in why else f"{type(err).__name__}: {why}"
                raise ValueError(
                    f"weights: {spec.name}'s ImageNet weights are not in Keras' cache ({path}) "
                    f"and downloading them failed ({why}): put the file there (it is "
                    f"{req.origin}), {_weights_hint(spec)}"
                ) from None
            notes.append(f"downloaded {spec.name}'s ImageNet weights to {path}")
        elif isinstance(w, (str, os.PathLike)):
            if not os.path.isfile(os.fspath(w)):
                raise ValueError(
                    f"weights: {spec.name}: no such weights file {os.fspath(w)!r}; give "
                    "--weights imagenet or the path of a weights file (.h5, .weights.h5), "
                    "or leave --weights out for random initialisation"
                )
        else:
            raise TypeError(
                f"weights: {spec.name}: expected None, 'imagenet' or a file path, "
                f"got {type(w).__name__}"
            )
    return notes
