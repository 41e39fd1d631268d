"""Feature extraction on a local Dask cluster: 1 vs 2 workers, and the client's peak memory vs dataset size.

Issue 15 point 2. Small random grey PNGs (32x32, seeded) are written to a temporary
directory, deleted at the end; each dataset size runs in a fresh
client process so that its peak RSS (``ru_maxrss``) is its own. The recipe is cheap
on purpose (resize + first-order features, no cache), so the numbers show the
distribution overhead, not a heavy feature.

    PYTHONPATH=$PWD python benchmarks/dask_scale.py          # 2,000 and 8,000 images
    PYTHONPATH=$PWD python benchmarks/dask_scale.py --full   # 5,000 and 20,000 images

Per size, one client process runs a 1-worker and a 2-worker cluster and times them in
alternating rounds (``--rounds``, median); printed: the wall seconds, the 2-vs-1 speed-up,
the client's RSS before the extraction and its peak (MiB). The client process also runs
the LocalCluster's scheduler (as ``Client(LocalCluster())`` does); the workers are
separate processes. On a machine with only 2 cores, shared, 2 workers cannot reach 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_images(folder, n, size=32, seed=15):
    """``n`` seeded random ``size`` x ``size`` grey PNGs in ``folder`` (written in blocks, not kept in memory)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for start in range(0, n, 1000):
        block = rng.integers(0, 256, size=(min(1000, n - start), size, size), dtype=np.uint8)
        for i, pixels in enumerate(block):
            Image.fromarray(pixels).save(folder / f"img{start + i:06d}.png")


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_one(folder, n_images, rounds, shard_size):
    """One client process: a 1-worker and a 2-worker cluster, timed alternately on the first ``n_images`` files."""
    import contextlib

    import distributed
    from sklearn.pipeline import Pipeline

    from featurepipe.cluster import extract_on_cluster
    from featurepipe.features import FirstOrderFeatures
    from featurepipe.preprocessing import Resize
    from featurepipe.sample import Sample

    paths = sorted(Path(folder).glob("*.png"))[:n_images]
    samples = np.array([Sample.from_path(p, label=i % 2) for i, p in enumerate(paths)], dtype=object)
    prefix = Pipeline([("resize", Resize(24)), ("features", FirstOrderFeatures(cache=False))])
    walls = {1: [], 2: []}
    with contextlib.ExitStack() as stack:
        clients = {}
        for n_workers in (1, 2):
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None))
            clients[n_workers] = stack.enter_context(distributed.Client(cluster, set_as_default=False))
            # Warm-up: imports and first-call costs on every worker, outside the timing.
            extract_on_cluster(prefix, samples[: 2 * n_workers], 1, client=clients[n_workers])
        rss_before = rss_mib()
        for _ in range(rounds):  # alternating, so both see the same load on a shared machine
            for n_workers in (1, 2):
                t0 = time.perf_counter()
                Z, ok_index, errors, _, _ = extract_on_cluster(prefix, samples, shard_size,
                                                               client=clients[n_workers])
                walls[n_workers].append(time.perf_counter() - t0)
                assert Z.shape[0] == len(samples) and not errors
                del Z, ok_index
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"images": len(samples), "wall_s_1": walls[1], "wall_s_2": walls[2],
                      "client_rss_before_mib": rss_before, "client_peak_rss_mib": peak}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="5,000 and 20,000 images (default 2,000 and 8,000)")
    parser.add_argument("--sizes", type=int, nargs=2, help="the two dataset sizes")
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds per size (median)")
    parser.add_argument("--one", nargs=2, metavar=("FOLDER", "IMAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        run_one(args.one[0], int(args.one[1]), args.rounds, args.shard_size)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # on `timeout` or kill: still delete the images
    sizes = args.sizes or ([5000, 20000] if args.full else [2000, 8000])
    folder = Path(tempfile.mkdtemp(prefix="featurepipe-dask-scale-"))
    try:
        t0 = time.perf_counter()
        write_images(folder, max(sizes))
        print(f"wrote {max(sizes)} PNGs of 32x32 in {time.perf_counter() - t0:.1f} s (deleted at the end)")
        rows = {}
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                           os.environ.get("PYTHONPATH", "")]))
        for n in sizes:
            out = subprocess.run([sys.executable, __file__, "--one", str(folder), str(n), "--rounds", str(args.rounds),
                                  "--shard-size", str(args.shard_size)],
                                 check=True, capture_output=True, text=True, env=env).stdout
            rows[n] = r = json.loads(out.strip().splitlines()[-1])
            print(f"{n:>6} images: wall s with 1 worker {[round(w, 1) for w in r['wall_s_1']]}, with 2 "
                  f"{[round(w, 1) for w in r['wall_s_2']]}; client RSS {r['client_rss_before_mib']:.0f} MiB before, "
                  f"peak {r['client_peak_rss_mib']:.0f} MiB", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print()
    print("| images | 1 worker s (median) | 2 workers s (median) | speed-up 2 vs 1 | 1-worker img/s | client peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        one, two = np.median(rows[n]["wall_s_1"]), np.median(rows[n]["wall_s_2"])
        print(f"| {n} | {one:.1f} | {two:.1f} | {one / two:.2f} | {n / one:.0f} | {rows[n]['client_peak_rss_mib']:.0f} |")
    small, large = sizes
    growth = rows[large]["client_peak_rss_mib"] - rows[small]["client_peak_rss_mib"]
    print(f"client peak RSS growth from {small} to {large} images: {growth:.0f} MiB "
          f"({1024 * growth / (large - small):.2f} KiB per extra image: the sample list and the feature rows)")


if __name__ == "__main__":
    main()
