"""ncap.beff(model, x, y, ...) and ncap.tf.beff take the same keyword options, with the same
defaults and the same allowed values, and BetaEff's options are keyword parameters too."""

import inspect
import os
from typing import get_args

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ncap
import ncap._dispatch as dispatch
from ncap.tf import options
from ncap.tf.callback import BetaEff


def test_the_dispatcher_forwards_every_model_option():
    model_path = inspect.signature(ncap.tf.beff).parameters
    root = inspect.signature(ncap.beff).parameters
    options = [name for name, p in model_path.items() if p.kind is p.KEYWORD_ONLY]
    assert set(options) == {name for name, p in root.items() if p.kind is p.KEYWORD_ONLY}
    for name in options:
        assert root[name].default == model_path[name].default, name
        assert root[name].annotation == model_path[name].annotation, name


def test_option_values_are_literals_in_one_place():
    assert get_args(dispatch.Method) == options.METHODS == ("auto", "closed_form", "autodiff")
    assert get_args(dispatch.Interaction) == options.INTERACTIONS == ("direct", "hessian")
    assert options.PROTOCOLS == ("step", "epoch", "both")
    params = inspect.signature(BetaEff).parameters
    assert params["protocol"].annotation == "Protocol"  # the Literal of ncap.tf.options
    assert all(params[n].kind is inspect.Parameter.KEYWORD_ONLY for n in ("protocol", "data"))
