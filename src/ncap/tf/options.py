"""The option values of the TF layer and their checks, in one place.

Each check raises an error that names the argument; ``ncap.arrays.spec`` holds
the checks shared with the arrays layer (reduction, threads).
"""

from __future__ import annotations

import numbers
from typing import Any, Literal, get_args

import numpy as np

Method = Literal["auto", "closed_form", "autodiff"]
Interaction = Literal["direct", "hessian"]
Protocol = Literal["step", "epoch", "both"]
METHODS: tuple[str, ...] = get_args(Method)
INTERACTIONS: tuple[str, ...] = get_args(Interaction)
PROTOCOLS: tuple[str, ...] = get_args(Protocol)


def check_option(value: Any, argument: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{argument}: expected one of {allowed}, got {value!r}")
    return value


def check_flag(value: Any, argument: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argument}: expected True or False, got {value!r}")
    return bool(value)


def check_count(value: Any, argument: str) -> int:
    """A positive integer (a step interval, a batch size)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{argument}: expected an integer >= 1, got {value!r}")
    return int(value)
