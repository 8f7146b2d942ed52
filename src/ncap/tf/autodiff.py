"""The autodiff path: weighted degrees by nested gradient tapes, never forming P.

Direct interaction (SPEC section 5): for consecutive weight layers l, l+1,

    f_l = (1/B) sum_b stop_gradient(g^{l+1}_b) . a^{l+1}_b(W^l, W^{l+1})
    delta_in(W^l)      = d/dW^l     sum(df_l/dW^{l+1})
    delta_out(W^{l+1}) = d/dW^{l+1} sum(df_l/dW^l)

with the input of layer l, BatchNorm statistics and dropout masks held
constant. g is the SPEC section 1 recursion, here a vector-Jacobian product
through each frozen segment and the next weight layer (per sample, because a
frozen segment does not mix samples). Works for Dense and Conv weight layers
with anything sample-wise in between.

Hessian interaction (SPEC section 4): the same two mixed derivatives of the
batch-mean loss C itself (Hessian-vector products with a vector of ones).
"""

from __future__ import annotations

from typing import Any

from ._backend import tf
from .chain import ProbeChain, apply_weight, run_steps


def kernels_of(chain: ProbeChain) -> list:
    """The probe kernels as plain tensors (in each layer's compute dtype) to differentiate."""
    return [tf.cast(tf.convert_to_tensor(w.kernel), w.compute_dtype) for w in chain.weights]


def _segment(chain: ProbeChain, i: int, a: Any, records: list) -> Any:
    return run_steps(chain.segments[i], a, training=False, records=records[i])[0]


def _next_pre_activation(
    chain: ProbeChain, i: int, a: Any, records: list, kernel: Any = None
) -> Any:
    """a^{i+2} from a^{i+1} (0-based weight index i): segment i, then weight layer i+1."""
    return apply_weight(chain.weights[i + 1], _segment(chain, i, a, records), kernel)


def backprop(chain: ProbeChain, a: list, records: list, g_last: Any) -> list:
    """g^1 .. g^L by vector-Jacobian products through the frozen probe."""
    gs = [g_last]
    for i in range(chain.n_layers - 2, -1, -1):
        with tf.GradientTape() as tape:
            tape.watch(a[i])
            a_next = _next_pre_activation(chain, i, a[i], records)
        g = tape.gradient(a_next, a[i], output_gradients=gs[-1])
        gs.append(tf.zeros_like(a[i]) if g is None else g)
    return gs[::-1]


def _zeros_if_none(x: Any, like: Any) -> Any:
    return tf.zeros_like(like) if x is None else x


def direct_degrees(chain: ProbeChain, z: list, records: list, g: list, kernels: list) -> list:
    """[(delta_in, delta_out)] per weight layer (kernel layout), batch P = (1/B) sum_b P_b."""
    n_layers = chain.n_layers
    batch = tf.shape(z[0])[0]
    d_in = [tf.zeros_like(k) for k in kernels]
    d_out = [tf.zeros_like(k) for k in kernels]
    for i in range(n_layers - 1):
        k_i, k_j = kernels[i], kernels[i + 1]
        g_next = tf.stop_gradient(g[i + 1])
        with tf.GradientTape(persistent=True) as outer:
            outer.watch([k_i, k_j])
            with tf.GradientTape() as inner:
                inner.watch([k_i, k_j])
                a_i = apply_weight(chain.weights[i], z[i], k_i)
                a_j = _next_pre_activation(chain, i, a_i, records, k_j)
                f = tf.reduce_sum(tf.cast(g_next, a_j.dtype) * a_j) / tf.cast(batch, a_j.dtype)
            dk_i, dk_j = inner.gradient(f, [k_i, k_j])
            sum_i = tf.reduce_sum(_zeros_if_none(dk_i, k_i))
            sum_j = tf.reduce_sum(_zeros_if_none(dk_j, k_j))
        d_in[i] = _zeros_if_none(outer.gradient(sum_j, k_i), k_i)
        d_out[i + 1] = _zeros_if_none(outer.gradient(sum_i, k_j), k_j)
        del outer
    return list(zip(d_in, d_out, strict=False))


def hessian_degrees(
    chain: ProbeChain, z0: Any, records: list, labels: Any, loss_fn: Any, kernels: list
) -> list:
    """[(delta_in, delta_out)] per weight layer from the mixed blocks of the loss Hessian."""
    n_layers = chain.n_layers
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(kernels)
        with tf.GradientTape() as inner:
            inner.watch(kernels)
            rep = chain.replay(z0=z0, training=False, records=records, kernels=kernels)
            out = chain.tail_outputs(rep.a[-1])
            loss = tf.reduce_mean(loss_fn(labels, out))  # the batch-mean loss C
        grads = inner.gradient(loss, kernels)
        sums = [tf.reduce_sum(_zeros_if_none(gr, k)) for gr, k in zip(grads, kernels, strict=False)]
    d_in = [tf.zeros_like(k) for k in kernels]
    d_out = [tf.zeros_like(k) for k in kernels]
    for i in range(n_layers - 1):
        d_in[i] = _zeros_if_none(outer.gradient(sums[i + 1], kernels[i]), kernels[i])
        d_out[i + 1] = _zeros_if_none(outer.gradient(sums[i], kernels[i + 1]), kernels[i + 1])
    del outer
    return list(zip(d_in, d_out, strict=False))


def terms(degrees: list) -> tuple[list, list, list]:
    """Per layer: numerator delta_out . delta_in, denominator 1 . delta_in and 1 . |delta_in|."""
    nums = [tf.reduce_sum(tf.cast(do, tf.float64) * tf.cast(di, tf.float64)) for di, do in degrees]
    dens = [tf.reduce_sum(tf.cast(di, tf.float64)) for di, _ in degrees]
    abs_dens = [tf.reduce_sum(tf.abs(tf.cast(di, tf.float64))) for di, _ in degrees]
    return nums, dens, abs_dens


def batch_terms(
    chain: ProbeChain,
    z: list,
    a: list,
    records: list,
    g_last: Any,
    labels: Any,
    loss_fn: Any,
    interaction: str,
) -> tuple[list, list, list]:
    """nums, dens, |dens| per weight layer for the batch (tf.function-compatible)."""
    kernels = kernels_of(chain)
    if interaction == "hessian":
        degrees = hessian_degrees(chain, z[0], records, labels, loss_fn, kernels)
    else:
        g = backprop(chain, a, records, g_last)
        degrees = direct_degrees(chain, z, records, g, kernels)
    return terms(degrees)


def slice_records(records: list, b: int, batch: int) -> list:
    """One sample's share of the records: masks are per sample, BN statistics are not."""
    out = []
    for seg in records:
        row = []
        for rec in seg:
            is_mask = rec is not None and not isinstance(rec, tuple)  # BN statistics are tuples
            if is_mask and rec.shape[0] == batch and batch > 1:
                rec = rec[b : b + 1]
            row.append(rec)
        out.append(row)
    return out
