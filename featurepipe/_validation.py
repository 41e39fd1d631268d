"""Type predicates shared by the parameter checks of every estimator."""

import numbers

import numpy as np


def is_int(value):
    """An integer parameter value (bools are not integers here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value):
    """A finite real parameter value (bools excluded)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and bool(np.isfinite(value))
