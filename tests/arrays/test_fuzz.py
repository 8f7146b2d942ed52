"""Fuzzing ncap.beff / ncap.degrees across the Python -> C++ boundary (issue 5, point 1).

Property, for every generated input: the call either returns a finite result that
matches an independent evaluation of SPEC sections 2-3, or raises ValueError or
TypeError whose message names the offending argument. Nothing else: no crash, no
other exception type, no NaN or Inf handed back.

The independent evaluation is an extended-precision (np.longdouble) einsum of the
SPEC formulas, so that it neither overflows nor loses digits where float64 does;
``ncap.arrays.reference.beff_numpy`` is checked against the same numbers whenever its own
float64 arithmetic stays finite. Agreement is asked for term by term (numerator,
denominator, scale, per layer) within a tolerance relative to the same sum taken
over absolute values; ``value`` must then be exactly ``numerator / denominator``,
or 0 with ``degenerate`` set exactly when ``|den| <= 1e-10 * scale``.

Inputs vary: shapes (0-sized dims, very unequal widths), dtypes (float16/32/64,
ints, bool, complex, object, longdouble, strings), layouts (Fortran, strided,
negative strides, transposed, unaligned, read-only, byte-swapped, zero-stride
broadcasts, memoryviews, nested lists), NaN/Inf/subnormal/huge values, and wrong
list structures. The default run tries a few hundred examples; the long run is
``pytest -m fuzz_long tests/test_fuzz.py`` (>= 10,000 examples per property).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

import ncap
from ncap.arrays.reference import beff_numpy

LD = np.longdouble
RTOL = 1e-11  # float64 sums of <= ~1000 terms, relative to the same sum over |terms|
TINY = 2.0**-1074  # smallest subnormal: the absolute error of one underflowing product
ARG_NAMES = ("acts", "derivs", "grads", "reduction", "threads")

SHORT = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the default run is reproducible; the long run explores
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
LONG = settings(
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------- generation

FLOAT_DTYPES = (np.float16, np.float32, np.float64)
BAD_DTYPES = (
    "int8",
    "int32",
    "int64",
    "uint8",
    "bool",
    "complex64",
    "complex128",
    "object",
    "longdouble",
    "U3",
    "datetime64[s]",
)
NONFINITE = (float("nan"), float("inf"), -float("inf"))
HUGE = (
    1e300,
    -1e300,
    1e200,
    float(np.finfo(np.float32).max),
    -float(np.finfo(np.float32).max),
    1e154,
)
SMALL = (5e-324, -5e-324, 2.2e-310, 1e-300, 1e-45, 1e-30, 0.0)
LAYOUTS = (
    "c",
    "f",
    "strided",
    "negative",
    "transposed",
    "unaligned",
    "unaligned_ro",
    "readonly",
    "byteswapped",
    "broadcast_rows",
    "broadcast_cols",
    "memoryview",
    "list",
    "tuple_rows",
)


@dataclasses.dataclass
class Case:
    acts: list
    derivs: list
    grads: list
    content: dict  # name -> float64 content (None where the item is not a float array)
    problems: set  # what must make the call fail: "dtype", "nonfinite", "empty", "shape"
    huge: bool  # huge values were injected (no underflow allowance needed or given)
    notes: list


def _values(rng: np.random.Generator, kind: str, shape: tuple[int, int]) -> np.ndarray:
    if kind == "normal":
        return rng.normal(size=shape)
    if kind == "relu_mask":  # derivatives of ReLU: 0/1
        return (rng.random(shape) < 0.6).astype(np.float64)
    if kind == "sparse":
        return rng.normal(size=shape) * (rng.random(shape) < 0.2)
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "const":
        return np.full(shape, rng.normal())
    if kind == "positive":
        return rng.exponential(size=shape)
    return rng.integers(-3, 4, size=shape).astype(np.float64)  # "ints": exact sums


def _layout(a: np.ndarray, layout: str) -> Any:
    """An object holding the content of ``a`` (or a broadcast of part of it) in another layout."""
    b, n = a.shape
    if a.size == 0 and layout in ("list", "tuple_rows"):
        return a  # [] would read back as 1-D
    if layout == "f":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros((2 * b + 1, 3 * n + 2), dtype=a.dtype)
        big[1::2, 2::3] = a
        return big[1::2, 2::3]
    if layout == "negative":
        flipped = np.ascontiguousarray(a[::-1, ::-1])
        return flipped[::-1, ::-1]
    if layout == "transposed":
        return np.ascontiguousarray(a.T).T
    if layout in ("unaligned", "unaligned_ro"):
        if a.dtype.itemsize == 1 or a.size == 0:
            return a
        raw = b"\0" + a.tobytes()
        buf = raw if layout == "unaligned_ro" else bytearray(raw)
        return np.frombuffer(buf, dtype=a.dtype, offset=1).reshape(a.shape)
    if layout == "readonly":
        c = a.copy()
        c.setflags(write=False)
        return c
    if layout == "byteswapped":
        return a.astype(a.dtype.newbyteorder("S"))
    if layout == "broadcast_rows" and b > 0:
        return np.broadcast_to(a[:1], a.shape)  # zero row stride
    if layout == "broadcast_cols" and n > 0:
        return np.broadcast_to(a[:, :1], a.shape)  # zero column stride
    if layout == "memoryview" and a.dtype != np.float16 and a.size > 0:
        return memoryview(np.ascontiguousarray(a))
    if layout == "list":
        return a.tolist()
    if layout == "tuple_rows":
        return tuple(tuple(row) for row in a.tolist())
    return a


def _float64_content(obj: Any) -> np.ndarray | None:
    """What the object holds, as float64, if it is a 2-D real float array (else None)."""
    try:
        arr = np.asarray(obj)
    except Exception:
        return None
    if arr.dtype.kind != "f" or arr.ndim != 2 or arr.dtype.itemsize > 8:
        return None
    return arr.astype(np.float64)


@st.composite
def cases(draw: st.DrawFn, min_layers: int = 2, allow_bad: bool = True) -> Case:
    notes: list = []
    n_layers = draw(st.integers(min_layers, 6), label="L")
    batch = draw(
        st.one_of(st.integers(1, 10), st.just(1), st.just(0) if allow_bad else st.just(1)),
        label="B",
    )
    widths = draw(
        st.lists(st.integers(1, 12), min_size=n_layers + 1, max_size=n_layers + 1), label="widths"
    )
    if draw(st.booleans(), label="very unequal widths"):
        k = draw(st.integers(0, n_layers), label="wide index")
        widths[k] = draw(st.sampled_from([200, 700, 2000]) if k == 0 else st.integers(100, 300))
    if allow_bad and draw(st.integers(0, 19), label="zero width?") == 0:
        widths[draw(st.integers(0, n_layers))] = 0
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)

    # (name, shape) in the order ncap reads them.
    specs = [(f"acts[{l}]", (batch, widths[l])) for l in range(n_layers)]
    specs += [(f"derivs[{l}]", (batch, widths[l + 1])) for l in range(n_layers - 1)]
    specs += [(f"grads[{l}]", (batch, widths[l + 1])) for l in range(n_layers)]

    classes = ["none", "none", "small", "huge"] + (["nonfinite"] if allow_bad else [])
    special_class = draw(st.sampled_from(classes), label="special values")
    problems: set = set()
    if batch == 0 or 0 in widths:
        problems.add("empty")
    objs: dict = {}
    content: dict = {}
    for name, shape in specs:
        kind = draw(
            st.sampled_from(
                ["normal", "normal", "relu_mask", "sparse", "zeros", "const", "positive", "ints"]
            ),
            label=f"{name} kind",
        )
        a = _values(rng, kind, shape)
        dtype = np.dtype(draw(st.sampled_from(FLOAT_DTYPES), label=f"{name} dtype"))
        # Valid-only cases keep within the dtype's range (allow_bad lets float16 overflow).
        top = 30 if allow_bad or dtype != np.float16 else 3
        exponent = draw(st.one_of(st.just(0), st.integers(-top, top)), label=f"{name} exponent")
        a = a * 10.0**exponent
        if special_class != "none" and a.size and draw(st.booleans(), label=f"{name} special?"):
            pool = {"small": SMALL, "huge": HUGE, "nonfinite": NONFINITE}[special_class]
            if not allow_bad:
                pool = tuple(v for v in pool if abs(v) <= float(np.finfo(dtype).max)) or (0.0,)
            for _ in range(draw(st.integers(1, 3))):
                i = draw(st.integers(0, shape[0] - 1))
                j = draw(st.integers(0, shape[1] - 1))
                a[i, j] = draw(st.sampled_from(pool))
        if allow_bad and draw(st.integers(0, 29), label=f"{name} bad dtype?") == 0:
            bad = draw(st.sampled_from(BAD_DTYPES))
            with np.errstate(all="ignore"):
                if bad in ("int8", "int32", "int64", "uint8"):
                    typed = np.nan_to_num(a, posinf=0, neginf=0).clip(-100, 100).astype(bad)
                elif bad == "U3":
                    typed = a.astype("U3")
                elif bad == "datetime64[s]":
                    typed = np.zeros(shape, dtype="datetime64[s]")
                else:
                    typed = a.astype(bad)
            problems.add("dtype")
            notes.append(f"{name}: dtype {typed.dtype}")
            objs[name] = typed
            content[name] = None
            continue
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            typed = a.astype(dtype)
        layout = draw(st.sampled_from(LAYOUTS), label=f"{name} layout")
        obj = _layout(typed, layout)
        objs[name] = obj
        c = _float64_content(obj)
        assert c is not None and c.shape == shape, (name, layout)
        content[name] = c
        # acts[L-1] and grads[0] are documented as unused: their values are never read.
        unused = name in (f"acts[{n_layers - 1}]", "grads[0]")
        if not unused and not np.isfinite(c).all():
            problems.add("nonfinite")
        notes.append(f"{name}: {shape} {dtype.name} {layout} {kind} 1e{exponent}")

    acts = [objs[f"acts[{l}]"] for l in range(n_layers)]
    derivs = [objs[f"derivs[{l}]"] for l in range(n_layers - 1)]
    grads = [objs[f"grads[{l}]"] for l in range(n_layers)]
    if draw(st.booleans(), label="tuples"):
        acts, derivs, grads = tuple(acts), tuple(derivs), tuple(grads)
    return Case(acts, derivs, grads, content, problems, special_class == "huge", notes)


# ----------------------------------------------------------------- reference


@np.errstate(all="ignore")  # unused arrays may hold NaN/Inf
def _split(case_content: dict, n_layers: int):
    z = [case_content[f"acts[{l}]"].astype(LD) for l in range(n_layers)]
    s = [None] + [case_content[f"derivs[{l}]"].astype(LD) for l in range(n_layers - 1)]
    g = [None] + [case_content[f"grads[{l}]"].astype(LD) for l in range(n_layers)]
    return z, s, g


@np.errstate(all="ignore")
def reference_terms(z: list, s: list, g: list, sample: bool) -> dict:
    """SPEC section 3 in long double, per layer, with the same sums over |terms|.

    Returns arrays of shape (L,) (batch) or (L, B) (sample) for num, den and their
    absolute bounds. Row l-1 is weight layer l.
    """
    n_layers = len(z)
    batch = z[0].shape[0]
    rows = (n_layers,) if not sample else (n_layers, batch)
    out = {k: np.zeros(rows, dtype=LD) for k in ("num", "num_abs", "den", "den_abs")}
    for absolute in (False, True):
        f = np.abs if absolute else (lambda x: x)
        zz = [f(x) for x in z]
        ss = [None] + [f(x) for x in s[1:]]
        gg = [None] + [f(x) for x in g[1:]]
        Z = [x.sum(axis=1) for x in zz]
        S = [None] + [x.sum(axis=1) for x in gg[1:]]
        N = [None] + [x.sum(axis=1) for x in ss[1:]]
        suffix = "_abs" if absolute else ""
        for l in range(1, n_layers):
            term = Z[l - 1] * N[l] * S[l + 1]
            out["den" + suffix][l - 1] = term if sample else term.mean()
        for l in range(2, n_layers):
            if sample:
                zs = np.einsum("bj,bj->b", zz[l - 1], ss[l - 1])
                sg = np.einsum("bi,bi->b", ss[l], gg[l])
                out["num" + suffix][l - 1] = Z[l - 2] * zs * sg * S[l + 1]
            else:
                A = np.einsum("bi,ci->bc", ss[l], gg[l])
                C = np.einsum("bj,cj->bc", zz[l - 1], ss[l - 1])
                total = np.einsum("b,c,bc,bc->", S[l + 1], Z[l - 2], A, C)
                out["num" + suffix][l - 1] = total / LD(batch * batch)
    return out


@np.errstate(all="ignore")
def _row_abs_max(z, s, g) -> LD:
    arrays = [*z[:-1], *s[1:], *g[2:]]  # acts[L-1] and grads[0] are unused
    return max(np.abs(x).sum(axis=1).max(initial=LD(0)) for x in arrays)


def _assert_close(name: str, got, want, bound, atol) -> None:
    got = np.asarray(got, dtype=LD)
    want = np.asarray(want, dtype=LD)
    tol = RTOL * np.asarray(bound, dtype=LD) + atol
    err = np.abs(got - want)
    bad = err > tol
    assert not bad.any(), (
        f"{name}: ncap {got[bad] if got.ndim else got} "
        f"vs reference {want[bad] if want.ndim else want}"
        f" (|err| {err[bad] if err.ndim else err} > tol {tol[bad] if tol.ndim else tol})"
    )


def check_beff_result(result: ncap.BetaResult, case: Case, reduction: str) -> None:
    """The result is finite, self-consistent and matches the reference term by term."""
    n_layers = len(case.acts)
    sample = reduction == "sample"
    z, s, g = _split(case.content, n_layers)
    batch = z[0].shape[0]
    ref = reference_terms(z, s, g, sample)

    value = np.asarray(result.value, dtype=np.float64)
    num = np.asarray(result.numerator, dtype=np.float64)
    den = np.asarray(result.denominator, dtype=np.float64)
    scale = np.asarray(result.scale, dtype=np.float64)
    degenerate = np.asarray(result.degenerate, dtype=bool)
    for label, x in (("value", value), ("numerator", num), ("denominator", den), ("scale", scale)):
        assert np.isfinite(x).all(), f"{label} is not finite: {x}"
        assert x.shape == (() if not sample else (batch,)), (label, x.shape)
    assert result.batch_size == batch and result.reduction == reduction
    assert len(result.per_layer) == n_layers

    # SPEC section 3: degenerate exactly when |den| <= 1e-10 * scale; then 0, else num / den.
    # Where a term is subnormal or underflows to 0 when rounded from the core's wider
    # exponent range (the exact term, not the reported one, decides), or the value itself
    # is subnormal, the exact relation holds for the unrounded terms only: value is then
    # checked against the reference ratio instead.
    tiny = np.finfo(np.float64).tiny
    normal = (value == 0) | (np.abs(value) >= tiny)
    exact = (ref["num"].sum(0), ref["den"].sum(0), ref["den_abs"].sum(0))
    for x in exact:
        normal &= np.asarray((x == 0) | (np.abs(x) >= 2 * tiny))
    assert np.array_equal(degenerate[normal], (np.abs(den) <= 1e-10 * scale)[normal])
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_value = np.where(degenerate, 0.0, num / np.where(degenerate, 1.0, den))
    assert np.array_equal(value[normal], expected_value[normal]), (value, expected_value)

    # Term by term against the long-double reference. Products that underflow into
    # subnormals lose absolute accuracy of ~TINY times their cofactors, nothing else.
    ops = LD(10 * (batch * batch + sum(x.shape[1] for x in z) + batch) * n_layers)
    big = LD(1) if case.huge else max(LD(1), _row_abs_max(z, s, g))
    atol_num = LD(0) if case.huge else TINY * ops * big**5
    atol_den = LD(0) if case.huge else TINY * ops * big**2
    layer_num = np.array([t.numerator for t in result.per_layer], dtype=np.float64)
    layer_den = np.array([t.denominator for t in result.per_layer], dtype=np.float64)
    assert layer_num.shape == ref["num"].shape and layer_den.shape == ref["den"].shape
    assert np.isfinite(layer_num).all() and np.isfinite(layer_den).all()
    _assert_close("per-layer numerator", layer_num, ref["num"], ref["num_abs"], atol_num)
    _assert_close("per-layer denominator", layer_den, ref["den"], ref["den_abs"], atol_den)
    _assert_close("numerator", num, ref["num"].sum(0), ref["num_abs"].sum(0), n_layers * atol_num)
    _assert_close("denominator", den, ref["den"].sum(0), ref["den_abs"].sum(0), n_layers * atol_den)
    _assert_close("scale", scale, ref["den_abs"].sum(0), ref["den_abs"].sum(0), n_layers * atol_den)
    if not normal.all():  # the ratio of the exact terms, to float64 rounding of each
        ref_num, ref_num_abs = ref["num"].sum(0), ref["num_abs"].sum(0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = ref_num / ref["den"].sum(0)
            cancellation = np.where(ref_num != 0, ref_num_abs / np.abs(ref_num), 1)
        rtol = LD(1e-9) * (cancellation + 1)
        # A subnormal value is rounded to a multiple of TINY: one unit of absolute slack.
        ok = degenerate | (np.abs(value - ratio) <= rtol * np.abs(ratio) + LD(TINY))
        assert np.all(ok[~normal]), (value, ratio)
    assert [t.fan_in for t in result.per_layer] == [x.shape[1] for x in z]
    assert [t.fan_out for t in result.per_layer] == [x.shape[1] for x in g[1:]]

    # ncap.arrays.reference.beff_numpy on the float64 content, where its float64 sums stay finite.
    content = [case.content[k] for k in case.content]
    acts64 = content[:n_layers]
    derivs64 = content[n_layers : 2 * n_layers - 1]
    grads64 = content[2 * n_layers - 1 :]
    with np.errstate(all="ignore"):
        np_ref = beff_numpy(acts64, derivs64, grads64, reduction)
    if all(np.isfinite(np_ref[k]).all() for k in ("numerator", "denominator", "scale")):
        _assert_close(
            "beff_numpy numerator",
            np_ref["numerator"],
            ref["num"].sum(0),
            ref["num_abs"].sum(0),
            n_layers * atol_num,
        )
        _assert_close(
            "beff_numpy denominator",
            np_ref["denominator"],
            ref["den"].sum(0),
            ref["den_abs"].sum(0),
            n_layers * atol_den,
        )


def check_degrees_result(pairs: list, case: Case) -> None:
    """Each (delta_in, delta_out) matches a long-double einsum of SPEC section 2."""
    n_layers = len(case.acts)
    z, s, g = _split(case.content, n_layers)
    batch = z[0].shape[0]
    assert len(pairs) == n_layers
    big = LD(1) if case.huge else max(LD(1), _row_abs_max(z, s, g))
    atol = LD(0) if case.huge else TINY * LD(10 * batch) * big**2
    total_in = total_out = total_abs = LD(0)
    for l in range(1, n_layers + 1):
        d_in, d_out = pairs[l - 1]
        shape = (z[l - 1].shape[1], g[l].shape[1])  # Keras layout (n_{l-1}, n_l)
        for label, d in (("delta_in", d_in), ("delta_out", d_out)):
            assert isinstance(d, np.ndarray) and d.dtype == np.float64, (label, type(d))
            assert d.shape == shape, (label, l, d.shape, shape)
            assert np.isfinite(d).all(), f"layer {l} {label} is not finite"
        if l <= n_layers - 1:
            S_next = g[l + 1].sum(axis=1)
            want = np.einsum("bj,bi,b->ji", z[l - 1], s[l], S_next) / batch
            bound = (
                np.einsum(
                    "bj,bi,b->ji", np.abs(z[l - 1]), np.abs(s[l]), np.abs(g[l + 1]).sum(axis=1)
                )
                / batch
            )
        else:
            want = bound = np.zeros(shape, dtype=LD)
        _assert_close(f"layer {l} delta_in", d_in, want, bound, atol)
        total_in += want.sum()
        total_abs += bound.sum()
        if l >= 2:
            Z_prev = z[l - 2].sum(axis=1)
            want = np.einsum("bj,bi,b->ji", s[l - 1], g[l], Z_prev) / batch
            bound = (
                np.einsum(
                    "bj,bi,b->ji", np.abs(s[l - 1]), np.abs(g[l]), np.abs(z[l - 2]).sum(axis=1)
                )
                / batch
            )
        else:
            want = bound = np.zeros(shape, dtype=LD)
        _assert_close(f"layer {l} delta_out", d_out, want, bound, atol)
        total_out += want.sum()
    # SPEC: 1.delta_in == 1.delta_out (both are the sum of all entries of P), on ncap's output.
    got_in = sum(np.sum(p[0], dtype=LD) for p in pairs)
    got_out = sum(np.sum(p[1], dtype=LD) for p in pairs)
    _assert_close("1.delta_in vs 1.delta_out", got_in, got_out, total_abs, 2 * n_layers * atol)


# ------------------------------------------------------------------ property


def _check_error(err: Exception, case: Case, allowed_problems: set) -> None:
    msg = str(err)
    note(f"raised {type(err).__name__}: {msg}")
    assert isinstance(err, (ValueError, TypeError)), f"unexpected {type(err).__name__}: {msg}"
    assert any(name in msg for name in ARG_NAMES), f"message names no argument: {msg!r}"
    problems = case.problems | allowed_problems
    assert problems, f"valid input refused: {type(err).__name__}: {msg}"
    if problems == {"dtype"}:
        assert isinstance(err, TypeError), msg
    if problems <= {"nonfinite", "empty", "layers", "overflow"}:
        assert isinstance(err, ValueError), msg
    if problems == {"nonfinite"}:
        assert "NaN or Inf" in msg or "too large" in msg, msg
    if problems == {"overflow"}:
        assert "too large" in msg, msg


def _overflow_possible(case: Case) -> bool:
    """Whether float64 intermediates of the closed form can overflow for this input."""
    if any(c is None for c in case.content.values()):
        return False
    n_layers = len(case.acts)
    z, s, g = _split(case.content, n_layers)
    batch = LD(z[0].shape[0])
    limit = LD(np.finfo(np.float64).max) / LD(1e6)
    return bool(_row_abs_max(z, s, g) ** 6 * batch * batch > limit)


def run_beff_case(case: Case, reduction: str, threads: int) -> None:
    note("\n".join(case.notes))
    allowed = set()
    if len(case.acts) < 4:
        allowed.add("layers")
    if "nonfinite" not in case.problems and _overflow_possible(case):
        allowed.add("overflow")
    try:
        result = ncap.beff(case.acts, case.derivs, case.grads, reduction=reduction, threads=threads)
    except Exception as err:  # noqa: BLE001 - the property is about which exceptions
        _check_error(err, case, allowed)
        if len(case.acts) < 4 and not case.problems:
            assert "three hidden layers" in str(err)
        return
    assert not case.problems, f"accepted an input with {case.problems}: {result!r}"
    assert len(case.acts) >= 4, "accepted a probe with fewer than three hidden layers"
    check_beff_result(result, case, reduction)
    if threads != 1:  # bit-identical whatever the thread count
        again = ncap.beff(case.acts, case.derivs, case.grads, reduction=reduction, threads=1)
        assert np.array_equal(np.asarray(again.value), np.asarray(result.value))
        assert np.array_equal(np.asarray(again.numerator), np.asarray(result.numerator))


def run_degrees_case(case: Case) -> None:
    note("\n".join(case.notes))
    try:
        pairs = ncap.degrees(case.acts, case.derivs, case.grads)
    except Exception as err:  # noqa: BLE001
        _check_error(err, case, {"overflow"} if _overflow_possible(case) else set())
        return
    assert not case.problems, f"accepted an input with {case.problems}"
    check_degrees_result(pairs, case)


REDUCTION = st.sampled_from(["batch", "sample"])
THREADS = st.sampled_from([0, 1, 2, 3, 7])


@SHORT
@given(case=cases(min_layers=2), reduction=REDUCTION, threads=THREADS)
def test_fuzz_beff(case: Case, reduction: str, threads: int) -> None:
    run_beff_case(case, reduction, threads)


@SHORT
@given(case=cases(min_layers=4, allow_bad=False), reduction=REDUCTION, threads=THREADS)
def test_fuzz_beff_valid_inputs(case: Case, reduction: str, threads: int) -> None:
    """Mostly-valid inputs, so that the value checks get most of the budget."""
    assume(not case.problems)
    run_beff_case(case, reduction, threads)


@SHORT
@given(case=cases(min_layers=2))
def test_fuzz_degrees(case: Case) -> None:
    run_degrees_case(case)


# ------------------------------------------------------ wrong list structures

MUTATIONS = (
    "drop",
    "extra",
    "none_item",
    "float_scalar",
    "int_scalar",
    "one_d",
    "three_d",
    "transposed",
    "stack_list",
    "none_list",
    "scalar_list",
    "dict_list",
    "string_list",
    "generator",
    "nested_list_of_arrays",
    "ragged_list",
    "swap_lists",
    "empty_lists",
    "set_list",
    "tuple_lists",
)


def _mutate(case: Case, mutation: str, which: str, index: int) -> tuple[list, list, list, str]:
    lists = {"acts": list(case.acts), "derivs": list(case.derivs), "grads": list(case.grads)}
    target = lists[which]
    k = index % len(target) if target else 0
    expect = "error"
    if mutation == "drop" and target:
        target.pop(k)
    elif mutation == "extra":
        target.insert(k, target[k] if target else np.zeros((1, 1)))
    elif mutation == "none_item" and target:
        target[k] = None
    elif mutation == "float_scalar" and target:
        target[k] = 1.5
    elif mutation == "int_scalar" and target:
        target[k] = 3
    elif mutation == "one_d" and target:
        target[k] = np.asarray(np.asarray(target[k], dtype=np.float64).ravel())
    elif mutation == "three_d" and target:
        target[k] = np.asarray(target[k], dtype=np.float64)[None]
    elif mutation == "transposed" and target:
        target[k] = np.asarray(target[k], dtype=np.float64).T
        expect = "either"  # a square or 1-wide array may still chain
    elif mutation == "stack_list":
        arrs = [np.asarray(x, dtype=np.float64) for x in target]
        if arrs and all(a.shape == arrs[0].shape for a in arrs):
            lists[which] = np.stack(arrs)
        else:
            lists[which] = np.zeros((len(arrs), 2, 2))
    elif mutation == "none_list":
        lists[which] = None
    elif mutation == "scalar_list":
        lists[which] = 2.0
    elif mutation == "dict_list":
        lists[which] = dict(enumerate(target))
    elif mutation == "string_list":
        lists[which] = "acts"
    elif mutation == "generator":
        lists[which] = (x for x in target)
    elif mutation == "set_list":
        lists[which] = {id(x) for x in target}
    elif mutation == "nested_list_of_arrays":
        lists[which] = [target]
    elif mutation == "ragged_list" and target:
        rows = np.asarray(target[k], dtype=np.float64).tolist()
        if len(rows) == 1:
            rows = rows + [rows[0] + [1.0]]
        elif rows and rows[0]:
            rows[0] = rows[0] + [1.0]
        else:
            rows = [[1.0], [1.0, 2.0]]
        target[k] = rows
    elif mutation == "swap_lists":
        lists["acts"], lists["grads"] = lists["grads"], lists["acts"]
        expect = "either"  # equal lengths; shapes may even chain
    elif mutation == "empty_lists":
        lists = {"acts": [], "derivs": [], "grads": []}
    elif mutation == "tuple_lists":
        lists = {k2: tuple(v) for k2, v in lists.items()}
        expect = "same"
    else:
        expect = "same"
    return lists["acts"], lists["derivs"], lists["grads"], expect


def _content_of(seq: Any) -> list | None:
    """float64 content of a list of layers, or None if it is not such a list."""
    if not isinstance(seq, (list, tuple)):
        return None
    out = []
    for x in seq:
        c = _float64_content(x)
        if c is None:
            return None
        out.append(c)
    return out


@SHORT
@given(
    case=cases(min_layers=2, allow_bad=False),
    mutation=st.sampled_from(MUTATIONS),
    which=st.sampled_from(["acts", "derivs", "grads"]),
    index=st.integers(0, 10),
    func=st.sampled_from(["beff", "degrees"]),
)
def test_fuzz_wrong_structures(
    case: Case, mutation: str, which: str, index: int, func: str
) -> None:
    assume(not case.problems)
    acts, derivs, grads, expect = _mutate(case, mutation, which, index)
    note(f"mutation {mutation} of {which}[{index}] -> expect {expect}")
    fn = ncap.beff if func == "beff" else ncap.degrees
    try:
        result = fn(acts, derivs, grads)
    except Exception as err:  # noqa: BLE001
        msg = str(err)
        assert isinstance(err, (ValueError, TypeError)), f"unexpected {type(err).__name__}: {msg}"
        assert any(name in msg for name in ARG_NAMES), f"message names no argument: {msg!r}"
        overflow = "too large" in msg and _overflow_possible(case)
        if expect == "same" and not overflow and not (func == "beff" and len(case.acts) < 4):
            raise AssertionError(f"{mutation}: a valid input was refused: {msg}") from err
        if mutation in (
            "none_list",
            "scalar_list",
            "dict_list",
            "string_list",
            "stack_list",
            "set_list",
            "generator",
        ):
            assert isinstance(err, TypeError), f"{mutation}: {type(err).__name__}: {msg}"
        if mutation in ("drop", "extra", "empty_lists"):
            assert isinstance(err, ValueError), f"{mutation}: {type(err).__name__}: {msg}"
        return
    assert expect in ("same", "either"), f"{mutation} of {which} was accepted"
    # Accepted: it must be right for the arrays it was given.
    contents = [_content_of(x) for x in (acts, derivs, grads)]
    assert all(c is not None for c in contents)
    n_layers = len(contents[0])
    content = {f"acts[{l}]": c for l, c in enumerate(contents[0])}
    content.update({f"derivs[{l}]": c for l, c in enumerate(contents[1])})
    content.update({f"grads[{l}]": c for l, c in enumerate(contents[2])})
    mutated = Case(list(acts), list(derivs), list(grads), content, set(), case.huge, case.notes)
    assert len(mutated.acts) == n_layers
    if func == "beff":
        check_beff_result(result, mutated, "batch")
    else:
        check_degrees_result(result, mutated)


# ------------------------------------------------- fixed cases found by fuzzing


def test_degrees_overflow_is_refused_not_inf():
    """Found by the long fuzz run: finite inputs whose degrees overflow float64.

    delta_in of layer 1 is z^0 s^1 S^2 = 1 * 1e300 * 1e300; ncap.beff refuses the same
    inputs with "values too large", ncap.degrees must not hand back inf.
    """
    one, huge = np.array([[1.0]]), np.array([[1e300]])
    try:
        pairs = ncap.degrees([one, one], [huge], [one, huge])
    except ValueError as err:
        assert "too large" in str(err)
        return
    assert all(np.isfinite(d).all() for pair in pairs for d in pair), pairs


# ----------------------------------------------------------- other arguments


@SHORT
@given(
    reduction=st.one_of(st.text(max_size=8), st.none(), st.integers(), st.just("BATCH")),
    threads=st.one_of(
        st.integers(-5, -1),
        st.floats(allow_nan=True),
        st.text(max_size=3),
        st.none(),
        st.just(2**70),
    ),
)
def test_fuzz_bad_keyword_values(reduction: Any, threads: Any) -> None:
    """Bad reduction / threads values are refused with the argument named, never crash."""
    rng = np.random.default_rng(0)
    acts = [rng.normal(size=(3, n)) for n in (4, 5, 3, 2)]
    derivs = [rng.normal(size=(3, n)) for n in (5, 3, 2)]
    grads = [rng.normal(size=(3, n)) for n in (5, 3, 2, 2)]
    for kwargs, name in (
        ({"reduction": reduction}, "reduction"),
        ({"threads": threads}, "threads"),
    ):
        if kwargs.get("reduction") in ("batch", "sample"):
            continue
        with pytest.raises((ValueError, TypeError)) as info:
            ncap.beff(acts, derivs, grads, **kwargs)
        assert name in str(info.value), str(info.value)


# ------------------------------------------------------------------ long run


@pytest.mark.fuzz_long
@LONG
@given(case=cases(min_layers=2), reduction=REDUCTION, threads=THREADS)
def test_fuzz_long_beff(case: Case, reduction: str, threads: int) -> None:
    run_beff_case(case, reduction, threads)


@pytest.mark.fuzz_long
@LONG
@given(case=cases(min_layers=2))
def test_fuzz_long_degrees(case: Case) -> None:
    run_degrees_case(case)


@pytest.mark.fuzz_long
@LONG
@given(
    case=cases(min_layers=2, allow_bad=False),
    mutation=st.sampled_from(MUTATIONS),
    which=st.sampled_from(["acts", "derivs", "grads"]),
    index=st.integers(0, 10),
    func=st.sampled_from(["beff", "degrees"]),
)
def test_fuzz_long_wrong_structures(
    case: Case, mutation: str, which: str, index: int, func: str
) -> None:
    test_fuzz_wrong_structures.hypothesis.inner_test(case, mutation, which, index, func)
