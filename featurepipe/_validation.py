"""Type predicates shared by the parameter checks of every estimator."""

import numbers

import numpy as np


def is_int(value):
    """An integer parameter value (bools are not integers here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value):
    """A finite real parameter value (bools excluded)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and bool(np.isfinite(value))


def invalid_value_message(name, value, allowed, where=None):
    """The one wording of a bad-parameter message: who, which parameter, what is allowed, what came.

    ``allowed`` is a description (``"an int >= 1"``) or a collection of
    allowed values (listed with ``repr``). Estimators validate through
    scikit-learn's ``_parameter_constraints`` (whose messages carry the same
    three facts); this is for functions, specs and command-line options.

    >>> invalid_value_message("cv", 1, "an int >= 2", where="run_benchmark")
    'run_benchmark: cv must be an int >= 2; got 1'
    >>> invalid_value_message("mode", "rgba", ("gray", "rgb"))
    "mode must be one of 'gray', 'rgb'; got 'rgba'"
    """
    if isinstance(allowed, str):
        expected = allowed
    else:
        expected = "one of " + ", ".join(repr(a) for a in allowed)
    prefix = f"{where}: " if where else ""
    return f"{prefix}{name} must be {expected}; got {value!r}"


def check_choice(name, value, allowed, where=None):
    """Return ``value`` if it is one of ``allowed`` (compared as strings), else raise ``ValueError``.

    >>> check_choice("on_error", "skip", ("skip", "record", "raise"))
    'skip'
    """
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(invalid_value_message(name, value, tuple(allowed), where))
    return value
