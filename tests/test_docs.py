"""The documentation runs: every ``>>>`` example in featurepipe's docstrings and every Python
block of README.md is executed here (issue 10, point 6)."""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import numpy as np
import pytest

import featurepipe

ROOT = Path(__file__).resolve().parents[1]


def _modules():
    names = ["featurepipe"]
    for info in pkgutil.walk_packages(featurepipe.__path__, "featurepipe."):
        names.append(info.name)
    return sorted(names)


def _doctests(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    # Objects re-exported from another module are tested where they are defined.
    return [t for t in finder.find(module, module_name) if t.examples
            and (getattr(t, "lineno", None) is not None)
            and t.filename == getattr(module, "__file__", None)]


MODULES_WITH_EXAMPLES = [m for m in _modules() if ">>>" in Path(importlib.util.find_spec(m).origin).read_text()]


def test_the_docstring_examples_are_collected():
    # A change to the collection above must not silently drop the examples it is meant to run.
    n_examples = sum(len(t.examples) for m in MODULES_WITH_EXAMPLES for t in _doctests(m))
    n_prompts = sum(Path(importlib.util.find_spec(m).origin).read_text().count(">>> ") for m in MODULES_WITH_EXAMPLES)
    assert MODULES_WITH_EXAMPLES and n_examples == n_prompts


@pytest.mark.parametrize("module_name", MODULES_WITH_EXAMPLES)
def test_docstring_examples(module_name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = _doctests(module_name)
    for test in tests:
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0
    assert results.failed == 0, f"{results.failed} docstring example(s) failed in {module_name} (output above)"


def _readme_python_blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    """The README's Python examples run as written, in order, in one namespace, and produce
    real numbers (no NaN scores, a benchmark with every pipeline evaluated)."""
    blocks = _readme_python_blocks()
    assert len(blocks) >= 2
    assert not any("..." in block for block in blocks), "README examples must be complete code"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    search = namespace["search"]
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all() and 0.5 < search.best_score_ <= 1.0
    result = namespace["result"]
    assert set(result.pipelines) == {"convnet+svm", "glcm+svm"}
    assert (tmp_path / "results" / "demo" / "results.json").is_file()
