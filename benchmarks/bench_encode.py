"""Benchmark of the encode stage against a plain ``model(x)`` loop over the same model.

Input: ``--n`` polar-sized images (125 x 200 float32) made from the 100 real COSMOS
stamps of ``../shared/data`` (each stamp resized to 125 x 200, then tiled with
random rolls along the angle axis and flips, which is what rotating a galaxy does
to its polar image), stored as the ``polar`` array of a temporary run directory.

For each encoder and repeat, in alternating order:

* **stage**: ``skymorph.stages.encode.encode`` end to end (zarr read, per-image scaling,
  resize, normalisation, inference, chunked writes with the resume record).
  Images/s is counted over the encoding loop (the stage's own ``images_per_s``),
  and the wall time including the model build is printed too.
* **plain**: the same ``nn.Module`` (same weights, channels-last), same batch
  size and same images, but only ``model(x)`` is timed under
  ``torch.inference_mode``; the input batches are read and resized outside the
  timed region (a cheap bilinear resize and fixed normalisation).

The ratio stage/plain of images/s is the cost of the wrapping (target >= 0.9).
On a shared machine wall-clock rates swing with other processes' load, so the
ratio of CPU seconds per image (``time.process_time``, all threads of this
process) is printed too.  Peak memory is
the peak resident set size (sampled from /proc every 5 ms) during each phase, and
its increase over the resident size before the phase.

Run: ``.venv/bin/python benchmarks/bench_encode.py`` (10^4 images; on a 2-core CPU
that is many minutes per encoder) or ``--n 1024`` for a quick look.

Issue 21 (encoder speed settings): with ``--rotations 4`` the plain loop calls ``model(x)``
once per rotation, as the encoder did before; the stage runs the settings given with
``--set`` (e.g. ``--set input_size=128``, ``--set runtime=torch``), so the ratio is the
speed-up over plain PyTorch on the same work:

    python benchmarks/bench_encode.py --n 256 --encoders efficientnet_lite2 --rotations 4 \
        --set input_size=128 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COSMOS = ROOT.parent / "shared" / "data" / "cosmos_f814w" / "stamps_100"


class PeakRSS:
    """Peak resident set size of this process during a ``with`` block (MiB)."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_polar_run(path: Path, n: int, seed: int = 0):
    """A run directory whose ``polar`` array holds ``n`` 125 x 200 images from COSMOS."""
    import torch
    import torch.nn.functional as F

    from skymorph import Config, ingest

    run = ingest([COSMOS], path, Config(), progress=False)
    stamps = torch.from_numpy(np.asarray(run.open_array("stamps")[:], dtype=np.float32))
    base = F.interpolate(stamps[:, None], size=(125, 200), mode="bilinear", align_corners=False)[:, 0]
    base = base.numpy()
    rng = np.random.default_rng(seed)
    polar = run.create_array("polar", (n, 125, 200), 1024)
    for start in range(0, n, 1024):
        stop = min(n, start + 1024)
        pick = rng.integers(0, len(base), stop - start)
        block = base[pick]
        shifts = rng.integers(0, 125, stop - start)
        block = np.stack([np.roll(img, s, axis=0) for img, s in zip(block, shifts, strict=True)])
        flip = rng.random(stop - start) < 0.5
        block[flip] = block[flip, ::-1]
        polar[start:stop] = block
    # one sources row per image (the run directory checks that arrays and sources agree)
    import pandas as pd

    pd.DataFrame({"id": [f"p{i:07d}" for i in range(n)], "index": np.arange(n)}).to_parquet(
        run.path / "sources.parquet", index=False)
    # the benchmark's images stand in for the polar stage's output
    run.mark_done("polar", "benchmark-polar-from-resized-cosmos-stamps", n=n)
    return run


def run_stage(run, config) -> tuple[float, float, float, PeakRSS]:
    """Images/s over the stage's encoding loop, CPU seconds per image there, wall time."""
    from skymorph.stages.encode import encode

    run.invalidate("encode")
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        encode(run, config, progress=False)
        wall = time.perf_counter() - t0
    info = run.stage_info("encode")
    return float(info["images_per_s"]), info["encode_cpu_seconds"] / info["n_images"], wall, mem


def run_plain(run, encoder, batch_size: int, rotations: int = 1,
              precision: str = "fp32") -> tuple[float, float, PeakRSS]:
    """Images/s and CPU seconds per image of ``model(x)`` alone (one call per rotation, in
    PyTorch, autocast to ``precision``)."""
    import torch
    import torch.nn.functional as F

    images = run.open_array("polar")
    n = images.shape[0]
    mean = torch.tensor(encoder.mean).view(1, 3, 1, 1)
    std = torch.tensor(encoder.std).view(1, 3, 1, 1)
    model = encoder.model
    timed = cpu = 0.0
    with PeakRSS() as mem, torch.inference_mode():
        for start in range(0, n, batch_size):
            block = torch.from_numpy(np.asarray(images[start : start + batch_size], dtype=np.float32))
            lo = block.amin((1, 2), keepdim=True)
            block = (block - lo) / (block.amax((1, 2), keepdim=True) - lo).clamp_min(1e-12)
            x = F.interpolate(block[:, None], size=encoder.input_size, mode="bilinear", align_corners=False)
            x = ((x.expand(-1, 3, -1, -1) - mean) / std).contiguous(memory_format=torch.channels_last)
            cl = torch.channels_last
            turned = [torch.rot90(x, k * 4 // rotations, dims=(2, 3)).contiguous(memory_format=cl)
                      for k in range(rotations)]
            if encoder.device.type == "cuda":
                turned = [t.to(encoder.device) for t in turned]
                torch.cuda.synchronize()
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.autocast(encoder.device.type, dtype=dtype, enabled=precision in ("bf16", "fp16")):
                for t in turned:
                    model(t)
            if encoder.device.type == "cuda":
                torch.cuda.synchronize()
            timed += time.perf_counter() - t0
            cpu += time.process_time() - c0
    return n / timed, cpu / n, mem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="images (default 10000)")
    parser.add_argument("--encoders", default="efficientnet_lite0,efficientnet_lite2",
                        help="comma-separated encoder names (default: the two offline ones)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="stage chunk size (default 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per phase; medians are quoted "
                        "(default 3)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--random-init", action="store_true",
                        help="random weights (for timm models without local weights, speed only)")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (default auto)")
    parser.add_argument("--rotations", type=int, default=1,
                        help="rotations averaged, in the stage and as separate model(x) calls in the plain "
                             "loop (default 1; the default setting is 4)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="[encode] setting of the stage (JSON value), e.g. --set input_size=128 "
                             "--set runtime=torch; the plain loop uses the same input size")
    args = parser.parse_args(argv)

    import torch

    from skymorph import Config
    from skymorph.core.encoders import build_encoder

    tmp = Path(tempfile.mkdtemp(prefix="bench_encode_"))
    try:
        t0 = time.perf_counter()
        run = make_polar_run(tmp / "run", args.n)
        print(f"input: {args.n} polar-sized 125x200 float32 images from COSMOS stamps "
              f"({time.perf_counter() - t0:.1f} s to prepare); torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
              f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
        for name in args.encoders.split(","):
            # one encoder pass per image on the polar images, as the plain loop does (the
            # default 4-rotation averaging costs four passes by construction)
            extra = {}
            for item in args.set:
                key, _, value = item.partition("=")
                try:
                    extra[key] = json.loads(value)
                except json.JSONDecodeError:
                    extra[key] = value
            config = Config().update({"denoise": {"enabled": False}, "polar": {"enabled": True}, "encode": {
                "encoder": name, "batch_size": args.batch_size, "chunk_size": args.chunk_size,
                "device": args.device, "random_init": args.random_init, "rotations": args.rotations,
                "precision": args.precision, **extra}})
            encoder = build_encoder(config.encode)
            stage_rates, plain_rates, walls, ratios, cpu_ratios = [], [], [], [], []
            stage_mem, plain_mem = [], []
            for rep in range(args.repeats):
                order = ("stage", "plain") if rep % 2 == 0 else ("plain", "stage")
                rates, cpus = {}, {}
                for phase in order:
                    if phase == "stage":
                        rate, cpu, wall, mem = run_stage(run, config)
                        walls.append(wall)
                        stage_mem.append(mem)
                    else:
                        rate, cpu, mem = run_plain(run, encoder, args.batch_size, args.rotations,
                                                   encoder.precision)
                        plain_mem.append(mem)
                    rates[phase], cpus[phase] = rate, cpu
                stage_rates.append(rates["stage"])
                plain_rates.append(rates["plain"])
                ratios.append(rates["stage"] / rates["plain"])
                cpu_ratios.append(cpus["plain"] / cpus["stage"])
                print(f"  {name} repeat {rep + 1}: stage {rates['stage']:.1f} img/s, "
                      f"plain model(x) {rates['plain']:.1f} img/s, ratio {ratios[-1]:.3f}; "
                      f"CPU s/img stage {cpus['stage']:.4f} plain {cpus['plain']:.4f}, "
                      f"ratio {cpu_ratios[-1]:.3f}", flush=True)
            med = statistics.median
            print(f"{name} ({encoder.dim}-d, input {encoder.input_size[0]}x{encoder.input_size[1]}, "
                  f"{encoder.device}, {encoder.precision}, runtime {encoder.runtime}, {args.rotations} "
                  f"rotation(s), batch {args.batch_size}, n={args.n}):\n"
                  f"  stage  {med(stage_rates):8.1f} img/s (median of {args.repeats}; wall incl. "
                  f"model build {med(walls):.1f} s)  peak RSS {max(m.peak for m in stage_mem):.0f} MiB "
                  f"(+{max(m.peak - m.start for m in stage_mem):.0f} MiB over the start of the phase)\n"
                  f"  plain  {med(plain_rates):8.1f} img/s (median)  peak RSS "
                  f"{max(m.peak for m in plain_mem):.0f} MiB "
                  f"(+{max(m.peak - m.start for m in plain_mem):.0f} MiB)\n"
                  f"  ratio stage/plain: median {med(ratios):.3f} (per repeat: "
                  f"{', '.join(f'{r:.3f}' for r in ratios)}); target >= 0.9\n"
                  f"  CPU-time ratio plain/stage (insensitive to other processes): median "
                  f"{med(cpu_ratios):.3f} (per repeat: {', '.join(f'{r:.3f}' for r in cpu_ratios)})",
                  flush=True)
            del encoder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
