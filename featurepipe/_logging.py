"""Keep TensorFlow's start-up log lines off the command line's stderr (unless ``--verbose``).

TensorFlow prints, from C++ while ``import tensorflow`` loads its shared
libraries, lines such as ``oneDNN custom operations are on...`` and
``WARNING: All log messages before absl::InitializeLog() is called are
written to STDERR`` (twice: two libraries log them). They go straight to file
descriptor 2, before Python's ``logging`` exists for them, and
``TF_CPP_MIN_LOG_LEVEL`` no longer hides them (TensorFlow 2.17+ logs them
through absl before absl is initialised). :func:`quiet_tensorflow` therefore
(1) sets ``TF_CPP_MIN_LOG_LEVEL=2`` when the user has not set it, for the
messages TensorFlow still filters by it, and (2) installs an import hook that
runs the import of the top-level ``tensorflow`` package with file
descriptor 2 sent to a temporary file, then writes back every captured line
except the known start-up notices (:data:`TENSORFLOW_NOISE`). Errors and
anything else TensorFlow prints during the import still reach stderr.

The command line calls it; the library itself never changes the process's
environment or file descriptors.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import re
import sys
import tempfile

__all__ = ["TENSORFLOW_NOISE", "quiet_tensorflow"]

#: Start-up notices of TensorFlow's C++ runtime that carry no information for a featurepipe user.
TENSORFLOW_NOISE = re.compile(
    r"oneDNN custom operations are on"
    r"|All log messages before absl::InitializeLog\(\) is called"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|Could not find cuda drivers on your machine"
    r"|computation placer already registered"
)


@contextlib.contextmanager
def _filtered_native_stderr(noise=TENSORFLOW_NOISE):
    """Send file descriptor 2 to a temporary file meanwhile; then replay its lines except ``noise``."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr (e.g. closed): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not noise.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Wraps the loader of ``tensorflow`` so that its module code runs with filtered stderr."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with _filtered_native_stderr():
            self._loader.exec_module(module)

    def __getattr__(self, name):  # get_filename, is_package, get_resource_reader, ...: the real loader's
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder that hands ``tensorflow``'s own spec back with a :class:`_QuietLoader`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def quiet_tensorflow(verbose=False):
    """Silence TensorFlow's start-up log lines for the rest of the process, unless ``verbose``.

    Call it before anything imports TensorFlow (an already imported
    TensorFlow has printed its lines). Idempotent. With ``verbose=True`` it
    changes nothing, so TensorFlow logs as it would by itself.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not any(isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
