"""Ingest throughput and memory on many real COSMOS stamps written as separate FITS files.

The 100 bundled COSMOS F814W stamps are written repeatedly, each copy with fresh
Gaussian noise at the stamp's own noise level, as one FITS file per galaxy.  Each
measurement runs in a fresh subprocess so that its peak memory (parent + worker
processes) is its own.  Printed per N: median wall time, stamps/s, peak RSS, and the
ratio against the plain library call (``astropy.io.fits.getdata`` on every file in
one process, no stamp making, no writing) measured in the same run.

    python benchmarks/bench_ingest.py                 # N = 1,000 and 10,000, 3 repeats
    python benchmarks/bench_ingest.py --sizes 1000 --repeats 1
    python benchmarks/bench_ingest.py --sizes 1000 --weight   # each file also has a WHT HDU (-> rms)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits


def write_files(directory: Path, n: int, seed: int = 0, weight: bool = False) -> None:
    from skymorph.io.datasets import cosmos_demo

    rng = np.random.default_rng(seed)
    with fits.open(cosmos_demo() / "real_galaxy_images_extension.fits") as hdul:
        stamps = [np.asarray(h.data, dtype=np.float32) for h in hdul]
    noise = [1.4826 * np.median(np.abs(s[:4] - np.median(s[:4]))) for s in stamps]
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        j = i % len(stamps)
        image = stamps[j] + rng.normal(0, noise[j], stamps[j].shape).astype(np.float32)
        hdus = [fits.PrimaryHDU(image)]
        if weight:  # inverse variance, as drizzle writes it
            hdus.append(fits.ImageHDU(np.full(image.shape, noise[j] ** -2, np.float32), name="WHT"))
        fits.HDUList(hdus).writeto(directory / f"gal{i:06d}.fits", overwrite=True)


def child(mode: str, directory: Path, out: Path) -> dict:
    from skymorph import Config, ingest

    start = time.perf_counter()
    if mode == "skymorph":
        run = ingest([directory], out, Config(), progress=False)
        n = run.open_array("stamps").shape[0]
        if run.has_array("rms"):
            assert run.open_array("rms").shape[0] == n
    else:
        n = 0
        for path in sorted(directory.glob("*.fits")):
            fits.getdata(path)
            n += 1
    elapsed = time.perf_counter() - start
    peak_kib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"n": n, "seconds": elapsed, "peak_mib": peak_kib / 1024}


def measure(mode: str, directory: Path, workdir: Path) -> dict:
    out = workdir / f"run-{mode}-{time.monotonic_ns()}"
    result = subprocess.run([sys.executable, __file__, "--child", mode, str(directory), str(out)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weight", action="store_true",
                        help="give every file a WHT HDU, so that ingest also writes the rms array")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, directory, out = args.child
        print(json.dumps(child(mode, Path(directory), Path(out))))
        return
    print(f"{'N':>7} {'skymorph s':>11} {'stamps/s':>9} {'peak MiB':>9} {'getdata s':>10} "
          f"{'files/s':>8} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for n in args.sizes:
            files = workdir / f"files{n}"
            write_files(files, n, weight=args.weight)
            ours = [measure("skymorph", files, workdir) for _ in range(args.repeats)]
            plain = [measure("getdata", files, workdir) for _ in range(args.repeats)]
            t_ours = statistics.median(r["seconds"] for r in ours)
            t_plain = statistics.median(r["seconds"] for r in plain)
            peak = statistics.median(r["peak_mib"] for r in ours)
            assert all(r["n"] == n for r in ours), ours
            print(f"{n:>7} {t_ours:>11.2f} {n / t_ours:>9.0f} {peak:>9.0f} {t_plain:>10.2f} "
                  f"{n / t_plain:>8.0f} {t_plain / t_ours:>6.2f}", flush=True)
    print("ratio = plain getdata time / skymorph ingest time (>1: ingest, with stamp making, "
          "background, padding and Zarr writing on all cores, beats a bare one-process read)")


if __name__ == "__main__":
    main()
