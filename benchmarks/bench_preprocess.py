"""Benchmark of the preprocessing stages: CAE training and inference, and the APCT.

Stamps: the 100 real COSMOS F814W stamps (../shared/data), replicated to N with
a random right-angle rotation / flip and fresh Gaussian noise at each stamp's
own sky sigma, written to a temporary run directory chunk by chunk.

Measured (medians of ``--repeats`` runs, in one process so ratios are fair):

* CAE training throughput (stamps/s in an epoch, with augmentation) against a
  bare PyTorch loop (forward + MSE + backward + Adam on a ready tensor);
* CAE inference throughput of :func:`skymorph.stages.denoise.apply_cae` (numpy in and
  out, per-stamp normalisation included) against the bare model forward;
* APCT throughput of :func:`skymorph.core.apct.apct` against a bare
  ``grid_sample`` with a precomputed grid;
* the ``denoise`` (checkpoint given, so inference only) and ``polar`` stages
  end to end on run directories of ``--small`` and ``N`` stamps, each in a fresh
  process, with its wall time and peak RSS, to show memory does not grow with N.

Run: ``.venv/bin/python benchmarks/bench_preprocess.py [--n 10000] [--small 1000]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COSMOS = ROOT.parent / "shared" / "data" / "cosmos_f814w" / "stamps_100"


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def make_run(base_stamps: np.ndarray, n: int, path: Path, seed: int = 0, chunk: int = 256) -> None:
    """A run directory of ``n`` stamps replicated from ``base_stamps``."""
    import pandas as pd

    from skymorph import Config, RunDir
    from skymorph.stages.denoise import border_sky

    _, sigma = border_sky(base_stamps)
    rng = np.random.default_rng(seed)
    run = RunDir(path, create=True)
    with run.writer("stamps", base_stamps.shape[1:], chunk) as writer:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            pick = rng.integers(len(base_stamps), size=m)
            block = base_stamps[pick].copy()
            for j in range(m):
                k = int(rng.integers(8))
                block[j] = np.rot90(block[j], k % 4)
                if k >= 4:
                    block[j] = block[j][:, ::-1]
            block += rng.normal(0.0, 1.0, block.shape).astype(np.float32) * sigma[pick, None, None]
            writer.extend(block.astype(np.float32))
    pd.DataFrame({"id": [f"s{i}" for i in range(n)], "index": np.arange(n)}).to_parquet(
        run.path / "sources.parquet", index=False)
    run.mark_done("ingest", run.fingerprint("ingest", Config(), ["ingest"], extra=("bench", n, seed)),
                  n_stamps=n)


def child_stage(stage: str, run_dir: str, checkpoint: str) -> None:
    """Run one stage in this (fresh) process and print its time and peak RSS."""
    from skymorph import Config
    from skymorph.stages.denoise import denoise
    from skymorph.stages.polar import polar

    config = Config().update({"denoise": {"checkpoint": checkpoint}})
    t0 = time.perf_counter()
    if stage == "denoise":
        denoise(run_dir, config, progress=False)
    else:
        polar(run_dir, config, progress=False)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """Peak resident memory of this process.  VmHWM, not ru_maxrss: after
    fork + exec, ru_maxrss still carries the parent's peak (Linux keeps the
    pre-exec high-water mark), which would hide the child's own figure."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(stage: str, run_dir: Path, checkpoint: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", stage, str(run_dir), str(checkpoint)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="stamps in the large run (default 10000)")
    parser.add_argument("--small", type=int, default=1_000, help="stamps in the small run (default 1000)")
    parser.add_argument("--train-n", type=int, default=512,
                        help="stamps in the training-throughput epoch (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each timing (default 3)")
    parser.add_argument("--child", nargs=3, metavar=("STAGE", "RUN_DIR", "CKPT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_stage(*args.child)
        return

    import torch
    import torch.nn.functional as F

    from skymorph import Config, _cae, ingest
    from skymorph.core.apct import apct, apct_torch
    from skymorph.stages.denoise import apply_cae
    from skymorph.stages.polar import core_options

    _cae.set_threads()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    tmp = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        base_run = ingest([COSMOS], tmp / "cosmos", Config(), progress=False)
        base = np.asarray(base_run.open_array("stamps"), dtype=np.float32)
        big, small = tmp / "big", tmp / "small"
        t0 = time.perf_counter()
        make_run(base, args.n, big)
        make_run(base, args.small, small, seed=1)
        print(f"built runs of {args.n} and {args.small} stamps in {time.perf_counter() - t0:.1f} s")
        from skymorph import RunDir

        stamps = RunDir(big).open_array("stamps")
        block = np.asarray(stamps[: min(args.n, 4096)], dtype=np.float32)
        device = torch.device("cpu")
        cfg = Config().denoise
        arch = {"stamp_size": 100, "channels": cfg.channels, "kernel_size": cfg.kernel_size,
                "latent_dim": cfg.latent_dim, "unpool": cfg.unpool}

        # --- CAE training ------------------------------------------------------------
        y, _, _ = _cae.normalise(block[: args.train_n])
        train = y.astype(np.float16)
        rates = []
        for r in range(args.repeats):
            _, hist = _cae.train_cae(train, train[:0], arch, epochs=1, batch_size=cfg.batch_size,
                                     learning_rate=cfg.learning_rate, patience=1, device=device,
                                     seed=r, augment=True)
            rates.append(hist["train_stamps_per_s"])
        train_rate = float(np.median(rates))
        model = _cae.CAE(**arch).to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        xt = torch.from_numpy(y[: cfg.batch_size]).unsqueeze(1).contiguous(memory_format=torch.channels_last)
        steps = max(1, args.train_n // cfg.batch_size)

        def bare_train():
            for _ in range(steps):
                opt.zero_grad()
                F.mse_loss(model(xt), xt).backward()
                opt.step()

        bare_train_rate = steps * cfg.batch_size / median_time(bare_train, args.repeats)
        print(f"CAE training: {train_rate:.0f} stamps/s per epoch (batch {cfg.batch_size}, "
              f"augmentation on); bare torch loop {bare_train_rate:.0f} stamps/s; "
              f"ratio {train_rate / bare_train_rate:.2f}")
        print(f"  -> an epoch over a 9000-stamp training split takes ~{9000 / train_rate:.0f} s")

        # A checkpoint for the inference benchmarks (its quality does not matter here).
        model, hist = _cae.train_cae(train[:64], train[:0], arch, epochs=1, batch_size=16,
                                     learning_rate=1e-3, patience=1, device=device, seed=0)
        ckpt = tmp / "checkpoint.pt"
        _cae.save_checkpoint(ckpt, model, hist, {})

        # --- CAE inference -------------------------------------------------------------
        bs = cfg.inference_batch_size
        t_apply = median_time(lambda: apply_cae(block, model, bs), args.repeats)
        xb = torch.from_numpy(block).unsqueeze(1).contiguous(memory_format=torch.channels_last)

        def bare_forward():
            with torch.inference_mode():
                for s in range(0, len(xb), bs):
                    model(xb[s:s + bs])

        t_bare = median_time(bare_forward, args.repeats)
        print(f"CAE inference ({len(block)} stamps, batch {bs}): {len(block) / t_apply:.0f} stamps/s "
              f"(normalisation + copies included); bare model forward {len(block) / t_bare:.0f} stamps/s; "
              f"ratio {t_bare / t_apply:.2f}")

        # --- APCT -----------------------------------------------------------------------------
        pcfg = Config().polar
        t_apct = median_time(lambda: [apct(block[s:s + pcfg.batch_size], **core_options(pcfg))
                                      for s in range(0, len(block), pcfg.batch_size)], args.repeats)
        sub = torch.from_numpy(block[: pcfg.batch_size].copy())
        with torch.inference_mode():
            out, pole, axis = apct_torch(sub.clone(), geometry=True, **core_options(pcfg))
        theta = axis[:, None] + 0.05 * torch.arange(125)[None, :]
        radii = torch.arange(50) + 0.5
        gx = (pole[:, 1, None, None] + torch.cos(theta)[:, :, None] * radii) * (2 / 99) - 1
        gy = (pole[:, 0, None, None] + torch.sin(theta)[:, :, None] * radii) * (2 / 99) - 1
        grid = torch.stack([gx, gy], -1)

        def bare_grid():
            with torch.inference_mode():
                for s in range(0, len(block), pcfg.batch_size):
                    x = torch.from_numpy(block[s:s + pcfg.batch_size])[:, None]
                    F.grid_sample(x, grid[: len(x)], align_corners=True)

        t_grid = median_time(bare_grid, args.repeats)
        print(f"APCT ({len(block)} stamps, batch {pcfg.batch_size}): {len(block) / t_apct:.0f} stamps/s; "
              f"bare grid_sample (precomputed grid) {len(block) / t_grid:.0f} stamps/s; "
              f"ratio {t_grid / t_apct:.2f}")

        # --- stages end to end, memory against N ----------------------------------------------
        for n, path in ((args.small, small), (args.n, big)):
            d = run_child("denoise", path, ckpt)
            p = run_child("polar", path, ckpt)
            print(f"stages on {n} stamps: denoise (inference, zarr in/out) {d['seconds']:.1f} s = "
                  f"{n / d['seconds']:.0f} stamps/s, peak RSS {d['peak_rss_mb']:.0f} MB; polar "
                  f"{p['seconds']:.1f} s = {n / p['seconds']:.0f} stamps/s, peak RSS "
                  f"{p['peak_rss_mb']:.0f} MB")
        print(f"peak RSS of this process (stamps block of {len(block)}, models, timings): "
              f"{peak_rss_mb():.0f} MB; load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
