"""Benchmark of the inspection step: montage drawing and vote recording.

Builds a synthetic run directory (Gaussian galaxies in noise, random consensus
clusters), then times

* ``montage`` (cold: first draw) against the plain library work it wraps
  (the same zarr read of the sampled stamps plus PIL PNG encoding of the same
  mosaics without labels), and
* votes cast through the HTTP server: sequential latency and throughput with
  several experts posting at once (every vote rewrites votes.csv atomically).

Run: ``.venv/bin/python benchmarks/bench_inspection.py --n 20000 --k 20``
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd


def build_run(path: Path, n: int, k: int, size: int, chunk: int):
    from skymorph import RunDir

    run = RunDir(path, create=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] - size / 2
    with run.writer("stamps", (size, size), chunk) as w:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            r = rng.uniform(2, 10, m)[:, None, None]
            block = rng.normal(0, 1, (m, size, size)) + 50 * np.exp(-(yy**2 + xx**2) / (2 * r**2))
            w.extend(block.astype(np.float32))
    km = rng.integers(0, k, n)
    keep = rng.random(n) < 0.5
    ids = [f"g{i}" for i in range(n)]
    pd.DataFrame({"id": ids, "index": np.arange(n)}).to_parquet(run.path / "sources.parquet")
    run.mark_done("ingest", "synthetic")
    run.write_catalog(pd.DataFrame({
        "id": ids, "index": np.arange(n), "cluster_kmeans": km, "cluster_birch": km,
        "cluster_agglomerative": km, "cluster": np.where(keep, km, -1), "consensus": keep,
        "morph_type": "",
    }))
    return run


def plain_montage(run, per_cluster: int, seed: int) -> None:
    """The library work alone: read the same stamps, min-max scale, tile, encode PNG."""
    import io

    from PIL import Image

    from skymorph.inspection import consensus_labels, sample_members

    labels = consensus_labels(run.catalog())
    samples = sample_members(labels, per_cluster, seed)
    images = run.open_array("stamps")
    wanted = np.unique(np.concatenate(list(samples.values())))
    pixels = np.asarray(images.oindex[wanted])
    for rows in samples.values():
        block = pixels[np.searchsorted(wanted, rows)]
        block = (block - block.min()) / (np.ptp(block) + 1e-9)
        s = block.shape[1]
        grid = np.zeros((10 * s, 10 * s), np.uint8)
        for i, im in enumerate(block):
            r, c = divmod(i, 10)
            grid[r * s:(r + 1) * s, c * s:(c + 1) * s] = (im * 255).astype(np.uint8)
        Image.fromarray(grid).save(io.BytesIO(), format="PNG")


def post(url: str, token: str, expert: str, cluster: int, type_: str) -> float:
    data = json.dumps({"expert": expert, "cluster": cluster, "type": type_}).encode()
    req = urllib.request.Request(url + "api/vote", data=data,
                                 headers={"Content-Type": "application/json", "X-Skymorph-Token": token})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="galaxies (default 20000)")
    parser.add_argument("--k", type=int, default=20, help="clusters (default 20)")
    parser.add_argument("--size", type=int, default=100, help="stamp side (default 100)")
    parser.add_argument("--per-cluster", type=int, default=100, help="montage members (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--experts", type=int, default=3, help="concurrent experts (default 3)")
    args = parser.parse_args()

    from skymorph import Config, make_server
    from skymorph.stages.inspect import montage

    tmp = Path(tempfile.mkdtemp(prefix="bench_inspection_"))
    try:
        t0 = time.perf_counter()
        run = build_run(tmp / "run", args.n, args.k, args.size, 256)
        print(f"synthetic run: {args.n} stamps {args.size}x{args.size}, k={args.k} "
              f"({time.perf_counter() - t0:.1f} s to build)")
        config = Config().update({"inspect": {"per_cluster": args.per_cluster}})
        ours, plain = [], []
        for _ in range(args.repeat):
            run.invalidate("montage")
            t0 = time.perf_counter()
            montage(run, config, progress=False)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            plain_montage(run, args.per_cluster, 0)
            plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        montage(run, config, progress=False)
        reuse = time.perf_counter() - t0
        mo, pl = statistics.median(ours), statistics.median(plain)
        print(f"montage: median {mo:.2f} s for {args.k} clusters x {args.per_cluster} "
              f"({args.k * args.per_cluster / mo:.0f} stamps/s); plain read+tile+PNG {pl:.2f} s; "
              f"ratio {mo / pl:.2f}; cached re-run {reuse * 1000:.0f} ms")

        server = make_server(run, config, port=0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            seq = [post(server.url, server.token, "solo", c % args.k, "SPH") for c in range(100)]
            print("vote latency (one expert, sequential, 100 votes): "
                  f"median {statistics.median(seq) * 1000:.1f} ms, max {max(seq) * 1000:.1f} ms")
            jobs = [(f"e{e}", c, "ETD") for e in range(args.experts) for c in range(args.k)] * 5
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.experts * 2) as pool:
                lat = list(pool.map(lambda j: post(server.url, server.token, *j), jobs))
            wall = time.perf_counter() - t0
            print(f"concurrent votes: {len(jobs)} from {args.experts} experts in {wall:.2f} s "
                  f"({len(jobs) / wall:.0f} votes/s), median latency {statistics.median(lat) * 1000:.1f} ms")
            rows = pd.read_csv(run.path / "inspection" / "votes.csv")
            # one row per (expert, cluster): nothing lost, nothing duplicated
            assert len(rows) == args.k * (args.experts + 1), len(rows)
        finally:
            server.shutdown()
            server.server_close()
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
