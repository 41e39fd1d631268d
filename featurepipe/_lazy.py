"""Lazy package attributes (PEP 562), so that ``import featurepipe`` and the command line start fast.

A package lists which submodule defines each public name; the submodule is
imported the first time the name is looked up. ``import featurepipe.cli``
(``featurepipe --help``) thus loads neither scikit-learn nor TensorFlow, and a
handcrafted-only benchmark never imports the CNN modules.
"""

from __future__ import annotations

import importlib

__all__ = ["lazy_attributes"]


def lazy_attributes(package, names):
    """``(__getattr__, __dir__)`` for ``package`` whose public ``names`` map to ``".submodule"``.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    names : dict of str to str
        Public name → relative module that defines it, e.g. ``{"HOGFeatures": ".hog"}``.

    Examples
    --------
    >>> getattr_, dir_ = lazy_attributes("featurepipe", {"read_image": ".io"})
    >>> getattr_("read_image").__module__
    'featurepipe.io'
    >>> "read_image" in dir_()
    True
    """
    def __getattr__(name):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(importlib.import_module(package), name, value)  # later look-ups skip __getattr__
        return value

    def __dir__():
        return sorted(set(vars(importlib.import_module(package))) | set(names))

    return __getattr__, __dir__
