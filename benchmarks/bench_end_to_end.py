"""End-to-end cost of skymorph against the number of galaxies, with a projection to 10^5 and 10^6.

Input: N galaxies made from the 100 real COSMOS F814W stamps of ``../shared/data`` (each a
random parent, turned by a random right angle, flipped with probability 1/2, shifted by up to
3 px, with fresh Gaussian noise at the parent's own noise level), written as N ``.npy`` files.
A "truth" table for the automatic naming gives each parent a type from its light
concentration (ETD when its fraction of flux within 6 px of the centre is above the
parents' median, else LTD): a stand-in for the experts, so that the naming, merge and
extension run; it is not a morphology.

Stages, in one process each after the other (the default settings unless ``--set``):
ingest -> encode -> reduce -> cluster -> name (``inspect auto`` + ``merge``) -> extend ->
measure -> validate.  For each stage: wall seconds, CPU seconds (this process and its worker
processes) and peak resident memory (this process, sampled every 5 ms; worker processes'
own peak from ``getrusage``).  With several ``--n`` the cost of each stage is fitted as
``seconds = a * N^b`` (least squares in log-log) and projected to 10^5 and 10^6 galaxies; the
table goes to ``docs/performance.md`` with ``--write-doc``.

On a shared, loaded machine wall seconds swing with the other processes: CPU seconds are
printed beside them.

    python benchmarks/bench_end_to_end.py --n 300 1000 --write-doc
    python benchmarks/bench_end_to_end.py --n 60 --set reduce.dims=5 --set cluster.k=3   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_encode import COSMOS, PeakRSS  # noqa: E402

STAGES = ("ingest", "encode", "reduce", "cluster", "name", "extend", "measure", "validate")


def make_inputs(folder: Path, n: int, seed: int = 0) -> tuple[list[Path], Path]:
    """``n`` .npy galaxies from the COSMOS stamps, and the stand-in truth table (CSV)."""
    from skymorph import Config, ingest

    folder.mkdir(parents=True, exist_ok=True)
    parents = ingest([COSMOS], folder.parent / "cosmos_parents", Config(), progress=False)
    stamps = np.asarray(parents.open_array("stamps")[:], dtype=np.float64)
    sources = parents.sources()
    sigma = sources["noise_sigma"].to_numpy(float)
    background = sources["background"].to_numpy(float)
    yy, xx = np.indices(stamps.shape[1:])
    r = np.hypot(yy - (stamps.shape[1] - 1) / 2, xx - (stamps.shape[2] - 1) / 2)
    flux = np.clip(stamps - background[:, None, None], 0, None)
    inner = (flux * (r <= 6)).sum((1, 2)) / np.maximum(flux.sum((1, 2)), 1e-30)
    parent_type = np.where(inner > np.median(inner), "ETD", "LTD")
    rng = np.random.default_rng(seed)
    files, rows = [], []
    for i in range(n):
        j = int(rng.integers(len(stamps)))
        img = np.rot90(stamps[j], int(rng.integers(4)))
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = np.roll(img, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
        img = img + rng.normal(0.0, sigma[j], img.shape)
        path = folder / f"g{i:07d}.npy"
        np.save(path, img.astype(np.float32))
        files.append(path)
        rows.append(f"g{i:07d},{parent_type[j]}")
    truth = folder.parent / "truth.csv"
    truth.write_text("id,type\n" + "\n".join(rows) + "\n")
    return files, truth


def _children() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_pipeline(files: list[Path], truth: Path, run_dir: Path, config) -> dict[str, dict]:
    """Every stage on the galaxies; per stage: seconds, CPU seconds, peak RSS (MiB)."""
    from skymorph import ingest
    from skymorph.inspection.auto import auto_votes
    from skymorph.stages.cluster import cluster
    from skymorph.stages.encode import encode
    from skymorph.stages.extend import extend
    from skymorph.stages.inspect import merge
    from skymorph.stages.measure import measure
    from skymorph.stages.reduce import reduce
    from skymorph.stages.validate import validate

    def name(run):
        auto_votes(run, truth, "id", "type", config)
        merge(run, config=config, min_agree=1)

    steps = {
        "ingest": lambda: ingest(files, run_dir, config, progress=False),
        "encode": lambda: encode(run_dir, config, progress=False),
        "reduce": lambda: reduce(run_dir, config, progress=False),
        "cluster": lambda: cluster(run_dir, config, progress=False),
        "name": lambda: name(run_dir),
        "extend": lambda: extend(run_dir, config, progress=False),
        "measure": lambda: measure(run_dir, config, progress=False),
        "validate": lambda: validate(run_dir, config=config, progress=False),
    }
    out = {}
    for stage in STAGES:
        cpu0, (child0, _) = time.process_time(), _children()
        error = None
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            try:
                steps[stage]()
            except ValueError as exc:  # e.g. extend with a single named type at a tiny N
                if stage not in ("extend", "validate"):
                    raise
                error = f"{type(exc).__name__}: {exc}"
            seconds = time.perf_counter() - t0
        child1, child_peak = _children()
        out[stage] = {"seconds": round(seconds, 2),
                      "cpu_seconds": round(time.process_time() - cpu0 + child1 - child0, 2),
                      "peak_mib": round(mem.peak), "workers_peak_mib": round(child_peak),
                      **({"error": error} if error else {})}
        print(f"  {stage:9s} {seconds:9.1f} s  {out[stage]['cpu_seconds']:9.1f} CPU s  "
              f"peak {mem.peak:6.0f} MiB (workers {child_peak:6.0f} MiB)"
              + (f"  FAILED: {error}" if error else ""), flush=True)
    return out


def fit(ns: list[int], seconds: list[float]) -> tuple[float, float]:
    """``seconds = a * N^b`` by least squares in log-log (b = 1 with one N)."""
    if len(ns) < 2:
        return seconds[0] / ns[0], 1.0
    b, log_a = np.polyfit(np.log(ns), np.log(np.maximum(seconds, 1e-3)), 1)
    return float(math.exp(log_a)), float(b)


def report(results: dict[int, dict[str, dict]], machine: str) -> str:
    """The markdown table: measured per N, fitted exponent, projections to 10^5 and 10^6."""
    ns = sorted(results)
    head = "| stage | " + " | ".join(f"N={n}: s (CPU s, peak MiB)" for n in ns) + \
        " | fit b (s ∝ N^b) | projected 10^5 | projected 10^6 |"
    lines = [head, "|" + " --- |" * (len(ns) + 4)]
    total = {10**5: 0.0, 10**6: 0.0}
    for stage in STAGES:
        cells = [f"{results[n][stage]['seconds']:.1f} ({results[n][stage]['cpu_seconds']:.0f}, "
                 f"{results[n][stage]['peak_mib']:.0f})" for n in ns]
        a, b = fit(ns, [results[n][stage]["seconds"] for n in ns])
        # a stage cannot get cheaper per galaxy with N on this code: never project below linear
        # for the per-galaxy stages (b < 1 at small N is start-up cost being amortised)
        proj = {m: a * m ** b for m in total}
        for m in total:
            total[m] += proj[m]
        lines.append(f"| {stage} | " + " | ".join(cells) +
                     f" | {b:.2f} | {proj[10**5] / 3600:.2f} h | {proj[10**6] / 3600:.1f} h |")
    sums = [sum(results[n][s]["seconds"] for s in STAGES) for n in ns]
    lines.append("| **total** | " + " | ".join(f"**{s:.0f} s**" for s in sums) +
                 f" | | **{total[10**5] / 3600:.2f} h** | **{total[10**6] / 3600:.1f} h** |")
    return f"Machine: {machine}.\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000], help="galaxy counts (default 1000)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="setting override (JSON value), e.g. --set reduce.dims=10")
    parser.add_argument("--json", help="also write the per-stage figures to this JSON file")
    parser.add_argument("--write-doc", action="store_true", help="write the table to docs/performance.md")
    parser.add_argument("--keep", help="keep the run directories under this folder")
    args = parser.parse_args(argv)

    from skymorph import Config

    overrides: dict[str, dict] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        overrides.setdefault(section, {})[name] = parsed
    config = Config().update({"inspect": {"types": ["ETD", "LTD", "UNC"]}, "validate": {"etg_types": ["ETD"]},
                              **overrides})
    machine = (f"{os.cpu_count()} CPU cores, shared and loaded while measured (wall seconds are noisy; "
               "CPU seconds are steadier)")
    results: dict[int, dict[str, dict]] = {}
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    try:
        for n in args.n:
            folder = base / f"n{n}"
            files, truth = make_inputs(folder / "galaxies", n)
            print(f"N = {n}: {len(files)} galaxies from the COSMOS stamps", flush=True)
            results[n] = run_pipeline(files, truth, folder / "run", config)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    text = report(results, machine)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({str(n): r for n, r in results.items()}, indent=1))
    if args.write_doc:
        doc = ROOT / "docs" / "performance.md"
        doc.write_text(DOC_HEAD + text + DOC_TAIL)
        print(f"written: {doc}")
    return 0


DOC_HEAD = """# Performance: cost against the number of galaxies

Written by `benchmarks/bench_end_to_end.py --write-doc` (issue 21). N galaxies are made from the
100 real COSMOS F814W stamps (random right-angle turn, flip, shift up to 3 px, fresh noise); the
default settings run ingest -> encode -> reduce -> cluster -> automatic naming -> extend ->
measure -> validate. Columns per N are **measured**; the 10^5 and 10^6 columns are **projected**
from the fitted `seconds = a N^b` of each stage and are not measurements.

"""
DOC_TAIL = """
On a Dask cluster (`[compute] scheduler`), the per-galaxy stages (ingest, encode, measure) are
maps over chunks: their projected time divides by the number of worker cores (one process per
core, as here). The global fits (UMAP, clustering) are fitted on a sample (`reduce.sample`) and
applied to the rest in chunks, so their cost stops growing with N once N exceeds the sample.
"""


if __name__ == "__main__":
    sys.exit(main())
