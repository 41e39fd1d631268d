"""How featurepipe validates parameters: one wording, one estimator protocol.

* Estimators declare scikit-learn ``_parameter_constraints`` (``Interval``,
  ``StrOptions``, ``Options``, ``"boolean"``, ...; :class:`StrictInterval` where
  ``True`` must not pass as ``1``) and inherit :class:`ParamValidationMixin`;
  ``fit`` is wrapped in ``sklearn.base._fit_context``. Rules the constraints
  cannot express go in the one hook ``_validate_param_rules``.
* Functions, specs and command-line options use :func:`invalid_value_message`
  and :func:`check_choice`.
"""

import numbers
import warnings

import numpy as np
from sklearn import get_config
from sklearn.utils._param_validation import Interval, InvalidParameterError


def is_int(value):
    """An integer parameter value (bools are not integers here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value):
    """A finite real parameter value (bools excluded)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and bool(np.isfinite(value))


def is_int_or_pair(value, minimum):
    """An int >= ``minimum`` (a square size) or a pair of such ints (height, width); bools excluded.

    >>> is_int_or_pair((32, 16), 1), is_int_or_pair(0, 1), is_int_or_pair((2, 2.0), 1)
    (True, False, False)
    """
    if is_int(value):
        return value >= minimum
    return (isinstance(value, (tuple, list)) and len(value) == 2
            and all(is_int(v) and v >= minimum for v in value))


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


class StrictInterval(Interval):
    """scikit-learn's ``Interval`` that refuses booleans (``True`` is not the number 1 here).

    ``Interval(Integral, 1, None, closed="left")`` accepts ``True``; a flag
    passed where a count belongs is a mistake, so featurepipe's numeric
    parameters use this one.

    >>> from numbers import Integral
    >>> c = StrictInterval(Integral, 1, None, closed="left")
    >>> c.is_satisfied_by(3), c.is_satisfied_by(True)
    (True, False)
    """

    def is_satisfied_by(self, val):
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)


_CURRENT = object()


def invalid_parameter(estimator, name, allowed, value=_CURRENT):
    """The error for a parameter that breaks a rule of ``_validate_param_rules`` (a ``ValueError``).

    Same wording as :func:`invalid_value_message`, prefixed by the
    estimator's class; ``value`` defaults to the parameter's current value.
    Returns the :class:`~sklearn.utils._param_validation.InvalidParameterError`
    (the type scikit-learn raises for ``_parameter_constraints``) for the caller to raise.
    """
    if value is _CURRENT:
        value = getattr(estimator, name)
    return InvalidParameterError(invalid_value_message(name, value, allowed, where=type(estimator).__name__))


class ParamValidationMixin:
    """Parameter validation of every featurepipe estimator (put it before ``BaseEstimator``).

    * ``_parameter_constraints`` (class attribute) holds scikit-learn
      constraints per parameter; ``fit`` methods are decorated with
      ``@_fit_context(prefer_skip_nested_validation=True)``, which calls
      :meth:`_validate_params`.
    * ``_validate_param_rules()`` is the one hook for rules the constraints
      cannot express: the elements of a sequence parameter and relations
      between parameters. It runs after the constraints passed and raises
      :func:`invalid_parameter`.
    * Steps that work without ``fit`` (``requires_fit=False``) call
      :meth:`_validate_params_once` in ``transform``: the parameters are
      validated once per state of the instance (a ``set_params`` call or an
      assignment of another object to a parameter is a new state), not on
      every call. Like scikit-learn's, validation is skipped inside
      ``sklearn.config_context(skip_parameter_validation=True)``.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_check_params" in vars(cls):
            warnings.warn(
                f"{cls.__qualname__}._check_params() is deprecated and will stop being called in a future "
                "featurepipe release: declare _parameter_constraints (scikit-learn constraints) and, for rules "
                "they cannot express, override _validate_param_rules()", FutureWarning, stacklevel=2)

    def _validate_param_rules(self):
        """Raise :func:`invalid_parameter` for rules ``_parameter_constraints`` cannot express."""

    def _validate_params(self):
        super()._validate_params()
        self._validate_param_rules()
        legacy = getattr(self, "_check_params", None)
        if legacy is not None:  # a user subclass written for featurepipe < the constraints (warned above)
            legacy()
        self._validated_params = self.get_params(deep=False)

    def _validate_params_once(self):
        """Validate unless these very parameter objects were validated already."""
        if get_config()["skip_parameter_validation"]:
            return
        validated = self.__dict__.get("_validated_params")
        params = self.get_params(deep=False)
        if validated is None or validated.keys() != params.keys() or any(
                validated[name] is not value for name, value in params.items()):
            self._validate_params()

    def set_params(self, **params):
        self.__dict__.pop("_validated_params", None)
        return super().set_params(**params)

    def __getstate__(self):
        # What was validated in this process is not part of the estimator: pickles and skops files stay as
        # they were, and a loaded step validates once on first use.
        state = dict(super().__getstate__())
        state.pop("_validated_params", None)
        return state
