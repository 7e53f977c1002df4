"""Encoding throughput of the adapted encoder against the default (issue #14), same images, same run.

Encodes the same ``--n`` ingested 100 x 100 stamps (the first of a run directory, e.g. the 700
GZ1 SDSS galaxies) with

* the default: EfficientNet-Lite2 at 260 px, features averaged over 4 right-angle rotations,
* the adapted encoder of a checkpoint (``--checkpoint RUN/adapted/checkpoint.pt``; or random
  weights of the default architecture, which cost the same), 8 dihedral views averaged,

alternating the two ``--repeats`` times (the machine is shared: read the ratio, measured in the
same run), and prints images/s and CPU seconds per image (medians) and their ratios.  It also
times the adapted encoder's training on ``--train-n`` stamps (tiled from the run's stamps when it
has fewer) with its default settings and the Lite0 teacher.

    python benchmarks/bench_adapted.py --run /tmp/enc/gz1_teacher --n 256 --train-n 10000
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np


def _time(encoder, images: np.ndarray, batch: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    encoder.encode(images, batch)
    return len(images) / (time.perf_counter() - wall), (time.process_time() - cpu) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run directory with ingested stamps")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-n", type=int, default=0, help="also time training on this many stamps")
    args = parser.parse_args()

    import torch

    import skymorph
    from skymorph.config import EncodeConfig
    from skymorph.core import adapted
    from skymorph.core.encoders import build_encoder

    torch.set_num_threads(args.threads)
    stamps = skymorph.RunDir(args.run).open_array("stamps")
    images = np.asarray(stamps[: args.n], dtype=np.float32)
    default = build_encoder(EncodeConfig())
    cfg = EncodeConfig(encoder="adapted", weights=args.checkpoint, random_init=args.checkpoint is None)
    student = build_encoder(cfg)
    print(f"{len(images)} stamps of {args.run}; default {default.name} x{default.rotations} rotations at "
          f"{default.input_size[0]} px; adapted {student.dim}-d at {student.input_size[0]} px, "
          f"{sum(p.numel() for p in student.model.parameters())} parameters; {args.threads} threads")
    rates: dict[str, list[tuple[float, float]]] = {"default": [], "adapted": []}
    for _ in range(args.repeats):
        rates["default"].append(_time(default, images, 64))
        rates["adapted"].append(_time(student, images, 64))
    med = {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v))
           for k, v in rates.items()}
    for k, (rate, cpu) in med.items():
        print(f"{k:>8}: {rate:8.2f} images/s, {cpu * 1e3:8.1f} CPU ms/image")
    print(f"adapted / default: {med['adapted'][0] / med['default'][0]:.1f}x images/s, "
          f"{med['default'][1] / med['adapted'][1]:.1f}x less CPU per image")

    if args.train_n:
        reps = -(-args.train_n // len(stamps))
        train = np.concatenate([np.asarray(stamps[:], dtype=np.float32)] * reps)[: args.train_n]
        start = time.perf_counter()
        _, info = adapted.train_adapted(train, replace(cfg, weights=None, random_init=False),
                                        torch.device("cpu"))
        print(f"training on {args.train_n} stamps ({info['steps']} steps, teacher {info['teacher']}): "
              f"{time.perf_counter() - start:.0f} s (teacher {info['teacher_seconds']:.0f} s, "
              f"steps {info['train_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
