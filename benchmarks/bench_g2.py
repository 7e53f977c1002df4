"""G2 (Rosa et al. 2018) on the bundled COSMOS stamps: the paper's definition against the
noise-aware one, and how G2 falls as the same galaxies are re-observed at lower S/N.

1. Every stamp is segmented and measured as ``skymorph measure`` does (no Sersic fit);
   G2 is computed with noise tolerances k = 0 (Rosa et al.), 1, 2.45 (the default) and 3.
   Printed: the spread of each over the sample, the median per S/N bin, and Spearman
   correlations with the asymmetry A, Gini and S/N.
2. The brightest stamps get extra Gaussian noise (sigma x 1.5 ... 6, three draws each)
   and are measured again; printed: median G2(noisy) / G2(original) per S/N bin.  The
   S/N below which the median falls steeply (under ~2/3) is ``measure.g2_min_sn``.

    python benchmarks/bench_g2.py             # ~1-2 min on 2 cores
    python benchmarks/bench_g2.py --bright 8  # fewer stamps in part 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
COSMOS = ROOT.parent / "shared" / "data" / "cosmos_f814w" / "stamps_100"
TOLERANCES = (0.0, 1.0, 2.45, 3.0)


def _measure(image, sigma, cfg, tolerance):
    from skymorph.core import morphometry as mm

    segmap, others = mm.make_segmap(image, sigma, cfg.detect_nsigma, cfg.detect_npixels, cfg.smooth_fwhm,
                                    cfg.deblend, cfg.deblend_contrast)
    return mm.morphology(image, segmap, 1, mask=others if others.any() else None,
                         weightmap=np.full(image.shape, sigma), include_sersic=False, noise_sigma=sigma,
                         g2_noise_tolerance=tolerance)


def main() -> None:
    from skymorph import Config, ingest

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bright", type=int, default=15, help="stamps degraded in part 2 (default 15)")
    parser.add_argument("--draws", type=int, default=3, help="noise draws per level in part 2 (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the added noise (default 0)")
    parser.add_argument("--skip-sample", action="store_true", help="only part 2")
    args = parser.parse_args()
    cfg = Config().measure
    with tempfile.TemporaryDirectory() as tmp:
        run = ingest([COSMOS], Path(tmp) / "run", Config(), progress=False)
        stamps = np.asarray(run.open_array("stamps"), dtype=np.float64)
        sources = run.sources()
    images = stamps - sources["background"].to_numpy()[:, None, None]
    sigmas = sources["noise_sigma"].to_numpy()

    rows = []
    for i in range(0 if args.skip_sample else len(images)):
        try:
            values = {k: _measure(images[i], sigmas[i], cfg, k) for k in TOLERANCES}
        except ValueError:  # nothing detected
            continue
        base = values[0.0]
        if not base["measure_ok"]:
            continue
        rows.append({"sn": base["sn_per_pixel"], "A": base["asymmetry"], "gini": base["gini"],
                     **{f"g2_k{k}": values[k]["g2"] for k in TOLERANCES}})
    table = pd.DataFrame(rows, columns=["sn", "A", "gini", *[f"g2_k{k}" for k in TOLERANCES]])
    g2 = [f"g2_k{k}" for k in TOLERANCES]
    if len(table):
        print(f"1. {len(table)} COSMOS stamps measured; G2 per noise tolerance k")
        print(table[g2].describe().T[["mean", "std", "min", "50%", "max"]].round(3).to_string())
        table["S/N bin"] = pd.cut(table["sn"], [0, 2, 3.5, 5, 10, 100])
        print("\nmedian G2 per S/N bin (sn_per_pixel):")
        print(table.groupby("S/N bin", observed=True)[g2].median().round(3)
              .assign(n=table.groupby("S/N bin", observed=True).size()).to_string())
        print("\nSpearman correlations:")
        print(table[[*g2, "A", "gini", "sn"]].corr(method="spearman").loc[g2, ["A", "gini", "sn"]].round(2)
              .to_string())

    rng = np.random.default_rng(args.seed)
    brightest = np.argsort(-sources["snr_pixel"].to_numpy())[: args.bright]
    degraded = []
    for k in (0.0, 2.45):
        for i in brightest:
            try:
                base = _measure(images[i], sigmas[i], cfg, k)
            except ValueError:
                continue
            if not base["measure_ok"] or not base["g2"] > 0:
                continue
            for factor in (1.5, 2, 3, 4, 6):
                for _ in range(args.draws):
                    sigma = sigmas[i] * factor
                    noisy = images[i] + rng.normal(0, sigmas[i] * np.sqrt(factor ** 2 - 1), images[i].shape)
                    try:
                        row = _measure(noisy, sigma, cfg, k)
                    except ValueError:
                        continue
                    if row["measure_ok"]:
                        degraded.append({"k": k, "sn": row["sn_per_pixel"], "ratio": row["g2"] / base["g2"]})
    degraded = pd.DataFrame(degraded)
    degraded["S/N bin"] = pd.cut(degraded["sn"], [0, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 12])
    print(f"\n2. the {args.bright} brightest stamps with added noise ({args.draws} draws, seed {args.seed}): "
          "median G2(noisy) / G2(original)")
    print(degraded.pivot_table(index="S/N bin", columns="k", values="ratio", aggfunc="median", observed=True)
          .round(2).assign(n=degraded[degraded.k == 2.45].groupby("S/N bin", observed=True).size())
          .to_string())
    if len(table):
        print(f"\nmeasure.g2_min_sn (default {cfg.g2_min_sn}): "
              f"{int((table['sn'] < cfg.g2_min_sn).sum())} of {len(table)} stamps below it")


if __name__ == "__main__":
    main()
