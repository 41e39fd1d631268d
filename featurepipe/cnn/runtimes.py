"""Inference runtimes for frozen CNN features: TensorFlow, ONNX Runtime, OpenVINO.

:func:`featurepipe.cnn.extractor.get_runner` builds the per-batch
``tf.function`` (preprocessing, backbone, pooling). This module turns that
function into a *session* — ``session(batch) -> features`` on NumPy arrays —
for the runtime asked for:

``"tensorflow"``
    The ``tf.function`` itself (always available; uses a GPU when TensorFlow
    sees one).
``"onnxruntime"``
    The function converted to ONNX with ``tf2onnx`` and run by ONNX Runtime
    (float32; features equal TensorFlow's within :data:`FLOAT32_RTOL`).
``"openvino"``
    The function converted by OpenVINO's own TensorFlow frontend and run on
    its CPU plugin with ``INFERENCE_PRECISION_HINT`` ``f32`` (equal within
    :data:`FLOAT32_RTOL`) or, opt-in, ``bf16`` (about 2x faster on CPUs with
    bfloat16 units; features differ by up to ~10 % relative, cosine >= 0.99,
    see ``benchmarks/cnn.py``).

Both optional runtimes come with ``pip install featurepipe[fast]``.
``"auto"`` picks the fastest *exact* runtime installed
(:data:`AUTO_ORDER`, ordered by ``benchmarks/cnn.py``), TensorFlow when none
is installed or when TensorFlow sees a GPU.

Conversion happens once per (backbone, weights, input size, layer, pooling)
and per process (sessions live in :data:`featurepipe.cnn.model_cache.MODEL_CACHE`); converted models are also kept on disk under
:func:`model_cache_dir` (except random ``weights=None`` networks, which
differ in every process). They are data (ONNX protobuf, OpenVINO IR XML +
binary weights), never pickles; each file's SHA-256 is stored next to it and
checked on read, and a file that fails the check is converted again.
Each runtime runs with its own default threading (all physical cores).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from .model_cache import MODEL_CACHE

__all__ = [
    "AUTO_ORDER",
    "EXTRA",
    "FLOAT32_RTOL",
    "RUNTIMES",
    "RuntimeUnavailableError",
    "available_runtimes",
    "bf16_supported",
    "clear_session_cache",
    "get_session",
    "model_cache_dir",
    "resolve_runtime",
]

RUNTIMES = ("auto", "tensorflow", "onnxruntime", "openvino")
#: The optional-dependency extra that installs the fast runtimes.
EXTRA = "fast"
#: Exact runtimes tried by ``runtime="auto"``, fastest first (median ratios over raw Keras from
#: ``benchmarks/cnn.py`` on a 2-core AVX-512 CPU: see the README's Performance section).
AUTO_ORDER = ("onnxruntime", "openvino")
#: Documented agreement of the float32 runtimes with TensorFlow: every feature within this fraction
#: of the largest feature of its row (tested for every registered backbone in tests/test_cnn_runtimes.py).
#: Only runtimes within it share TensorFlow's feature-cache entries.
FLOAT32_RTOL = 1e-4
_PACKAGES = {"onnxruntime": ("onnxruntime", "tf2onnx"), "openvino": ("openvino",)}
_FORMAT_VERSION = 1
_ONNX_OPSET = 17


class RuntimeUnavailableError(ImportError):
    """The runtime asked for is not installed (the message names the extra to install)."""


def _missing(runtime):
    """The packages ``runtime`` needs that are not installed (empty when it can run)."""
    return [pkg for pkg in _PACKAGES.get(runtime, ()) if importlib.util.find_spec(pkg) is None]


def _installed(runtime):
    return not _missing(runtime)


def available_runtimes():
    """Runtimes that can run here, TensorFlow first (the optional ones only when their packages are installed)."""
    return ["tensorflow"] + [name for name in ("onnxruntime", "openvino") if _installed(name)]


def bf16_supported():
    """Whether OpenVINO's CPU plugin has native bfloat16 here (AVX-512 BF16 or AMX); False without OpenVINO."""
    if not _installed("openvino"):
        return False
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _tf_sees_gpu():
    import importlib.metadata

    try:  # the CPU-only wheel cannot see a GPU: answer without importing TensorFlow (~2 s, ~700 MB)
        importlib.metadata.version("tensorflow-cpu")
        return False
    except importlib.metadata.PackageNotFoundError:
        pass
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_runtime(runtime, precision="float32"):
    """The concrete runtime for ``runtime`` (one of :data:`RUNTIMES`) and ``precision``.

    ``"auto"`` with ``precision="bfloat16"`` means OpenVINO (the only runtime
    with that path); with ``"float32"`` the first installed runtime of
    :data:`AUTO_ORDER`, or TensorFlow when none is installed or TensorFlow
    sees a GPU; with Keras' ``"mixed_*"`` policies TensorFlow.

    Raises
    ------
    RuntimeUnavailableError
        The runtime asked for (or ``bfloat16``'s OpenVINO) is not installed.
    """
    if runtime == "auto":
        if precision == "bfloat16":
            runtime = "openvino"
        elif precision != "float32" or _tf_sees_gpu():
            return "tensorflow"
        else:
            return next((name for name in AUTO_ORDER if _installed(name)), "tensorflow")
    if runtime != "tensorflow" and not _installed(runtime):
        missing = _missing(runtime)
        why = " (precision='bfloat16' runs on OpenVINO)" if precision == "bfloat16" else ""
        raise RuntimeUnavailableError(
            f"CNNFeatures: runtime {runtime!r}{why} needs the package(s) {missing}, which are not installed: "
            f"`pip install featurepipe[{EXTRA}]` (or pass runtime='tensorflow')")
    return runtime


# ---------------------------------------------------------------------------------------------
# On-disk cache of converted models
def model_cache_dir():
    """Where converted models are kept: ``$FEATUREPIPE_CACHE/models``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)/featurepipe/models."""
    if os.environ.get("FEATUREPIPE_CACHE"):
        return Path(os.environ["FEATUREPIPE_CACHE"]) / "models"
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "featurepipe" / "models"


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _read_verified(folder, key_text, names, warn=True):
    """The bytes of ``names`` in ``folder`` if its manifest matches ``key_text`` and every hash; else None."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("key") != key_text:
            return None
        blobs = {name: (folder / name).read_bytes() for name in names}
    except (OSError, ValueError):
        return None
    if any(_sha256(blob) != manifest.get("sha256", {}).get(name) for name, blob in blobs.items()):
        if warn:
            warnings.warn(f"featurepipe: the converted model in {str(folder)!r} failed its SHA-256 check "
                          "(corrupt or modified); converting again", RuntimeWarning, stacklevel=4)
        return None
    return blobs


def _write_atomic(folder, key_text, blobs):
    """Write ``blobs`` (name -> bytes) and their manifest into ``folder`` by renaming a complete temp dir."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, blob in blobs.items():
            (tmp / name).write_bytes(blob)
        manifest = {"key": key_text, "sha256": {name: _sha256(blob) for name, blob in blobs.items()}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if folder.exists():
            if _read_verified(folder, key_text, list(blobs), warn=False) is not None:
                return  # another process wrote the same conversion meanwhile
            for child in folder.iterdir():  # a stale or corrupt copy: replace it
                child.unlink()
            folder.rmdir()
        os.replace(tmp, folder)
    except OSError as exc:
        if _read_verified(folder, key_text, list(blobs), warn=False) is not None:
            return  # lost a race against another process writing the same conversion
        warnings.warn(f"featurepipe: could not keep the converted model in {str(folder)!r} ({exc}); it will be "
                      "converted again in the next process", RuntimeWarning, stacklevel=4)
    finally:
        if tmp.exists():
            for child in tmp.iterdir():
                child.unlink()
            tmp.rmdir()


# ---------------------------------------------------------------------------------------------
# Converters and sessions
@contextlib.contextmanager
def _quiet_tensorflow_log():
    """Hide TensorFlow's deprecation notices that tf2onnx's TF1-style graph handling logs (not the user's concern)."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _onnx_convert(function, size):
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,  # no public API freezes a concrete function
    )

    concrete = function.get_concrete_function(tf.TensorSpec((None, size[0], size[1], 3), tf.float32))
    # Freeze first: tf2onnx would otherwise turn captured constant tensors (e.g. the mean/variance
    # of EfficientNet's Normalization layer) into extra graph inputs.
    with _quiet_tensorflow_log():
        frozen = convert_variables_to_constants_v2(concrete)
        proto, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(),
                                                  input_names=[t.name for t in frozen.inputs],
                                                  output_names=[t.name for t in frozen.outputs], opset=_ONNX_OPSET)
    if len(proto.graph.input) != 1:
        raise RuntimeError(f"converting to ONNX gave a model with inputs {[i.name for i in proto.graph.input]}; "
                           "one image input was expected (use runtime='tensorflow' for this backbone)")
    return {"model.onnx": proto.SerializeToString()}


def _openvino_convert(function, size):
    import openvino as ov

    model = ov.convert_model(function)
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "model.xml")
        # compress_to_fp16=False: keep the float32 weights (the default would round them to float16).
        ov.save_model(model, xml, compress_to_fp16=False)
        return {"model.xml": Path(xml).read_bytes(), "model.bin": Path(tmp, "model.bin").read_bytes()}


class _TensorFlowSession:
    runtime = "tensorflow"

    def __init__(self, function):
        self.function = function

    def __call__(self, batch):
        import tensorflow as tf

        return self.function(tf.constant(batch)).numpy()


class _OnnxSession:
    runtime = "onnxruntime"

    def __init__(self, blobs):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        # Idle worker threads sleep instead of spinning: 1.42x vs 1.24x raw Keras for MobileNetV2 on a
        # loaded 2-core machine (alternating rounds), where spinning threads steal the cores that work.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(blobs["model.onnx"], sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


class _OpenVINOSession:
    runtime = "openvino"

    def __init__(self, blobs, precision):
        import openvino as ov

        self.core = ov.Core()
        self.model = self.core.read_model(model=blobs["model.xml"].decode("utf-8"),
                                          weights=ov.Tensor(np.frombuffer(blobs["model.bin"], dtype=np.uint8)))
        self.config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32"}
        self.requests = {}  # batch size -> (compiled model, infer request)
        self.lock = threading.Lock()  # calls from several threads take turns

    def _request(self, n):
        # One static-shape compilation per batch size (in practice two: batch_size and the remainder);
        # faster than the dynamic-batch graph (1.26x vs 1.10x raw Keras, MobileNetV2 float32).
        found = self.requests.get(n)
        if found is None:
            model = self.model.clone()
            height, width, channels = (int(d.get_length()) for d in model.input(0).get_partial_shape()[1:])
            model.reshape([n, height, width, channels])
            compiled = self.core.compile_model(model, "CPU", self.config)
            found = self.requests[n] = (compiled, compiled.create_infer_request())
        return found

    def __call__(self, batch):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self.lock:
            compiled, request = self._request(len(batch))
            result = request.infer([batch])
            return np.array(result[compiled.output(0)], copy=True)


_CONVERTERS = {"onnxruntime": (_onnx_convert, ("model.onnx",)),
               "openvino": (_openvino_convert, ("model.xml", "model.bin"))}


def clear_session_cache():
    """Forget the sessions of this process (the next use reads the converted models from disk again)."""
    MODEL_CACHE.discard("session")


def _converter_versions(runtime):
    """Versions of what produced a converted model (a new converter version converts again)."""
    from importlib.metadata import version

    import keras
    import tensorflow as tf

    packages = ("tf2onnx", "onnx") if runtime == "onnxruntime" else ("openvino",)
    return {"tensorflow": tf.__version__, "keras": keras.__version__, **{pkg: version(pkg) for pkg in packages}}


def get_session(runner, runner_key, runtime, precision="float32", disk_key=None):
    """The per-process session ``session(batch float32 (n, H, W, 3) in [0, 255]) -> (n, D)`` float32.

    Parameters
    ----------
    runner : object
        From :func:`featurepipe.cnn.extractor.get_runner` (``runner.function``
        is the ``tf.function``, ``runner.size`` the input ``(H, W)``).
    runner_key : tuple
        Identifies ``runner`` within this process: its
        :data:`~featurepipe.cnn.model_cache.MODEL_CACHE` key ``("runner", backbone, ...)``.
    runtime : {"tensorflow", "onnxruntime", "openvino"}
        A concrete runtime (see :func:`resolve_runtime`).
    precision : str
        ``"bfloat16"`` for OpenVINO's bf16 inference hint, else float32.
    disk_key : str, optional
        Text that identifies the converted network across processes
        (backbone, weights, input size, layer, pooling); ``None`` keeps the
        conversion in memory only (random weights).
    """
    if runtime == "tensorflow":
        return _TensorFlowSession(runner.function)

    def build():
        convert, names = _CONVERTERS[runtime]
        blobs = folder = key_text = None
        if disk_key is not None:
            key_text = json.dumps({"format": _FORMAT_VERSION, "runtime": runtime, "network": disk_key,
                                   "versions": _converter_versions(runtime)}, sort_keys=True)
            folder = model_cache_dir() / f"{runtime}-{_sha256(key_text.encode())[:32]}"
            blobs = _read_verified(folder, key_text, names)
        if blobs is None:
            blobs = convert(runner.function, runner.size)
            if folder is not None:
                _write_atomic(folder, key_text, blobs)
        return _OnnxSession(blobs) if runtime == "onnxruntime" else _OpenVINOSession(blobs, precision)

    backbone = runner_key[1]  # sessions are forgotten with the backbone they were converted from
    return MODEL_CACHE.get_or_build(("session", backbone, runner_key, runtime, precision), build)
