"""Repeated stratified grouped K-fold and group merging."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, cross_val_score

from featurepipe.model_selection import RepeatedStratifiedGroupKFold, check_groups_per_class, merge_groups


@st.composite
def grouped_problems(draw):
    """(y, groups, n_splits, n_repeats, seed): every class in at least n_splits groups."""
    n_splits = draw(st.integers(2, 5))
    n_classes = draw(st.integers(2, 3))
    labels, groups = [], []
    group_id = 0
    for label in range(n_classes):
        for _ in range(draw(st.integers(n_splits, n_splits + 4))):
            size = draw(st.integers(1, 4))
            # a group is mostly one class, sometimes mixed (a patient with benign and malignant images)
            extra = draw(st.lists(st.integers(0, n_classes - 1), max_size=2))
            members = [label] * size + extra
            labels += members
            groups += [f"g{group_id}"] * len(members)
            group_id += 1
    order = draw(st.permutations(range(len(labels))))
    y = np.array([f"c{labels[i]}" for i in order])
    g = np.array([groups[i] for i in order], dtype=object)
    return y, g, n_splits, draw(st.integers(1, 3)), draw(st.integers(0, 2**31 - 1))


@settings(max_examples=60, deadline=None)
@given(grouped_problems())
def test_folds_partition_samples_and_never_split_a_group(problem):
    y, groups, n_splits, n_repeats, seed = problem
    cv = RepeatedStratifiedGroupKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    splits = list(cv.split(np.zeros(len(y)), y, groups))
    assert len(splits) == cv.get_n_splits() == n_splits * n_repeats
    for repeat in range(n_repeats):
        tested = np.concatenate([test for _, test in splits[repeat * n_splits:(repeat + 1) * n_splits]])
        # every sample is tested exactly once per repeat
        assert sorted(tested.tolist()) == list(range(len(y)))
        for train, test in splits[repeat * n_splits:(repeat + 1) * n_splits]:
            assert len(test) > 0
            assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(y)))
            # no group on both sides
            assert not set(groups[train]) & set(groups[test])
    # deterministic with an int random_state
    again = list(cv.split(np.zeros(len(y)), y, groups))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40), st.lists(st.integers(0, 6), min_size=1, max_size=40))
def test_merge_groups_joins_whatever_shares_a_value(a, b):
    n = min(len(a), len(b))
    a, b = np.array(a[:n]), np.array(b[:n])
    merged = merge_groups(a, b)
    for i in range(n):
        for j in range(n):
            if a[i] == a[j] or b[i] == b[j]:
                assert merged[i] == merged[j]
    # and nothing more: each merged group is connected through shared values
    for value in np.unique(merged):
        members = set(np.flatnonzero(merged == value).tolist())
        reached = {min(members)}
        frontier = list(reached)
        while frontier:
            i = frontier.pop()
            for j in members - reached:
                if a[i] == a[j] or b[i] == b[j]:
                    reached.add(j)
                    frontier.append(j)
        assert reached == members


def test_merge_groups_hand_example():
    patients = ["a", "a", "b", "c", "d", None, None]
    clusters = [0, 1, 1, 2, 3, 4, 5]
    assert merge_groups(patients, clusters).tolist() == [0, 0, 0, 1, 2, 3, 3]
    with pytest.raises(ValueError, match="groupings\\[1\\] has 2 entries"):
        merge_groups([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="1-D"):
        merge_groups([[1], [2]])
    unhashable = np.empty(2, dtype=object)
    unhashable[:] = [[1], [2]]
    with pytest.raises(ValueError, match="not hashable"):
        merge_groups(unhashable)


def test_first_repeat_is_sklearns_stratified_group_kfold():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    groups = rng.integers(0, 20, 60)
    ours = list(RepeatedStratifiedGroupKFold(n_splits=4, n_repeats=2, random_state=7).split(y, y, groups))
    seeds = np.random.RandomState(7).randint(np.iinfo(np.int32).max, size=2)
    for r, seed in enumerate(seeds):
        reference = list(StratifiedGroupKFold(4, shuffle=True, random_state=int(seed)).split(y, y, groups))
        for (a_train, a_test), (b_train, b_test) in zip(ours[4 * r:4 * r + 4], reference):
            # exact: integer, boolean or string values
            np.testing.assert_array_equal(a_test, b_test)
            np.testing.assert_array_equal(a_train, b_train)
    # repeats differ, and other seeds give other folds
    assert any(not np.array_equal(ours[k][1], ours[4 + k][1]) for k in range(4))


def test_error_when_a_class_has_fewer_groups_than_folds():
    y = np.array(["benign"] * 10 + ["malignant"] * 6)
    groups = np.array([f"p{i}" for i in range(10)] + ["q1", "q1", "q2", "q2", "q3", "q3"])
    cv = RepeatedStratifiedGroupKFold(n_splits=5, random_state=0)
    with pytest.raises(ValueError, match="'malignant' in 3 group\\(s\\).*n_splits <= 3"):
        list(cv.split(y, y, groups))
    assert len(list(RepeatedStratifiedGroupKFold(n_splits=3, random_state=0).split(y, y, groups))) == 3
    with pytest.raises(ValueError, match="number of groups"):
        list(RepeatedStratifiedGroupKFold(n_splits=4).split(y[:6], y[:6], ["a", "a", "b", "b", "c", "c"]))
    with pytest.raises(ValueError, match="'x' in 1"):
        check_groups_per_class(["x", "y", "y"], [1, 2, 3], 2)


def test_parameter_and_input_errors():
    y = np.array([0, 1] * 10)
    groups = np.arange(20)
    for kwargs, name in [({"n_splits": 1}, "n_splits"), ({"n_splits": 2.0}, "n_splits"),
                         ({"n_repeats": 0}, "n_repeats"), ({"n_splits": True}, "n_splits")]:
        with pytest.raises(ValueError, match=name):
            list(RepeatedStratifiedGroupKFold(**kwargs).split(y, y, groups))
    cv = RepeatedStratifiedGroupKFold(n_splits=2)
    with pytest.raises(ValueError, match="needs groups"):
        list(cv.split(y, y))
    with pytest.raises(ValueError, match="needs y"):
        list(cv.split(y, None, groups))
    with pytest.raises(ValueError, match="continuous"):
        list(cv.split(y, y + 0.5, groups))
    with pytest.raises(ValueError, match="groups has 3 entries"):
        list(cv.split(y, y, [1, 2, 3]))


def test_scikit_learn_compatibility():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(48, 3))
    y = (X[:, 0] > 0).astype(int)
    groups = np.repeat(np.arange(16), 3)
    cv = RepeatedStratifiedGroupKFold(n_splits=3, n_repeats=2, random_state=0)
    scores = cross_val_score(LogisticRegression(), X, y, groups=groups, cv=cv)
    assert scores.shape == (6,) and scores.min() > 0.5
    search = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=cv).fit(X, y, groups=groups)
    assert search.n_splits_ == 6
    assert clone(cv).get_params() == {"n_splits": 3, "n_repeats": 2, "random_state": 0}
    assert repr(cv) == "RepeatedStratifiedGroupKFold(n_repeats=2, n_splits=3, random_state=0)"
    restored = pickle.loads(pickle.dumps(cv))
    a = [t for _, t in cv.split(X, y, groups)]
    b = [t for _, t in restored.split(X, y, groups)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


# ----------------------------------------------------------------------------- one splitter everywhere
def _patients_problem(seed=0, n_patients=40):
    rng = np.random.default_rng(seed)
    y, groups = [], []
    for p in range(n_patients):
        label = ("benign", "malignant", "normal")[p % 3]
        for _ in range(int(rng.integers(1, 4))):
            y.append(label)
            groups.append(f"patient{p}")
    order = rng.permutation(len(y))
    return np.array(y)[order], np.array(groups, dtype=object)[order]


def test_make_splits_are_the_splitters_folds():
    from featurepipe.benchmark.splits import CVSpec, make_splits

    y, groups = _patients_problem()
    for seed in (0, 7):
        cv = RepeatedStratifiedGroupKFold(n_splits=4, n_repeats=2, random_state=seed)
        ours = make_splits(y, groups, CVSpec(4, 2, seed))
        reference = list(cv.split(y, y, groups))
        assert [(s.repeat, s.fold) for s in ours] == [(r, f) for r in range(2) for f in range(4)]
        for split, (train, test) in zip(ours, reference):
            # exact: integer sample indices
            np.testing.assert_array_equal(split.test, np.sort(test))
            np.testing.assert_array_equal(split.train, np.sort(train))
        # identical folds for an identical random_state, other folds for another one
        again = make_splits(y, groups, CVSpec(4, 2, seed))
        assert all(np.array_equal(a.test, b.test) for a, b in zip(ours, again))
    other = make_splits(y, groups, CVSpec(4, 2, 1))
    assert any(not np.array_equal(a.test, b.test) for a, b in zip(ours, other))


def test_stratification_quality():
    """Every test fold's class proportions stay within 0.06 of the whole set's (ungrouped: GroupKFold is worse)."""
    from sklearn.model_selection import GroupKFold

    rng = np.random.default_rng(3)
    y = np.array(["a"] * 150 + ["b"] * 50)
    rng.shuffle(y)
    groups = np.arange(200) // 2  # patients of two images (same class or not)
    overall = np.mean(y == "b")
    cv = RepeatedStratifiedGroupKFold(n_splits=5, n_repeats=3, random_state=0)
    deviations = [abs(np.mean(y[test] == "b") - overall) for _, test in cv.split(y, y, groups)]
    assert max(deviations) <= 0.06
    unstratified = [abs(np.mean(y[test] == "b") - overall) for _, test in GroupKFold(5).split(y, y, groups)]
    assert max(unstratified) > max(deviations)


def test_too_few_groups_of_a_class_is_an_error_in_make_splits_too():
    from featurepipe.benchmark.splits import CVSpec, make_splits

    y = np.array(["benign"] * 10 + ["malignant"] * 4)
    groups = np.array([f"p{i}" for i in range(10)] + ["q1", "q1", "q2", "q2"])
    with pytest.raises(ValueError, match=r"class 'malignant' in 2 group\(s\) only.*n_splits=3"):
        make_splits(y, groups, CVSpec(3, 1, 0))
    with pytest.raises(ValueError, match=r"class 'malignant' in 2 group\(s\) only.*n_splits=3"):
        list(RepeatedStratifiedGroupKFold(n_splits=3).split(y, y, groups))
