"""One registration pattern for everything users pick by name.

Recipes, CNN backbones, dataset layouts, feature families and command-line
commands are each kept in a :class:`Registry`: an ordered mapping from a
name to an entry, filled by ``register`` (usable as a decorator), read by
``get`` with an error that lists the known names. :func:`all_registries`
makes them discoverable the way scikit-learn's ``all_estimators()`` makes
estimators discoverable.

Examples
--------
>>> colours = Registry("colour")
>>> @colours.register("red")
... def red():
...     return (255, 0, 0)
>>> colours.get("red")()
(255, 0, 0)
>>> colours.names()
['red']
>>> colours.get("blue")
Traceback (most recent call last):
...
KeyError: "unknown colour 'blue'; known: 'red'"
"""

from __future__ import annotations

import importlib

__all__ = ["Registry", "all_registries"]

# Where each built-in registry lives (module, attribute); imported on demand
# so that listing them does not import TensorFlow or scikit-learn eagerly.
_BUILT_IN = {
    "recipe": ("featurepipe.recipes", "RECIPES"),
    "backbone": ("featurepipe.cnn.specs", "BACKBONES"),
    "layout": ("featurepipe.datasets", "LAYOUTS"),
    "feature family": ("featurepipe.features.bank", "FAMILIES"),
    "command": ("featurepipe.cli", "COMMANDS"),
}


class Registry:
    """An ordered name → entry table for one kind of component.

    Parameters
    ----------
    kind : str
        What the entries are (``"recipe"``, ``"backbone"`` …); used in messages.
    """

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}
        self._built_in = set()

    def register(self, name, entry=None, *, overwrite=False, built_in=False):
        """Add ``entry`` under ``name``; without ``entry``, return a decorator that adds the function.

        Raises ``ValueError`` when ``name`` is taken (unless ``overwrite``) or
        names a built-in entry (never replaceable) or is not a non-empty str.
        Returns ``entry``.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string; got {name!r}")
        if entry is None:
            return lambda function: self.register(name, function, overwrite=overwrite, built_in=built_in)
        if name in self._built_in:
            raise ValueError(f"{self.kind} {name!r} is built in and cannot be replaced; choose another name")
        if name in self._entries and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
        self._entries[name] = entry
        if built_in:
            self._built_in.add(name)
        return entry

    def unregister(self, name):
        """Remove a user-registered entry (built-in entries stay)."""
        if name in self._built_in:
            raise ValueError(f"{self.kind} {name!r} is built in and cannot be removed")
        self._entries.pop(self.check(name))

    def check(self, name):
        """Return ``name`` if registered, else raise ``KeyError`` listing the known names."""
        if not isinstance(name, str) or name not in self._entries:
            known = ", ".join(repr(n) for n in self._entries) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}")
        return name

    def get(self, name):
        """The entry registered under ``name`` (``KeyError`` listing the known names if absent)."""
        return self._entries[self.check(name)]

    def names(self):
        """Registered names in registration order."""
        return list(self._entries)

    def items(self):
        """``(name, entry)`` pairs in registration order."""
        return list(self._entries.items())

    def is_built_in(self, name):
        """Whether ``name`` is one of featurepipe's own entries."""
        return name in self._built_in

    def __contains__(self, name):
        return name in self._entries

    def __iter__(self):
        return iter(list(self._entries))

    def __len__(self):
        return len(self._entries)

    def __getitem__(self, name):
        return self.get(name)

    def __repr__(self):
        return f"Registry({self.kind!r}, {self.names()})"


def all_registries():
    """Every built-in registry, as ``{kind: Registry}`` (imports each owning module on first use)."""
    out = {}
    for kind, (module, attribute) in _BUILT_IN.items():
        out[kind] = getattr(importlib.import_module(module), attribute)
    return out
