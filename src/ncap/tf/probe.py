"""``ncap.attach_probe``: the frozen probe of paper Algorithm 1 (SPEC section 6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._backend import keras
from .chain import OUTPUT_NAME, PROBE_PREFIX


def _pool(features: Any) -> Any:
    """Features of rank > 2 become one vector per sample (global average pooling)."""
    rank = len(features.shape)
    if rank == 2:
        return features
    if rank == 3:
        return keras.layers.GlobalAveragePooling1D(name=PROBE_PREFIX + "pool")(features)
    if rank == 4:
        return keras.layers.GlobalAveragePooling2D(name=PROBE_PREFIX + "pool")(features)
    if rank == 5:
        return keras.layers.GlobalAveragePooling3D(name=PROBE_PREFIX + "pool")(features)
    return keras.layers.Flatten(name=PROBE_PREFIX + "flatten")(features)


def attach_probe(
    backbone: Any,
    num_classes: int,
    hidden: Sequence[int] = (256, 128, 64),
    dropout: float = 0.4,
    batchnorm: bool = True,
    seed: int | None = None,
) -> Any:
    """Put the frozen probe of paper Algorithm 1 on top of ``backbone``.

    The backbone is used as given: pass it *without* its classifier (e.g. a
    ``keras.applications`` model with ``include_top=False``, or your own model
    cut at its feature layer with ``keras.Model(m.input, m.get_layer(...).output)``).
    Its output is pooled to one vector per sample when it has more than two
    axes: global average pooling for rank 3, 4 and 5 (sequences, images,
    volumes), flattening beyond that. The backbone stays trainable.

    For each width in ``hidden``: a frozen ``Dense`` with He-normal kernel and
    zero bias, ``BatchNormalization`` (momentum 0.9, no scale or shift, so it
    has nothing to train; it normalises with batch statistics in training and
    tracks moving statistics, SPEC section 6), ``ReLU`` and ``Dropout(dropout)``.
    Then a frozen ``Dense(num_classes)`` output layer (named
    ``ncap_probe_logits``, its output is a^L) and a softmax: **the model outputs
    probabilities**, so compile it with ``"sparse_categorical_crossentropy"``
    or ``"categorical_crossentropy"`` (``from_logits=False``, the default).

    Layers are named ``ncap_probe_*``, which is how :func:`ncap.capture`,
    :func:`ncap.beff` and :class:`ncap.keras.BetaEff` find the probe.

    Args:
        backbone: a built Keras model (functional or Sequential) that maps the
            inputs to features.
        num_classes: number of output classes (>= 2).
        hidden: hidden widths; at least three (beta_eff is identically 0 with fewer).
        dropout: dropout rate after each hidden layer (0 disables dropout layers).
        batchnorm: whether to add the BatchNormalization layers.
        seed: seed for the He-normal initialisation and the dropout masks.

    Returns:
        A ``keras.Model`` from the backbone's inputs to class probabilities.
    """
    if not isinstance(backbone, keras.Model):
        raise TypeError(f"backbone: expected a keras.Model, got {type(backbone).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    hidden = tuple(hidden)
    if len(hidden) < 3:
        raise ValueError(
            f"hidden: a probe needs at least three hidden layers, got {len(hidden)} ({hidden}). "
            "With fewer, beta_eff is identically 0 under softmax cross-entropy (SPEC section 3); "
            "use e.g. hidden=(256, 128, 64)"
        )
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden: widths must be positive integers, got {hidden}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout: expected a rate in [0, 1), got {dropout!r}")
    try:
        inputs, features = backbone.inputs, backbone.outputs
    except (AttributeError, ValueError):
        inputs, features = None, None
    if not inputs or not features:
        raise ValueError(
            "backbone: it has no defined inputs/outputs; build it first (a functional model, or "
            "a Sequential model that starts with keras.Input)"
        )
    if len(features) != 1:
        raise ValueError(f"backbone: expected one feature output, got {len(features)}")
    h = _pool(features[0])
    for i, width in enumerate(hidden, start=1):
        h = keras.layers.Dense(
            width,
            kernel_initializer=keras.initializers.HeNormal(seed=None if seed is None else seed + i),
            trainable=False,
            name=f"{PROBE_PREFIX}dense_{i}",
        )(h)
        if batchnorm:
            # No gamma/beta (nothing to freeze) but trainable, so it uses batch statistics.
            h = keras.layers.BatchNormalization(
                momentum=0.9, center=False, scale=False, name=f"{PROBE_PREFIX}bn_{i}"
            )(h)
        h = keras.layers.ReLU(name=f"{PROBE_PREFIX}relu_{i}")(h)
        if dropout > 0:
            h = keras.layers.Dropout(
                dropout,
                seed=None if seed is None else seed + 100 + i,
                name=f"{PROBE_PREFIX}dropout_{i}",
            )(h)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.HeNormal(seed=None if seed is None else seed),
        trainable=False,
        name=OUTPUT_NAME,
    )(h)
    probs = keras.layers.Softmax(name=PROBE_PREFIX + "softmax")(logits)
    inputs = inputs[0] if len(inputs) == 1 else inputs  # same input structure as the backbone
    return keras.Model(inputs, probs, name=f"{backbone.name}_ncap_probe")
