"""The per-process model cache (featurepipe's only global state): build once, forget on demand, thread-safe."""

import threading
import time

import pytest

from featurepipe.cnn.model_cache import MODEL_CACHE, ModelCache, clear_model_cache


def test_builds_once_and_forgets_by_backbone_and_by_kind():
    cache = ModelCache()
    calls = []

    def builder(value):
        def build():
            calls.append(value)
            return value
        return build

    assert cache.get_or_build(("model", "a", 1), builder("a-model")) == "a-model"
    assert cache.get_or_build(("model", "a", 1), builder("other")) == "a-model"
    cache.get_or_build(("session", "a", 1), builder("a-session"))
    cache.get_or_build(("model", "b", 1), builder("b-model"))
    cache.get_or_build(("session", "b", 1), builder("b-session"))
    assert calls == ["a-model", "a-session", "b-model", "b-session"] and len(cache) == 4

    cache.discard("session")  # one kind, every backbone
    assert ("model", "a", 1) in cache and ("model", "b", 1) in cache and len(cache) == 2

    token = cache.random_weights_token()
    cache.invalidate("a")  # one backbone, every kind
    assert ("model", "a", 1) not in cache and ("model", "b", 1) in cache
    assert cache.generation("a") == 1 and cache.generation("b") == 0
    assert cache.random_weights_token() != token  # rebuilt random networks get new weights

    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError, match=r"tuples \(kind, backbone, \.\.\.\)"):
        cache.get_or_build("model", builder("x"))


def test_concurrent_requests_build_once():
    cache = ModelCache()
    calls = []

    def build():
        calls.append(1)
        time.sleep(0.05)  # let the other threads arrive while the first one builds
        return object()

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_build(("model", "x"), build)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 4 and all(r is results[0] for r in results)


def test_a_build_overtaken_by_clear_is_returned_but_not_kept():
    cache = ModelCache()

    def build():
        cache.clear()  # e.g. clear_model_cache() from another thread while this model was built
        return "stale"

    assert cache.get_or_build(("model", "x"), build) == "stale"
    assert ("model", "x") not in cache

    def build_during_reregistration():
        cache.invalidate("y")
        return "stale"

    assert cache.get_or_build(("model", "y"), build_during_reregistration) == "stale"
    assert ("model", "y") not in cache
    # an unrelated backbone's registration does not throw away a finished build
    assert cache.get_or_build(("model", "z"), lambda: cache.invalidate("other") or "kept") == "kept"
    assert ("model", "z") in cache


def test_clear_model_cache_clears_the_process_cache():
    MODEL_CACHE.get_or_build(("test-entry", "test_cnn_model_cache"), object)
    assert ("test-entry", "test_cnn_model_cache") in MODEL_CACHE
    clear_model_cache()
    assert ("test-entry", "test_cnn_model_cache") not in MODEL_CACHE
