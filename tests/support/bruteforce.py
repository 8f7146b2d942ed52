"""Independent brute-force reference for the core tests (SPEC sections 1-3).

Nothing here uses ncap: the line-graph matrix P is built entry by entry from
SPEC section 2 for tiny networks, and the degrees and beta_eff are read off
it by their definitions. The traces come from a real tiny MLP's forward and
backward pass in NumPy (softmax cross-entropy, the SPEC's g recursion).

Indexing follows the SPEC: z[l] (l = 0..L-1), s[l] (l = 1..L-1) and
g[l] (l = 1..L) are (B, n_l) arrays; ncap's argument lists are
acts = z[0..L-1], derivs = s[1..L-1], grads = g[1..L].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEGENERATE_RTOL = 1e-10  # SPEC section 3
KINDS = ("relu", "tanh", "relu_bn", "relu_dropout", "random")


@dataclass
class Trace:
    """A captured batch in ncap's argument layout, plus the SPEC-indexed views."""

    acts: list[np.ndarray]
    derivs: list[np.ndarray]
    grads: list[np.ndarray]

    @property
    def n_layers(self) -> int:
        return len(self.acts)

    def spec(self) -> tuple[dict, dict, dict]:
        """z, s, g as dicts keyed by the SPEC's layer index, in float64."""
        z = {l: np.asarray(a, np.float64) for l, a in enumerate(self.acts)}
        s = {l + 1: np.asarray(d, np.float64) for l, d in enumerate(self.derivs)}
        g = {l + 1: np.asarray(x, np.float64) for l, x in enumerate(self.grads)}
        return z, s, g

    def astype(self, dtype) -> Trace:
        return Trace(
            *[[np.asarray(x, dtype) for x in xs] for xs in (self.acts, self.derivs, self.grads)]
        )

    def args(self) -> tuple[list, list, list]:
        return self.acts, self.derivs, self.grads


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def mlp_trace(
    widths: tuple[int, ...],
    batch: int,
    kind: str,
    seed: int = 0,
    *,
    dead_layer: int | None = None,
    dropout_rate: float = 0.4,
) -> Trace:
    """z, s, g of a real tiny MLP with widths n_0..n_L under softmax cross-entropy.

    kind: "relu", "tanh", "relu_bn" (a per-unit BatchNorm-like affine map with
    frozen statistics before the ReLU, its scale folded into s), "relu_dropout"
    (a dropout mask times 1/(1-rate) after the ReLU, folded into s and z), or
    "random" (independent Gaussian arrays, no network).
    dead_layer: a hidden layer whose bias is so negative that every unit is off.
    """
    rng = np.random.default_rng(seed)
    n_layers = len(widths) - 1
    if kind == "random":
        return Trace(
            [rng.normal(size=(batch, n)) for n in widths[:-1]],
            [rng.normal(size=(batch, n)) for n in widths[1:-1]],
            [rng.normal(size=(batch, n)) for n in widths[1:]],
        )
    if kind not in KINDS:
        raise ValueError(kind)
    W = {
        l: rng.normal(0.0, np.sqrt(2.0 / widths[l - 1]), size=(widths[l], widths[l - 1]))
        for l in range(1, n_layers + 1)
    }
    # Positive biases keep most ReLU units of these 2-5 unit layers alive.
    bias = {l: rng.normal(0.5, 0.1, size=widths[l]) for l in range(1, n_layers + 1)}
    if dead_layer is not None:
        bias[dead_layer] = np.full(widths[dead_layer], -1e3)
    z = {0: rng.normal(size=(batch, widths[0]))}
    s = {}
    for l in range(1, n_layers):
        a = z[l - 1] @ W[l].T + bias[l]
        if kind == "tanh":
            z[l] = np.tanh(a)
            s[l] = 1.0 - z[l] ** 2
        elif kind == "relu":
            z[l] = np.maximum(a, 0.0)
            s[l] = (a > 0).astype(np.float64)
        elif kind == "relu_bn":
            mu = a.mean(axis=0)
            sigma = a.std(axis=0) + 0.1  # statistics held constant: a per-unit affine map
            gamma = rng.uniform(0.5, 2.0, size=widths[l])
            shift = rng.normal(0.5, 0.2, size=widths[l])
            h = gamma * (a - mu) / sigma + shift
            if dead_layer == l:
                h = np.minimum(h, -1.0)
            z[l] = np.maximum(h, 0.0)
            s[l] = (h > 0) * gamma / sigma
        else:  # relu_dropout
            keep = (rng.random(size=a.shape) >= dropout_rate) / (1.0 - dropout_rate)
            z[l] = np.maximum(a, 0.0) * keep
            s[l] = (a > 0) * keep
    logits = z[n_layers - 1] @ W[n_layers].T + bias[n_layers]
    y = rng.integers(0, widths[-1], size=batch)
    g = {n_layers: _softmax(logits) - np.eye(widths[-1])[y]}
    for l in range(n_layers - 1, 0, -1):
        g[l] = s[l] * (g[l + 1] @ W[l + 1])
    return Trace(
        [z[l] for l in range(n_layers)],
        [s[l] for l in range(1, n_layers)],
        [g[l] for l in range(1, n_layers + 1)],
    )


# ---------------------------------------------------------------- the explicit P


def weight_index(widths: tuple[int, ...]) -> dict[tuple[int, int, int], int]:
    """Node number of each weight W^l[i, j] (SPEC layout: i indexes outputs), all layers."""
    index = {}
    for l in range(1, len(widths)):
        for i in range(widths[l]):
            for j in range(widths[l - 1]):
                index[(l, i, j)] = len(index)
    return index


def explicit_P(trace: Trace, sample: int | None = None, absolute: bool = False) -> np.ndarray:
    """P of one sample (``sample=b``) or of the batch (the mean of the P_b), entry by entry.

    Row = source node, column = target node: the link from W^{l+1}[k, i] to
    W^l[i, j] has weight z^{l-1}_j s^l_i g^{l+1}_k (SPEC section 2).
    ``absolute`` uses |z|, |s|, |g| (for the size of the terms).
    """
    z, s, g = trace.spec()
    widths = tuple([z[0].shape[1]] + [g[l].shape[1] for l in sorted(g)])
    n_layers = len(widths) - 1
    batch = z[0].shape[0]
    index = weight_index(widths)
    P = np.zeros((len(index), len(index)))
    samples = range(batch) if sample is None else [sample]
    weight = 1.0 / len(samples)
    f = abs if absolute else (lambda x: x)
    for b in samples:
        for l in range(1, n_layers):
            for k in range(widths[l + 1]):
                for i in range(widths[l]):
                    for j in range(widths[l - 1]):
                        p = f(z[l - 1][b, j]) * f(s[l][b, i]) * f(g[l + 1][b, k])
                        P[index[(l + 1, k, i)], index[(l, i, j)]] += weight * p
    return P


def degrees_from_P(P: np.ndarray, widths: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(delta_in, delta_out) per layer, SPEC layout (n_l, n_{l-1}).

    in = column sums, out = row sums.
    """
    index = weight_index(widths)
    d_in, d_out = P.sum(axis=0), P.sum(axis=1)
    out = []
    for l in range(1, len(widths)):
        shape = (widths[l], widths[l - 1])
        a, b = np.zeros(shape), np.zeros(shape)
        for i in range(shape[0]):
            for j in range(shape[1]):
                a[i, j] = d_in[index[(l, i, j)]]
                b[i, j] = d_out[index[(l, i, j)]]
        out.append((a, b))
    return out


def beta_from_P(P: np.ndarray, P_abs: np.ndarray) -> dict:
    """beta_eff = (delta_out . delta_in) / (1 . delta_in), with the SPEC's degenerate rule.

    The SPEC's scale, (1/B) sum_b sum_l |z^{l-1}_b|_1 |s^l_b|_1 |g^{l+1}_b|_1,
    is exactly the sum of the entries of the |.|-built P.
    """
    d_in, d_out = P.sum(axis=0), P.sum(axis=1)
    num = float(d_out @ d_in)
    den = float(d_in.sum())
    scale = float(P_abs.sum())
    num_scale = float(P_abs.sum(axis=1) @ P_abs.sum(axis=0))  # the numerator's terms in |.|
    degenerate = abs(den) <= DEGENERATE_RTOL * scale
    return dict(
        value=0.0 if degenerate else num / den,
        numerator=num,
        denominator=den,
        scale=scale,
        num_scale=num_scale,
        degenerate=degenerate,
        out_sum=float(d_out.sum()),
    )


def widths_of(trace: Trace) -> tuple[int, ...]:
    return tuple([trace.acts[0].shape[1]] + [g.shape[1] for g in trace.grads])


def brute_beta(trace: Trace, reduction: str = "batch") -> dict:
    """beta_eff from the explicit P (batch) or from each P_b (sample: arrays of length B)."""
    if reduction == "batch":
        return beta_from_P(explicit_P(trace), explicit_P(trace, absolute=True))
    batch = trace.acts[0].shape[0]
    rows = [
        beta_from_P(explicit_P(trace, b), explicit_P(trace, b, absolute=True)) for b in range(batch)
    ]
    return {key: np.array([r[key] for r in rows]) for key in rows[0]}


def brute_degrees(trace: Trace) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-layer degrees in the Keras kernel layout (n_{l-1}, n_l), as ncap.degrees returns them."""
    pairs = degrees_from_P(explicit_P(trace), widths_of(trace))
    return [(a.T, b.T) for a, b in pairs]


def relu_shortcut_sample(trace: Trace) -> np.ndarray:
    """Per-sample beta by the paper's ReLU shortcut (Eq. 10): s treated as a 0/1 indicator.

    With s in {0, 1} and z, g zero where s is, z.s = Z and s.g = S, so
    num_b = sum_l Z^{l-2} Z^{l-1} S^l S^{l+1} and den_b = sum_l Z^{l-1} N^l S^{l+1},
    N^l counting the active units. Right for plain ReLU only.
    """
    z, s, g = trace.spec()
    n_layers = trace.n_layers
    Z = {l: z[l].sum(1) for l in z}
    S = {l: g[l].sum(1) for l in g}
    N = {l: (s[l] != 0).sum(1) for l in s}
    num = sum(Z[l - 2] * Z[l - 1] * S[l] * S[l + 1] for l in range(2, n_layers))
    den = sum(Z[l - 1] * N[l] * S[l + 1] for l in range(1, n_layers))
    return num / den
