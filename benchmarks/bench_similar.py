"""Speed of ``skymorph similar`` and ``skymorph anomaly`` on a run of 10^5 galaxies.

The features are the synthetic 10^5 x 2048 stand-in of ``bench_reduce_cluster.py`` (a Gaussian
mixture on a curved manifold, plus noise), written into a run directory with a sources table, a
catalog and 8 x 8 stand-in stamps (the montages need images; their size does not change the
search).  Every command runs as a fresh ``skymorph`` process, as a user would run it:

1. the first ``similar`` (builds and stores the index): wall time and peak memory;
2. ``similar`` again with other query ids, the index reused (target < 1 s): median of 3 runs,
   and the search alone inside one process (load the index, answer one query);
3. recall@50 of the index against the exact search over 200 random queries;
4. ``anomaly`` with its default settings (target <= 2 min): wall time and peak memory.

Usage::

    .venv/bin/python benchmarks/bench_similar.py                  # 10^5 x 2048
    .venv/bin/python benchmarks/bench_similar.py --n 20000 --dim 512
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_reduce_cluster import make_features  # noqa: E402
from skymorph import Config, RunDir  # noqa: E402


def make_run(path: Path, n: int, dim: int, seed: int, exact_below: int) -> RunDir:
    x, truth = make_features(n, dim, seed)
    run = RunDir.create(path)
    config = Config().update({"similar": {"exact_below": exact_below}})
    run.record_config(config)
    run.create_array("stamps", (n, 8, 8), chunk=8192)[:] = np.random.default_rng(seed).random(
        (n, 8, 8), dtype=np.float32)
    ids = [f"g{i:06d}" for i in range(n)]
    pd.DataFrame({"id": ids, "index": np.arange(n)}).to_parquet(path / "sources.parquet", index=False)
    run.mark_done("ingest", run.fingerprint("ingest", config, ["ingest"]))
    run.create_array("features", (n, dim), chunk=8192)[:] = x
    run.mark_done("encode", run.fingerprint("encode", config, ["encode"], upstream=["ingest"]))
    run.write_catalog(pd.DataFrame({"id": ids, "index": np.arange(n), "cluster": truth,
                                    "consensus": np.ones(n, bool), "morph_type": ""}))
    return run


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (GiB) and CPU seconds (user + system) of the child."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
               "print(time.perf_counter() - t, u.ru_maxrss, u.ru_utime + u.ru_stime); "
               "print(p.stdout[-2000:], p.stderr[-2000:], file=sys.stderr); sys.exit(p.returncode)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    seconds, kib, cpu = proc.stdout.split()
    return float(seconds), int(kib) / 2**20, float(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-below", type=int, default=Config().similar.exact_below,
                        help="similar.exact_below of the run (lower it to test the index on a small run)")
    parser.add_argument("--keep", default=None, help="write the run here and keep it")
    parser.add_argument("--reuse", action="store_true", help="with --keep: reuse the run written before")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "skymorph.cli"]
    where = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_similar_")) / "run"
    if where.exists() and args.reuse:
        run = RunDir(where)
        shutil.rmtree(where / "similar", ignore_errors=True)
        (where / "stages" / "similar.json").unlink(missing_ok=True)
        print(f"reusing the run in {where}", flush=True)
    else:
        if where.exists():
            shutil.rmtree(where)
        t0 = time.perf_counter()
        run = make_run(where, args.n, args.dim, args.seed, args.exact_below)
        print(f"run of {args.n} x {args.dim} synthetic features written in {time.perf_counter() - t0:.0f} s "
              f"({where})", flush=True)
    try:
        s, gib, cpu = timed([*cli, "similar", str(where), "g000000", "-q"])
        print(f"similar, first call (builds the index)   {s:8.1f} s   CPU {cpu:7.1f} s   "
              f"peak RSS {gib:5.2f} GiB", flush=True)
        walls, cpus = [], []
        for gid in ("g000001", "g000002", "g000003"):
            s, gib_q, cpu = timed([*cli, "similar", str(where), gid, "-q"])
            walls.append(s)
            cpus.append(cpu)
        print(f"similar, index reused, fresh process      {statistics.median(walls):8.2f} s   median of 3 "
              f"({', '.join(f'{w:.2f}' for w in walls)}; mostly imports), "
              f"CPU {statistics.median(cpus):.2f} s; peak RSS {gib_q:5.2f} GiB", flush=True)
        import skymorph

        skymorph.similar(run, "g000004", progress=False)  # imports and first touch of the files
        walls = []
        for gid in ("g000005", "g000006", "g000007"):
            t = time.perf_counter()
            skymorph.similar(run, gid, progress=False)
            walls.append(time.perf_counter() - t)
        print(f"skymorph.similar(run, id), index reused  {statistics.median(walls):8.2f} s   median of 3 "
              f"({', '.join(f'{w:.2f}' for w in walls)}): table + montage", flush=True)
        cpu0 = time.process_time()
        skymorph.similar(run, "g000008", progress=False)
        print(f"  its CPU time: {time.process_time() - cpu0:.2f} s", flush=True)

        from skymorph.core.search import IVFIndex, exact_neighbors

        t = time.perf_counter()
        index = IVFIndex.load(where / "similar" / "index")
        load_s = time.perf_counter() - t
        x = np.asarray(run.open_array("features")[:], dtype=np.float32)
        rng = np.random.default_rng(1)
        q = rng.choice(args.n, args.queries, replace=False)
        probe = Config().similar.probe
        t = time.perf_counter()
        approx, _ = index.search(x[q], n=50, probe=probe, exclude=q)
        per_query = (time.perf_counter() - t) / len(q)
        exact, _ = exact_neighbors(x, x[q], n=50, metric=Config().similar.metric, exclude=q)
        recall = np.mean([np.isin(a, e).mean() for a, e in zip(approx, exact, strict=True)])
        print(f"index load {load_s * 1000:.0f} ms, one query {per_query * 1000:.1f} ms (probe {probe} of "
              f"{index.n_lists} lists); recall@50 vs exact {recall:.3f} over {len(q)} queries", flush=True)
        t = time.perf_counter()
        exact_neighbors(x, x[q[:1]], n=50)
        print(f"for comparison, one exact query in memory: {time.perf_counter() - t:.2f} s", flush=True)
        del x
        s, gib, cpu = timed([*cli, "anomaly", str(where), "-q"])
        print(f"anomaly ({Config().anomaly.method}, default settings)       {s:8.1f} s   CPU {cpu:7.1f} s   "
              f"peak RSS {gib:5.2f} GiB",
              flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(where.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
