"""Stateless feature extraction on a local Dask cluster (featurepipe.cluster), issue 15 point 2."""

import hashlib
import os
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from sklearn.pipeline import Pipeline

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

from featurepipe.cluster import extract_on_cluster  # noqa: E402
from featurepipe.cnn import CNNFeatures, register_backbone, unregister_backbone  # noqa: E402
from featurepipe.cnn import preprocess_tf  # noqa: E402
from featurepipe.features import FirstOrderFeatures  # noqa: E402
from featurepipe.io import ImageReadError  # noqa: E402
from featurepipe.preprocessing import Resize  # noqa: E402
from featurepipe.sample import Sample  # noqa: E402

# The worker processes cannot import this test module: its classes travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MARKER_ENV = "FEATUREPIPE_TEST_MARKER_FILE"


class MarkedFirstOrder(FirstOrderFeatures):
    """First-order features that log "<pid> <image digest>" for every image they really compute."""

    def _extract(self, image, mask):
        digest = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
        # One small O_APPEND write per line: lines of concurrent processes do not interleave.
        with open(os.environ[MARKER_ENV], "a") as f:
            f.write(f"{os.getpid()} {digest}\n")
        return super()._extract(image, mask)


def counting_builder(weights, input_shape):
    """A tiny seeded CNN (deterministic even with ``weights=None``) that logs the pid of each build."""
    import keras

    with open(os.environ[MARKER_ENV] + ".builds", "a") as f:
        f.write(f"{os.getpid()}\n")
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.RandomUniform(0.0, 0.1, seed=0))(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.RandomUniform(0.0, 0.1, seed=1))(x)
    return keras.Model(inputs, x)


def _marks(path):
    if not path.exists():
        return []
    return [(int(pid), digest) for pid, digest in (line.split() for line in path.read_text().splitlines())]


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory):
    """A 2-worker process cluster on 127.0.0.1; the marker file path is in the workers' environment."""
    marker = tmp_path_factory.mktemp("marks") / "marks.txt"
    old = os.environ.get(MARKER_ENV)
    os.environ[MARKER_ENV] = str(marker)  # inherited by the worker processes started below
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None) as cluster, distributed.Client(cluster) as client:
            yield client, marker
    finally:
        if old is None:
            os.environ.pop(MARKER_ENV, None)
        else:
            os.environ[MARKER_ENV] = old


@pytest.fixture(scope="module")
def png_samples(tmp_path_factory):
    """40 random 20x24 grey PNGs of distinct content, as lazy file samples."""
    folder = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(15)
    samples = []
    for i in range(40):
        path = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, size=(20, 24), dtype=np.uint8)).save(path)
        samples.append(Sample.from_path(path, label=i % 2))
    return np.array(samples, dtype=object)


def _prefix(cls, cache=False):
    return Pipeline([("resize", Resize(16)), ("features", cls(cache=cache))])


def test_cluster_features_equal_local_and_each_image_is_processed_once(cluster_env, png_samples):
    client, marker = cluster_env
    marker.unlink(missing_ok=True)
    local = _prefix(FirstOrderFeatures).fit(png_samples[:1]).transform(png_samples)

    Z, ok_index, errors, preprocess_s, features_s = extract_on_cluster(
        _prefix(MarkedFirstOrder), png_samples, 7, client=client)  # 6 shards, the last one short

    # exact: the same code on the same decoded bytes, in processes on this one machine (same CPU kernels).
    np.testing.assert_array_equal(Z, local)
    np.testing.assert_array_equal(ok_index, np.arange(len(png_samples)))  # exact: integer indices
    assert errors == {} and preprocess_s is None and features_s > 0
    marks = _marks(marker)
    per_image = Counter(digest for _, digest in marks)
    assert len(per_image) == len(png_samples) and set(per_image.values()) == {1}
    pids = {pid for pid, _ in marks}
    worker_pids = set(client.run(os.getpid).values())
    assert pids <= worker_pids and os.getpid() not in pids  # computed by the workers, never the client


def test_cluster_writes_the_shared_disk_cache(cluster_env, png_samples, tmp_path):
    client, marker = cluster_env
    marker.unlink(missing_ok=True)
    cache_dir = tmp_path / "cache"
    Z, ok_index, errors, _, _ = extract_on_cluster(_prefix(MarkedFirstOrder, cache_dir), png_samples, 16,
                                                   client=client)
    entries = list(cache_dir.rglob("*.npz"))
    assert len(entries) == len(png_samples)  # one entry per image, written by the workers
    # A second run anywhere (here: the client) finds every entry and computes nothing.
    marker.unlink()
    again = _prefix(MarkedFirstOrder, cache_dir).fit(png_samples[:1]).transform(png_samples)
    assert _marks(marker) == []
    np.testing.assert_array_equal(again, Z)  # exact: read back from the .npz entries, the same bytes


def test_cluster_reports_per_sample_errors_like_the_local_run(cluster_env, png_samples, tmp_path):
    client, _ = cluster_env
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    samples = np.array(list(png_samples[:9]) + [Sample.from_path(bad, label=0)] + list(png_samples[9:12]),
                       dtype=object)
    Z, ok_index, errors, _, _ = extract_on_cluster(_prefix(FirstOrderFeatures), samples, 4,
                                                   per_sample_errors=True, client=client, retries=0)
    assert list(errors) == [9]
    assert isinstance(errors[9], ImageReadError) and "broken.png" in str(errors[9])
    np.testing.assert_array_equal(ok_index, [i for i in range(13) if i != 9])  # exact: integer indices
    local = _prefix(FirstOrderFeatures).fit(png_samples[:1]).transform(samples[ok_index])
    np.testing.assert_array_equal(Z, local)  # exact: same code, same bytes, same machine

    with pytest.raises(ImageReadError, match="broken.png"):
        extract_on_cluster(_prefix(FirstOrderFeatures), samples, 4, client=client, retries=0)


@pytest.mark.filterwarnings("ignore:CNNFeatures.*random weights:UserWarning")
def test_cnn_model_is_built_once_per_worker_not_per_shard(cluster_env, png_samples):
    client, marker = cluster_env
    builds = marker.parent / (marker.name + ".builds")
    builds.unlink(missing_ok=True)
    name = "test_counting_cnn"
    kwargs = dict(preprocess=preprocess_tf, default_input_size=32, output_dim=16, overwrite=True)
    client.run(register_backbone, name, counting_builder, **kwargs)  # the registry is per process
    register_backbone(name, counting_builder, **kwargs)
    try:
        prefix = Pipeline([("cnn", CNNFeatures(backbone=name, weights=None, input_size=32, batch_size=8,
                                               cache=False))])
        Z, ok_index, errors, _, _ = extract_on_cluster(prefix, png_samples, 4, client=client)  # 10 shards
        built_by = Counter(int(line) for line in builds.read_text().split())
        worker_pids = set(client.run(os.getpid).values())
        # 10 shards, at most 2 builds: one per worker process that ran shards, none on the client.
        assert set(built_by) <= worker_pids and set(built_by.values()) == {1}
        assert errors == {} and Z.shape == (len(png_samples), 16)
        local = prefix.fit(png_samples[:1]).transform(png_samples)
        # Same seeded float32 network in another process; oneDNN may pick other kernels there.
        np.testing.assert_allclose(Z, local, rtol=1e-5, atol=1e-6)
    finally:
        client.run(unregister_backbone, name)
        unregister_backbone(name)


def test_extraction_uses_the_client_it_is_given_not_the_default(cluster_env, png_samples):
    client, _ = cluster_env
    with distributed.Client(client.scheduler.address, set_as_default=False) as other:
        Z, ok_index, errors, _, _ = extract_on_cluster(_prefix(FirstOrderFeatures), png_samples[:10], 4, client=other)
    local = _prefix(FirstOrderFeatures).fit(png_samples[:1]).transform(png_samples[:10])
    np.testing.assert_array_equal(Z, local)  # exact: same code, same bytes, same machine


def test_benchmark_on_dask_extracts_features_on_the_workers(cluster_env, png_samples):
    from sklearn.linear_model import LogisticRegression

    from featurepipe.benchmark import run_benchmark
    from featurepipe.dataset import Dataset

    client, marker = cluster_env
    marker.unlink(missing_ok=True)
    dataset = Dataset(list(png_samples), name="pngs")
    pipelines = {"fo": Pipeline([("resize", Resize(16)), ("features", MarkedFirstOrder(cache=False)),
                                 ("lr", LogisticRegression())])}
    cv = {"n_splits": 2, "n_repeats": 1, "random_state": 0}
    on_dask = run_benchmark(dataset, pipelines, cv=cv, progress=False, plots=False,
                            scheduler=client.scheduler.address, feature_chunk_size=8)
    marks = _marks(marker)
    assert {pid for pid, _ in marks} <= set(client.run(os.getpid).values())  # no image on the client
    assert sorted(Counter(d for _, d in marks).values()) == [1] * len(png_samples)
    local = run_benchmark(dataset, pipelines, cv=cv, progress=False, plots=False)
    assert [r["metrics"] for r in on_dask.folds] == [r["metrics"] for r in local.folds]
