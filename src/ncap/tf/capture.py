"""``ncap.capture``: z, s and g of a probe from one forward pass (SPEC section 1).

The capture replays the probe layer by layer from its input z^0: BatchNorm
with its statistics (batch statistics when ``training=True``, moving ones
otherwise) held constant, dropout with one drawn mask held constant. s is the
elementwise derivative of that frozen map; g follows the recursion
g^l = s^l * (g^{l+1} W^{l+1}^T) from g^L = dC_b/da^L_b, the gradient of each
sample's own loss. Nothing of the model changes: with ``training=True`` the
moving statistics (and random-generator states) the forward pass touches are
restored afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..arrays.spec import MIN_BETA_LAYERS, shallow_probe_error
from ._backend import tf
from .chain import ProbeChain, elementwise_derivative, get_chain, is_weight_layer
from .losses import check_labels, resolve_loss
from .options import check_flag

__all__ = ["Capture", "capture", "forward", "get_chain", "recursion"]


def check_depth(chain: ProbeChain) -> None:
    if chain.n_layers < MIN_BETA_LAYERS:
        raise shallow_probe_error(
            chain.n_layers,
            "model",
            "use ncap.attach_probe(..., hidden=(256, 128, 64)) or name a deeper probe with "
            "layers=[...]",
        )


@dataclass
class ProbeState:
    """Everything one forward pass leaves behind, as tensors (internal)."""

    z: list  # z^0 .. z^{L-1}: input of each weight layer
    a: list  # a^1 .. a^L: pre-activations
    records: list  # per segment: BN statistics and dropout masks
    kernels: list  # the kernel values of the pass
    g_last: Any  # g^L, per sample
    outputs: Any  # model output
    losses: Any  # C_b
    labels: Any
    loss_fn: Any
    training: bool
    derivs: list | None = None  # s^1 .. s^{L-1} (Dense probes)
    grads: list | None = None  # g^1 .. g^L (Dense probes)


@dataclass(frozen=True)
class Capture:
    """z, s and g of a probe for one batch, in the layout of :func:`ncap.beff`.

    Attributes:
        acts: ``acts[l]`` = z^l, input of weight layer l+1, shape (B, n_l), l = 0..L-1.
        derivs: ``derivs[l]`` = s^{l+1}, shape (B, n_{l+1}), l = 0..L-2 (activation,
            BatchNorm scale and dropout mask folded in).
        grads: ``grads[l]`` = g^{l+1}, shape (B, n_{l+1}), l = 0..L-1, per sample.
        logits: a^L, the output layer's pre-activation, shape (B, K).
        outputs: the model output (e.g. softmax probabilities), shape (B, K).
        losses: each sample's loss C_b, shape (B,).
        training: whether BatchNorm used batch statistics and dropout was active.
        layer_names: names of the L weight layers, input to output.
        loss_name: the loss the gradients came from.
    """

    acts: list
    derivs: list
    grads: list
    logits: np.ndarray
    outputs: np.ndarray
    losses: np.ndarray
    training: bool
    layer_names: tuple
    loss_name: str
    state: ProbeState = field(repr=False, compare=False)

    @property
    def batch_size(self) -> int:
        return int(self.acts[0].shape[0])


def _mutable_state(chain: ProbeChain) -> list:
    """The variables a forward pass may change: the model's non-trainable variables (moving
    statistics, random-generator states, ...) except the kernels and biases of Dense and
    convolution layers, which a forward pass only reads (the probe's frozen weights are the
    largest of them; copying them would cost more than the pass)."""
    read_only = set()
    for layer in _all_layers(chain.model):
        if is_weight_layer(layer):
            for v in (getattr(layer, "kernel", None), getattr(layer, "bias", None)):
                if v is not None:
                    read_only.add(id(v))
    return [v for v in chain.model.non_trainable_variables if id(v) not in read_only]


def _all_layers(layer: Any) -> list:
    out, stack = [], list(getattr(layer, "layers", []))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(getattr(child, "layers", []))
    return out


def _seed_tensor(seed: Any) -> Any:
    if seed is None:
        return None
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return tf.constant([int(seed), 0], dtype=tf.int64)
    raise TypeError(f"seed: expected an int or None, got {seed!r}")


def forward(
    chain: ProbeChain,
    x: Any,
    y: Any,
    *,
    training: bool = False,
    loss: Any = None,
    seed: Any = None,
    compiled: bool = True,
) -> ProbeState:
    """One frozen forward pass over the probe plus g^L (and s, g for Dense probes).

    The model is left unchanged. ``compiled=True`` runs the pass as a
    ``tf.function`` (traced once per input shape, cached on the probe).
    """
    model = chain.model
    x = _as_input(x)
    seed_t = _seed_tensor(seed)
    n = _batch_size(x)
    n_out = int(model.outputs[0].shape[-1])
    loss_fn = resolve_loss(model, loss, np.asarray(y), _tail_is_probability(chain))
    labels = check_labels(y, n, n_out, loss_fn.loss_name)
    core = _core_function(chain, bool(training), seed_t is None, loss_fn, compiled)
    zs, as_, records, kernels, outputs, losses, g_last, derivs, grads = core(x, labels, seed_t)
    return ProbeState(
        z=list(zs),
        a=list(as_),
        records=[list(r) for r in records],
        kernels=list(kernels),
        g_last=g_last,
        outputs=outputs,
        losses=losses,
        labels=labels,
        loss_fn=loss_fn,
        training=bool(training),
        derivs=derivs,
        grads=grads,
    )


def _batch_size(x: Any) -> int:
    leaves = [t for t in tf.nest.flatten(x) if t is not None]
    if not leaves or len(getattr(leaves[0], "shape", ())) == 0:
        raise ValueError("x: expected a batch of inputs with a leading batch axis")
    return int(leaves[0].shape[0])


def _core_function(chain: ProbeChain, training: bool, unseeded: bool, loss_fn: Any, compiled: bool):
    if not compiled:
        return _make_core(chain, training, loss_fn)
    key = ("forward", training, unseeded, loss_fn.key)
    if key not in chain.traced:  # one traced function per mode and loss, closing over them
        traced = tf.function(_make_core(chain, training, loss_fn), reduce_retracing=True)
        chain.traced[key] = _ByShape(traced)
    return chain.traced[key]


class _ByShape:
    """A ``tf.function`` called through its concrete functions, cached by the shapes and
    dtypes of a plain array ``x`` and the labels: ``tf.function``'s own dispatch (binding and
    canonicalising the arguments) cost about 0.2 ms a call, a tenth of the forward pass of a
    small backbone. Nested inputs (dicts, lists) go through ``tf.function`` itself."""

    def __init__(self, function: Any):
        self.function = function
        self.concrete: dict = {}

    def __call__(self, x: Any, labels: np.ndarray, seed_t: Any) -> Any:
        if not isinstance(x, (np.ndarray, tf.Tensor)):
            return self.function(x, labels, seed_t)
        key = (tuple(x.shape), x.dtype.name, labels.shape, labels.dtype.name)
        concrete = self.concrete.get(key)
        if concrete is None:
            if len(self.concrete) >= 64:  # many batch shapes: start over rather than grow
                self.concrete.clear()
            concrete = self.function.get_concrete_function(x, labels, seed_t)
            self.concrete[key] = concrete
        return concrete(x, labels, seed_t)


def _make_core(chain: ProbeChain, training: bool, loss_fn: Any):
    # With training=True the backbone updates its moving statistics and the layers draw from
    # their random generators; the model is put back inside the same (traced) function, so
    # that nothing crosses to the host.
    mutable = _mutable_state(chain) if training else []

    def core(x: Any, labels: Any, seed_t: Any):
        saved = [tf.identity(v.value) for v in mutable]
        try:  # eagerly, a pass that fails half-way still puts the model back
            rep = chain.replay(x, training=training, seed=seed_t)
            outputs, losses, g_last = loss_and_gradient(chain, rep.a[-1], labels, loss_fn)
            derivs = grads = None
            if chain.closed_form_ok:
                derivs = [
                    elementwise_derivative(chain.segments[i], rep.a[i], rep.records[i])
                    for i in range(chain.n_layers - 1)
                ]
                grads = recursion(chain, derivs, g_last, rep.kernels)
        finally:
            for v, value in zip(mutable, saved, strict=True):
                v.assign(value)
        return rep.z, rep.a, rep.records, rep.kernels, outputs, losses, g_last, derivs, grads

    return core


def loss_and_gradient(chain: ProbeChain, a_last: Any, labels: Any, loss_fn: Any):
    """Model output, per-sample losses and g^L = dC_b/da^L_b."""
    with tf.GradientTape() as tape:
        tape.watch(a_last)
        outputs = chain.tail_outputs(a_last)
        losses = loss_fn(tf.convert_to_tensor(labels), outputs)
        total = tf.reduce_sum(losses)
    g_last = tape.gradient(total, a_last)
    if g_last is None:
        raise ValueError("loss: the loss does not depend on the model output")
    return outputs, losses, g_last


def _tail_is_probability(chain: ProbeChain) -> bool:
    """Whether the probe ends in a softmax (so cross-entropy takes probabilities)."""
    for step in reversed(chain.tail):
        if step.kind == "act":
            fn = getattr(step.layer, "activation", step.layer)
            name = getattr(fn, "__name__", "")
            return name == "softmax" or type(step.layer).__name__ == "Softmax"
        if step.kind == "other" and type(step.layer).__name__ == "Softmax":
            return True
    return False


def _as_input(x: Any) -> Any:
    if isinstance(x, tf.data.Dataset) or hasattr(x, "__next__"):
        raise TypeError(
            "x: pass one batch of inputs as an array or tensor (not a dataset or generator); "
            "beta_eff is a property of one batch"
        )
    if isinstance(x, (dict, list, tuple)):
        return x
    return tf.convert_to_tensor(x) if not isinstance(x, np.ndarray) else x


def derivatives(chain: ProbeChain, state: ProbeState) -> list:
    """s^1 .. s^{L-1} (needs elementwise segments)."""
    if state.derivs is not None:
        return list(state.derivs)
    return [
        elementwise_derivative(chain.segments[i], state.a[i], state.records[i])
        for i in range(chain.n_layers - 1)
    ]


def recursion(chain: ProbeChain, derivs: list, g_last: Any, kernels: list) -> list:
    """g^1 .. g^L by g^l = s^l * (g^{l+1} W^{l+1}^T) (Dense probes), in g^L's dtype.

    ``kernels`` are the kernel values the forward pass used (:attr:`Replay.kernels`).
    """
    gs = [g_last]
    for i in range(chain.n_layers - 2, -1, -1):
        kernel = tf.cast(kernels[i + 1], gs[-1].dtype)
        back = tf.matmul(gs[-1], kernel, transpose_b=True)
        gs.append(tf.cast(derivs[i], back.dtype) * back)
    return gs[::-1]


def capture(
    model: Any,
    x: Any,
    y: Any,
    *,
    training: bool = False,
    layers: Sequence[Any] | None = None,
    loss: Any = None,
    seed: int | None = None,
) -> Capture:
    """Capture z, s and g of the probe of ``model`` on one batch (SPEC section 1).

    Args:
        model: a model from :func:`ncap.attach_probe`, or any model whose probe
            weight layers are named with ``layers``.
        x: a batch of model inputs.
        y: labels: integer class indices (B,) or one-hot/probabilities (B, K).
        training: False (default): BatchNorm uses its moving statistics and
            dropout is off. True: batch statistics and one random dropout mask,
            as in a training step; the model's moving statistics are left unchanged.
        layers: names (or layers) of the probe's weight layers, input to output.
        loss: the loss C; default the model's compiled loss, else cross-entropy.
        seed: draw the dropout masks from this seed (reproducible) instead of
            the layers' own random generators.

    Returns:
        :class:`Capture` with NumPy arrays ready for :func:`ncap.beff`.

    Raises:
        ValueError: no probe found, a probe that is not a Dense chain with
            elementwise layers between (use ``ncap.beff(model, x, y,
            method="autodiff")``), labels that do not match the output.
    """
    training = check_flag(training, "training")
    chain = get_chain(model, layers)
    chain.require_closed_form(
        "model", "ncap.capture", "use ncap.beff(model, x, y, method='autodiff') for general probes"
    )
    state = forward(chain, x, y, training=training, loss=loss, seed=seed)
    return capture_from_state(chain, state)


def _derivs_and_grads(chain: ProbeChain, state: ProbeState) -> tuple[list, list]:
    derivs = derivatives(chain, state)
    grads = state.grads
    if grads is None:
        grads = recursion(chain, derivs, state.g_last, state.kernels)
    return derivs, grads


def kernel_arrays(chain: ProbeChain, state: ProbeState) -> tuple[list, list, list]:
    """acts, derivs, grads of ``state`` as read-only NumPy views of its tensors, for the
    kernel alone (``Tensor.numpy()`` copies each array; these views do not, and nobody
    outside ncap sees them)."""
    derivs, grads = _derivs_and_grads(chain, state)
    return (
        [np.asarray(z) for z in state.z],
        [np.asarray(s) for s in derivs],
        [np.asarray(g) for g in grads],
    )


def capture_from_state(chain: ProbeChain, state: ProbeState) -> Capture:
    derivs, grads = _derivs_and_grads(chain, state)
    return Capture(
        acts=[z.numpy() for z in state.z],
        derivs=[s.numpy() for s in derivs],
        grads=[g.numpy() for g in grads],
        logits=state.a[-1].numpy(),
        outputs=tf.convert_to_tensor(state.outputs).numpy(),
        losses=tf.convert_to_tensor(state.losses).numpy(),
        training=state.training,
        layer_names=chain.layer_names,
        loss_name=state.loss_fn.loss_name,
        state=state,
    )
