"""Policies of the test suite itself (CONTRIBUTING.md, "Comparing floats in tests")."""

import re
from pathlib import Path

TESTS = Path(__file__).parent


def _exact_comparisons_without_reason(path):
    """Line numbers of ``assert_array_equal`` calls with no ``# exact: ...`` justification.

    The justification sits on the call's own line or on a comment line right above it (one
    comment may cover a run of consecutive calls with the same reason).
    """
    lines = path.read_text().splitlines()
    missing = []
    for i, line in enumerate(lines):
        if "assert_array_equal(" not in line or re.match(r"\s*(from|import) ", line):
            continue
        j = i
        while j > 0 and "assert_array_equal(" in lines[j] and "# exact" not in lines[j]:
            j -= 1
            while j > 0 and lines[j].rstrip().endswith((",", "(")) and "assert_array_equal(" not in lines[j]:
                j -= 1  # inside a call continued over several lines
        if "# exact" not in lines[j] and "# exact" not in line:
            missing.append(i + 1)
    return missing


def test_every_exact_array_comparison_says_why():
    offenders = {p.name: _exact_comparisons_without_reason(p) for p in sorted(TESTS.glob("test_*.py"))
                 if p.name != Path(__file__).name}  # this file quotes the pattern in its checks
    offenders = {name: lines for name, lines in offenders.items() if lines}
    assert offenders == {}, (
        "exact float comparisons across code paths break on other CPUs: use assert_allclose, or add a "
        f"'# exact: <why the bytes are identical>' comment (see CONTRIBUTING.md): {offenders}")


def test_the_checker_finds_an_unjustified_comparison(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import numpy as np\n"
        "def test_a():\n"
        "    # exact: integers\n"
        "    np.testing.assert_array_equal([1], [1])\n"
        "    np.testing.assert_array_equal([2], [2])\n"
        "    x = 1\n"
        "    np.testing.assert_array_equal(np.log([2.0]), [0.69])\n"
        "    np.testing.assert_array_equal([3], [3])  # exact: integers\n")
    assert _exact_comparisons_without_reason(sample) == [7]
