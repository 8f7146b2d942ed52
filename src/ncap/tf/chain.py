"""Finding the probe in a Keras model and replaying it.

A probe is a chain of weight layers (``Dense``; ``Conv1D/2D/3D`` on the
autodiff path) with arbitrary layers between them, ending at the model's only
output. :func:`resolve_chain` turns a model into a :class:`ProbeChain`:

* ``features``: the part of the model that computes the probe input z^0;
* ``weights``: the L weight layers;
* ``segments[l]``: the steps between weight layer l+1 and l+2 (the weight
  layer's own activation first), i.e. the map phi_{l+1} of SPEC section 1;
* ``tail``: the steps after the last weight layer (its activation, a softmax
  layer, ...), applied before the loss.

Each step is replayed in one of two ways: *real* (the layer itself is called,
so BatchNorm updates its moving statistics, as in a training step) or *frozen*
(BatchNorm statistics and dropout masks are the recorded constants, SPEC
section 1). Both give the same values; only the frozen one is used to
differentiate. :meth:`ProbeChain.replay` is the one forward pass over the probe
that the capture, the training step and the autodiff paths all use.

:func:`get_chain` caches the chain (and the traced functions built on it) on the
model itself, so that everything ncap builds for a model dies with the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._backend import keras, tf

PROBE_PREFIX = "ncap_probe_"
OUTPUT_NAME = PROBE_PREFIX + "logits"

# Elementwise activations the closed form accepts (keras.activations names).
ELEMENTWISE_ACTIVATIONS = frozenset(
    {
        "linear",
        "relu",
        "relu6",
        "tanh",
        "sigmoid",
        "gelu",
        "elu",
        "selu",
        "softplus",
        "softsign",
        "silu",
        "swish",
        "leaky_relu",
        "hard_sigmoid",
        "hard_silu",
        "hard_swish",
        "mish",
        "exponential",
        "celu",
        "log_sigmoid",
        "hard_tanh",
        "sparse_plus",
        "squareplus",
        "tanh_shrink",
        "soft_shrink",
        "hard_shrink",
    }
)
_ELEMENTWISE_LAYERS = ("ReLU", "LeakyReLU", "ELU", "PReLU")


def _conv_types() -> tuple[type, ...]:
    return (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def is_weight_layer(layer: Any) -> bool:
    """Dense or plain convolution: the layers whose kernels are line-graph nodes."""
    if isinstance(layer, keras.layers.Dense):
        return True
    bad = (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D, keras.layers.Conv2DTranspose)
    return isinstance(layer, _conv_types()) and not isinstance(layer, bad)


def activation_name(fn: Any) -> str:
    """The keras.activations name of an activation function ("" when unknown)."""
    if fn is None:
        return "linear"
    return getattr(fn, "__name__", "") or ""


@dataclass(frozen=True)
class Step:
    """One map between weight layers. ``kind`` is "bn", "dropout", "act" or "other"."""

    kind: str
    layer: Any  # the Keras layer (for "act": a layer or an activation function)
    elementwise: bool
    description: str

    def __call__(self, x: Any, training: bool = False) -> Any:
        if self.kind == "act" and not isinstance(self.layer, keras.layers.Layer):
            return self.layer(x)
        return self.layer(x, training=training)


def _activation_step(fn: Any, owner: str) -> Step | None:
    name = activation_name(fn)
    if name == "linear":
        return None  # identity: nothing to replay
    return Step("act", fn, name in ELEMENTWISE_ACTIVATIONS, f"activation {name!r} of {owner}")


def classify(layer: Any) -> list[Step]:
    """The step(s) a non-weight layer contributes to a segment."""
    name = type(layer).__name__
    if isinstance(layer, keras.layers.BatchNormalization):
        plain = not layer.renorm
        return [Step("bn", layer, plain, f"BatchNormalization {layer.name!r}")]
    if isinstance(layer, keras.layers.Dropout):
        elementwise = layer.noise_shape is None
        return [Step("dropout", layer, elementwise, f"Dropout {layer.name!r}")]
    if isinstance(layer, keras.layers.Activation):
        step = _activation_step(layer.activation, f"layer {layer.name!r}")
        return [] if step is None else [step]
    if name in _ELEMENTWISE_LAYERS:
        return [Step("act", layer, True, f"{name} {layer.name!r}")]
    if isinstance(layer, keras.layers.InputLayer):
        return []
    return [Step("other", layer, False, f"{name} {layer.name!r}")]


@dataclass(frozen=True)
class Replay:
    """What one forward pass over the probe leaves behind (tensors).

    ``z[l]`` = z^l (l = 0..L-1, the input of weight layer l+1), ``a[l]`` = a^{l+1}
    (l = 0..L-1), ``records[l]`` the BatchNorm statistics and dropout masks of
    segment l (l = 0..L-2), ``kernels[l]`` the kernel values the pass multiplied
    by: the recursion for g uses these, not the variables, which a training step
    may update before it is computed.
    """

    z: list
    a: list
    records: list
    kernels: list


@dataclass
class ProbeChain:
    """A model split into feature extractor, probe weight layers and the maps between."""

    model: Any
    features: Any  # callable x -> z^0 (a Keras model), or None when z^0 is the model input
    weights: list[Any]
    segments: list[list[Step]]  # len L-1
    tail: list[Step]
    # Traced functions built on this chain (forward pass, autodiff terms), by mode.
    traced: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(w.name for w in self.weights)

    @property
    def closed_form_problems(self) -> list[str]:
        """Why the closed form cannot handle this probe (empty when it can)."""
        problems = []
        for w in self.weights:
            if not isinstance(w, keras.layers.Dense):
                problems.append(f"weight layer {w.name!r} is a {type(w).__name__}, not Dense")
            elif getattr(w, "lora_enabled", False) or getattr(w, "quantization_mode", None):
                problems.append(f"Dense {w.name!r} is LoRA-enabled or quantized")
        for seg in self.segments:
            for step in seg:
                if not step.elementwise:
                    problems.append(f"{step.description} is not elementwise")
        return problems

    @property
    def closed_form_ok(self) -> bool:
        return not self.closed_form_problems

    def require_closed_form(self, argument: str, needed_by: str, instead: str) -> None:
        """Raise the one "closed form not applicable" error unless the closed form applies."""
        if not self.closed_form_ok:
            raise closed_form_error(self.closed_form_problems, argument, needed_by, instead)

    def features_of(self, x: Any, training: bool) -> Any:
        if self.features is None:
            return tf.convert_to_tensor(x)
        return self.features(x, training=training)

    def read_kernels(self) -> list:
        """The current kernel values, as tensors (read once, so one pass uses one value)."""
        return [tf.convert_to_tensor(w.kernel) for w in self.weights]

    def replay(
        self,
        x: Any = None,
        *,
        z0: Any = None,
        training: bool,
        real: bool = False,
        seed: Any = None,
        kernels: list | None = None,
        records: list | None = None,
    ) -> Replay:
        """The forward pass from the model input ``x`` (or from the probe input ``z0``) to a^L.

        ``training``, ``real`` and ``seed`` are those of :func:`run_steps` (a
        per-segment seed is folded from ``seed``); ``records`` replays recorded
        statistics and masks (frozen); ``kernels`` substitutes the kernels (the
        autodiff paths differentiate with respect to them). The tail (softmax,
        ...) is not applied: see :meth:`tail_outputs`.
        """
        if (x is None) == (z0 is None):
            raise TypeError("replay: pass exactly one of x (model input) and z0 (probe input)")
        h = tf.convert_to_tensor(self.features_of(x, training) if z0 is None else z0)
        kernels = self.read_kernels() if kernels is None else list(kernels)
        zs, as_, out_records = [h], [], []
        for i, w in enumerate(self.weights):
            a = apply_weight(w, h, kernels[i])
            as_.append(a)
            if i < self.n_layers - 1:
                sub = None if seed is None else fold_seed(seed, i)
                given = None if records is None else records[i]
                h, rec = run_steps(
                    self.segments[i], a, training=training, records=given, real=real, seed=sub
                )
                zs.append(h)
                out_records.append(rec)
        return Replay(z=zs, a=as_, records=out_records, kernels=kernels)

    def tail_outputs(self, a_last: Any, *, training: bool = False, real: bool = False) -> Any:
        """The model output from a^L: the steps after the last weight layer."""
        records = None if real else [None] * len(self.tail)
        return run_steps(self.tail, a_last, training=training, records=records, real=real)[0]


def closed_form_error(problems: Sequence[str], argument: str, needed_by: str, instead: str):
    """The one message for a probe the closed form cannot handle."""
    return ValueError(
        f"{argument}: {needed_by} needs the closed form, which takes a Dense probe with only "
        f"elementwise layers between its Dense layers ({'; '.join(problems)}); {instead}"
    )


class ModelCache:
    """ncap's caches for one model, kept on the model so that they die with it."""

    def __init__(self) -> None:
        self.chains: dict = {}
        self.train_steps: dict = {}  # BetaEff's traced training steps, by configuration


_CACHE_ATTRIBUTE = "_ncap_cache"


def model_cache(model: Any) -> ModelCache | None:
    """The model's :class:`ModelCache` (None for an object that takes no attributes).

    Not a global table keyed by the model: a value there would keep its key alive.
    """
    cache = vars(model).get(_CACHE_ATTRIBUTE) if hasattr(model, "__dict__") else None
    if cache is None:
        cache = ModelCache()
        try:
            setattr(model, _CACHE_ATTRIBUTE, cache)  # a plain object: Keras does not track it
        except (AttributeError, TypeError, ValueError):
            return None
    return cache


def get_chain(model: Any, layers: Sequence[Any] | None = None) -> ProbeChain:
    """:func:`resolve_chain`, cached on the model (building the feature model is not free)."""
    key = None if layers is None else tuple(l if isinstance(l, str) else id(l) for l in layers)
    cache = model_cache(model) if isinstance(model, keras.Model) else None
    if cache is None:
        return resolve_chain(model, layers)
    if key not in cache.chains:
        cache.chains[key] = resolve_chain(model, layers)
    return cache.chains[key]


def _flat_outputs(model: Any) -> list[Any]:
    outs = model.outputs
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


def _find_weight_layers(model: Any, layers: Sequence[Any] | None) -> list[Any]:
    if layers is None:
        found = [l for l in model.layers if l.name.startswith(PROBE_PREFIX) and is_weight_layer(l)]
        if not found:
            raise ValueError(
                "model: no probe found. Build the model with ncap.attach_probe(backbone, "
                "num_classes), or name the probe's weight layers (Dense/Conv, input to output) "
                "with layers=[...]"
            )
        return found
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise TypeError(f"layers: expected a list of layer names or layers, got {layers!r}")
    out = []
    for item in layers:
        if isinstance(item, str):
            try:
                layer = model.get_layer(item)
            except ValueError:
                raise ValueError(
                    f"layers: the model has no layer named {item!r}; probe layers must be "
                    "top-level layers of the model"
                ) from None
        else:
            layer = item
            if not any(layer is l for l in model.layers):
                raise ValueError(
                    f"layers: layer {getattr(layer, 'name', layer)!r} is not a "
                    "top-level layer of the model"
                )
        if not is_weight_layer(layer):
            raise ValueError(
                f"layers: {layer.name!r} is a {type(layer).__name__}; name only the probe's "
                "weight layers (Dense, Conv1D/2D/3D), in order from input to output"
            )
        out.append(layer)
    return out


def resolve_chain(model: Any, layers: Sequence[Any] | None = None) -> ProbeChain:
    """Locate the probe of ``model`` (see the module docstring); ValueError if it is not a chain."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model: expected a keras.Model, got {type(model).__name__}")
    try:
        model_inputs = model.inputs
        outputs = _flat_outputs(model)
    except (AttributeError, ValueError):
        model_inputs, outputs = None, None
    if not model_inputs or not outputs:
        raise ValueError(
            "model: the model has no defined inputs/outputs; build it first (a functional "
            "model, or a Sequential model with an Input layer or after calling it on data)"
        )
    if len(outputs) != 1:
        raise ValueError(
            f"model: the probe must end at the model's only output, got {len(outputs)} outputs"
        )
    weights = _find_weight_layers(model, layers)
    if len({id(w) for w in weights}) != len(weights):
        raise ValueError("layers: a weight layer is named twice")
    all_layers = list(model.layers)
    try:
        start = next(i for i, l in enumerate(all_layers) if l is weights[0])
    except StopIteration:
        raise ValueError(f"layers: {weights[0].name!r} is not a layer of the model") from None
    chain = all_layers[start:]
    for prev, nxt in zip(chain, chain[1:], strict=False):
        if not _feeds(prev, nxt):
            raise ValueError(
                f"model: the probe must be a single chain from {weights[0].name!r} to the output, "
                f"but {nxt.name!r} does not take {prev.name!r}'s output as its only input"
            )
    if chain[-1].output is not outputs[0]:
        raise ValueError(
            f"model: the probe chain does not end at the model output ({chain[-1].name!r})"
        )
    positions = []
    for w in weights:
        pos = [i for i, l in enumerate(chain) if l is w]
        if not pos:
            raise ValueError(
                f"layers: {w.name!r} is not after {weights[0].name!r} in the model; name the "
                "probe's weight layers in order from input to output"
            )
        positions.append(pos[0])
    if positions != sorted(positions):
        raise ValueError("layers: name the probe's weight layers in order from input to output")
    weight_ids = {id(w) for w in weights}
    for l in chain:
        if is_weight_layer(l) and id(l) not in weight_ids:
            raise ValueError(
                f"layers: {l.name!r} ({type(l).__name__}) lies between the probe's weight layers "
                "but is not named; every weight layer of the probe must be listed"
            )
    segments: list[list[Step]] = []
    for i, w in enumerate(weights):
        end = positions[i + 1] if i + 1 < len(weights) else len(chain)
        steps: list[Step] = []
        act = _activation_step(w.activation, f"layer {w.name!r}")
        if act is not None:
            steps.append(act)
        for l in chain[positions[i] + 1 : end]:
            steps.extend(classify(l))
        segments.append(steps)
    tail = segments.pop()
    first_input = weights[0].input
    if any(first_input is t for t in model_inputs):
        features = None
    else:
        inputs = model_inputs[0] if len(model_inputs) == 1 else model_inputs
        features = keras.Model(inputs, first_input, name="ncap_features")
    return ProbeChain(model=model, features=features, weights=weights, segments=segments, tail=tail)


def _feeds(prev: Any, nxt: Any) -> bool:
    try:
        inp = nxt.input
        out = prev.output
    except (AttributeError, ValueError):
        return False
    return not isinstance(inp, (list, tuple, dict)) and inp is out


# ---------------------------------------------------------------- replay


def apply_weight(layer: Any, z: Any, kernel: Any = None) -> Any:
    """Pre-activation a = W z (+ bias) of a weight layer, optionally with a substitute kernel.

    As in the layer's own call, the input is cast to the layer's compute dtype.
    """
    dtype = layer.compute_dtype
    z = tf.cast(z, dtype)
    k = tf.cast(layer.kernel if kernel is None else kernel, dtype)
    if isinstance(layer, keras.layers.Dense):
        a = tf.matmul(z, k)
        if layer.bias is not None:
            a = a + tf.cast(layer.bias, dtype)
        return a
    a = layer.convolution_op(z, k)
    if layer.use_bias:
        rank = len(layer.kernel_size)
        if layer.data_format == "channels_last":
            shape = (1,) * (rank + 1) + (layer.filters,)
        else:
            shape = (1, layer.filters) + (1,) * rank
        a = a + tf.reshape(tf.cast(layer.bias, dtype), shape)
    return a


def _bn_stats(layer: Any, x: Any, training: bool) -> tuple[Any, Any]:
    if training and layer.trainable:
        axes = [i for i in range(len(x.shape)) if i != layer.axis % len(x.shape)]
        mean, var = keras.ops.moments(x, axes=axes, synchronized=layer.synchronized)
    else:
        mean, var = layer.moving_mean, layer.moving_variance
    return tf.cast(mean, x.dtype), tf.cast(var, x.dtype)


def _bn_frozen(layer: Any, x: Any, stats: tuple[Any, Any]) -> Any:
    mean, var = (tf.stop_gradient(s) for s in stats)
    gamma = tf.cast(layer.gamma, x.dtype) if layer.scale else None
    beta = tf.cast(layer.beta, x.dtype) if layer.center else None
    return keras.ops.batch_normalization(
        x, mean, var, axis=layer.axis, offset=beta, scale=gamma, epsilon=layer.epsilon
    )


def _dropout_mask(layer: Any, x: Any, seed: Any) -> Any:
    """Scaled keep-mask (0 or 1/(1-rate)) that multiplies x, shaped to broadcast over x."""
    if layer.rate <= 0:
        return None
    ones = tf.ones_like(x)
    if seed is None:
        return layer(ones, training=True)  # the layer's own random stream and noise_shape
    shape = tf.shape(x)
    if layer.noise_shape is not None:
        shape = [shape[i] if d is None else d for i, d in enumerate(layer.noise_shape)]
    keep = tf.random.stateless_uniform(shape, seed=seed, dtype=x.dtype) >= layer.rate
    return tf.cast(keep, x.dtype) / tf.cast(1.0 - layer.rate, x.dtype) * ones


def fold_seed(seed: Any, i: int) -> Any:
    """A stateless seed derived from ``seed`` for the i-th draw."""
    return tf.random.experimental.stateless_fold_in(seed, i)


def run_steps(
    steps: Sequence[Step],
    x: Any,
    *,
    training: bool,
    records: list | None = None,
    real: bool = False,
    seed: Any = None,
) -> tuple[Any, list]:
    """Apply a segment. Returns the output and the records (BN stats, dropout masks).

    With ``records`` given, the recorded statistics and masks are used (frozen
    replay). Without, they are computed from ``x`` (batch statistics when
    training, moving ones otherwise; fresh dropout masks when training).
    ``real=True`` calls the BatchNorm layers themselves, so that a training
    step updates their moving statistics. ``seed`` (a stateless seed, shape
    (2,)) draws the dropout masks reproducibly instead of from the layers.
    """
    out_records = []
    for i, step in enumerate(steps):
        rec = None if records is None else records[i]
        if step.kind == "bn":
            if rec is None:
                rec = _bn_stats(step.layer, x, training)
            x = step.layer(x, training=training) if real else _bn_frozen(step.layer, x, rec)
        elif step.kind == "dropout":
            if records is None:
                rec = None
                if training:
                    sub = None if seed is None else fold_seed(seed, i)
                    rec = _dropout_mask(step.layer, x, sub)
            if rec is not None:
                x = x * rec
        else:
            x = step(x, training=training and real)
        out_records.append(rec)
    return x, out_records


def elementwise_derivative(steps: Sequence[Step], a: Any, records: list) -> Any:
    """s = d phi(a)/da for an elementwise segment, statistics and masks held constant."""
    with tf.GradientTape() as tape:
        tape.watch(a)
        z, _ = run_steps(steps, a, training=False, records=records)
    s = tape.gradient(z, a)
    return tf.zeros_like(a) if s is None else s
