"""The closed form of SPEC section 3 in TensorFlow ops, for use inside a training step.

Exact across replicas: each replica reduces the wide probe input z^0 to its
per-sample sums, then the replicas' per-sample arrays are gathered (one
``all_gather`` of z^1..z^{L-2}, s and g, a few hundred numbers per sample),
and every replica computes beta of the global batch from the B x B Gram
matrices of SPEC section 3, accumulated in float64. With one replica the
gather is skipped.
"""

from __future__ import annotations

from typing import Any

from ..arrays.spec import DEGENERATE_RTOL
from ._backend import tf


def _gather(values: list) -> list:
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return values
    return [ctx.all_gather(v, axis=0) for v in values]


def _safe_ratio(num: Any, den: Any, scale: Any) -> Any:
    degenerate = tf.abs(den) <= DEGENERATE_RTOL * scale
    ratio = num / tf.where(degenerate, tf.ones_like(den), den)
    return tf.where(degenerate, tf.zeros_like(num), ratio)


def beta_in_graph(
    z: list, s: list, g: list, reduction: str = "batch", with_batch_size: bool = False
) -> Any:
    """beta_eff (float64 scalar) of the global batch from this replica's z, s and g.

    ``z[l]`` = z^l (l = 0..L-2 used), ``s[l]`` = s^{l+1}, ``g[l]`` = g^{l+1}
    (the :func:`ncap.beff` layout; ``g[0]`` unused). ``reduction="sample"``
    gives the mean over the global batch of the per-sample betas (0 for an
    empty batch). ``with_batch_size=True`` returns (beta, global batch size).
    """
    n_layers = len(g)
    f64 = tf.float64
    z0 = tf.cast(z[0], f64)
    local = [
        tf.reduce_sum(z0, axis=1),
        tf.reduce_sum(tf.abs(z0), axis=1),
        *z[1 : n_layers - 1],
        *s,
        *g[1:],
    ]
    gathered = _gather(local)
    Z0, absZ0 = gathered[0], gathered[1]
    rest = [tf.cast(t, f64) for t in gathered[2:]]
    k = n_layers - 2
    zz = [None] + rest[:k]  # zz[l] = z^l, l = 1..L-2
    ss = [None] + rest[k : k + n_layers - 1]  # ss[l] = s^l, l = 1..L-1
    gg = [None, None] + rest[k + n_layers - 1 :]  # gg[l] = g^l, l = 2..L
    Z = [Z0] + [tf.reduce_sum(t, axis=1) for t in zz[1:]]
    absZ = [absZ0] + [tf.reduce_sum(tf.abs(t), axis=1) for t in zz[1:]]
    S = [None, None] + [tf.reduce_sum(t, axis=1) for t in gg[2:]]
    N = [None] + [tf.reduce_sum(t, axis=1) for t in ss[1:]]
    den_b = tf.zeros_like(Z0)
    scale_b = tf.zeros_like(Z0)
    for l in range(1, n_layers):
        den_b += Z[l - 1] * N[l] * S[l + 1]
        scale_b += (
            absZ[l - 1] * tf.reduce_sum(tf.abs(ss[l]), 1) * tf.reduce_sum(tf.abs(gg[l + 1]), 1)
        )
    if reduction == "sample":
        num_b = tf.zeros_like(den_b)
        for l in range(2, n_layers):
            num_b += (
                Z[l - 2]
                * tf.reduce_sum(zz[l - 1] * ss[l - 1], 1)
                * tf.reduce_sum(ss[l] * gg[l], 1)
                * S[l + 1]
            )
        values = _safe_ratio(num_b, den_b, scale_b)
        beta = tf.reduce_sum(values) / tf.maximum(tf.cast(tf.size(values), f64), 1.0)
        return (beta, tf.size(Z0)) if with_batch_size else beta
    batch = tf.cast(tf.shape(Z0)[0], f64)
    num = tf.constant(0.0, f64)
    for l in range(2, n_layers):
        a = tf.matmul(ss[l], gg[l], transpose_b=True)  # A[b, b'] = s^l_b . g^l_b'
        c = tf.matmul(zz[l - 1], ss[l - 1], transpose_b=True)  # C[b, b'] = z^{l-1}_b . s^{l-1}_b'
        num += tf.tensordot(S[l + 1], tf.linalg.matvec(a * c, Z[l - 2]), 1)
    safe = tf.maximum(batch, 1.0)  # an empty batch: all sums are 0, hence degenerate, beta 0
    beta = _safe_ratio(
        num / (safe * safe), tf.reduce_sum(den_b) / safe, tf.reduce_sum(scale_b) / safe
    )
    return (beta, tf.size(Z0)) if with_batch_size else beta
