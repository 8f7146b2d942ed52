"""The closed form of SPEC section 3 in TensorFlow ops, for use inside a training step.

Exact across replicas: each replica reduces its samples to additive
statistics (per-sample sums for the denominator, and the unnormalised
degree matrices sum_b s_b z_b^T S_b and sum_b g_b s_b^T Z_b for the
numerator), these are summed over replicas with one all-reduce, and beta of
the global batch follows. Accumulated in float64.
"""

from __future__ import annotations

from typing import Any

from ..reference import DEGENERATE_RTOL
from ._backend import tf

_SUM = tf.distribute.ReduceOp.SUM


def _all_reduce(values: list) -> list:
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return values
    return ctx.all_reduce(_SUM, values)


def _safe_ratio(num: Any, den: Any, scale: Any) -> Any:
    degenerate = tf.abs(den) <= DEGENERATE_RTOL * scale
    return tf.where(degenerate, tf.zeros_like(num), num / tf.where(degenerate, tf.ones_like(den), den))


def beta_in_graph(z: list, s: list, g: list, reduction: str = "batch") -> Any:
    """beta_eff (float64 scalar) of the global batch from this replica's z, s and g.

    ``z[l]`` = z^l (l = 0..L-2 used), ``s[l]`` = s^{l+1}, ``g[l]`` = g^{l+1}
    (the :func:`ncap.beff` layout). ``reduction="sample"`` gives the mean over
    the global batch of the per-sample betas.
    """
    n_layers = len(g)
    f64 = tf.float64
    zz = [tf.cast(t, f64) for t in z[: n_layers - 1]]
    ss = [None] + [tf.cast(t, f64) for t in s]  # ss[l] = s^l
    gg = [None] + [tf.cast(t, f64) for t in g]  # gg[l] = g^l
    Z = [tf.reduce_sum(t, axis=1) for t in zz]
    S = [None] + [tf.reduce_sum(t, axis=1) for t in gg[1:]]
    N = [None] + [tf.reduce_sum(t, axis=1) for t in ss[1:]]
    den_b = tf.zeros_like(Z[0])
    scale_b = tf.zeros_like(Z[0])
    for l in range(1, n_layers):
        den_b += Z[l - 1] * N[l] * S[l + 1]
        scale_b += (tf.reduce_sum(tf.abs(zz[l - 1]), 1) * tf.reduce_sum(tf.abs(ss[l]), 1)
                    * tf.reduce_sum(tf.abs(gg[l + 1]), 1))
    batch = tf.cast(tf.shape(Z[0])[0], f64)
    if reduction == "sample":
        num_b = tf.zeros_like(den_b)
        for l in range(2, n_layers):
            num_b += (Z[l - 2] * tf.reduce_sum(zz[l - 1] * ss[l - 1], 1)
                      * tf.reduce_sum(ss[l] * gg[l], 1) * S[l + 1])
        total, count = _all_reduce([tf.reduce_sum(_safe_ratio(num_b, den_b, scale_b)), batch])
        return total / count
    d_in = [tf.matmul(ss[l] * S[l + 1][:, None], zz[l - 1], transpose_a=True)
            for l in range(2, n_layers)]
    d_out = [tf.matmul(gg[l] * Z[l - 2][:, None], ss[l - 1], transpose_a=True)
             for l in range(2, n_layers)]
    reduced = _all_reduce([tf.reduce_sum(den_b), tf.reduce_sum(scale_b), batch, *d_in, *d_out])
    den_sum, scale_sum, total = reduced[:3]
    k = n_layers - 2
    r_in, r_out = reduced[3:3 + k], reduced[3 + k:]
    num = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(r_in, r_out)]) / (total * total)
    return _safe_ratio(num, den_sum / total, scale_sum / total)
