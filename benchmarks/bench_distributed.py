"""Encode and measure on a Dask LocalCluster against the local path, same machine, same run.

Stamps: the 100 bundled COSMOS stamps, repeated to N with right-angle rotations and
flips (so no two neighbouring stamps are the same array), written straight into a run
directory.  Then, on the same machine in the same run:

1. encode (EfficientNet-Lite0, 1 rotation) and measure (statmorph with Sersic) the
   local way (``[compute] scheduler = "local"``: one process, two PyTorch threads for
   encode; a 2-process pool for measure);
2. the same two stages on ``LocalCluster(n_workers=2, threads_per_worker=1)`` (one
   PyTorch thread per task), checking that the outputs are the local ones;
3. the per-task overhead of the scheduling (empty tasks through the same bounded,
   ordered map the stages use);
4. from the per-chunk compute times the cluster recorded (its task stream), the
   worker-seconds per galaxy of each stage, and the projected wall time of 10^6 and
   10^8 galaxies on 10, 100 and 1,000 one-core workers (printed as a Markdown table).

Examples::

    .venv/bin/python benchmarks/bench_distributed.py                      # N = 1024 / 256
    .venv/bin/python benchmarks/bench_distributed.py --n-encode 10000 --n-measure 10000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from skymorph import Config, ingest  # noqa: E402
from skymorph.core import compute  # noqa: E402
from skymorph.io.datasets import cosmos_demo  # noqa: E402
from skymorph.io.rundir import RunDir  # noqa: E402
from skymorph.stages.encode import encode  # noqa: E402
from skymorph.stages.measure import measure  # noqa: E402


def make_run(root: Path, n: int) -> RunDir:
    """A run directory of ``n`` stamps made from the 100 bundled ones."""
    base = ingest([cosmos_demo()], root / "base", Config(), progress=False)
    stamps = np.asarray(base.open_array("stamps")[:])
    sources = base.sources()
    run = RunDir(root / f"run{n}", create=True)
    chunk = 256
    array = run.create_array("stamps", (n, *stamps.shape[1:]), chunk)
    rows = []
    for start in range(0, n, chunk):
        block = []
        for j in range(start, min(n, start + chunk)):
            copy, k = divmod(j, len(stamps))
            image = np.rot90(stamps[k], copy % 4)
            block.append(image[:, ::-1] if (copy // 4) % 2 else image)
            row = sources.iloc[k].to_dict()
            row.update(id=f"{row['id']}_{copy}", index=j)
            rows.append(row)
        array[start:start + len(block)] = np.stack(block)
    pd.DataFrame(rows).to_parquet(run.path / "sources.parquet", index=False)
    run.mark_done("ingest", f"bench-{n}")
    return run


def settings(scheduler: str, threads: int, workers: int, chunk: int = 1024) -> Config:
    return Config().update({
        "compute": {"scheduler": scheduler},
        "encode": {"encoder": "efficientnet_lite0", "rotations": 1, "threads": threads, "chunk_size": chunk},
        "measure": {"workers": workers},
    })


def timed(func, *args, **kwargs) -> float:
    start = time.perf_counter()
    func(*args, **kwargs)
    return time.perf_counter() - start


def task_seconds(client, prefix: str, since: float) -> list[float]:
    """Compute seconds of every task of ``prefix`` started after ``since`` (task stream)."""
    out = []
    records = client.get_task_stream(start=since)
    if not any(prefix in str(r["key"]) for r in records):
        print(f"no {prefix} task in the task stream: {sorted({str(r['key'])[:30] for r in records})[:10]}")
    for record in records:
        key = record["key"][0] if isinstance(record["key"], tuple) else str(record["key"])
        if key.startswith(prefix):
            out += [s["stop"] - s["start"] for s in record["startstops"] if s["action"] == "compute"]
    return out


def _noop(i: int) -> int:
    return i


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-encode", type=int, default=1024, help="stamps through encode (default 1024)")
    parser.add_argument("--n-measure", type=int, default=256, help="stamps through measure (default 256)")
    parser.add_argument("--encode-chunk", type=int, default=256,
                        help="images per encode task (default 256, so that small N still gives each "
                             "worker several tasks; the stage's default is 1024)")
    parser.add_argument("--noop-tasks", type=int, default=2000, help="empty tasks for the overhead")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary one)")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    root = Path(args.keep or tempfile.mkdtemp(prefix="bench_distributed_"))
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, float]] = {}
    try:
        runs = {"encode": make_run(root, args.n_encode), "measure": make_run(root, args.n_measure)}
        # local: as a laptop runs it
        local = {"encode": timed(encode, runs["encode"], settings("local", 0, 2, args.encode_chunk),
                                 force=True, progress=False),
                 "measure": timed(measure, runs["measure"], settings("local", 0, 2), force=True,
                                  progress=False)}
        reference = {"encode": np.asarray(runs["encode"].open_array("features")[:]),
                     "measure": pd.read_parquet(runs["measure"].path / "measurements.parquet")}
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
                Client(cluster.scheduler_address, set_as_default=False) as client:
            address = cluster.scheduler_address
            client.get_task_stream()  # the first call starts the scheduler's task-stream recording
            since = time.time()
            remote = {"encode": timed(encode, runs["encode"], settings(address, 1, 2, args.encode_chunk),
                                      force=True, progress=False)}
            chunks = {"encode": task_seconds(client, "encode_chunk", since)}
            since = time.time()
            remote["measure"] = timed(measure, runs["measure"], settings(address, 1, 2), force=True,
                                      progress=False)
            chunks["measure"] = task_seconds(client, "measure_chunk", since)
            same_features = np.array_equal(reference["encode"], np.asarray(
                runs["encode"].open_array("features")[:]), equal_nan=True)
            same_rows = reference["measure"].equals(
                pd.read_parquet(runs["measure"].path / "measurements.parquet"))
            # the per-task overhead of the bounded ordered map the stages use
            with compute.session(address) as session:
                start = time.perf_counter()
                for _ in compute.ordered_map(_noop, range(args.noop_tasks), (), submit=session.submit,
                                             in_flight=2 * session.slots()):
                    pass
                overhead = (time.perf_counter() - start) / args.noop_tasks
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    sizes = {"encode": args.n_encode, "measure": args.n_measure}
    chunk_sizes = {"encode": Config().encode.chunk_size, "measure": Config().measure.chunk_size}  # projected
    print(f"machine: {compute._cores()} cores; LocalCluster(n_workers=2, threads_per_worker=1)")
    print(f"features identical to the local run: {same_features}; measurement rows identical: {same_rows}")
    print("stage    N      local s  local gal/s  dask s  dask gal/s  ratio  chunk s (median)  worker-s/gal")
    for stage in ("encode", "measure"):
        n = sizes[stage]
        per_gal = float(np.sum(chunks[stage])) / n if chunks[stage] else float("nan")
        results[stage] = {"per_gal": per_gal}
        print(f"{stage:8s} {n:<6d} {local[stage]:8.1f} {n / local[stage]:12.1f} {remote[stage]:7.1f} "
              f"{n / remote[stage]:11.1f} {local[stage] / remote[stage]:6.2f} "
              f"{np.median(chunks[stage]) if chunks[stage] else float('nan'):17.2f} {per_gal:13.4f}")
    print(f"per-task overhead (empty tasks, bounded ordered map, 2 workers): {overhead * 1e3:.2f} ms")

    print("\nProjected wall time, encode + measure, one-core workers, "
          "T = N x (worker-s/gal) / W + (N / chunk) x overhead:")
    print("| galaxies | workers | encode | measure | total |")
    print("| --- | --- | --- | --- | --- |")
    for n in (10**6, 10**8):
        for workers in (10, 100, 1000):
            times = {stage: n * results[stage]["per_gal"] / workers + n / chunk_sizes[stage] * overhead
                     for stage in ("encode", "measure")}
            print(f"| 10^{int(np.log10(n))} | {workers} | {_human(times['encode'])} | "
                  f"{_human(times['measure'])} | {_human(sum(times.values()))} |")
    return 0


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


if __name__ == "__main__":
    sys.exit(main())
