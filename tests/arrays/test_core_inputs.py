"""What ncap.beff / ncap.degrees accept, and the clear errors for what they do not.

Every bad input must raise ValueError or TypeError whose message names the
argument (with its layer index) and says what was wrong; never a crash or a number.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.bruteforce import Trace, mlp_trace

import ncap

WIDTHS = (3, 4, 3, 2, 2)  # L = 4
BATCH = 4


@pytest.fixture
def trace() -> Trace:
    return mlp_trace(WIDTHS, BATCH, "random", seed=0)


def _replace(seq: list, i: int, value) -> list:
    out = list(seq)
    out[i] = value
    return out


def _with(trace: Trace, which: str, i: int, value) -> tuple[list, list, list]:
    args = dict(acts=trace.acts, derivs=trace.derivs, grads=trace.grads)
    args[which] = _replace(args[which], i, value)
    return args["acts"], args["derivs"], args["grads"]


def _raises(exc, pattern: str, *args, **kwargs):
    """ncap.beff must raise ``exc`` with a message matching every ';'-separated regex."""
    with pytest.raises(exc) as info:
        ncap.beff(*args, **kwargs)
    msg = str(info.value)
    for part in pattern.split(";"):
        assert re.search(part, msg), f"{part!r} not in message {msg!r}"
    return msg


# ------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "which,i",
    [
        ("acts", 0),
        ("acts", 2),
        ("acts", 3),
        ("derivs", 0),
        ("derivs", 2),
        ("grads", 0),
        ("grads", 1),
        ("grads", 3),
    ],
)
def test_mismatched_batch_size(trace, which, i):
    arr = getattr(trace, which)[i]
    args = _with(trace, which, i, arr[:-1])
    # acts[0] sets the batch size, so a short acts[0] is reported against the next array.
    name = re.escape(f"{which}[{i}]") if (which, i) != ("acts", 0) else r"acts\[1\]"
    _raises(ValueError, rf"{name};batch size", *args)


@pytest.mark.parametrize(
    "which,i,against",
    [
        ("acts", 1, r"grads\[0\]"),
        ("acts", 2, r"grads\[1\]"),
        ("acts", 3, r"grads\[2\]"),  # unused by the maths, but its shape is still checked
        ("derivs", 0, r"grads\[0\]"),
        ("derivs", 1, r"grads\[1\]"),
        ("derivs", 2, r"grads\[2\]"),
    ],
)
def test_widths_that_do_not_chain(trace, which, i, against):
    args = _with(trace, which, i, np.ones((BATCH, 7)))
    _raises(ValueError, rf"{which}\[{i}\];width 7;chain;{against}", *args)


@pytest.mark.parametrize("i", [0, 1, 2])
def test_grads_width_that_does_not_chain(trace, i):
    # A wrong grads[i] makes acts[i+1] and derivs[i] disagree with it: both names are named.
    args = _with(trace, "grads", i, np.ones((BATCH, 7)))
    _raises(ValueError, rf"grads\[{i}\];width 7;chain", *args)


def test_zero_width(trace):
    args = _with(trace, "acts", 0, np.ones((BATCH, 0)))
    _raises(ValueError, r"acts\[0\];zero width", *args)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_fewer_than_three_hidden_layers(trace, n_layers):
    msg = _raises(
        ValueError,
        "acts;three hidden layers;identically 0",
        trace.acts[:n_layers],
        trace.derivs[: n_layers - 1],
        trace.grads[:n_layers],
    )
    assert f"L = {n_layers}" in msg


def test_degrees_need_two_layers(trace):
    with pytest.raises(ValueError, match=r"acts: need at least 2 weight layers, got 1"):
        ncap.degrees(trace.acts[:1], [], trace.grads[:1])
    # two weight layers are enough for the degrees
    assert len(ncap.degrees(trace.acts[:2], trace.derivs[:1], trace.grads[:2])) == 2


def test_empty_lists():
    # The message should say that acts is empty, not compute len(acts) - 1 == -1.
    msg = _raises(ValueError, "^acts", [], [], [])
    assert "-1" not in msg


def test_empty_batch(trace):
    empty = Trace(*[[x[:0] for x in xs] for xs in trace.args()])
    _raises(ValueError, r"acts\[0\];empty batch", *empty.args())
    with pytest.raises(ValueError, match=r"acts\[0\].*empty batch"):
        ncap.degrees(*empty.args())


@pytest.mark.parametrize("which,n", [("grads", 3), ("derivs", 2)])
def test_wrong_list_lengths(trace, which, n):
    args = dict(acts=trace.acts, derivs=trace.derivs, grads=trace.grads)
    args[which] = args[which][:n]
    _raises(
        ValueError, rf"^{which}:;len\(acts\);got {n}", args["acts"], args["derivs"], args["grads"]
    )
    longer = dict(acts=trace.acts, derivs=trace.derivs, grads=trace.grads)
    longer[which] = list(longer[which]) + [longer[which][-1]]
    _raises(
        ValueError, rf"^{which}:;got {n + 2}", longer["acts"], longer["derivs"], longer["grads"]
    )


# ------------------------------------------------------------------- values


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "which,i",
    [
        ("acts", 0),
        ("acts", 1),
        ("acts", 2),
        ("derivs", 0),
        ("derivs", 2),
        ("grads", 1),
        ("grads", 3),
    ],
)
def test_non_finite_values(trace, bad, which, i):
    arr = getattr(trace, which)[i].copy()
    arr[2, 1] = bad
    args = _with(trace, which, i, arr)
    _raises(ValueError, rf"^{which}\[{i}\];NaN or Inf;sample 2;unit 1", *args)
    _raises(ValueError, rf"^{which}\[{i}\];NaN or Inf", *args, reduction="sample")
    with pytest.raises(ValueError, match=rf"^{re.escape(which)}\[{i}\].*NaN or Inf"):
        ncap.degrees(*args)
    _raises(
        ValueError,
        rf"^{which}\[{i}\];NaN or Inf",
        *[[a.astype(np.float32) for a in x] for x in args],
    )


@pytest.mark.parametrize("which,i", [("acts", 3), ("grads", 0)])
def test_nan_in_unused_arrays_is_ignored(trace, which, i):
    # acts[L-1] and grads[0] do not enter the maths (SPEC section 3): checked for shape only.
    arr = np.full_like(getattr(trace, which)[i], np.nan)
    args = _with(trace, which, i, arr)
    for reduction in ("batch", "sample"):
        got = ncap.beff(*args, reduction=reduction)
        want = ncap.beff(*trace.args(), reduction=reduction)
        np.testing.assert_array_equal(got.value, want.value)
        assert np.all(np.isfinite(got.value))
    for (a, b), (c, d) in zip(ncap.degrees(*args), ncap.degrees(*trace.args()), strict=False):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_overflow_is_an_error_not_inf(trace):
    big = Trace(*[[x * 1e200 for x in xs] for xs in trace.args()])
    _raises(ValueError, "too large;rescale", *big.args())
    _raises(ValueError, "too large;rescale", *big.args(), reduction="sample")


# ------------------------------------------------------------------- dtypes and containers


@pytest.mark.parametrize(
    "dtype,pattern",
    [
        (np.int64, "int64"),
        (np.int32, "int32"),
        (np.uint8, "uint8"),
        (np.bool_, "bool"),
        (np.complex128, "complex"),
        (np.complex64, "complex"),
        (object, "object"),
    ],
)
@pytest.mark.parametrize("which,i", [("acts", 1), ("derivs", 0), ("grads", 2)])
def test_non_float_dtypes(trace, dtype, pattern, which, i):
    arr = getattr(trace, which)[i].astype(dtype)
    _raises(TypeError, rf"^{which}\[{i}\];{pattern}", *_with(trace, which, i, arr))
    with pytest.raises(TypeError, match=rf"^{which}\[{i}\]"):
        ncap.degrees(*_with(trace, which, i, arr))


def test_string_dtype(trace):
    arr = trace.acts[1].astype(str)
    _raises(TypeError, r"^acts\[1\]", *_with(trace, "acts", 1, arr))


@pytest.mark.parametrize(
    "ragged",
    [
        [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]],
        [[1.0, 2.0, 3.0, 4.0]] * 3 + [[1.0]],
    ],
)
def test_ragged_lists(trace, ragged):
    with pytest.raises((ValueError, TypeError)) as info:
        ncap.beff(*_with(trace, "acts", 1, ragged))
    assert str(info.value).startswith("acts[1]")


@pytest.mark.parametrize("shape", [(BATCH,), (1, BATCH, 4), (BATCH, 4, 1), ()])
def test_wrong_number_of_dimensions(trace, shape):
    arr = np.ones(shape)
    _raises(ValueError, rf"^derivs\[0\];2-D;{len(shape)}-D", *_with(trace, "derivs", 0, arr))


def test_none_entry(trace):
    with pytest.raises(TypeError, match=r"^grads\[2\]"):
        ncap.beff(*_with(trace, "grads", 2, None))


def test_stacked_array_instead_of_a_list():
    stacked = np.ones((4, 3, 5))  # four layers of (B=3, n=5) stacked into one array
    with pytest.raises(TypeError, match="^acts: expected a list of 2-D arrays.*ndarray"):
        ncap.beff(stacked, [np.ones((3, 5))] * 3, [np.ones((3, 5))] * 4)
    with pytest.raises(TypeError, match="^grads: expected a list"):
        ncap.beff([np.ones((3, 5))] * 4, [np.ones((3, 5))] * 3, stacked)
    with pytest.raises(TypeError, match="^derivs: expected a list"):
        ncap.degrees([np.ones((3, 5))] * 4, np.ones((3, 3, 5)), [np.ones((3, 5))] * 4)


def test_other_non_list_containers(trace):
    with pytest.raises(TypeError, match="^acts"):
        ncap.beff("acts", trace.derivs, trace.grads)
    with pytest.raises(TypeError, match="^derivs"):
        ncap.beff(trace.acts, (d for d in trace.derivs), trace.grads)
    with pytest.raises(TypeError, match="^grads"):
        ncap.beff(trace.acts, trace.derivs, {i: g for i, g in enumerate(trace.grads)})


# ------------------------------------------------------------------- keyword arguments


def test_bad_reduction(trace):
    _raises(ValueError, "^reduction;bogus;batch;sample", *trace.args(), reduction="bogus")


@pytest.mark.parametrize("threads", [-1, -8, 2**40])
def test_bad_threads(trace, threads):
    """Out-of-range thread counts are refused by beff and degrees with one message."""
    _raises(
        ValueError, rf"^threads;0 \(all cores\) \.\. 4096;{threads}", *trace.args(), threads=threads
    )
    with pytest.raises(ValueError, match=rf"^threads: .*{threads}"):
        ncap.degrees(*trace.args(), threads=threads)


@pytest.mark.parametrize("threads", [1.5, True, "2", None])
def test_threads_must_be_an_integer(trace, threads):
    """A float, bool or string thread count is a TypeError, never silently rounded."""
    _raises(TypeError, "^threads;integer", *trace.args(), threads=threads)
    with pytest.raises(TypeError, match="^threads"):
        ncap.degrees(*trace.args(), threads=threads)


def test_array_only_options(trace):
    _raises(ValueError, "^method;autodiff", *trace.args(), method="autodiff")
    _raises(ValueError, "^interaction;hessian", *trace.args(), interaction="hessian")
    _raises(TypeError, "unexpected keyword", *trace.args(), epochs=3)


# ------------------------------------------------------------------- accepted input kinds


def test_nested_python_lists_and_tuples(trace):
    want = ncap.beff(*trace.args()).value
    as_lists = [[x.tolist() for x in xs] for xs in trace.args()]
    assert ncap.beff(*as_lists).value == want
    assert ncap.beff(*[tuple(xs) for xs in trace.args()]).value == want


def test_buffer_protocol_objects(trace):
    want = ncap.beff(*trace.args()).value
    views = [[memoryview(np.ascontiguousarray(x)) for x in xs] for xs in trace.args()]
    assert ncap.beff(*views).value == want


def _unaligned(x: np.ndarray) -> np.ndarray:
    raw = np.zeros(x.nbytes + 1, np.uint8)
    y = raw[1:].view(x.dtype).reshape(x.shape)
    y[...] = x
    assert not y.flags.aligned
    return y


def _read_only(x: np.ndarray) -> np.ndarray:
    y = x.copy()
    y.flags.writeable = False
    return y


@pytest.mark.parametrize("convert", [_unaligned, _read_only])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unaligned_and_read_only_arrays(trace, convert, dtype):
    trace = trace.astype(dtype)
    want = ncap.beff(*trace.args(), reduction="sample").value
    got = ncap.beff(*[[convert(x) for x in xs] for xs in trace.args()], reduction="sample")
    np.testing.assert_array_equal(got.value, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_byte_swapped_arrays(trace, dtype):
    # ncap/_arrays.py promises to copy byte-swapped arrays once (they are real floats).
    trace = trace.astype(dtype)
    want = ncap.beff(*trace.args()).value
    swapped = [
        [x.astype(x.dtype.newbyteorder(">" if np.little_endian else "<")) for x in xs]
        for xs in trace.args()
    ]
    assert ncap.beff(*swapped).value == want


def test_inputs_are_not_modified(trace):
    copies = [[x.copy() for x in xs] for xs in trace.args()]
    ncap.beff(*trace.args())
    ncap.beff(*trace.args(), reduction="sample")
    ncap.degrees(*trace.args())
    for xs, ys in zip(trace.args(), copies, strict=False):
        for x, y in zip(xs, ys, strict=False):
            np.testing.assert_array_equal(x, y)


def test_stacked_tensorflow_tensor_is_refused():
    import tensorflow as tf

    stacked = tf.ones((4, 3, 5))
    with pytest.raises(TypeError, match="^acts: expected a list"):
        ncap.beff(stacked, [np.ones((3, 5))] * 3, [np.ones((3, 5))] * 4)
    bad = [tf.ones((3, 5), dtype=tf.int32)] + [np.ones((3, 5))] * 3
    with pytest.raises(TypeError, match=r"^acts\[0\].*int32"):
        ncap.beff(bad, [np.ones((3, 5))] * 3, [np.ones((3, 5))] * 4)
    nan = [tf.constant(np.full((3, 5), np.nan, np.float32))] + [np.ones((3, 5))] * 3
    with pytest.raises(ValueError, match=r"^acts\[0\].*NaN"):
        ncap.beff(nan, [np.ones((3, 5))] * 3, [np.ones((3, 5))] * 4)


_TF_NON_FLOAT = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
import ncap

kind = sys.argv[1]
if kind == "string":
    bad = tf.constant([["a", "b", "c"]] * 4)
elif kind == "resource":
    bad = tf.Variable(np.ones((4, 3), np.float32)).handle
else:
    bad = tf.data.experimental.to_variant(tf.data.Dataset.range(3))
acts = [bad] + [np.ones((4, n)) for n in (4, 3, 2)]
derivs = [np.ones((4, n)) for n in (4, 3, 2)]
grads = [np.ones((4, n)) for n in (4, 3, 2, 2)]
for call in (ncap.beff, ncap.degrees):
    try:
        call(acts, derivs, grads)
    except TypeError as err:
        print("TYPEERROR", err)
    else:
        print("ACCEPTED")
"""


@pytest.mark.parametrize("kind", ["string", "resource", "variant"])
def test_tensorflow_non_float_tensors_are_a_type_error_not_an_abort(kind):
    """TF aborts the process when such a tensor is exported by DLPack: its dtype is read first."""
    src = str(Path(ncap.__file__).absolute().parents[1])
    proc = subprocess.run(
        [sys.executable, "-c", _TF_NON_FLOAT, kind],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": src},
    )
    assert proc.returncode == 0, f"exit status {proc.returncode}: {proc.stderr[-2000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("TYPEERROR", "ACC"))]
    assert len(lines) == 2, proc.stdout
    for line in lines:
        assert line.startswith("TYPEERROR acts[0]: expected a float32 or float64 array"), line
        assert kind in line, line


def test_tensorflow_half_precision_tensors_are_widened_exactly(trace):
    import tensorflow as tf

    want = ncap.beff(*trace.astype(np.float16).astype(np.float32).args()).value
    for dtype in (tf.float16, tf.bfloat16):
        tensors = [[tf.cast(tf.constant(x), dtype) for x in xs] for xs in trace.args()]
        widened = [[np.asarray(tf.cast(t, tf.float32)) for t in ts] for ts in tensors]
        got = ncap.beff(*tensors).value
        assert got == ncap.beff(*widened).value
        if dtype == tf.float16:
            assert got == want


@pytest.mark.parametrize("threads", [-1, 2**40, 2**70, True, 1.5, "2"])
def test_the_bindings_refuse_out_of_range_threads_themselves(trace, threads):
    """Even called directly, the compiled module never passes such a count to the core."""
    from ncap import _core

    exc = TypeError if isinstance(threads, (bool, float, str)) else ValueError
    with pytest.raises(exc, match="^threads: "):
        _core.beff(*trace.args(), False, threads)
    with pytest.raises(exc, match="^threads: "):
        _core.degrees(*trace.args(), threads)
    assert _core.MAX_THREADS == 4096
