"""Throughput of ``skymorph measure`` on real COSMOS-like stamps.

The 100 bundled COSMOS F814W stamps are ingested once; a run directory of N
stamps is then made from them, each copy with fresh Gaussian noise at the
stamp's own noise level (so copies differ).  Timed, each in a fresh subprocess
(so its peak memory, parent + workers, is its own):

* ``measure`` with 1 worker and with 2 workers (statmorph with the Sersic fit,
  segmentation, Psi, G2, Parquet output), without a PSF;
* ``measure_1_psf``: 1 worker with each stamp's own PSF (the run's ``psf`` array,
  from the collection's PSF images) convolved in the Sersic fit;
* the plain library call: ``statmorph.source_morphology`` in a loop over the same
  stamps with segmaps made beforehand (not timed), i.e. statmorph's own cost;
* with ``--baseline REV``: ``<mode>@baseline`` for each measure mode, the same with the
  ``src/`` of that git revision (exported with ``git archive``, not checked out), so the
  before/after ratio of a change comes from one run on one machine state (issue 21:
  ``--baseline 4bc10c9``, main before the measurement speed-up).

Wall seconds and CPU seconds (this process and its workers) are both timed: on a shared,
loaded machine the CPU seconds per galaxy are the steadier comparison.  measure (with
the import of statmorph and photutils, segmentation, Psi, G2 and the Parquet output)
below the statmorph loop, i.e. a ratio under 1, is the issue-21 target.

Printed: median seconds, galaxies/s, peak RSS, the ratio of measure (1 worker) to
the statmorph loop, and the projected time for 10^5 galaxies on this machine.

    python benchmarks/bench_measure.py                     # N = 1000, 1 repeat
    python benchmarks/bench_measure.py --n 200 --repeats 3
    python benchmarks/bench_measure.py --n 100 --modes measure_1,measure_1_psf
    python benchmarks/bench_measure.py --n 100 --repeats 3 --modes measure_1,statmorph \
        --baseline 4bc10c9                                            # README, issue 21
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
COSMOS = ROOT.parent / "shared" / "data" / "cosmos_f814w" / "stamps_100"


def make_run(base: Path, n: int, seed: int = 0) -> Path:
    """A run directory of ``n`` stamps: the real ones, repeated with fresh noise."""
    from skymorph import Config, ingest
    from skymorph.io.rundir import RunDir

    src = ingest([COSMOS], base / "ingested", Config(), progress=False)
    stamps = np.asarray(src.open_array("stamps"))
    sources = src.sources()
    rng = np.random.default_rng(seed)
    run = RunDir(base / f"run{n}", create=True)
    sigma = sources["noise_sigma"].to_numpy(float)
    rows = []
    with run.writer("stamps", stamps.shape[1:], 256) as writer:
        for i in range(n):
            j = i % len(stamps)
            noisy = stamps[j] + rng.normal(0, sigma[j], stamps[j].shape).astype(np.float32)
            writer.append(noisy)
            rows.append({"id": f"g{i:06d}", "index": i, "background": float(sources["background"][j]),
                         # the added noise has the stamp's sigma: total sigma is sqrt(2) larger
                         "noise_sigma": float(np.sqrt(2) * sigma[j])})
    pd.DataFrame(rows).to_parquet(run.path / "sources.parquet", index=False)
    # each stamp's own PSF (65 x 51 in the collection), padded square as the psf array has it
    from astropy.io import fits

    with fits.open(COSMOS / "real_galaxy_PSF_images_extension.fits") as hdul:
        psfs = np.stack([np.pad(np.asarray(hdul[int(k)].data, dtype=np.float32), ((0, 0), (7, 7)))
                         for k in sources["PSF_HDU"]])
    psf = run.create_array("psf", (n, *psfs.shape[1:]), 256)
    psf[:] = psfs[np.arange(n) % len(psfs)]
    run.record_config(Config(), execution=True)
    run.mark_done("ingest", f"bench-{n}-{seed}", n_stamps=n)
    return run.path


def child(mode: str, run_path: Path) -> dict:
    from skymorph import Config
    from skymorph.io.rundir import RunDir

    run = RunDir(run_path)
    if mode.startswith("measure"):
        from skymorph.stages.measure import measure

        mode = mode.split("@")[0]  # measure_1@baseline: the same, with the baseline's code
        workers = int(mode.split("_")[1])
        (run.path / "measurements.parquet").unlink(missing_ok=True)
        run.invalidate("measure")
        settings = {"workers": workers, "psf_array": mode.endswith("_psf")}
        start, cpu_start, children_start = time.perf_counter(), time.process_time(), _children_cpu()
        measure(run, Config().update({"measure": settings}), progress=False)
        elapsed = time.perf_counter() - start
        n = int(run.stage_info("measure")["n_galaxies"])
    else:
        import statmorph

        from skymorph.core.morphometry import make_segmap

        stamps = np.asarray(run.open_array("stamps"), dtype=np.float64)
        sources = run.sources()
        inputs = []
        for i, stamp in enumerate(stamps):
            image = stamp - sources["background"][i]
            try:
                segmap, others = make_segmap(image, sources["noise_sigma"][i])
            except ValueError:
                continue
            inputs.append((image, segmap, others, np.full(image.shape, sources["noise_sigma"][i])))
        start, cpu_start, children_start = time.perf_counter(), time.process_time(), _children_cpu()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for image, segmap, others, weights in inputs:
                statmorph.source_morphology(image, segmap, mask=others if others.any() else None,
                                            weightmap=weights)
        elapsed = time.perf_counter() - start
        n = len(inputs)
    peak_kib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"n": n, "seconds": elapsed, "cpu_seconds": time.process_time() - cpu_start
            + _children_cpu() - children_start, "peak_mib": peak_kib / 1024}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="stamps in the run (default 1000)")
    parser.add_argument("--repeats", type=int, default=1, help="repeats per mode (default 1)")
    parser.add_argument("--modes", default="measure_1,measure_2,statmorph",
                        help="comma-separated: measure_1, measure_2, measure_1_psf, statmorph")
    parser.add_argument("--baseline", metavar="REV",
                        help="also time each measure mode with the skymorph source of this git revision "
                             "(e.g. 4bc10c9, main before issue 21's speed-up), in the same run")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    print(f"cores: {os.cpu_count()} (shared with other work: timings are noisy)")
    with tempfile.TemporaryDirectory() as tmp:
        run_path = make_run(Path(tmp), args.n)
        modes = args.modes.split(",")
        envs = {mode: dict(os.environ) for mode in modes}
        if args.baseline:
            # the baseline revision's source, exported (not checked out): its measure in the same run
            base = Path(tmp) / "baseline"
            base.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "src"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            for mode in [m for m in modes if m.startswith("measure")]:
                modes.append(f"{mode}@baseline")
                envs[f"{mode}@baseline"] = {**os.environ, "PYTHONPATH": str(base / "src")}
        results: dict[str, list[dict]] = {}
        for _ in range(args.repeats):
            for mode in modes:
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(run_path)],
                                     check=True, capture_output=True, text=True, env=envs[mode])
                results.setdefault(mode, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
        medians, cpu_medians = {}, {}
        for mode, runs in results.items():
            sec = statistics.median(r["seconds"] for r in runs)
            cpu_medians[mode] = statistics.median(r["cpu_seconds"] for r in runs) / runs[0]["n"]
            n = runs[0]["n"]
            peak = max(r["peak_mib"] for r in runs)
            medians[mode] = sec / n
            each = ", ".join(f"{r['seconds']:.1f}" for r in runs)
            print(f"{mode:18s} N={n:6d}  {sec:8.1f} s  {n / sec:6.2f} galaxies/s  "
                  f"{cpu_medians[mode]:.3f} CPU s/galaxy  peak RSS {peak:7.0f} MiB  "
                  f"(median of {len(runs)}: {each})")
        for mode in [m for m in medians if f"{m}@baseline" in medians]:
            print(f"speed-up of {mode} over {args.baseline} (same run, seconds per galaxy): "
                  f"{medians[f'{mode}@baseline'] / medians[mode]:.2f}x; CPU seconds per galaxy: "
                  f"{cpu_medians[f'{mode}@baseline'] / cpu_medians[mode]:.2f}x")
        if "statmorph" in medians:
            for mode in [m for m in medians if m.startswith("measure")]:
                if mode in medians:
                    ratio = medians[mode] / medians["statmorph"]
                    cpu_ratio = cpu_medians[mode] / cpu_medians["statmorph"]
                    print(f"ratio {mode} / statmorph loop (seconds per galaxy): {ratio:.2f}; CPU seconds per "
                          f"galaxy (less sensitive to other processes' load): {cpu_ratio:.2f}")
        for mode in ("measure_1", "measure_2", "measure_1_psf"):
            if mode in medians:
                hours = medians[mode] * 1e5 / 3600
                print(f"projected 10^5 galaxies with {mode}: {hours:.1f} h on this machine")


if __name__ == "__main__":
    main()
