"""Duplicate detection on real data: false merges on MIAS, copies found on BUSI, threshold choice.

Reads ``../shared/data`` (or ``--data``) and prints

* the verification scores (:func:`featurepipe.duplicates.verify_pair`:
  RANSAC inliers, aligned detail correlation) of every MIAS pair of two
  different women (the null distribution: none of them is a duplicate) and
  of the BUSI candidate pairs (perceptual-hash distance <= 16);
* a table over candidate distance x min inliers x correlation threshold:
  BUSI clusters, pairs, cross-label clusters; MIAS false-merge pairs (pairs of
  images of different women in one cluster) and independent groups after
  merging with the woman groups;
* ``find_duplicates`` with the defaults on both sets, its clusters and its
  wall time.

Run: ``python benchmarks/duplicates.py [--data DIR] [--n-jobs N]``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from featurepipe.datasets import load_busi, load_mias
from featurepipe.duplicates import (
    DEFAULT_CANDIDATE_DISTANCE,
    DEFAULT_THRESHOLD,
    MIN_INLIERS,
    cluster_pairs,
    find_duplicates,
)
from featurepipe.model_selection import merge_groups


def _scores(dataset, candidate_distance, n_jobs):
    """Every candidate pair at the loosest distance, verified (via find_duplicates with a permissive setting)."""
    report = find_duplicates(dataset, candidate_distance=candidate_distance, threshold=1e-9, min_inliers=3,
                             n_jobs=n_jobs)
    return report.candidates, report


def _clusters(n, candidates, exact_i, exact_j, distance, min_inliers, threshold):
    keep = (candidates["distance"] <= distance) & (candidates["inliers"] >= min_inliers) \
        & (candidates["correlation"] >= threshold)
    i = np.concatenate([candidates["i"][keep], exact_i])
    j = np.concatenate([candidates["j"][keep], exact_j])
    cluster_ids, clusters = cluster_pairs(n, i, j)
    return cluster_ids, clusters, int(keep.sum()) + len(exact_i)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args(argv)
    mias = load_mias(Path(args.data) / "mias_sample")
    busi = load_busi(Path(args.data) / "busi", validate=False)
    women = np.asarray(mias.groups, dtype=object)
    labels = np.asarray(busi.y, dtype=object)

    # MIAS: every pair (candidate distance 64 = all pairs) is scored
    m_cand, m_report = _scores(mias, 64, args.n_jobs)
    different = women[m_cand["i"]] != women[m_cand["j"]]
    strong = different & (m_cand["inliers"] >= MIN_INLIERS)
    print(f"MIAS: {different.sum()} pairs of different women: inliers max {m_cand['inliers'][different].max()}, "
          f"99th percentile {np.quantile(m_cand['inliers'][different], 0.99):.0f}; detail correlation max "
          f"{m_cand['correlation'][different].max():.3f}; pairs with >= {MIN_INLIERS} inliers: {strong.sum()}, "
          f"their detail correlation max {m_cand['correlation'][strong].max():.3f}")
    b_cand, b_report = _scores(busi, 16, args.n_jobs)
    exact = b_report.pair_exact
    b_exact_i, b_exact_j = b_report.pair_i[exact], b_report.pair_j[exact]
    m_exact = m_report.pair_exact
    m_exact_i, m_exact_j = m_report.pair_i[m_exact], m_report.pair_j[m_exact]
    for lo, hi in [(0, 10), (12, 16)]:
        sel = (b_cand["distance"] >= lo) & (b_cand["distance"] <= hi)
        print(f"BUSI candidates at hash distance {lo}-{hi}: {sel.sum()}; inliers quartiles "
              f"{np.quantile(b_cand['inliers'][sel], [0.25, 0.5, 0.75]).round(0).tolist()}; correlation quartiles "
              f"{np.quantile(b_cand['correlation'][sel], [0.25, 0.5, 0.75]).round(3).tolist()}")

    print("\ncand  inliers  corr | BUSI clusters pairs cross-label largest | MIAS false-merge pairs, groups")
    for distance, min_inliers, threshold in itertools.product((10, 14, 16), (10, 15, 20, 30), (0.2, 0.3, 0.5)):
        _, clusters, n_pairs = _clusters(len(busi), b_cand, b_exact_i, b_exact_j, distance, min_inliers, threshold)
        cross = sum(1 for c in clusters if len(set(labels[c])) > 1)
        largest = max((len(c) for c in clusters), default=1)
        m_ids, m_clusters, _ = _clusters(len(mias), m_cand, m_exact_i, m_exact_j, distance, min_inliers, threshold)
        false = sum(1 for c in m_clusters for a, b in itertools.combinations(c, 2) if women[a] != women[b])
        groups = len(set(merge_groups(women, m_ids).tolist()))
        print(f"{distance:4d} {min_inliers:8d} {threshold:5.1f} | {len(clusters):13d} {n_pairs:5d} {cross:11d} "
              f"{largest:7d} | {false:22d} {groups:7d}")

    print(f"\nfind_duplicates defaults: candidate_distance={DEFAULT_CANDIDATE_DISTANCE}, min_inliers={MIN_INLIERS}, "
          f"threshold={DEFAULT_THRESHOLD}")
    for name, dataset in [("MIAS", mias), ("BUSI", busi)]:
        start = time.perf_counter()
        report = find_duplicates(dataset, n_jobs=args.n_jobs)
        seconds = time.perf_counter() - start
        print(f"{name}: {report.n_clusters} clusters, {len(report.pair_i)} pairs ({report.n_exact_pairs} exact), "
              f"{report.n_rejected_candidates} candidates rejected, {len(report.cross_label_clusters)} cross-label; "
              f"{seconds:.1f} s")
        if name == "MIAS":
            merged = merge_groups(women, report.cluster_ids)
            print(f"  independent groups with the woman groups: {len(set(merged.tolist()))}")
        for k in report.cross_label_clusters:
            print(f"  {' + '.join(report.cluster_labels(k))}: {', '.join(report.names[i] for i in report.clusters[k])}")


if __name__ == "__main__":
    main()
