"""Where ``measure``'s time goes: CPU ms per galaxy of each statmorph step, segmentation, Psi/G2.

The bundled COSMOS F814W stamps are ingested; for each of the first N, the segmentation is made,
then statmorph's properties are evaluated one step at a time in the order statmorph needs them
(``skymorph.core.fast_statmorph``'s class, or plain statmorph with ``--plain``), each timed in CPU
seconds.  Run it with an older revision's ``src`` on ``PYTHONPATH`` for the "before" column
(docs/measure.md: ``git archive 4bc10c9 src | tar -x -C /tmp/before``).

    python benchmarks/profile_measure.py --n 40
    PYTHONPATH=/tmp/before/src python benchmarks/profile_measure.py --n 40
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COSMOS = ROOT.parent / "shared" / "data" / "cosmos_f814w" / "stamps_100"
STEPS = ["_slice_skybox", "_rpetro_circ_centroid", "_sky_asymmetry", "_asymmetry_center", "rpetro_circ",
         "rpetro_ellip", "r20", "r80", "rhalf_circ", "rhalf_ellip", "multimode", "intensity", "deviation",
         "gini", "m20", "smoothness", "outer_asymmetry", "shape_asymmetry", "sersic_amplitude"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=40, help="stamps (default 40)")
    parser.add_argument("--plain", action="store_true", help="plain statmorph instead of skymorph's class")
    args = parser.parse_args()

    import statmorph

    from skymorph import Config, ingest
    from skymorph.core.morphometry import STATMORPH_QUANTITIES, gradient_asymmetry, make_segmap, multiplicity
    from skymorph.core.uncertainty import sersic_errors

    if args.plain:
        base = statmorph.SourceMorphology
    else:
        from skymorph.core.fast_statmorph import fast_class

        base = fast_class()

    class StepByStep(base):
        # statmorph computes everything in __init__; here each step is timed on its own
        def _calculate_morphology(self) -> None:
            pass

        def _check_segmaps(self) -> None:
            pass

    times: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory() as tmp:
        run = ingest([COSMOS], Path(tmp) / "run", Config(), progress=False)
        stamps = np.asarray(run.open_array("stamps")[: args.n], dtype=np.float64)
        sources = run.sources()
    n = 0
    for i, stamp in enumerate(stamps):
        data = stamp - sources["background"][i]
        start = time.process_time()
        try:
            segmap, others = make_segmap(data, sources["noise_sigma"][i])
        except ValueError:
            continue
        times["segmentation"] += time.process_time() - start
        n += 1
        weights = np.full(data.shape, sources["noise_sigma"][i])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.process_time()
            morph = StepByStep(data, segmap, 1, mask=others if others.any() else None, weightmap=weights)
            times["__init__ (with the sky box)"] += time.process_time() - start
            for step in STEPS:
                start = time.process_time()
                getattr(morph, step)
                times[step] += time.process_time() - start
            start = time.process_time()
            for name in STATMORPH_QUANTITIES:
                getattr(morph, name)
            times["the other quantities"] += time.process_time() - start
            start = time.process_time()
            sersic_errors(morph)
            times["Sersic errors (covariance)"] += time.process_time() - start
            start = time.process_time()
            multiplicity(data, segmap)
            gradient_asymmetry(data, segmap)
            times["Psi and G2"] += time.process_time() - start
    total = sum(times.values())
    print(f"{n} galaxies, CPU ms per galaxy ({'plain statmorph' if args.plain else 'skymorph measure'})")
    for name, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"{name:30s} {1e3 * seconds / n:8.2f} ms  {100 * seconds / total:5.1f}%")
    print(f"{'total':30s} {1e3 * total / n:8.2f} ms")


if __name__ == "__main__":
    main()
