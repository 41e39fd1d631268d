"""Stateless feature extraction on a Dask cluster: shards of samples go to the workers.

The expensive stage of a benchmark — decoding images, preprocessing them and
extracting features with the stateless prefix of a pipeline — grows with the
dataset. :func:`extract_on_cluster` sends it to the workers of a
``distributed.Client``:

* the samples are cut into contiguous shards; a :class:`~featurepipe.sample.Sample`
  is small and lazy, so only its key, path and metadata travel, and the pixels are
  decoded on the worker;
* each worker runs the prefix on its shard (a feature extractor with
  ``cache=<directory>`` on storage the workers share writes its entries there, so a
  later run on any machine finds them);
* the client receives one feature matrix per shard, never pixels, and keeps only a few
  shards in flight (two per worker thread), so its memory grows with the feature rows
  alone, not with the tasks of the whole dataset;
* a shard whose task raises is retried (``retries``); a shard lost with its
  worker is rescheduled by Dask itself (its ``distributed.scheduler.allowed-failures``);
* models are built once per worker *process*: :func:`featurepipe.cnn.load_backbone`
  keeps them in a per-process cache that lives as long as the worker, across tasks.

Each worker runs the feature engine (:class:`~featurepipe.feature_store.FeatureStore`) on
its shard, and the results follow the engine's contract (:class:`~featurepipe.feature_store.FeatureResult`):
features of the samples that worked, their indices, per-sample errors and the feature time.
"""

from __future__ import annotations

import os
import time

import numpy as np
from tqdm.auto import tqdm

from .feature_store import FeatureResult, FeatureStore, stack_rows

__all__ = ["extract_on_cluster", "extract_shard"]


def extract_shard(prefix, shard, start, per_sample_errors=False):
    """Run the stateless ``prefix`` on one shard of samples (the task each worker executes).

    The shard goes through the feature engine (:class:`~featurepipe.feature_store.FeatureStore`)
    in one chunk, exactly as a local run would compute it.

    Parameters
    ----------
    prefix : sklearn.pipeline.Pipeline
        Unfitted stateless steps (image steps, then feature extractors); the engine fits a copy.
    shard : sequence of Sample
        Consecutive samples; ``start`` is the index of the first one in the whole dataset.
    start : int
    per_sample_errors : bool
        If the shard fails, redo it one sample at a time and return the failures instead
        of raising (the engine's ``on_error="exclude"``; the benchmark's ``on_error`` other
        than ``"raise"``).

    Returns
    -------
    dict
        ``features`` (rows of the samples that worked, ndarray or CSR matrix, or None),
        ``index`` (their dataset indices, int64), ``errors`` ({dataset index: exception}),
        ``seconds`` (time spent on the shard) and ``worker_pid``.
    """
    t0 = time.perf_counter()
    result = FeatureStore(prefix).transform(shard, on_error="exclude" if per_sample_errors else "raise")
    return {"features": result.features, "index": result.index + int(start),
            "errors": {int(start) + k: exc for k, exc in result.errors.items()},
            "seconds": time.perf_counter() - t0, "worker_pid": os.getpid()}


def extract_on_cluster(prefix, samples, shard_size=256, progress=False, desc=None, per_sample_errors=False,
                       *, client=None, retries=2):
    """Output of a stateless ``prefix`` on all ``samples``, computed by the workers of a Dask cluster.

    The same computation and results as the feature engine's local run
    (:class:`~featurepipe.feature_store.FeatureStore`), with shards instead of chunks; the
    client only gathers feature matrices.

    Parameters
    ----------
    prefix : sklearn.pipeline.Pipeline
        Stateless steps (see :func:`featurepipe.search.split_stateless_prefix`).
    samples : sequence of Sample
    shard_size : int, default=256
        Samples per task. Larger shards mean fewer tasks (less scheduler overhead),
        smaller ones a finer balance between workers and less work redone on a retry.
    progress : bool
        Show a progress bar (updated as shards finish).
    desc : str, optional
        Progress bar label.
    per_sample_errors : bool
        Return the samples that fail in ``errors`` instead of raising.
    client : distributed.Client, optional
        Default: the current client (``distributed.get_client()``).
    retries : int, default=2
        How many times a shard whose task raised is resubmitted before its error is final.

    Returns
    -------
    FeatureResult
        ``(features, index, errors, preprocess_s, features_s)`` as from
        :meth:`FeatureStore.transform <featurepipe.feature_store.FeatureStore.transform>`:
        ``features`` has one row per sample of ``index`` (in dataset order); ``errors`` maps a
        failed sample's index to its exception. ``preprocess_s`` is None: the workers' image steps
        are counted in ``features_s``, the sum over shards of the workers' seconds (the compute
        cost, not the elapsed time).
    """
    import distributed

    if client is None:
        client = distributed.get_client()
    shard_size = int(shard_size)
    if shard_size < 1:
        raise ValueError(f"shard_size must be a positive number of samples; got {shard_size}")
    [prefix_future] = client.scatter([prefix], broadcast=True, hash=False)
    # A bounded window of shards in flight (two per worker thread): the client and the scheduler hold
    # the tasks of a few shards at a time, not of the whole dataset, so their memory stays flat.
    in_flight = max(2, 2 * sum(client.nthreads().values()))
    starts = iter(range(0, len(samples), shard_size))
    futures = {}

    def submit_next(queue):
        start = next(starts, None)
        if start is None:
            return
        shard = samples[start:start + shard_size]
        future = client.submit(extract_shard, prefix_future, shard, start, per_sample_errors,
                               retries=retries, pure=False)
        futures[future] = len(shard)
        queue.add(future)

    results, errors, seconds = [], {}, 0.0
    queue = distributed.as_completed([], with_results=True, loop=client.loop)
    try:
        for _ in range(in_flight):
            submit_next(queue)
        with tqdm(total=len(samples), desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for future, result in queue:
                bar.update(futures.pop(future))
                submit_next(queue)
                errors.update(result["errors"])
                seconds += result["seconds"]
                if result["features"] is not None:
                    results.append((result["index"][0], result["features"], result["index"]))
    finally:
        if futures:  # an error stopped the loop: cancel the shards still queued
            client.cancel(list(futures))
    results.sort(key=lambda r: r[0])
    ok_index = np.concatenate([r[2] for r in results]) if results else np.empty(0, dtype=np.int64)
    return FeatureResult(stack_rows([r[1] for r in results]), ok_index, dict(sorted(errors.items())), None, seconds)
